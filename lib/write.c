/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Writes to the top link of a chain: whether it can be written at all,
 * the first change (unclean flags, a new CID), and each request split
 * across extents after its access has been checked.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "image.h"
#include "zero.h"

/* Decide whether the top link can be written; if not, the image stays
 * readable and vmdk_is_writable gives the reason.
 */
int
image_prepare_writes (struct vmdk_image *img, const struct vmdk_options *opts)
{
  size_t i;

  if (img->ro_reason)           /* a file could not be opened RW */
    return 0;
  if (opts->single_link && image_has_parent (img)) {
    img->ro_reason = "single-link: the parent is not open, so a partial "
      "write could not copy the rest of a grain from it";
    return 0;
  }
  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];
    const char *reason = NULL;
    int r;

    if (e->access != ACCESS_RW)   /* refused per request instead */
      continue;
    if (e->ops->open_rw == NULL) {
      snprintf (img->ro_reason_buf, sizeof img->ro_reason_buf,
                "%s extents are read-only (\"%s\")", e->ops->kind, e->line);
      img->ro_reason = img->ro_reason_buf;
      return 0;
    }
    r = e->ops->open_rw (e, &reason);
    if (r == -1)
      return -1;
    if (r == 1) {
      snprintf (img->ro_reason_buf, sizeof img->ro_reason_buf, "%s: %s",
                e->io ? e->io->name : img->name, reason);
      img->ro_reason = img->ro_reason_buf;
      return 0;
    }
  }
  img->writable = true;
  return 0;
}

bool
vmdk_is_writable (const struct vmdk_image *img, const char **reason)
{
  if (reason)
    *reason = img->writable ? NULL
      : img->ro_reason ? img->ro_reason : "opened read-only";
  return img->writable;
}

/* A new CID, written over the old value's digits in place (same width,
 * so only those bytes of the descriptor change: QEMU's rewrite of the
 * whole descriptor drops lines).
 */
static int
update_cid (struct vmdk_image *img)
{
  struct vmdk_io *io = img->ios[0];
  size_t len = img->desc_length, start, width;
  char *text, digits[17];
  uint32_t cid;
  int r;

  text = malloc (len);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = io_pread_full (io, text, len, img->desc_offset, "descriptor");
  if (r == 0)
    r = descriptor_find_cid (text, len, &start, &width, img->name);
  free (text);
  if (r == 0)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: no CID line to update", img->name);
  if (r <= 0)
    return r;

  cid = descriptor_random_cid (width, img->desc->cid);
  snprintf (digits, sizeof digits, "%0*" PRIx32, (int) width, cid);
  if (io->ops->pwrite (io, digits, width, img->desc_offset + start) == -1)
    return -1;
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: CID %08" PRIx32 " -> %08" PRIx32,
              img->name, img->desc->cid, cid);
  img->desc->cid = cid;
  return 0;
}

/* Before the first change: a new CID (children of the old contents must
 * no longer match) and the unclean-shutdown flags.
 */
static int
begin_change (struct vmdk_image *img)
{
  int r = 0;
  size_t i;

  if (!img->writable) {
    const char *reason;

    vmdk_is_writable (img, &reason);
    return vmdk_error (EPERM, "%s: the image is read-only: %s", img->name,
                       reason);
  }
  if (__atomic_load_n (&img->modified, __ATOMIC_ACQUIRE))
    return 0;
  pthread_mutex_lock (&img->write_lock);
  if (!img->modified) {
    for (i = 0; r == 0 && i < img->nr_extents; ++i)
      if (img->extents[i].access == ACCESS_RW)
        r = img->extents[i].ops->begin_rw (&img->extents[i]);
    if (r == 0)
      r = update_cid (img);
    if (r == 0)
      __atomic_store_n (&img->modified, true, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&img->write_lock);
  return r;
}

static int
read_below (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct vmdk_image *img = opaque;

  if (img->parent)
    return chain_read_parent (img->parent, buf, count, offset);
  memset (buf, 0, count);
  return 0;
}

enum change { CHANGE_WRITE, CHANGE_ZERO, CHANGE_CHECK_FAST_ZERO,
              CHANGE_TRIM };

/* Apply one kind of change over [offset, offset+count), extent by
 * extent.
 */
static int
change_range (struct vmdk_image *img, enum change what, const void *buf,
              uint64_t count, uint64_t offset, unsigned flags)
{
  const struct write_ctx ctx = {
    .read_below = read_below,
    .opaque = img,
    .has_parent = img->parent != NULL,
    .compression_level = img->compression_level,
  };
  const unsigned char *b = buf;
  uint64_t end;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: request of %" PRIu64 " bytes at offset %"
                       PRIu64 " is beyond the end of the disk", img->name,
                       count, offset);
  while (count > 0) {
    struct extent *e = image_find_extent (img, offset);
    uint64_t rel = offset - e->start, n = MIN (count, e->length - rel);
    unsigned zflags = 0;
    int r = 0;

    if (flags & VMDK_MAY_TRIM) zflags |= EXTENT_ZERO_MAY_TRIM;
    if (flags & VMDK_FAST_ZERO) zflags |= EXTENT_ZERO_FAST;
    if (e->access != ACCESS_RW)
      r = 0;                    /* refused up front; trim is advisory */
    else switch (what) {
    case CHANGE_WRITE:
      r = e->ops->pwrite (e, b, n, rel, &ctx);
      b += n;
      break;
    case CHANGE_ZERO:
      r = e->ops->zero (e, rel, n, zflags, &ctx);
      break;
    case CHANGE_CHECK_FAST_ZERO:
      r = e->ops->zero (e, rel, n, zflags | EXTENT_ZERO_CHECK_ONLY, &ctx);
      break;
    case CHANGE_TRIM:
      r = e->ops->trim (e, rel, n, &ctx);
      break;
    }
    if (r == -1)
      return -1;
    offset += n;
    count -= n;
  }
  return 0;
}

/* Refuse a write or zero that touches a RDONLY or NOACCESS extent (or
 * writes non-zero data into a ZERO extent) before anything changes: a
 * request is never half applied.
 */
static int
check_access (struct vmdk_image *img, const unsigned char *buf,
              uint64_t count, uint64_t offset)
{
  uint64_t end, start = offset;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: request of %" PRIu64 " bytes at offset %"
                       PRIu64 " is beyond the end of the disk", img->name,
                       count, offset);
  while (offset < end) {
    struct extent *e = image_find_extent (img, offset);

    if (e->access == ACCESS_NOACCESS)
      return vmdk_error (EIO, "%s: offset %" PRIu64 " falls in a NOACCESS "
                         "extent (\"%s\")", img->name, offset, e->line);
    if (e->access == ACCESS_RDONLY)
      return vmdk_error (EPERM, "%s: offset %" PRIu64 " falls in a RDONLY "
                         "extent (\"%s\")", img->name, offset, e->line);
    /* A ZERO extent (the only kind without a file) takes only zeroes. */
    if (buf && e->io == NULL &&
        !is_all_zero (buf + (offset - start),
                   MIN (end, e->start + e->length) - offset))
      return vmdk_error (EPERM, "%s: write of non-zero data at offset %"
                         PRIu64 " into a ZERO extent (\"%s\")", img->name,
                         offset, e->line);
    offset = e->start + e->length;
  }
  return 0;
}

int
vmdk_pwrite (struct vmdk_image *img, const void *buf, size_t count,
             uint64_t offset, unsigned flags)
{
  if (check_access (img, buf, count, offset) == -1 ||
      begin_change (img) == -1 ||
      change_range (img, CHANGE_WRITE, buf, count, offset, 0) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_zero (struct vmdk_image *img, uint64_t count, uint64_t offset,
           unsigned flags)
{
  if (check_access (img, NULL, count, offset) == -1 ||
      begin_change (img) == -1)
    return -1;
  /* A fast zero that cannot be fast fails before anything changes. */
  if ((flags & VMDK_FAST_ZERO) &&
      change_range (img, CHANGE_CHECK_FAST_ZERO, NULL, count, offset,
                    flags) == -1)
    return -1;
  if (change_range (img, CHANGE_ZERO, NULL, count, offset, flags) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_trim (struct vmdk_image *img, uint64_t count, uint64_t offset,
           unsigned flags)
{
  if (begin_change (img) == -1 ||
      change_range (img, CHANGE_TRIM, NULL, count, offset, 0) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_flush (struct vmdk_image *img)
{
  size_t i;

  if (!img->writable)
    return 0;
  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];

    if (e->access == ACCESS_RW && e->ops->flush (e) == -1)
      return -1;
  }
  /* The descriptor (CID) may live in a file of its own. */
  return img->ios[0]->ops->flush (img->ios[0]);
}

void
image_end_writes (struct vmdk_image *img)
{
  size_t i;

  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];

    if (e->access == ACCESS_RW && e->ops->close_rw (e) == -1)
      vmdk_warning ("%s: closing: %s", img->name, vmdk_errmsg ());
  }
  if (img->ios[0]->ops->flush (img->ios[0]) == -1)
    vmdk_warning ("%s: closing: %s", img->name, vmdk_errmsg ());
}
