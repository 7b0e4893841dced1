/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* seSparse (ESXi 6.5+ snapshots).  XXX Not implemented yet: every open
 * fails with a clear error.
 */

#include <config.h>

#include <errno.h>

#include "error.h"
#include "extent.h"

int
extent_sesparse_init (struct extent *e, struct gtcache *cache)
{
  return vmdk_error (ENOTSUP, "%s: seSparse extents are not supported yet",
                     e->io->name);
}
