/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* What an opened image is made of, for those who show it (vmdk info):
 * each link of the chain, its extents and their headers, the files and
 * what they take on the host.  Headers are read again here and decoded
 * by header.c, so the extent kinds need not export their state.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "descriptor.h"
#include "error.h"
#include "header.h"
#include "image.h"
#include "le.h"

/* seSparse constant header (extent-sesparse.c has the whole layout). */
#define SESPARSE_MAGIC UINT64_C (0x00000000cafebabe)
#define SESPARSE_OFF_VERSION 8
#define SESPARSE_OFF_FLAGS 40

bool
vmdk_probe (const void *buf, size_t len)
{
  if (len >= 4 && (sparse_header_is_magic (buf) || cowd_is_magic (buf)))
    return true;
  return descriptor_probe (buf, len);
}

const struct vmdk_image *
vmdk_get_link (const struct vmdk_image *img, unsigned depth)
{
  while (img && depth-- > 0)
    img = img->parent;
  return img;
}

/* The size and host allocation of a file (allocation: its size if the
 * source cannot tell).
 */
static int
file_usage (struct vmdk_io *io, uint64_t *size, uint64_t *allocated)
{
  if (io->ops->get_size (io, size) == -1)
    return -1;
  if (io->ops->get_allocated == NULL) {
    *allocated = *size;
    return 0;
  }
  return io->ops->get_allocated (io, allocated);
}

/* The header fields of a grain-structured extent, from its file. */
static int
read_header (struct extent *e, struct vmdk_extent_info *ei)
{
  unsigned char buf[COWD_HEADER_SIZE];
  struct sparse_header sh;
  struct cowd_header ch;
  int64_t n;

  n = e->io->ops->pread (e->io, buf, sizeof buf, 0);
  if (n == -1)
    return -1;
  memset (buf + n, 0, sizeof buf - n);
  if (n >= SPARSE_HEADER_SIZE && sparse_header_is_magic (buf)) {
    if (sparse_header_decode (buf, &sh, e->io->name) == -1)
      return -1;
    ei->format = "KDMV";
    ei->version = sh.version;
    ei->flags = sh.flags;
    ei->compressed = (sh.flags & SPARSE_FLAG_COMPRESSED) != 0;
    ei->unclean_shutdown = sh.unclean_shutdown != 0;
  }
  else if (n == COWD_HEADER_SIZE && cowd_is_magic (buf)) {
    if (cowd_header_decode (buf, &ch, e->io->name) == -1)
      return -1;
    ei->format = "COWD";
    ei->version = ch.version;
    ei->flags = ch.flags;
    ei->unclean_shutdown = get_le32 (buf + COWD_OFF_UNCLEAN) != 0;
  }
  else if (get_le64 (buf) == SESPARSE_MAGIC) {
    ei->format = "seSparse";
    ei->version = get_le64 (buf + SESPARSE_OFF_VERSION);
    ei->flags = get_le64 (buf + SESPARSE_OFF_FLAGS);
  }
  else
    return vmdk_error (EIO, "%s: the extent's header changed since it was "
                       "opened", e->io->name);
  ei->has_header = true;
  return 0;
}

int
vmdk_get_extent_info (const struct vmdk_image *img, size_t i,
                      struct vmdk_extent_info *ei)
{
  const struct descriptor_extent *de;
  struct extent *e;

  if (i >= img->nr_extents)
    return vmdk_error (EINVAL, "%s: no extent %zu", img->name, i);
  de = &img->desc->extents[i];
  e = &img->extents[i];
  memset (ei, 0, sizeof *ei);
  ei->access = extent_access_name (de->access);
  ei->type = extent_type_name (de->type);
  ei->sectors = de->sectors;
  ei->file = e->io ? e->io->name : NULL;
  ei->offset = de->type == EXTENT_FLAT ? de->offset : 0;
  ei->grain_size = e->grain_size;
  ei->format = e->io ? "flat" : "zero";
  if (e->io == NULL)
    return 0;
  if (file_usage (e->io, &ei->file_size, &ei->allocated_size) == -1)
    return -1;
  if (e->grain_size != 0)
    return read_header (e, ei);
  return 0;
}

int
vmdk_get_link_info (const struct vmdk_image *img, struct vmdk_link_info *li)
{
  const struct descriptor *d = img->desc;
  struct vmdk_extent_info ei;
  size_t i;

  memset (li, 0, sizeof *li);
  li->file = img->name;
  li->create_type = d->create_type;
  li->size = img->size;
  li->has_cid = d->has_cid;
  li->cid = d->cid;
  li->parent_cid = d->parent_cid;
  li->parent = d->parent_hint;
  li->nr_extents = img->nr_extents;
  li->nr_ddb = d->nr_ddb;
  for (i = 0; i < img->nr_ios; ++i) {
    uint64_t size, allocated;

    if (file_usage (img->ios[i], &size, &allocated) == -1)
      return -1;
    li->file_size += size;
    li->allocated_size += allocated;
  }
  for (i = 0; i < img->nr_extents; ++i) {
    if (img->extents[i].grain_size == 0)
      continue;
    if (vmdk_get_extent_info (img, i, &ei) == -1)
      return -1;
    li->unclean_shutdown |= ei.unclean_shutdown;
  }
  return 0;
}

int
vmdk_get_ddb (const struct vmdk_image *img, size_t i, const char **key,
              const char **value)
{
  if (i >= img->desc->nr_ddb)
    return vmdk_error (EINVAL, "%s: no ddb key %zu", img->name, i);
  *key = img->desc->ddb[i].key;
  *value = img->desc->ddb[i].value;
  return 0;
}
