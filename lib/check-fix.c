/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Carrying out the plan check-dir.c made, in the engine's crash-safe
 * order (graindir-write.c): new space is written first (copies of
 * shared grains, tables that move, directories rebuilt), and synced,
 * before anything on disk points at it; then tables are rewritten in
 * place and synced; then the directories; the caller finally points
 * the header at a directory that moved.  A crash at any instant
 * leaves the file as it was or with some fixes made: every entry on
 * disk always points at data that is there.  Nothing is written over
 * a grain that an entry names, so no valid grain is ever lost.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checked.h"
#include "error.h"
#include "header.h"
#include "le.h"

/* Grains are copied this much at a time. */
#define COPY_CHUNK (1024 * 1024)
/* Copies of shared grains may take the file's size, or this if more. */
#define MAX_COPY_BYTES (UINT64_C (1) << 30)

int
fix_write_sync (struct vmdk_io *io, const void *buf, size_t len,
                uint64_t offset)
{
  if (io->ops->pwrite (io, buf, len, offset) == -1 ||
      io->ops->flush (io) == -1)
    return -1;
  return 0;
}

int
fix_truncate (struct checker *c, struct vmdk_io *io, uint64_t old_size,
              uint64_t end)
{
  if (io->ops->truncate == NULL)
    return vmdk_error (ENOTSUP, "%s: the file cannot be truncated", io->name);
  if (io->ops->truncate (io, end) == -1 || io->ops->flush (io) == -1)
    return -1;
  return 0;
}

static int
alloc_bytes (struct alloc *a, uint64_t len, uint64_t align, uint64_t *off)
{
  uint64_t o = div_round_up (a->next, align) * align, end;

  if (ADD_OVERFLOW (o, len, &end) || end > a->limit)
    return vmdk_error (ENOSPC, "the file would grow past %" PRIu64 " bytes, "
                       "the most its entries can address", a->limit);
  a->next = end;
  *off = o;
  return 0;
}

static int
copy_bytes (struct vmdk_io *io, uint64_t from, uint64_t to, uint64_t len)
{
  unsigned char *buf = malloc (MIN (len, (uint64_t) COPY_CHUNK));
  int r = 0;

  if (buf == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  while (r == 0 && len > 0) {
    size_t n = MIN (len, (uint64_t) COPY_CHUNK);

    r = io_pread_zerofill (io, buf, n, from);
    if (r == 0)
      r = io->ops->pwrite (io, buf, n, to);
    from += n;
    to += n;
    len -= n;
  }
  free (buf);
  return r;
}

/* Does directory copy k get a new place? */
static bool
moves_dir (const struct dir_check *d, unsigned k)
{
  return !d->dir_ok[k] || d->dir_move[k];
}

/* Does table t of copy k stay where it is? */
static bool
in_place (const struct dir_check *d, unsigned k, uint64_t t)
{
  return d->dir_ok[k] && d->loc[k][t] == LOC_OK;
}

const char *
dir_plan_refusal (const struct dir_check *d)
{
  uint64_t t, copies = 0;
  unsigned k;
  size_t j;

  if (d->too_many_fixes)
    return "more entries to fix than one run of the repair handles";
  if (!d->dir_ok[0] && (d->copies < 2 || !d->dir_ok[1]))
    return "no copy of the grain directory is usable";
  for (k = 0; k < d->copies; ++k)
    if (!d->dirs_movable && (!d->dir_ok[k] || d->dir_move[k]))
      return "a grain directory cannot move within this kind of file";
  for (j = 0; j < d->nr_fixes; ++j)
    copies += d->fixes[j].kind == FIX_RELOCATE;
  /* Many entries naming one grain (a hostile table) would each get a
   * copy: more than the file holds is not a repair.
   */
  if (copies > MAX (d->file_size, (uint64_t) MAX_COPY_BYTES) / d->grain_bytes)
    return "the grains to copy would take more space than the file holds";
  if (d->tables_movable)
    return NULL;
  if (copies)
    return "shared grains cannot be copied within this kind of file";
  for (t = 0; t < d->nr_gts; ++t)
    for (k = 0; effective_copy (d, t) >= 0 && k < d->copies; ++k)
      if (!in_place (d, k, t))
        return "grain tables cannot move within this kind of file";
  return NULL;
}

/* The first fix of table t, if any, else where it would be. */
static size_t
first_fix (const struct dir_check *d, uint64_t t)
{
  size_t lo = 0, hi = d->nr_fixes;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (d->fixes[mid].t < t)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Table t as it must be (gt_span bytes in out): the copy the disk
 * reads through, with the planned fixes.
 */
static int
merged_table (struct dir_check *d, struct batch *b, uint64_t t,
              unsigned char *out)
{
  int src = effective_copy (d, t);
  const unsigned char *e = batch_table (&b[src], d, src, t);
  size_t j;

  if (e == NULL)
    return -1;
  memcpy (out, e, d->gt_bytes);
  memset (out + d->gt_bytes, 0, d->gt_span - d->gt_bytes);
  for (j = first_fix (d, t); j < d->nr_fixes && d->fixes[j].t == t; ++j)
    put_le32 (out + d->fixes[j].i * 4,
              d->fixes[j].kind == FIX_CLEAR ? 0 : d->fixes[j].value);
  return 0;
}

/* Step 1, new space: relocated grains, moved tables, new directories. */
static int
write_new_space (struct dir_check *d, struct alloc *a, struct batch *b,
                 uint32_t *gde[2], bool changed[2], uint64_t new_dir[2],
                 unsigned char *m)
{
  struct vmdk_io *io = d->io;
  uint64_t t, off = 0;
  unsigned k;
  size_t j;

  if (d->min_size > d->file_size && io->ops->extend (io, d->min_size) == -1)
    return -1;
  for (j = 0; j < d->nr_fixes; ++j) {
    struct fix *f = &d->fixes[j];

    if (f->kind != FIX_RELOCATE)
      continue;
    if (alloc_bytes (a, d->grain_bytes, a->grain_align, &off) == -1 ||
        copy_bytes (io, (uint64_t) f->old * SECTOR, off,
                    d->grain_bytes) == -1)
      return -1;
    f->value = off / SECTOR;
  }
  for (k = 0; k < d->copies; ++k)
    if (moves_dir (d, k) &&
        alloc_bytes (a, d->dir_span, SECTOR, &new_dir[k]) == -1)
      return -1;
  for (t = 0; t < d->nr_gts; ++t) {
    bool has = effective_copy (d, t) >= 0, built = false;

    for (k = 0; k < d->copies; ++k) {
      if (!has || in_place (d, k, t)) {
        if (!has && gde[k][t] != 0) {
          gde[k][t] = 0;
          changed[k] = true;
        }
        continue;
      }
      if ((!built && merged_table (d, b, t, m) == -1) ||
          alloc_bytes (a, d->gt_span, SECTOR, &off) == -1 ||
          io->ops->pwrite (io, m, d->gt_span, off) == -1)
        return -1;
      built = true;
      gde[k][t] = off / SECTOR;
      changed[k] = true;
    }
  }
  return 0;
}

/* Write a directory's entries at start. */
static int
write_dir (struct dir_check *d, const uint32_t *gde, uint64_t start)
{
  size_t bytes = d->nr_gts * 4;
  unsigned char *raw = malloc (bytes ? bytes : 1);
  uint64_t t;
  int r;

  if (raw == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  for (t = 0; t < d->nr_gts; ++t)
    put_le32 (raw + t * 4, gde[t]);
  r = d->io->ops->pwrite (d->io, raw, bytes, start);
  free (raw);
  return r;
}

/* Step 2: tables that stay, rewritten where they differ from the plan. */
static int
rewrite_tables (struct dir_check *d, struct batch *b, unsigned char *m)
{
  uint64_t t;
  unsigned k;

  for (t = 0; t < d->nr_gts; ++t) {
    bool built = false;

    if (effective_copy (d, t) < 0)
      continue;
    for (k = 0; k < d->copies; ++k) {
      const unsigned char *now;

      if (!in_place (d, k, t))
        continue;
      if (!built && merged_table (d, b, t, m) == -1)
        return -1;
      built = true;
      now = batch_table (&b[k], d, k, t);
      if (now == NULL)
        return -1;
      if (memcmp (now, m, d->gt_bytes) != 0 &&
          d->io->ops->pwrite (d->io, m, d->gt_bytes,
                              (uint64_t) d->gde[k][t] * SECTOR) == -1)
        return -1;
    }
  }
  return 0;
}

int
fix_directories (struct dir_check *d, struct alloc *a,
                 uint64_t new_dir[2],
                 int (*before_meta) (void *opaque, uint64_t end),
                 void *opaque)
{
  struct vmdk_io *io = d->io;
  struct batch b[2] = { { 0 }, { 0 } };
  uint32_t *gde[2] = { NULL, NULL };
  bool changed[2] = { false, false };
  unsigned char *m = malloc (d->gt_span);
  unsigned k;
  int r = -1;

  if (m == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    goto out;
  }
  for (k = 0; k < d->copies; ++k) {
    gde[k] = calloc (d->nr_gts ? d->nr_gts : 1, sizeof (uint32_t));
    if (gde[k] == NULL) {
      vmdk_error (ENOMEM, "calloc: %m");
      goto out;
    }
    if (d->dir_ok[k])
      memcpy (gde[k], d->gde[k], d->nr_gts * sizeof (uint32_t));
  }

  /* 1. New space, then whole new directories, synced. */
  if (write_new_space (d, a, b, gde, changed, new_dir, m) == -1)
    goto out;
  for (k = 0; k < d->copies; ++k)
    if (moves_dir (d, k) && write_dir (d, gde[k], new_dir[k]) == -1)
      goto out;
  if ((before_meta && before_meta (opaque, a->next) == -1) ||
      io->ops->flush (io) == -1)
    goto out;
  /* 2. Tables in place, synced. */
  if (rewrite_tables (d, b, m) == -1 || io->ops->flush (io) == -1)
    goto out;
  /* 3. Directory entries in place, synced. */
  for (k = 0; k < d->copies; ++k)
    if (!moves_dir (d, k) && changed[k] &&
        write_dir (d, gde[k], d->dir_start[k]) == -1)
      goto out;
  r = io->ops->flush (io);
 out:
  free (b[0].buf);
  free (b[1].buf);
  free (gde[0]);
  free (gde[1]);
  free (m);
  return r;
}

/* Moves are fixes (FIX_RELOCATE) whose new place is known: old and
 * value are the sectors the grain moves from and to.
 */
static int
cmp_fix_old (const void *a, const void *b)
{
  const struct fix *x = a, *y = b;

  return x->old < y->old ? -1 : x->old > y->old;
}

/* Find the entry naming each grain to move (there is one: the file is
 * consistent when this runs).
 */
static int
find_entries (struct dir_check *d, struct fix *mv, size_t n)
{
  struct batch b[2] = { { 0 }, { 0 } };
  const unsigned char *e;
  uint64_t t;
  uint32_t i;
  int src, r = 0;

  qsort (mv, n, sizeof *mv, cmp_fix_old);
  for (t = 0; r == 0 && t < d->nr_gts; ++t) {
    src = effective_copy (d, t);
    if (src < 0)
      continue;
    e = batch_table (&b[src], d, src, t);
    if (e == NULL) {
      r = -1;
      break;
    }
    for (i = 0; i < d->gtes_per_gt; ++i) {
      struct fix key = { .old = get_le32 (e + i * 4) }, *m;

      if (key.old == 0)
        continue;
      m = bsearch (&key, mv, n, sizeof *mv, cmp_fix_old);
      if (m && m->t == UINT64_MAX) {
        m->t = t;
        m->i = i;
      }
    }
  }
  free (b[0].buf);
  free (b[1].buf);
  return r;
}

/* Point the moved entries of table t at their new grains, in every
 * copy (all in place: the structure was repaired first).
 */
static int
update_table (struct dir_check *d, uint64_t t, const struct fix *mv,
              size_t n, unsigned char *tab)
{
  unsigned k;
  size_t j;

  for (k = 0; k < d->copies; ++k) {
    uint64_t off;

    if (!in_place (d, k, t))
      continue;
    off = (uint64_t) d->gde[k][t] * SECTOR;
    if (io_pread_full (d->io, tab, d->gt_bytes, off, table_name (k)) == -1)
      return -1;
    for (j = 0; j < n; ++j)
      put_le32 (tab + mv[j].i * 4, mv[j].value);
    if (d->io->ops->pwrite (d->io, tab, d->gt_bytes, off) == -1)
      return -1;
  }
  return 0;
}

int
fix_move_grains (struct dir_check *d, const uint64_t *holes,
                 const uint64_t *grains, size_t n)
{
  struct fix *mv = malloc ((n ? n : 1) * sizeof *mv);
  unsigned char *tab = malloc (d->gt_bytes);
  uint64_t sectors = d->grain_bytes / SECTOR;
  size_t j, k;
  int r = -1;

  if (mv == NULL || tab == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    goto out;
  }
  /* Slots of grains that entries name fit their 32-bit sectors. */
  for (j = 0; j < n; ++j)
    mv[j] = (struct fix) { .t = UINT64_MAX, .kind = FIX_RELOCATE,
                           .old = grains[j] * sectors,
                           .value = holes[j] * sectors };
  if (find_entries (d, mv, n) == -1)
    goto out;
  /* 1. The data, synced. */
  for (j = 0; j < n; ++j)
    if (mv[j].t != UINT64_MAX &&
        copy_bytes (d->io, (uint64_t) mv[j].old * SECTOR,
                    (uint64_t) mv[j].value * SECTOR, d->grain_bytes) == -1)
      goto out;
  if (d->io->ops->flush (d->io) == -1)
    goto out;
  /* 2. The entries, table by table, synced. */
  qsort (mv, n, sizeof *mv, cmp_fix);
  for (j = 0; j < n && mv[j].t != UINT64_MAX; j = k) {
    for (k = j; k < n && mv[k].t == mv[j].t; ++k)
      ;
    if (update_table (d, mv[j].t, &mv[j], k - j, tab) == -1)
      goto out;
  }
  r = d->io->ops->flush (d->io);
 out:
  free (mv);
  free (tab);
  return r;
}
