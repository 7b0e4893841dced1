/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#ifndef VMDK_INFLATE_H
#define VMDK_INFLATE_H

#include <stddef.h>

/* Inflate a zlib (RFC 1950) stream of in_len bytes into out, which has
 * room for out_len bytes.  Never writes more than out_len.  Returns
 * the inflated length, or -1 (with the error recorded, naming what) if
 * the data is corrupt or would not fit.
 */
extern long vmdk_inflate (const void *in, size_t in_len, void *out,
                          size_t out_len, const char *what);

/* "libdeflate" or "zlib". */
extern const char *vmdk_inflate_backend (void);

#endif /* VMDK_INFLATE_H */
