/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#ifndef VMDK_INFLATE_H
#define VMDK_INFLATE_H

#include <stddef.h>
#include <stdint.h>

/* Inflate a zlib (RFC 1950) stream of in_len bytes into out, which has
 * room for out_len bytes.  Never writes more than out_len.  Returns
 * the inflated length, or -1 (with EIO recorded) if the data is
 * corrupt or would not fit; the message names the file and the offset
 * of the grain marker the data came from.  Thread-safe: the inflate
 * state is kept per thread.
 */
extern long vmdk_inflate (const void *in, size_t in_len, void *out,
                          size_t out_len, const char *name, uint64_t offset);

/* Inflate only the first out_len bytes of a zlib stream into out
 * (zlib streaming, whatever the backend): stops when out is full,
 * without looking at the rest of the stream.  Returns the number of
 * bytes inflated: out_len, or less if the stream ends earlier; -1 with
 * EIO recorded if the data is corrupt before that point or ends before
 * the stream does.
 */
extern long vmdk_inflate_prefix (const void *in, size_t in_len, void *out,
                                 size_t out_len, const char *name,
                                 uint64_t offset);

/* "libdeflate" or "zlib". */
extern const char *vmdk_inflate_backend (void);

#endif /* VMDK_INFLATE_H */
