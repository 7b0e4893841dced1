/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* COWD (VMDK3, ESX vmfsSparse redo logs).  XXX Not implemented yet:
 * every open fails with a clear error.
 */

#include <config.h>

#include <errno.h>
#include <string.h>

#include "error.h"
#include "extent.h"

bool
cowd_is_magic (const unsigned char *buf)
{
  return memcmp (buf, "COWD", 4) == 0;
}

int
cowd_capacity (const unsigned char *buf, uint64_t *sectors, const char *name)
{
  return vmdk_error (ENOTSUP, "%s: COWD (VMDK3 / vmfsSparse) extents are "
                     "not supported yet", name);
}

int
extent_cowd_init (struct extent *e, struct gtcache *cache)
{
  return cowd_capacity (NULL, NULL, e->io->name);
}
