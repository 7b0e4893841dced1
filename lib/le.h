/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Unaligned little-endian loads and stores: every VMDK integer is LE. */

#ifndef VMDK_LE_H
#define VMDK_LE_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t
get_le16 (const void *p)
{
  uint16_t v;
  memcpy (&v, p, 2);
  return le16toh (v);
}

static inline uint32_t
get_le32 (const void *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return le32toh (v);
}

static inline uint64_t
get_le64 (const void *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return le64toh (v);
}

static inline void
put_le16 (void *p, uint16_t v)
{
  v = htole16 (v);
  memcpy (p, &v, 2);
}

static inline void
put_le32 (void *p, uint32_t v)
{
  v = htole32 (v);
  memcpy (p, &v, 4);
}

static inline void
put_le64 (void *p, uint64_t v)
{
  v = htole64 (v);
  memcpy (p, &v, 8);
}

#endif /* VMDK_LE_H */
