/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Snapshot chains: a link's parent is named by parentFileNameHint (or,
 * in a bare COWD redo log, by its header), found relative to the
 * link's directory, opened read-only and checked against parentCID.
 * Ranges a link does not allocate are read and mapped through it.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "image.h"

/* Record the main file of a link in the chain, refusing loops (by
 * device and inode, so another name for the same file is caught too)
 * and chains deeper than the limit.
 */
int
chain_enter (struct chain *chain, struct vmdk_io *io)
{
  uint64_t id[2];
  unsigned i;

  if (io->ops->get_id (io, id) == -1)
    return -1;
  for (i = 0; i < chain->depth; ++i)
    if (chain->ids[i][0] == id[0] && chain->ids[i][1] == id[1])
      return vmdk_error (ELOOP, "%s: the parent chain loops back to this "
                         "file (parentFileNameHint cycle)", io->name);
  if (chain->depth >= VMDK_MAX_CHAIN_DEPTH)
    return vmdk_error (ELOOP, "%s: the parent chain is deeper than %d links",
                       io->name, VMDK_MAX_CHAIN_DEPTH);
  chain->ids[chain->depth][0] = id[0];
  chain->ids[chain->depth][1] = id[1];
  chain->depth++;
  return 0;
}

struct vmdk_image *
chain_open_hint (struct vmdk_source *src, const char *hint,
                 const struct vmdk_options *opts, struct gtcache *cache,
                 struct chain *chain, bool *dir_failed)
{
  const char *slash = strrchr (hint, '/'), *base = slash ? slash + 1 : hint;
  bool owns_src = false;

  *dir_failed = false;
  if (slash) {
    char *dir = strndup (hint, slash == hint ? 1 : (size_t) (slash - hint));

    if (dir == NULL) {
      vmdk_error (ENOMEM, "strndup: %m");
      return NULL;
    }
    src = src->ops->subdir (src, dir);
    free (dir);
    if (src == NULL) {
      *dir_failed = true;
      return NULL;
    }
    owns_src = true;
  }
  return image_open_link (src, owns_src, base, opts, cache, chain);
}

/* parentCID must match the parent's CID (unless the check is off). */
static int
check_parent_cid (const struct vmdk_image *img,
                  const struct vmdk_image *parent, const char *hint,
                  const struct vmdk_options *opts)
{
  if (!parent->desc->has_cid || img->desc->parent_cid == CID_NONE)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: no CIDs to check against parent %s",
                img->name, hint);
  else if (parent->desc->cid != img->desc->parent_cid) {
    if (!opts->ignore_parent_cid)
      return vmdk_error (EINVAL, "%s: parentCID=%08" PRIx32 " does not "
                         "match CID=%08" PRIx32 " of its parent %s: the "
                         "parent was modified after this snapshot was "
                         "taken (or is the wrong file)", img->name,
                         img->desc->parent_cid, parent->desc->cid, hint);
    vmdk_warning ("%s: parentCID=%08" PRIx32 " does not match CID=%08"
                  PRIx32 " of its parent %s: opening anyway because the "
                  "CID check is disabled; the data may be inconsistent",
                  img->name, img->desc->parent_cid, parent->desc->cid, hint);
  }
  return 0;
}

/* Open the parent named by parentFileNameHint, relative to the
 * directory of this link's descriptor, and check its CID.  Parents are
 * always read-only.
 */
int
chain_open_parent (struct vmdk_image *img, const struct vmdk_options *opts,
                   struct chain *chain)
{
  const char *hint = img->desc->parent_hint;
  struct vmdk_options parent_opts = *opts;
  struct vmdk_image *parent;
  bool dir_failed;
  unsigned depth;

  if (hint == NULL || hint[0] == '\0')
    return vmdk_error (EINVAL, "%s: parentCID is %08" PRIx32 " (not "
                       "ffffffff) but there is no parentFileNameHint naming "
                       "the parent", img->name, img->desc->parent_cid);
  parent_opts.readonly = true;
  depth = chain->depth;
  parent = chain_open_hint (img->src, hint, &parent_opts, img->cache, chain,
                            &dir_failed);
  if (parent == NULL) {
    /* Name the link whose parent failed, once: in a long chain the
     * innermost error matters, not every link on the way to it.
     */
    if (dir_failed)
      vmdk_error_prefix ("%s: parentFileNameHint \"%s\"", img->name, hint);
    else if (chain->depth <= depth + 1)
      vmdk_error_prefix ("%s: parent \"%s\"", img->name, hint);
    return -1;
  }
  img->parent = parent;
  img->chain_length = 1 + parent->chain_length;
  return check_parent_cid (img, parent, hint, opts);
}

struct vmdk_image *
vmdk_open_parent (struct vmdk_image *img, const struct vmdk_options *opts)
{
  struct vmdk_image *parent;
  const char *hint;

  /* A link opened alone has not looked at a COWD header's name. */
  if (chain_take_cowd_parent_name (img) == -1)
    return NULL;
  hint = img->desc->parent_hint;
  if (!image_has_parent (img) || hint == NULL || hint[0] == '\0') {
    vmdk_error (EINVAL, "%s: the image has no parent", img->name);
    return NULL;
  }
  parent = image_open_hint (img->src, hint, opts);
  if (parent == NULL) {
    vmdk_error_prefix ("%s: parent \"%s\"", img->name, hint);
    return NULL;
  }
  if (check_parent_cid (img, parent, hint, opts) == -1) {
    vmdk_close (parent);
    return NULL;
  }
  return parent;
}

/* A bare COWD redo log names its parent in its header, not in a
 * descriptor: use that name as the hint.
 */
int
chain_take_cowd_parent_name (struct vmdk_image *img)
{
  char name[1025];
  struct extent *e = &img->extents[0];

  if (img->nr_extents != 1 || img->desc->parent_hint ||
      strcmp (e->ops->kind, "COWD") != 0)
    return 0;
  if (cowd_parent_name (e, name, sizeof name) == -1)
    return -1;
  if (name[0] == '\0')
    return 0;
  img->desc->parent_hint = strdup (name);
  if (img->desc->parent_hint == NULL)
    return vmdk_error (ENOMEM, "strdup: %m");
  return 0;
}

bool
image_has_parent (const struct vmdk_image *img)
{
  const struct descriptor *d = img->desc;

  return d->parent_hint != NULL || d->parent_cid != CID_NONE;
}

/* Read from the parent, which may be shorter than the child: past its
 * end reads zeroes.
 */
int
chain_read_parent (struct vmdk_image *parent, void *buf, size_t count,
             uint64_t offset)
{
  size_t n = 0;

  if (offset < parent->size) {
    n = MIN ((uint64_t) count, parent->size - offset);
    if (vmdk_pread (parent, buf, n, offset) == -1)
      return -1;
  }
  memset ((unsigned char *) buf + n, 0, count - n);
  return 0;
}

/* Ranges that fall through are reported as the parent reports them;
 * past the parent's end they are holes of the child (as qemu-img map
 * reports them).
 */
int
chain_map_parent (struct vmdk_image *parent, uint64_t offset, uint64_t end,
                  unsigned depth, vmdk_map_entry_fn fn, void *opaque)
{
  uint64_t parent_end = MIN (end, parent->size);
  int r;

  if (offset < parent_end) {
    r = image_map_range (parent, offset, parent_end, depth, fn, opaque);
    if (r != 0)
      return r;
    offset = parent_end;
  }
  if (offset < end) {
    const struct vmdk_map_entry m = {
      .offset = offset, .length = end - offset, .type = VMDK_MAP_HOLE,
      .depth = depth - 1,
    };

    return fn (opaque, &m);
  }
  return 0;
}
