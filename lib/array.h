/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Growable arrays.  Growing one element at a time with realloc copies
 * the whole array each time it moves, which is quadratic in the number
 * of elements (and realloc always moves under ASan): grow by doubling.
 */

#ifndef VMDK_ARRAY_H
#define VMDK_ARRAY_H

#include <stddef.h>

/* Make room for at least need elements of elem bytes in *array, whose
 * capacity (in elements) is *alloc.  Returns 0, or -1 with ENOMEM
 * recorded (the array is then unchanged).
 */
extern int array_reserve (void **array, size_t *alloc, size_t need,
                          size_t elem);

#endif /* VMDK_ARRAY_H */
