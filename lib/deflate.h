/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Compressing grains for streamOptimized writes: a zlib stream (RFC
 * 1950, as every reader expects), with libdeflate when configure found
 * it, else zlib.  Thread-safe: the compressor is kept per thread.
 */

#ifndef VMDK_DEFLATE_H
#define VMDK_DEFLATE_H

#include <stddef.h>

#define DEFLATE_MIN_LEVEL 1
#define DEFLATE_MAX_LEVEL 9

/* The default level: the lowest whose output is within 5% of zlib
 * level 6's (what qemu-img writes), measured on the benchmark's data
 * and on executables (README, "streamOptimized writing").
 */
extern int vmdk_deflate_default_level (void);

/* The most bytes compressing len bytes at level can take (0: no
 * memory for the compressor).
 */
extern size_t vmdk_deflate_bound (size_t len, int level);

/* Compress in (len bytes) at level into out (room for out_len bytes,
 * at least vmdk_deflate_bound (len)).  Returns the compressed length,
 * or -1 with an error recorded.
 */
extern long vmdk_deflate (const void *in, size_t len, void *out,
                          size_t out_len, int level);

#endif /* VMDK_DEFLATE_H */
