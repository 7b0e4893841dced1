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
 * The whole input (up to -max_len, 1 KiB in check-fuzz: the constant
 * and the volatile header) is also opened as a seSparse extent file:
 * the constant header, the regions, the volatile header and the grain
 * directory are checked there.
 */

#include <config.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "extent.h"
#include "fuzz.h"
#include "gtcache.h"
#include "header.h"
#include "io.h"
#include "vmdk.h"


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

/* Open the input as a seSparse extent file.  Whatever it holds, the
 * open either fails with a message or yields a sane extent.
 */
static void
check_sesparse (const uint8_t *data, size_t size)
{
  struct vmdk_source *src = vmdk_source_memory_new ();
  struct gtcache *cache = gtcache_new (1024 * 1024);
  struct extent e = { .access = ACCESS_RDONLY };

  if (src == NULL || cache == NULL ||
      vmdk_source_memory_add (src, "fuzz-sesparse.vmdk", data, size) == -1)
    goto out;
  e.io = src->ops->open (src, "fuzz-sesparse.vmdk", true);
  if (e.io == NULL)
    goto out;
  if (extent_sesparse_init (&e, cache) == 0)
    CHECK (e.grain_size == 4096);
  else
    CHECK (strlen (vmdk_errmsg ()) > 0);
  if (e.ops && e.ops->free)
    e.ops->free (&e);
  io_close (e.io);
 out:
  if (cache)
    gtcache_free (cache);
  if (src)
    src->ops->close (src);
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

  check_sesparse (data, size);
  return 0;
}
