/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* libFuzzer target: the on-disk header decoders.
 *
 * The first 512 bytes of the input (short inputs padded with zeroes)
 * are decoded as a hosted sparse ("KDMV") header and as a COWD header.
 * A KDMV header that decodes must survive an encode / decode round
 * trip unchanged and satisfy the limits the extent code relies on.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extent.h"
#include "header.h"
#include "vmdk.h"

#define CHECK(cond) \
  do { \
    if (!(cond)) { \
      fprintf (stderr, "%s:%d: invariant failed: %s\n", \
               __FILE__, __LINE__, #cond); \
      abort (); \
    } \
  } while (0)

static void
check_sparse (const struct sparse_header *h)
{
  unsigned char again[SPARSE_HEADER_SIZE];
  struct sparse_header h2;

  CHECK (h->version >= 1 && h->version <= 3);
  CHECK (h->grain_size >= 1 && h->grain_size <= SPARSE_MAX_GRAIN_SECTORS);
  CHECK ((h->grain_size & (h->grain_size - 1)) == 0);
  CHECK (h->num_gtes_per_gt >= 1 &&
         h->num_gtes_per_gt <= SPARSE_MAX_GTES_PER_GT);
  CHECK (h->capacity <= SPARSE_MAX_CAPACITY);
  CHECK (h->gd_offset != 0);

  sparse_header_encode (h, again);
  memset (&h2, 0, sizeof h2);
  CHECK (sparse_header_decode (again, &h2, "fuzz-roundtrip") == 0);
  CHECK (h2.version == h->version);
  CHECK (h2.flags == h->flags);
  CHECK (h2.capacity == h->capacity);
  CHECK (h2.grain_size == h->grain_size);
  CHECK (h2.desc_offset == h->desc_offset);
  CHECK (h2.desc_size == h->desc_size);
  CHECK (h2.num_gtes_per_gt == h->num_gtes_per_gt);
  CHECK (h2.rgd_offset == h->rgd_offset);
  CHECK (h2.gd_offset == h->gd_offset);
  CHECK (h2.overhead == h->overhead);
  CHECK (h2.unclean_shutdown == h->unclean_shutdown);
  CHECK (h2.compress_algorithm == h->compress_algorithm);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  unsigned char *buf;
  struct sparse_header h;
  uint64_t sectors;

  /* A heap copy of exactly one header, so ASan sees any overread. */
  buf = calloc (1, SPARSE_HEADER_SIZE);
  if (buf == NULL)
    return 0;
  memcpy (buf, data, size < SPARSE_HEADER_SIZE ? size : SPARSE_HEADER_SIZE);

  memset (&h, 0, sizeof h);
  if (sparse_header_decode (buf, &h, "fuzz.vmdk") == 0) {
    CHECK (sparse_header_is_magic (buf));
    check_sparse (&h);
  }
  else
    CHECK (strlen (vmdk_errmsg ()) > 0);

  if (cowd_is_magic (buf) && cowd_capacity (buf, &sectors, "fuzz.vmdk") == 0)
    CHECK (sectors <= UINT64_MAX / 512);

  free (buf);
  return 0;
}
