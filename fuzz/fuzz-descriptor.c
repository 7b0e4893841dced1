/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* libFuzzer target: the text descriptor parser.
 *
 * The input is the descriptor text, unterminated (libFuzzer's buffer
 * is exactly the input's size, so ASan catches any read past it).  A
 * descriptor that parses must also satisfy the invariants the rest of
 * the engine relies on; a violation aborts.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor.h"
#include "fuzz.h"
#include "vmdk.h"


static void
check_descriptor (const struct descriptor *d)
{
  size_t i;

  CHECK (d->create_type != NULL);
  CHECK (d->nr_extents >= 1);
  CHECK (d->nr_extents <= DESCRIPTOR_MAX_EXTENTS);
  CHECK (d->extents != NULL);
  if (d->parent_hint)
    CHECK (strlen (d->parent_hint) <= DESCRIPTOR_MAX_BYTES);
  for (i = 0; i < d->nr_extents; ++i) {
    const struct descriptor_extent *e = &d->extents[i];

    CHECK (e->line != NULL);
    /* image.c multiplies by 512 without checking. */
    CHECK (e->sectors <= UINT64_MAX / 512);
    CHECK (e->access == ACCESS_RW || e->access == ACCESS_RDONLY ||
           e->access == ACCESS_NOACCESS);
    CHECK (strcmp (extent_type_name (e->type), "?") != 0);
    if (e->type == EXTENT_ZERO)
      CHECK (e->filename == NULL);
    else {
      CHECK (e->filename != NULL);
      CHECK (e->filename[0] != '\0');
      CHECK (strlen (e->filename) <= DESCRIPTOR_MAX_NAME);
    }
    if (e->type != EXTENT_FLAT)
      CHECK (e->offset == 0);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  const char *text = (const char *) data;
  struct descriptor *d;

  (void) descriptor_probe (text, size);
  d = descriptor_parse (text, size, "fuzz.vmdk");
  if (d == NULL) {
    /* The message must be a proper string. */
    CHECK (strlen (vmdk_errmsg ()) > 0);
    return 0;
  }
  check_descriptor (d);
  descriptor_free (d);
  return 0;
}
