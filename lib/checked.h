/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Overflow-checked arithmetic and small integer helpers.  Every product
 * or sum driven by an image field goes through these.
 */

#ifndef VMDK_CHECKED_H
#define VMDK_CHECKED_H

#include <stdbool.h>
#include <stdint.h>

/* Each returns true if the result overflowed (then *r is unspecified). */
#define ADD_OVERFLOW(a, b, r) __builtin_add_overflow ((a), (b), (r))
#define MUL_OVERFLOW(a, b, r) __builtin_mul_overflow ((a), (b), (r))

#define MIN(a, b) ({ __typeof__ (a) _a = (a); __typeof__ (b) _b = (b); \
                     _a < _b ? _a : _b; })
#define MAX(a, b) ({ __typeof__ (a) _a = (a); __typeof__ (b) _b = (b); \
                     _a > _b ? _a : _b; })

static inline bool
is_power_of_2 (uint64_t v)
{
  return v != 0 && (v & (v - 1)) == 0;
}

/* Ceiling division; b must be non-zero. */
static inline uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

#endif /* VMDK_CHECKED_H */
