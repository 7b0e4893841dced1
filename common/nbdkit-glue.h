/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* What the plugin and the filter both need between nbdkit and the
 * engine: log routing, flag translation and block status.  It uses
 * only nbdkit's common API (nbdkit-common.h), so it serves both.
 */

#ifndef VMDK_NBDKIT_GLUE_H
#define VMDK_NBDKIT_GLUE_H

#include <stdint.h>

#include "vmdk.h"

struct nbdkit_extents;

/* Route the engine's log to nbdkit (debug lines, warnings as errors),
 * with the categories of the -D vmdk.open, vmdk.grains and vmdk.cache
 * flags (each front end defines and exports its own flag variables).
 */
extern void glue_set_debug (int open, int grains, int cache);

/* Report the engine's last error with nbdkit_error; errno is kept. */
extern void glue_report_error (void);

/* The engine's flags for nbdkit's write, zero and trim flags. */
extern unsigned glue_write_flags (uint32_t nbdkit_flags);

/* Block status of [offset, offset + count) into extents; with
 * NBDKIT_FLAG_REQ_ONE only the extent covering offset.  -1 with the
 * error reported (errno set).
 */
extern int glue_extents (struct vmdk_image *img, uint32_t count,
                         uint64_t offset, uint32_t flags,
                         struct nbdkit_extents *extents);

#endif /* VMDK_NBDKIT_GLUE_H */
