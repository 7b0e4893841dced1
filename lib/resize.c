/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Growing an image (vmdk resize): the last extent grows (a split
 * image's up to 2047 MiB), then new extent files are added, and the
 * descriptor gets the new extent lines, geometry and a new CID.
 *
 * Everything is decided before the first change.  Then, each step made
 * durable before the next:
 *
 *   1. in the last extent, what lies past its old end is made to read
 *      as zeroes (grain-table entries a writer left beyond it, the tail
 *      of a partial last grain, bytes past a flat extent's end);
 *   2. a sparse extent gets the grain tables (and directory entries)
 *      its new size needs, appended to the file; a directory that has
 *      no room for them is written whole at the end of the file, with
 *      its redundant copy; then one header sector write switches the
 *      capacity (and the directories) over; a flat extent's file grows;
 *   3. new extent files are created;
 *   4. the descriptor is replaced: in a descriptor file by a new file
 *      renamed over it, in a monolithic file in place.
 *
 * A crash at any point leaves an image that reads as before (at its
 * old size, with space leaked at the end of a file, or extent files
 * that nothing names yet), never a corrupt one.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checked.h"
#include "create.h"
#include "descriptor.h"
#include "error.h"
#include "header.h"
#include "image.h"
#include "resize.h"

/* Hosted sparse extents address grains with 32-bit sector numbers. */
#define MAX_SPARSE_SECTORS (UINT64_C (1) << 32)

/* The createTypes that can grow. */
static const struct {
  const char *create_type;
  bool split, sparse;
} growable[] = {
  { "monolithicSparse", false, true },
  { "twoGbMaxExtentSparse", true, true },
  { "2GbMaxExtentSparse", true, true },
  { "monolithicFlat", false, false },
  { "twoGbMaxExtentFlat", true, false },
  { "2GbMaxExtentFlat", true, false },
  { "vmfs", false, false },
  { "vmfsPreallocated", false, false },
  { "vmfsEagerZeroedThick", false, false },
  { "vmfsThin", false, false },
};
#define NR_GROWABLE (sizeof growable / sizeof growable[0])

struct grow {
  struct vmdk_image *img;
  bool split, sparse;
  uint64_t old_sectors, new_sectors;
  uint64_t last_sectors;         /* the last extent's new size */
  struct descriptor_extent *exts; /* every extent afterwards */
  size_t nr_exts, nr_old;
  char *desc;                     /* the new descriptor, NULL if none */
  size_t desc_len;
};

static void
free_grow (struct grow *g)
{
  size_t i;

  for (i = g->nr_old; i < g->nr_exts; ++i)
    free (g->exts[i].filename);
  free (g->exts);
  free (g->desc);
}

/* Refuse images this cannot grow, with the reason. */
static int
check_growable (struct grow *g)
{
  struct vmdk_image *img = g->img;
  const char *ct = img->desc->create_type, *reason;
  size_t i;

  if (!vmdk_is_writable (img, &reason))
    return vmdk_error (EPERM, "%s: the image cannot be written: %s",
                       img->name, reason);
  for (i = 0; i < NR_GROWABLE; ++i)
    if (strcasecmp (ct, growable[i].create_type) == 0)
      break;
  if (i == NR_GROWABLE) {
    if (strcasecmp (ct, "streamOptimized") == 0)
      return vmdk_error (ENOTSUP, "%s: streamOptimized images cannot be "
                         "resized (their grains are written once, in "
                         "order): convert to monolithic-sparse, resize, "
                         "and convert back", img->name);
    return vmdk_error (ENOTSUP, "%s: createType=\"%s\" cannot be resized "
                       "(monolithicSparse, monolithicFlat, "
                       "twoGbMaxExtentSparse, twoGbMaxExtentFlat and vmfs "
                       "can)", img->name, ct);
  }
  g->split = growable[i].split;
  g->sparse = growable[i].sparse;
  for (i = 0; i < img->nr_extents; ++i) {
    const struct extent *e = &img->extents[i];
    bool ok = g->sparse ? strcmp (e->ops->kind, "SPARSE") == 0 &&
                          e->dir != NULL && e->ops->read_compressed == NULL
                        : strcmp (e->ops->kind, "FLAT") == 0;

    if (!ok)
      return vmdk_error (ENOTSUP, "%s: line %u: the extent \"%s\" is not "
                         "of the kind createType=\"%s\" has (%s)", img->name,
                         img->desc->extents[i].line_no, e->line, ct,
                         g->sparse ? "uncompressed hosted sparse" : "flat");
  }
  if (img->extents[img->nr_extents - 1].access != ACCESS_RW)
    return vmdk_error (EPERM, "%s: the last extent (\"%s\") is not RW",
                       img->name, img->extents[img->nr_extents - 1].line);
  return 0;
}

/* A parent longer than the old size would show through the new tail. */
static int
check_parent (const struct grow *g)
{
  const struct vmdk_image *p = g->img->parent;

  if (p && p->size > g->old_sectors * SECTOR)
    return vmdk_error (ENOTSUP, "%s: the parent %s is larger (%" PRIu64
                       " bytes) than the image: its data would show in "
                       "the new space", g->img->name, p->name, p->size);
  return 0;
}

/* The extents afterwards: the last one grown, new files added. */
static int
plan_extents (struct grow *g)
{
  const struct descriptor *d = g->img->desc;
  const struct descriptor_extent *last = &d->extents[d->nr_extents - 1];
  uint64_t add = g->new_sectors - g->old_sectors, grow = add, rest, n, i;

  if (g->split)
    grow = last->sectors < CREATE_SPLIT_SECTORS
      ? MIN (add, CREATE_SPLIT_SECTORS - last->sectors) : 0;
  g->last_sectors = last->sectors + grow;
  rest = add - grow;
  n = g->split ? div_round_up (rest, CREATE_SPLIT_SECTORS) : 0;
  if (d->nr_extents + n > CREATE_MAX_SPLIT_EXTENTS)
    return vmdk_error (EFBIG, "%s: %" PRIu64 " bytes would take %" PRIu64
                       " extent files, more than the limit of %d",
                       g->img->name, g->new_sectors * SECTOR,
                       d->nr_extents + n, CREATE_MAX_SPLIT_EXTENTS);
  if (g->sparse && g->last_sectors > MAX_SPARSE_SECTORS)
    return vmdk_error (EFBIG, "%s: a hosted sparse extent holds at most %"
                       PRIu64 " bytes (use split-sparse for more)",
                       g->img->name, MAX_SPARSE_SECTORS * SECTOR);
  g->nr_old = d->nr_extents;
  g->exts = calloc (d->nr_extents + n, sizeof *g->exts);
  if (g->exts == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  memcpy (g->exts, d->extents, d->nr_extents * sizeof *g->exts);
  g->nr_exts = d->nr_extents;
  g->exts[g->nr_exts - 1].sectors = g->last_sectors;
  for (i = 0; i < n; ++i) {
    struct descriptor_extent *e = &g->exts[g->nr_exts];
    struct vmdk_io *io;

    e->access = ACCESS_RW;
    e->type = g->sparse ? EXTENT_SPARSE : EXTENT_FLAT;
    e->sectors = MIN (CREATE_SPLIT_SECTORS, rest - i * CREATE_SPLIT_SECTORS);
    e->filename = create_extent_name (g->img->name, g->sparse
                                      ? CREATE_SPLIT_SPARSE_SUFFIX
                                      : CREATE_SPLIT_FLAT_SUFFIX,
                                      g->nr_exts + 1);
    if (e->filename == NULL)
      return -1;
    g->nr_exts++;
    io = g->img->src->ops->open (g->img->src, e->filename, true);
    if (io) {
      io_close (io);
      return vmdk_error (EEXIST, "%s: the new extent file %s exists "
                         "already (left by an interrupted resize?): "
                         "refusing to overwrite it", g->img->name,
                         e->filename);
    }
  }
  return 0;
}

/* A ddb key's numeric value, or def. */
static uint32_t
ddb_number (const struct descriptor *d, const char *key, uint32_t def)
{
  size_t i;
  unsigned long v;
  char *end;

  for (i = 0; i < d->nr_ddb; ++i)
    if (strcasecmp (d->ddb[i].key, key) == 0) {
      v = strtoul (d->ddb[i].value, &end, 10);
      return *end == '\0' && v > 0 && v <= 255 ? v : def;
    }
  return def;
}

/* The cylinders of the new size, with the heads and sectors per track
 * the descriptor has.
 */
static uint32_t
cylinders (const struct grow *g)
{
  const struct descriptor *d = g->img->desc;
  bool ide = false;
  struct geometry geo;
  uint64_t c;
  size_t i;

  for (i = 0; i < d->nr_ddb; ++i)
    if (strcasecmp (d->ddb[i].key, "ddb.adapterType") == 0)
      ide = strcasecmp (d->ddb[i].value, "ide") == 0;
  geo = descriptor_geometry (g->new_sectors, ide);
  c = div_round_up (g->new_sectors,
                    (uint64_t) ddb_number (d, "ddb.geometry.heads", geo.heads)
                    * ddb_number (d, "ddb.geometry.sectors", geo.sectors));
  return MIN (c, ide ? UINT64_C (16383) : UINT64_C (65535));
}

/* The new descriptor text (none for a bare sparse file). */
static int
plan_descriptor (struct grow *g)
{
  struct vmdk_image *img = g->img;
  char *text;
  int r;

  if (img->desc_length == 0)
    return 0;
  text = malloc (img->desc_length);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = io_pread_full (img->ios[0], text, img->desc_length, img->desc_offset,
                     "descriptor");
  if (r == 0) {
    g->desc = descriptor_rewrite (text, img->desc_length, g->exts,
                                  g->nr_exts,
                                  descriptor_random_cid (8, img->desc->cid),
                                  cylinders (g), &g->desc_len);
    r = g->desc ? 0 : -1;
  }
  free (text);
  /* An embedded descriptor must fit where it is (with a NUL). */
  if (r == 0 && img->desc_offset > 0 && g->desc_len >= img->desc_length)
    r = vmdk_error (ENOSPC, "%s: the new descriptor (%zu bytes) does not "
                    "fit the %" PRIu64 " bytes reserved for it", img->name,
                    g->desc_len, img->desc_length);
  return r;
}

/* Steps 1 and 2 for the last extent, flat (file offset base bytes). */
static int
grow_flat (struct extent *e, uint64_t base, uint64_t new_len)
{
  const struct write_ctx ctx = { 0 };
  uint64_t size, start = base + e->length, stop;

  if (ADD_OVERFLOW (base, new_len, &stop) || stop > INT64_MAX)
    return vmdk_error (EFBIG, "%s: the extent would end past 2^63 bytes",
                       e->io->name);
  if (e->io->ops->get_size (e->io, &size) == -1)
    return -1;
  /* Bytes already in the file past the old end: zeroes. */
  if (size > start &&
      e->ops->zero (e, e->length, MIN (size, stop) - start,
                    EXTENT_ZERO_MAY_TRIM, &ctx) == -1)
    return -1;
  if (e->io->ops->extend (e->io, stop) == -1)
    return -1;
  return e->io->ops->flush (e->io);
}

/* Step 3: the new extent files, all or none. */
static int
create_files (struct grow *g)
{
  struct vmdk_source *src = g->img->src;
  size_t i, made = g->nr_old;
  int r = 0;

  for (i = g->nr_old; r == 0 && i < g->nr_exts; ++i) {
    const struct descriptor_extent *e = &g->exts[i];
    struct vmdk_io *io = src->ops->create (src, e->filename);

    if (io == NULL)
      r = -1;
    else {
      made = i + 1;
      r = g->sparse ? create_sparse_extent (io, e->sectors, NULL, 0)
                    : create_flat_extent (io, e->sectors);
      if (r == 0)
        r = io->ops->flush (io);
      io_close (io);
    }
  }
  if (r == 0 && src->ops->sync_names)
    r = src->ops->sync_names (src);
  if (r == -1)
    for (i = g->nr_old; i < made; ++i)
      if (src->ops->remove (src, g->exts[i].filename) == -1)
        vmdk_warning ("resize failed, and so did removing its file: %s",
                      vmdk_errmsg ());
  return r;
}

/* Step 4: the new descriptor, replacing the old at once. */
static int
write_descriptor (struct grow *g)
{
  struct vmdk_image *img = g->img;
  struct vmdk_source *src = img->src;
  struct vmdk_io *io = img->ios[0];
  char *tmp, *buf;
  int r;

  if (g->desc == NULL)
    return 0;
  if (img->desc_offset > 0) {   /* embedded: in place, NUL-padded */
    buf = calloc (1, img->desc_length);
    if (buf == NULL)
      return vmdk_error (ENOMEM, "calloc: %m");
    memcpy (buf, g->desc, g->desc_len);
    r = io->ops->pwrite (io, buf, img->desc_length, img->desc_offset);
    free (buf);
    return r == 0 ? io->ops->flush (io) : -1;
  }
  if (src->ops->rename == NULL)
    return vmdk_error (ENOTSUP, "%s: this byte source cannot replace "
                       "files", img->name);
  if (asprintf (&tmp, "%s.resizing", img->name) == -1)
    return vmdk_error (ENOMEM, "asprintf: %m");
  io = src->ops->create (src, tmp);
  r = io ? 0 : -1;
  if (r == 0) {
    r = io->ops->pwrite (io, g->desc, g->desc_len, 0);
    if (r == 0)
      r = io->ops->flush (io);
    io_close (io);
    if (r == 0)
      r = src->ops->rename (src, tmp, img->name);
    if (r == -1)
      src->ops->remove (src, tmp);
  }
  free (tmp);
  if (r == 0 && src->ops->sync_names)
    r = src->ops->sync_names (src);
  return r;
}

static int
grow_image (struct vmdk_image *img, uint64_t size)
{
  struct grow g = { .img = img };
  struct extent *last = &img->extents[img->nr_extents - 1];
  const struct descriptor_extent *de = &img->desc->extents[img->nr_extents - 1];
  int r = -1;

  g.old_sectors = img->size / SECTOR;
  g.new_sectors = size / SECTOR;
  if (check_growable (&g) == -1 || check_parent (&g) == -1 ||
      plan_extents (&g) == -1 || plan_descriptor (&g) == -1)
    goto out;
  if (g.last_sectors > de->sectors &&
      (g.sparse ? resize_sparse_extent (last, g.last_sectors)
                : grow_flat (last, de->type == EXTENT_FLAT
                             ? de->offset * SECTOR : 0,
                             g.last_sectors * SECTOR)) == -1)
    goto out;
  if (create_files (&g) == -1 || write_descriptor (&g) == -1)
    goto out;
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: grown from %" PRIu64 " to %" PRIu64
              " bytes, %zu extents", img->name, img->size, size, g.nr_exts);
  r = 0;
 out:
  free_grow (&g);
  return r;
}

int
vmdk_resize (const char *path, uint64_t size, const struct vmdk_options *opts)
{
  struct vmdk_options o = { 0 };
  struct vmdk_image *img;
  int r;

  if (opts)
    o = *opts;
  o.readonly = false;
  o.single_link = false;
  img = vmdk_open (path, &o);
  if (img == NULL)
    return -1;
  if (size % SECTOR != 0)
    r = vmdk_error (EINVAL, "%s: the new size, %" PRIu64 " bytes, is not "
                    "a multiple of 512", img->name, size);
  else if (size < img->size)
    r = vmdk_error (EINVAL, "%s: shrinking (from %" PRIu64 " to %" PRIu64
                    " bytes) is not supported: it would lose data",
                    img->name, img->size, size);
  else if (size == img->size)
    r = 0;
  else
    r = grow_image (img, size);
  vmdk_close (img);
  return r;
}
