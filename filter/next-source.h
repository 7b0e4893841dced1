/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A byte source (lib/io.h) whose one file is the layer below the
 * filter: an nbdkit_next context, read and written in place.
 */

#ifndef VMDK_NEXT_SOURCE_H
#define VMDK_NEXT_SOURCE_H

#include <stdbool.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

struct vmdk_source;

/* A source over next, which must be prepared and stay open while the
 * source is in use.  Its one file is called name; opening any other
 * name fails with a message that points to the vmdk plugin.  With
 * serialize, calls into next are made one at a time (the layer below
 * is not PARALLEL, and next is shared by every connection).  The
 * capabilities of next are asked for now, so that no call into it
 * caches them later while other threads use it.  Returns NULL with
 * the engine's error set.
 */
extern struct vmdk_source *next_source_new (nbdkit_next *next,
                                            const char *name,
                                            bool serialize);

#endif /* VMDK_NEXT_SOURCE_H */
