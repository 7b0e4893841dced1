/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* What every fuzz target shares: an invariant that fails aborts, which
 * libFuzzer reports as a crash (with the input saved).
 */

#ifndef VMDK_FUZZ_H
#define VMDK_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond) \
  do { \
    if (!(cond)) { \
      fprintf (stderr, "%s:%d: invariant failed: %s\n", \
               __FILE__, __LINE__, #cond); \
      abort (); \
    } \
  } while (0)

#endif /* VMDK_FUZZ_H */
