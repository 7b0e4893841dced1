/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Sizes as people write them on command lines: what nbdkit's
 * nbdkit_parse_size accepts, so that the vmdk command and the plugin
 * take the same values.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>

#include "error.h"

/* The scale of a size suffix (case-insensitive), 0 if unknown. */
static uint64_t
suffix_scale (char c)
{
  switch (c) {
  case '\0': case 'b': case 'B': return 1;
  case 's': case 'S': return 512;
  case 'k': case 'K': return UINT64_C (1) << 10;
  case 'm': case 'M': return UINT64_C (1) << 20;
  case 'g': case 'G': return UINT64_C (1) << 30;
  case 't': case 'T': return UINT64_C (1) << 40;
  case 'p': case 'P': return UINT64_C (1) << 50;
  case 'e': case 'E': return UINT64_C (1) << 60;
  default: return 0;
  }
}

int
vmdk_parse_size (const char *str, uint64_t *size)
{
  const char *p = str;
  uint64_t v = 0, scale;

  if (*p < '0' || *p > '9')
    return vmdk_error (EINVAL, "size \"%s\": expected a number of bytes, "
                       "optionally followed by b, s (512), k, M, G, T, P "
                       "or E", str);
  for (; *p >= '0' && *p <= '9'; ++p)
    if (__builtin_mul_overflow (v, 10, &v) ||
        __builtin_add_overflow (v, (uint64_t) (*p - '0'), &v))
      goto too_large;
  scale = suffix_scale (*p);
  if (scale == 0 || (*p != '\0' && p[1] != '\0'))
    return vmdk_error (EINVAL, "size \"%s\": unknown suffix \"%s\" "
                       "(expected b, s (512), k, M, G, T, P or E)", str, p);
  /* Disk sizes are off_t: signed. */
  if (__builtin_mul_overflow (v, scale, &v) || v > INT64_MAX)
    goto too_large;
  *size = v;
  return 0;

 too_large:
  return vmdk_error (ERANGE, "size \"%s\" is too large (at most 2^63 - 1 "
                     "bytes)", str);
}
