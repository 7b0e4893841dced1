/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A grain directory, its redundant copy (hosted sparse files keep
 * two), and their grain tables, checked the same way for every kind
 * that has them: where the directories and tables lie, whether the two
 * copies agree, and what each entry points at (the kind judges that).
 *
 * Which copy counts: the primary, as every reader serves it (ours and
 * QEMU read nothing else).  Where the primary entry is unusable and
 * the redundant one is good, the redundant one is taken; that is what
 * the redundancy is for.  The plan the walk leaves (d->fixes) follows
 * from that, and check-fix.c carries it out.
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
#include "header.h"
#include "le.h"

/* The directory is held in memory: the engine's own limit. */
#define MAX_GTS (UINT64_C (4) << 20)
/* More fixes than this in one file are not planned (24 bytes each). */
#define MAX_FIXES (1024 * 1024)
/* Tables read at once when they lie one after another. */
#define BATCH_BYTES (1024 * 1024)

const char *
dir_name (unsigned copy)
{
  return copy ? "redundant grain directory" : "grain directory";
}

const char *
table_name (unsigned copy)
{
  return copy ? "redundant grain table" : "grain table";
}

struct where
entry_where (const struct dir_check *d, unsigned k, uint64_t t, uint32_t i,
             int64_t entry_offset, uint32_t v)
{
  struct where w = where_at (table_name (k), t, i, entry_offset,
                             (int64_t) v * SECTOR);

  w.disk_offset = d->extent_start +
    (t * d->gtes_per_gt + i) * d->grain_bytes;
  w.disk_length = d->grain_bytes;
  return w;
}

void
report_entry (struct checker *c, const char *code, struct where w,
              const char *fs, ...)
{
  char what[512];
  va_list args;

  va_start (args, fs);
  vsnprintf (what, sizeof what, fs, args);
  va_end (args);
  check_report (c, VMDK_CHECK_CORRUPT, code, w, "%s: %s %" PRId64 " entry %"
                PRId64 " (byte %" PRId64 ", disk offset %" PRIu64 ") = "
                "sector %" PRId64 ": %s", c->file, w.table, w.index, w.entry,
                w.offset, w.disk_offset, w.target / SECTOR, what);
}

const char *
dir_from_header (struct dir_check *d, struct checker *c,
                 const struct sparse_header *h, uint64_t extent_length)
{
  struct where w = where_at ("header", -1, -1, 0, -1);
  uint64_t off;

  if (extent_length != h->capacity * SECTOR)
    check_report (c, VMDK_CHECK_CORRUPT, "extent-size", w,
                  "%s: the descriptor's extent line says %" PRIu64
                  " sectors, the header's capacity is %" PRIu64,
                  c->file, extent_length / SECTOR, h->capacity);
  d->nr_gts = div_round_up (h->capacity,
                            h->grain_size * h->num_gtes_per_gt);
  if (d->nr_gts > MAX_GTS) {
    check_report (c, VMDK_CHECK_CORRUPT, "directory-too-large", w,
                  "%s: the grain directory would have %" PRIu64 " entries, "
                  "more than %" PRIu64 ": the header is not sane",
                  c->file, d->nr_gts, MAX_GTS);
    return "its header is not sane";
  }
  d->gtes_per_gt = h->num_gtes_per_gt;
  d->grain_bytes = h->grain_size * SECTOR;
  d->copies = (h->flags & SPARSE_FLAG_RGD) && h->rgd_offset ? 2 : 1;
  d->dir_start[0] = MUL_OVERFLOW (h->gd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  d->dir_start[1] = MUL_OVERFLOW (h->rgd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  return NULL;
}

void
dir_free (struct dir_check *d)
{
  unsigned k;

  for (k = 0; k < 2; ++k) {
    free (d->gde[k]);
    free (d->loc[k]);
    d->gde[k] = NULL;
    d->loc[k] = NULL;
  }
  free (d->fixes);
  free (d->zero_table);
  d->fixes = NULL;
  d->zero_table = NULL;
}

/* Do [a, a+alen) and [b, b+blen) overlap? */
static bool
overlaps (uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return alen && blen && a < b + blen && b < a + alen;
}

/* A directory must lie inside the file, clear of the header and of
 * the primary directory (else it is unusable: false), and of the
 * descriptor or a footer (else it is what the disk reads, but must
 * move: d->dir_move).
 */
static bool
dir_region_ok (struct dir_check *d, unsigned k)
{
  uint64_t start = d->dir_start[k], bytes = d->nr_gts * 4;
  struct where w = where_at (dir_name (k), -1, -1, start, -1);
  const struct meta *m;

  if (start < SECTOR || start > d->file_size ||
      bytes > d->file_size - start) {
    check_report (d->c, VMDK_CHECK_CORRUPT, "directory-outside-file", w,
                  "%s: the %s (%" PRIu64 " entries at byte %" PRIu64 ") "
                  "lies %s the file (%" PRIu64 " bytes)", d->c->file,
                  dir_name (k), d->nr_gts, start,
                  start < SECTOR ? "over the header of" : "past the end of",
                  d->file_size);
    return false;
  }
  if (k == 1 && d->dir_ok[0] &&
      overlaps (start, d->dir_span, d->dir_start[0], d->dir_span)) {
    check_report (d->c, VMDK_CHECK_CORRUPT, "directories-overlap", w,
                  "%s: the redundant grain directory (byte %" PRIu64 ") "
                  "overlaps the grain directory (byte %" PRIu64 ")",
                  d->c->file, start, d->dir_start[0]);
    return false;
  }
  m = space_first_overlap (d->space, start, bytes);
  if (m) {
    check_report (d->c, VMDK_CHECK_CORRUPT, "directory-overlaps", w,
                  "%s: the %s (bytes %" PRIu64 "-%" PRIu64 ") overlaps the "
                  "%s (bytes %" PRIu64 "-%" PRIu64 ")", d->c->file,
                  dir_name (k), start, start + bytes - 1, m->table,
                  m->start, m->end - 1);
    d->dir_move[k] = true;
  }
  return true;
}

static int
read_dir (struct dir_check *d, unsigned k)
{
  uint64_t bytes = d->nr_gts * 4, t;
  unsigned char *raw = malloc (bytes ? bytes : 1);

  d->gde[k] = malloc ((d->nr_gts ? d->nr_gts : 1) * sizeof (uint32_t));
  if (raw == NULL || d->gde[k] == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: grain directory: %m");
  }
  if (io_pread_full (d->io, raw, bytes, d->dir_start[k], dir_name (k)) == -1) {
    free (raw);
    return -1;
  }
  for (t = 0; t < d->nr_gts; ++t)
    d->gde[k][t] = get_le32 (raw + t * 4);
  free (raw);
  return space_add_meta (d->space, d->dir_start[k], d->dir_span,
                         dir_name (k), -1, k);
}

/* Where directory entry t of copy k points, and whether a table fits
 * there.
 */
static int
classify_table (struct dir_check *d, unsigned k, uint64_t t)
{
  uint64_t off = (uint64_t) d->gde[k][t] * SECTOR;
  struct where w = where_at (dir_name (k), -1, t, d->dir_start[k] + t * 4,
                             off);

  if (d->gde[k][t] == 0) {
    d->loc[k][t] = LOC_NONE;
    return 0;
  }
  if (off >= d->file_size) {
    d->loc[k][t] = LOC_BAD;
    d->misplaced = true;
    check_report (d->c, VMDK_CHECK_CORRUPT, "table-past-eof", w,
                  "%s: %s entry %" PRIu64 " (byte %" PRIu64 ") = sector %"
                  PRIu32 ": the table lies past the end of the file (%"
                  PRIu64 " bytes)", d->c->file, dir_name (k), t,
                  w.offset, d->gde[k][t], d->file_size);
    return 0;
  }
  if (off + d->gt_bytes > d->file_size) {
    d->loc[k][t] = LOC_MOVE;
    d->misplaced = true;
    check_report (d->c, VMDK_CHECK_CORRUPT, "table-cut-by-eof", w,
                  "%s: %s entry %" PRIu64 " (byte %" PRIu64 ") = sector %"
                  PRIu32 ": the table is cut short by the end of the file "
                  "(%" PRIu64 " bytes)", d->c->file, dir_name (k), t,
                  w.offset, d->gde[k][t], d->file_size);
  }
  else
    d->loc[k][t] = LOC_OK;
  return space_add_meta (d->space, off, d->gt_span, table_name (k), t, k);
}

/* Two structures overlap: the one registered later (a table) must
 * move.  Its entries are what the disk reads through it, so they are
 * kept (and judged like any other): over a directory they point at
 * tables, and are cleared as pointing into metadata.
 */
static void
on_overlap (void *opaque, const struct meta *first, const struct meta *m)
{
  struct dir_check *d = opaque;
  unsigned k = m->tag;
  char name[64];

  if (m->index < 0 || k >= d->copies)
    return;                     /* directories were checked already */
  if (d->loc[k][m->index] == LOC_BAD)
    return;
  d->loc[k][m->index] = LOC_MOVE;
  d->misplaced = true;
  if (first->index >= 0)
    snprintf (name, sizeof name, "%s %" PRId64, first->table, first->index);
  else
    snprintf (name, sizeof name, "%s", first->table);
  check_report (d->c, VMDK_CHECK_CORRUPT, "table-overlaps",
                where_at (m->table, m->index, -1, m->start, first->start),
                "%s: %s %" PRId64 " (byte %" PRIu64 ") overlaps %s (bytes %"
                PRIu64 "-%" PRIu64 ")", d->c->file, m->table, m->index,
                m->start, name, first->start, first->end - 1);
}

/* The two directories must agree on which tables exist. */
static void
compare_dirs (struct dir_check *d)
{
  uint64_t t;

  if (d->copies < 2 || !d->dir_ok[0] || !d->dir_ok[1])
    return;
  for (t = 0; t < d->nr_gts; ++t) {
    bool p = d->loc[0][t] != LOC_NONE, r = d->loc[1][t] != LOC_NONE;

    if (p == r)
      continue;
    d->copies_differ = true;
    check_report (d->c, VMDK_CHECK_CORRUPT, "directories-differ",
                  where_at (dir_name (!p), -1, t,
                            d->dir_start[!p] + t * 4, -1),
                  "%s: %s entry %" PRIu64 " (byte %" PRIu64 ") is 0 but %s "
                  "entry %" PRIu64 " (byte %" PRIu64 ") names a table at "
                  "sector %" PRIu32, d->c->file, dir_name (!p), t,
                  d->dir_start[!p] + t * 4, dir_name (p), t,
                  d->dir_start[p] + t * 4, d->gde[p][t]);
  }
}

static int
dir_load (struct dir_check *d)
{
  uint64_t t;
  unsigned k;

  d->gt_bytes = (uint64_t) d->gtes_per_gt * 4;
  d->gt_span = div_round_up (d->gt_bytes, SECTOR) * SECTOR;
  d->dir_span = div_round_up (d->nr_gts * 4, SECTOR) * SECTOR;
  d->zero_table = calloc (1, d->gt_span);
  if (d->zero_table == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  for (k = 0; k < d->copies; ++k) {
    d->loc[k] = malloc (d->nr_gts ? d->nr_gts : 1);
    if (d->loc[k] == NULL)
      return vmdk_error (ENOMEM, "malloc: %m");
    memset (d->loc[k], LOC_BAD, d->nr_gts);
    d->dir_ok[k] = dir_region_ok (d, k);
    if (d->dir_ok[k] && read_dir (d, k) == -1)
      return -1;
  }
  for (k = 0; k < d->copies; ++k)
    for (t = 0; d->dir_ok[k] && t < d->nr_gts; ++t)
      if (classify_table (d, k, t) == -1)
        return -1;
  if (space_seal_meta (d->space, on_overlap, d) == -1)
    return -1;
  compare_dirs (d);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Reading tables, several at once where they lie one after another. */

static bool
readable (const struct dir_check *d, unsigned k, uint64_t t)
{
  return d->loc[k][t] == LOC_OK || d->loc[k][t] == LOC_MOVE;
}

const unsigned char *
batch_table (struct batch *b, struct dir_check *d, unsigned k, uint64_t t)
{
  uint64_t off = (uint64_t) d->gde[k][t] * SECTOR, len, u;

  if (b->buf && off >= b->start && off - b->start + d->gt_bytes <= b->len)
    return b->buf + (off - b->start);
  if (b->buf == NULL) {
    b->cap = MAX ((size_t) BATCH_BYTES, (size_t) d->gt_span);
    b->buf = malloc (b->cap);
    if (b->buf == NULL) {
      vmdk_error (ENOMEM, "malloc: %m");
      return NULL;
    }
  }
  len = d->gt_span;
  for (u = t + 1; u < d->nr_gts && len + d->gt_span <= b->cap &&
         readable (d, k, u) &&
         (uint64_t) d->gde[k][u] * SECTOR == off + len; ++u)
    len += d->gt_span;
  if (io_pread_zerofill (d->io, b->buf, len, off) == -1)
    return NULL;
  b->start = off;
  b->len = len;
  return b->buf;
}

int
effective_copy (const struct dir_check *d, uint64_t t)
{
  if (readable (d, 0, t))
    return 0;
  if (d->loc[0][t] == LOC_BAD && d->copies == 2 && readable (d, 1, t))
    return 1;
  return -1;
}

static int
add_fix (struct dir_check *d, uint64_t t, uint32_t i, enum fix_kind kind,
         uint32_t value, uint32_t old)
{
  if (d->nr_fixes >= MAX_FIXES) {
    d->too_many_fixes = true;
    return 0;
  }
  if (array_reserve ((void **) &d->fixes, &d->fixes_alloc, d->nr_fixes + 1,
                     sizeof *d->fixes) == -1)
    return -1;
  d->fixes[d->nr_fixes++] = (struct fix) {
    .t = t, .i = i, .value = value, .old = old, .kind = kind,
  };
  return 0;
}

/* Report the entries where the two copies of table t differ. */
static void
compare_tables (struct dir_check *d, uint64_t t, const unsigned char *p,
                const unsigned char *r)
{
  uint32_t i;

  if (memcmp (p, r, d->gt_bytes) == 0)
    return;
  d->copies_differ = true;
  for (i = 0; i < d->gtes_per_gt; ++i) {
    uint32_t a = get_le32 (p + i * 4), b = get_le32 (r + i * 4);
    uint64_t off = (uint64_t) d->gde[1][t] * SECTOR + i * 4;

    if (a != b)
      check_report (d->c, VMDK_CHECK_CORRUPT, "tables-differ",
                    where_at (table_name (1), t, i, off, (int64_t) b * SECTOR),
                    "%s: redundant grain table %" PRIu64 " entry %" PRIu32
                    " (byte %" PRIu64 ") = %" PRIu32 ", but grain table %"
                    PRIu64 " entry %" PRIu32 " (byte %" PRIu64 ") = %"
                    PRIu32, d->c->file, t, i, off, b, t, i,
                    (uint64_t) d->gde[0][t] * SECTOR + i * 4, a);
  }
}

/* Judge the entries of table t as the disk reads them, and plan. */
static int
judge_table (struct dir_check *d, uint64_t t, unsigned src,
             const unsigned char *e, const unsigned char *alt)
{
  uint64_t base = (uint64_t) d->gde[src][t] * SECTOR;
  uint32_t i, v, a;
  enum verdict verdict;

  for (i = 0; i < d->gtes_per_gt; ++i) {
    v = get_le32 (e + i * 4);
    if (v == 0)
      continue;
    d->grains++;
    verdict = d->judge (d, src, t, i, v, base + i * 4, true);
    if (verdict == V_ERROR)
      return -1;
    if (verdict == V_OK)
      continue;
    /* An entry that points nowhere takes the redundant copy's value if
     * that one is good.
     */
    a = alt ? get_le32 (alt + i * 4) : 0;
    if (verdict == V_CLEAR && a != 0 && a != v) {
      enum verdict va = d->judge (d, 1, t, i, a, (int64_t) d->gde[1][t] *
                                  SECTOR + i * 4, false);

      if (va == V_ERROR)
        return -1;
      if (va == V_OK) {
        if (add_fix (d, t, i, FIX_REDUNDANT, a, 0) == -1)
          return -1;
        continue;
      }
    }
    if (add_fix (d, t, i, verdict == V_CLEAR ? FIX_CLEAR : FIX_RELOCATE,
                 0, v) == -1)
      return -1;
  }
  return 0;
}

int
cmp_fix (const void *a, const void *b)
{
  const struct fix *x = a, *y = b;

  if (x->t != y->t)
    return x->t < y->t ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* The fix planned for (t, i) among the first n, or NULL. */
static struct fix *
find_fix (struct dir_check *d, size_t n, uint64_t t, uint32_t i)
{
  struct fix key = { .t = t, .i = i };

  return n ? bsearch (&key, d->fixes, n, sizeof key, cmp_fix) : NULL;
}

struct odd_ctx {
  struct dir_check *d;
  size_t walked;                /* fixes planned by the walk (sorted) */
  int r;
};

/* An odd grain overlapping another grain: keep its data in a grain of
 * its own.
 */
static void
on_odd_conflict (void *opaque, const struct odd_grain *g, enum claim why,
                 const struct meta *m)
{
  struct odd_ctx *o = opaque;
  struct dir_check *d = o->d;
  struct fix *f = find_fix (d, o->walked, g->t, g->i);
  struct where w = where_at (table_name (0), g->t, g->i, -1, g->start);

  w.disk_offset = d->extent_start +
    (g->t * d->gtes_per_gt + g->i) * d->grain_bytes;
  w.disk_length = d->grain_bytes;
  check_report (d->c, VMDK_CHECK_CORRUPT, "grain-shared", w,
                "%s: grain table %" PRIu64 " entry %" PRIu32 ": the grain "
                "at bytes %" PRIu64 "-%" PRIu64 " overlaps another grain",
                d->c->file, g->t, g->i, g->start, g->end - 1);
  if (f) {                      /* it came from the redundant copy */
    f->kind = FIX_RELOCATE;
    f->old = g->start / SECTOR;
  }
  else if (o->r == 0)
    o->r = add_fix (d, g->t, g->i, FIX_RELOCATE, 0, g->start / SECTOR);
}

static int
dir_walk (struct dir_check *d)
{
  struct batch b[2] = { { 0 }, { 0 } };
  const unsigned char *tab[2];
  struct odd_ctx o = { .d = d };
  uint64_t t;
  unsigned k;
  int src, r = -1;

  for (t = 0; t < d->nr_gts; ++t) {
    for (k = 0; k < 2; ++k) {
      tab[k] = NULL;
      if (k < d->copies && readable (d, k, t) &&
          (tab[k] = batch_table (&b[k], d, k, t)) == NULL)
        goto out;
    }
    if (tab[0] && tab[1])
      compare_tables (d, t, tab[0], tab[1]);
    src = effective_copy (d, t);
    if (src >= 0 &&
        judge_table (d, t, src, tab[src], src == 0 ? tab[1] : NULL) == -1)
      goto out;
  }
  o.walked = d->nr_fixes;
  space_check_odd (d->space, on_odd_conflict, &o);
  if (o.r == -1)
    goto out;
  if (d->nr_fixes)
    qsort (d->fixes, d->nr_fixes, sizeof *d->fixes, cmp_fix);
  r = 0;
 out:
  free (b[0].buf);
  free (b[1].buf);
  return r;
}

int
dir_check_file (struct dir_check *d, struct checker *c,
                const struct extent_file *f, struct space *space,
                judge_fn judge, void *opaque, bool tables_movable,
                bool dirs_movable)
{
  d->c = c;
  d->io = f->io;
  d->file_size = f->file_size;
  d->extent_start = f->extent_start;
  d->extent_length = f->extent_length;
  d->space = space;
  d->judge = judge;
  d->opaque = opaque;
  d->tables_movable = tables_movable;
  d->dirs_movable = dirs_movable;
  if (dir_load (d) == -1 || dir_walk (d) == -1)
    return -1;
  return 0;
}

bool
dir_needs_repair (const struct dir_check *d)
{
  return d->nr_fixes > 0 || d->copies_differ || d->too_many_fixes ||
    d->misplaced || d->dir_move[0] || d->dir_move[1] ||
    !d->dir_ok[0] || (d->copies == 2 && !d->dir_ok[1]) ||
    d->min_size > d->file_size;
}
