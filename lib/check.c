/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk_check: the run over an image.  The main file and its descriptor
 * are read as vmdk_open reads them; then each extent file is checked
 * by its kind, the sizes on the extent lines against the files, and
 * the CIDs along the parent chain.  Findings go to the caller's
 * function as they are made, at most max_reports of one kind per file
 * (the rest are counted and summed up).
 *
 * What is checked, by kind:
 *   hosted sparse, COWD    check-sparse.c
 *   streamOptimized        check-stream.c
 *   seSparse               the header as the engine validates it, then
 *                          every directory and table entry decoded, and
 *                          no grain named twice (no repair)
 *   FLAT, VMFS             the file holds the whole extent (no repair)
 *   ZERO                   nothing to check
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "check.h"
#include "checked.h"
#include "error.h"
#include "extent.h"
#include "graindir.h"
#include "gtcache.h"
#include "header.h"
#include "image.h"

#define DEFAULT_MAX_REPORTS 20
/* Memory for grain tables and inflated grains while checking. */
#define CHECK_CACHE_BYTES (4 * 1024 * 1024)

struct quota {
  const char *code;
  enum vmdk_check_kind kind;
  uint64_t shown, hidden;
};

static struct quota *
find_quota (struct checker *c, const char *code)
{
  size_t i;

  for (i = 0; i < c->nr_quota; ++i)
    if (strcmp (c->quota[i].code, code) == 0)
      return &c->quota[i];
  if (array_reserve ((void **) &c->quota, &c->quota_alloc, c->nr_quota + 1,
                     sizeof *c->quota) == -1)
    return NULL;
  c->quota[c->nr_quota] = (struct quota) { .code = code };
  return &c->quota[c->nr_quota++];
}

static void
deliver (struct checker *c, struct vmdk_check_finding *f)
{
  struct vmdk_check_summary *sum = c->sum;

  switch (f->kind) {
  case VMDK_CHECK_CORRUPT: sum->corruptions += f->count; break;
  case VMDK_CHECK_LEAK: sum->leaks += f->count; break;
  case VMDK_CHECK_NOTE: sum->notes += f->count; break;
  case VMDK_CHECK_REPAIRED: sum->repairs += f->count; break;
  case VMDK_CHECK_NOT_REPAIRED: sum->not_repaired += f->count; break;
  }
  if (c->opts->fn)
    c->opts->fn (c->opts->opaque, f);
}

void
check_report (struct checker *c, enum vmdk_check_kind kind, const char *code,
              struct where w, const char *fs, ...)
{
  unsigned max = c->opts->max_reports ? c->opts->max_reports
                                      : DEFAULT_MAX_REPORTS;
  struct vmdk_check_finding f;
  struct quota *q;
  char msg[1024];
  va_list args;

  if (kind == VMDK_CHECK_CORRUPT)
    c->file_corruptions++;
  if (c->repairing && kind <= VMDK_CHECK_NOTE)
    return;                     /* reported by the check pass */
  q = find_quota (c, code);
  if (q && q->shown >= max) {
    q->kind = kind;
    q->hidden++;
    return;
  }
  if (q)
    q->shown++;
  va_start (args, fs);
  vsnprintf (msg, sizeof msg, fs, args);
  va_end (args);
  f = (struct vmdk_check_finding) {
    .kind = kind, .code = code, .file = c->file, .table = w.table,
    .table_index = w.index, .entry = w.entry, .offset = w.offset,
    .target = w.target, .disk_offset = w.disk_offset,
    .disk_length = w.disk_length, .count = 1, .message = msg,
  };
  deliver (c, &f);
}

void
check_begin_file (struct checker *c, const char *file)
{
  c->file = file;
  c->nr_quota = 0;
  c->file_corruptions = 0;
}

void
check_end_file (struct checker *c)
{
  struct vmdk_check_finding f;
  char msg[256];
  size_t i;

  for (i = 0; i < c->nr_quota; ++i) {
    const struct quota *q = &c->quota[i];

    if (q->hidden == 0)
      continue;
    snprintf (msg, sizeof msg, "%s: %" PRIu64 " more like \"%s\" (not "
              "shown one by one)", c->file ? c->file : "image", q->hidden,
              q->code);
    f = (struct vmdk_check_finding) {
      .kind = q->kind, .code = q->code, .file = c->file, .table_index = -1,
      .entry = -1, .offset = -1, .target = -1, .count = q->hidden,
      .message = msg,
    };
    deliver (c, &f);
  }
  c->nr_quota = 0;
}

/* In the repair pass: say why what was found in this file is left. */
static void
refuse (struct checker *c, const char *why)
{
  if (c->repairing)
    check_report (c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                  "%s: not repaired: %s", c->file, why);
}

/* ------------------------------------------------------------------ */
/* Kinds checked here. */

/* A flat extent must lie inside its file. */
static void
check_flat (struct checker *c, const struct extent_file *f, uint64_t offset)
{
  uint64_t end;

  if (MUL_OVERFLOW (offset, (uint64_t) SECTOR, &end) ||
      ADD_OVERFLOW (end, f->extent_length, &end) || end > f->file_size) {
    check_report (c, VMDK_CHECK_CORRUPT, "extent-size",
                  where_at ("file", -1, -1, f->file_size, -1),
                  "%s: the extent line needs the file to hold %" PRIu64
                  " sectors from sector %" PRIu64 ", but it is %" PRIu64
                  " bytes long", c->file, f->extent_length / SECTOR,
                  offset, f->file_size);
    refuse (c, "a flat extent's missing bytes cannot be made up");
  }
}

/* seSparse: the engine validates the header and regions; every entry
 * is then decoded, and no grain may be named twice.
 */
static int
check_sesparse (struct checker *c, const struct extent_file *f)
{
  struct extent e = { .start = f->extent_start, .length = f->extent_length,
                      .io = f->io, .line = "SESPARSE" };
  struct where w = where_at ("header", -1, -1, 0, -1);
  const struct meta *m;
  struct grain_dir *d;
  struct space space;
  enum grain_kind kind;
  uint64_t t, gte, off;
  uint32_t i;
  int r = 0;

  if (extent_sesparse_init (&e, c->cache) == -1) {
    if (errno == ENOMEM)
      r = -1;
    else
      check_report (c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                    vmdk_errmsg ());
    goto out;
  }
  d = e.dir;
  if (space_init (&space, f->file_size, d->grain_bytes) == -1 ||
      space_seal_meta (&space, NULL, NULL) == -1) {
    space_free (&space);
    r = -1;
    goto out;
  }
  for (t = 0; t < d->nr_gts; ++t) {
    if (d->gt_offsets[t] == GD_BAD)
      check_report (c, VMDK_CHECK_CORRUPT, "table-past-eof",
                    where_at (dir_name (0), -1, t, -1, -1), "%s: grain "
                    "directory entry %" PRIu64 " is not valid", c->file, t);
    if (d->gt_offsets[t] == 0 || d->gt_offsets[t] == GD_BAD)
      continue;
    for (i = 0; i < d->gtes_per_gt; ++i) {
      w = where_at (table_name (0), t, i, d->gt_offsets[t] + i * 8, -1);
      if (grain_dir_get (d, t, i, &gte) == -1) {
        r = -1;
        break;
      }
      if (d->decode (d, gte, t, i, &kind, &off) == -1) {
        check_report (c, VMDK_CHECK_CORRUPT, "grain-entry-bad", w, "%s",
                      vmdk_errmsg ());
        continue;
      }
      if (kind != GRAIN_DATA)
        continue;
      c->sum->grains++;
      if (space_claim (&space, off, d->grain_bytes, t, i, &m) == CLAIM_SHARED)
        check_report (c, VMDK_CHECK_CORRUPT, "grain-shared", w, "%s: grain "
                      "table %" PRIu64 " entry %" PRIu32 ": another entry "
                      "names the grain at byte %" PRIu64, c->file, t, i, off);
    }
  }
  space_free (&space);
  if (c->file_corruptions)
    refuse (c, "seSparse files are not repaired");
 out:
  if (e.ops)
    e.ops->free (&e);
  return r;
}

/* ------------------------------------------------------------------ */
/* The run. */

/* The files the descriptor names, each opened once. */
struct files {
  struct vmdk_io **io;
  bool *checked;                /* a sparse kind was checked in it */
  size_t n, alloc, checked_alloc;
};

/* Open name, read-write in the repair pass if its kind can be
 * repaired; a file that cannot be written is read-only then (and a
 * repair that needs to write it fails, naming it).
 */
static struct vmdk_io *
open_file (struct checker *c, struct vmdk_source *src, const char *name,
           bool repairable)
{
  struct vmdk_io *io;

  if (!c->repairing || !repairable)
    return src->ops->open (src, name, true);
  io = src->ops->open (src, name, false);
  if (io == NULL && (errno == EACCES || errno == EROFS || errno == EPERM))
    io = src->ops->open (src, name, true);
  return io;
}

static struct vmdk_io *
open_extent_file (struct checker *c, struct vmdk_source *src,
                  struct files *fs, const struct descriptor_extent *de,
                  bool **checked)
{
  const char *name = de->filename;
  struct vmdk_io *io;
  size_t i;

  for (i = 0; i < fs->n; ++i)
    if (strcmp (fs->io[i]->name, name) == 0) {
      *checked = &fs->checked[i];
      return fs->io[i];
    }
  if (array_reserve ((void **) &fs->io, &fs->alloc, fs->n + 1,
                     sizeof *fs->io) == -1 ||
      array_reserve ((void **) &fs->checked, &fs->checked_alloc, fs->n + 1,
                     sizeof *fs->checked) == -1)
    return NULL;
  io = open_file (c, src, name, de->type == EXTENT_SPARSE ||
                  de->type == EXTENT_VMFSSPARSE);
  if (io == NULL)
    return NULL;
  fs->checked[fs->n] = false;
  *checked = &fs->checked[fs->n];
  fs->io[fs->n++] = io;
  return io;
}

static int
check_extent_file (struct checker *c, struct extent_file *f,
                   const struct descriptor_extent *de)
{
  switch (de->type) {
  case EXTENT_FLAT:
    check_flat (c, f, de->offset);
    return 0;
  case EXTENT_VMFS:
    check_flat (c, f, 0);
    return 0;
  case EXTENT_SESPARSE:
    return check_sesparse (c, f);
  case EXTENT_SPARSE:
  case EXTENT_VMFSSPARSE:
    switch (image_sparse_magic (f->io)) {
    case SPARSE_KDMV: return check_kdmv (c, f);
    case SPARSE_COWD: return check_cowd (c, f);
    case SPARSE_NEITHER: break;
    default: return -1;
    }
    check_report (c, VMDK_CHECK_CORRUPT, "header-invalid",
                  where_at ("header", -1, -1, 0, -1), "%s: a sparse extent "
                  "with neither \"KDMV\" nor \"COWD\" magic", c->file);
    refuse (c, "which kind of file it is, is not known");
    return 0;
  case EXTENT_ZERO:
    return 0;
  }
  return 0;
}

/* The CIDs along the chain: each parentCID must be its parent's CID. */
static int
check_chain (struct checker *c, struct vmdk_source *src, const char *name,
             const struct descriptor *desc)
{
  struct vmdk_options opts = {
    .readonly = true, .ignore_parent_cid = true,
    .gt_cache_bytes = CHECK_CACHE_BYTES, .files = c->opts->files,
  };
  struct vmdk_image *parent, *p;
  struct where w = where_at ("descriptor", -1, -1, -1, -1);
  const char *child = name;

  if (desc->parent_hint == NULL && desc->parent_cid == CID_NONE)
    return 0;
  check_begin_file (c, name);
  if (desc->parent_hint == NULL || desc->parent_hint[0] == '\0') {
    check_report (c, VMDK_CHECK_CORRUPT, "no-parent-hint", w,
                  "%s: parentCID is %08" PRIx32 " but no parentFileNameHint "
                  "names the parent", name, desc->parent_cid);
    refuse (c, "which file is the parent is not known");
    check_end_file (c);
    return 0;
  }
  parent = image_open_hint (src, desc->parent_hint, &opts);
  if (parent == NULL)
    return vmdk_error_prefix ("%s: parent \"%s\"", name, desc->parent_hint);
  for (p = parent; p; desc = p->desc, child = p->name, p = p->parent)
    if (desc->parent_cid != CID_NONE && p->desc->has_cid &&
        desc->parent_cid != p->desc->cid) {
      check_report (c, VMDK_CHECK_CORRUPT, "cid-mismatch", w, "%s: "
                    "parentCID=%08" PRIx32 " does not match CID=%08" PRIx32
                    " of its parent %s: the parent changed after the "
                    "snapshot was taken (or is the wrong file)", child,
                    desc->parent_cid, p->desc->cid, p->name);
      refuse (c, "CIDs are not changed by a repair: which data is right "
              "is not known");
    }
  vmdk_close (parent);
  check_end_file (c);
  return 0;
}

/* One pass over the image: the check, or the repair. */
static int
check_pass (struct checker *c, struct vmdk_source *src, const char *name)
{
  struct files fs = { 0 };
  struct main_file m = { 0 };
  struct vmdk_io *main_io;
  uint64_t start = 0;
  size_t i;
  int r = -1;

  main_io = open_file (c, src, name, true);
  if (main_io == NULL)
    return -1;
  if (image_read_main_file (main_io, &m) == -1)
    goto out;
  for (i = 0; i < m.desc->nr_extents; ++i) {
    const struct descriptor_extent *de = &m.desc->extents[i];
    struct extent_file f = {
      .extent_start = start, .extent_length = de->sectors * SECTOR,
      .has_parent = m.desc->parent_hint || m.desc->parent_cid != CID_NONE,
      .embedded_descriptor = m.self != NULL,
    };
    bool dummy = false, *checked = &dummy;

    start += f.extent_length;   /* the parser bounds the sum */
    if (de->type == EXTENT_ZERO)
      continue;
    f.io = m.self ? m.self
      : open_extent_file (c, src, &fs, de, &checked);
    if (f.io == NULL) {
      vmdk_error_prefix ("%s: line %u", name, de->line_no);
      goto out;
    }
    if (*checked && (de->type == EXTENT_SPARSE ||
                     de->type == EXTENT_VMFSSPARSE ||
                     de->type == EXTENT_SESPARSE))
      continue;                 /* one file, one check */
    *checked = true;
    if (f.io->ops->get_size (f.io, &f.file_size) == -1)
      goto out;
    check_begin_file (c, f.io->name);
    c->sum->files += !c->repairing;
    if (check_extent_file (c, &f, de) == -1)
      goto out;
    check_end_file (c);
  }
  r = check_chain (c, src, name, m.desc);
 out:
  for (i = 0; i < fs.n; ++i)
    io_close (fs.io[i]);
  free (fs.io);
  free (fs.checked);
  descriptor_free (m.desc);
  io_close (main_io);
  c->file = NULL;
  return r;
}

int
vmdk_check_source (struct vmdk_source *src, const char *name,
                   const struct vmdk_check_options *opts,
                   struct vmdk_check_summary *sum)
{
  struct checker c = { .opts = opts, .sum = sum };
  int r;

  memset (sum, 0, sizeof *sum);
  c.cache = gtcache_new (CHECK_CACHE_BYTES);
  if (c.cache == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  r = check_pass (&c, src, name);
  if (r == 0 && opts->repair && (sum->corruptions || sum->leaks)) {
    c.repairing = true;
    r = check_pass (&c, src, name);
  }
  free (c.quota);
  gtcache_free (c.cache);
  return r;
}

int
vmdk_check (const char *path, const struct vmdk_check_options *opts,
            struct vmdk_check_summary *sum)
{
  struct vmdk_source *src;
  char *name;
  int r;

  src = image_path_source (path, &opts->files, &name);
  if (src == NULL)
    return -1;
  r = vmdk_check_source (src, name, opts, sum);
  src->ops->close (src);
  free (name);
  return r;
}
