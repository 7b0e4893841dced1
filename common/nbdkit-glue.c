/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <stdint.h>

/* Only nbdkit's common API is used, which nbdkit-common.h declares for
 * plugins and filters alike; it must be included through either.
 */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "nbdkit-glue.h"

static void
log_to_nbdkit (unsigned category, const char *msg)
{
  if (category == VMDK_LOG_WARNING)
    nbdkit_error ("warning: %s", msg);
  else
    nbdkit_debug ("%s", msg);
}

void
glue_set_debug (int open, int grains, int cache)
{
  vmdk_set_debug (log_to_nbdkit,
                  (open ? VMDK_DEBUG_OPEN : 0) |
                  (grains ? VMDK_DEBUG_GRAINS : 0) |
                  (cache ? VMDK_DEBUG_CACHE : 0));
}

void
glue_report_error (void)
{
  int saved_errno = errno;

  nbdkit_error ("%s", vmdk_errmsg ());
  errno = saved_errno;
}

unsigned
glue_write_flags (uint32_t flags)
{
  unsigned f = 0;

  if (flags & NBDKIT_FLAG_FUA) f |= VMDK_FUA;
  if (flags & NBDKIT_FLAG_MAY_TRIM) f |= VMDK_MAY_TRIM;
  if (flags & NBDKIT_FLAG_FAST_ZERO) f |= VMDK_FAST_ZERO;
  return f;
}

static int
add_extent (void *opaque, uint64_t offset, uint64_t length,
            enum vmdk_map_type type)
{
  struct nbdkit_extents *extents = opaque;
  uint32_t t = 0;

  if (type == VMDK_MAP_HOLE)
    t = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
  else if (type == VMDK_MAP_ZERO)
    t = NBDKIT_EXTENT_ZERO;
  return nbdkit_add_extent (extents, offset, length, t) == -1 ? -1 : 0;
}

/* With REQ_ONE the client wants only the extent covering offset. */
static int
add_one_extent (void *opaque, uint64_t offset, uint64_t length,
                enum vmdk_map_type type)
{
  if (add_extent (opaque, offset, length, type) == -1)
    return -1;
  return 1;
}

int
glue_extents (struct vmdk_image *img, uint32_t count, uint64_t offset,
              uint32_t flags, struct nbdkit_extents *extents)
{
  vmdk_map_fn fn = (flags & NBDKIT_FLAG_REQ_ONE) ? add_one_extent
                                                 : add_extent;

  if (vmdk_map (img, offset, count, fn, extents) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}
