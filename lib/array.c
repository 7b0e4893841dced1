/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>

#include "array.h"
#include "checked.h"
#include "error.h"

int
array_reserve (void **array, size_t *alloc, size_t need, size_t elem)
{
  size_t n, bytes;
  void *p;

  if (need <= *alloc)
    return 0;
  n = *alloc ? *alloc : 16;
  while (n < need) {
    if (MUL_OVERFLOW (n, (size_t) 2, &n))
      return vmdk_error (ENOMEM, "array of %zu elements is too large", need);
  }
  if (MUL_OVERFLOW (n, elem, &bytes))
    return vmdk_error (ENOMEM, "array of %zu elements is too large", n);
  p = realloc (*array, bytes);
  if (p == NULL)
    return vmdk_error (ENOMEM, "realloc: %m");
  *array = p;
  *alloc = n;
  return 0;
}
