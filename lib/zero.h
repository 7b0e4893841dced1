/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Whether a buffer holds only zero bytes: used to skip storing zero
 * grains, to check markers and to refuse non-zero writes to ZERO
 * extents.
 */

#ifndef VMDK_ZERO_H
#define VMDK_ZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Comparing the buffer with itself shifted by one byte lets memcmp's
 * vectorised loop do the work.
 */
static inline bool
is_all_zero (const void *buf, size_t n)
{
  const unsigned char *p = buf;

  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

#endif /* VMDK_ZERO_H */
