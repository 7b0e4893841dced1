/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Growing images (resize.c), and the hosted sparse extents in them
 * (resize-sparse.c).
 */

#ifndef VMDK_RESIZE_H
#define VMDK_RESIZE_H

#include <stdint.h>

#include "extent.h"

/* Grow the hosted sparse extent e (opened for writing, not yet
 * written) to new_cap sectors: past its old end it reads as zeroes,
 * its grain directory covers new_cap, and its header says new_cap.
 * The descriptor is the caller's.  Each step is durable before the
 * next, the header last.
 */
extern int resize_sparse_extent (struct extent *e, uint64_t new_cap);

#endif /* VMDK_RESIZE_H */
