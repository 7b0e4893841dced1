/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Checking and repairing streamOptimized files (VMDK-FORMAT.md b.4 and
 * (c)).  A stream is read front to back by importers, so besides the
 * directories and tables (check-dir.c) the walk follows every marker
 * from overHead on:
 *
 *   grain markers          lba of a grain of the disk, size within
 *                          bounds, data inside the file, inflating to
 *                          exactly the grain (every grain is inflated);
 *   metadata markers       a known type (GT, GD, footer, end-of-stream,
 *                          ovftool's progress marker) and length, in
 *                          order: GD, then footer, then end-of-stream
 *                          as the last sector;
 * and then every table entry must name a grain marker of its own grain
 * that the walk found intact, and every grain marker must be named
 * (else it is leaked space: an older version of a rewritten grain).
 * With gdOffset GD_AT_END the footer (the last three sectors: footer
 * marker, footer, end-of-stream marker) holds the real header.
 *
 * Repairs: a stream whose footer is gone and whose header says it was
 * not closed cleanly (a writer crashed) gets its tail rewritten from
 * its markers (stream_map_recover and the stream writer, as the engine
 * does when it writes to such a stream); entries that point nowhere
 * are cleared and a redundant copy that differs is rewritten, in
 * place; uncleanShutdown is cleared once nothing else is wrong.
 * Tables never move: that would break the stream's order.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "checked.h"
#include "deflate.h"
#include "error.h"
#include "gtcache.h"
#include "header.h"
#include "le.h"
#include "stream.h"
#include "stream-map.h"
#include "stream-write.h"

#define MAX_GTS (UINT64_C (4) << 20)
/* Older versions of grains named in findings (the rest are counted). */
#define MAX_SUPERSEDED 64
/* Memory for inflated grains while checking (they are read once). */
#define CHECK_CACHE_BYTES (256 * 1024)

struct stream_ctx {
  struct checker *c;
  struct extent_file *f;
  struct sparse_header h;       /* the header, or the footer if valid */
  bool header_ok;
  bool at_end;                  /* gdOffset is GD_AT_END */
  bool footer_ok;
  bool header_unclean, footer_unclean;
  uint64_t nr_grains;
  struct stream *reader;
  struct stream_map found;      /* intact grain markers the walk found */
  bool found_ok;
  uint64_t superseded[MAX_SUPERSEDED];
  uint64_t nr_superseded;
  uint64_t walk_end;            /* where the walk stopped */
  bool torn;                    /* it stopped at something not a marker */
  uint64_t gd_marker;           /* byte of the GD marker, 0: none */
  struct space space;
  struct dir_check d;
  bool walked;
  uint64_t corruptions;
  const char *stop;
};

/* ------------------------------------------------------------------ */
/* The footer. */

static bool
all_zero (const unsigned char *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* With GD_AT_END: footer marker, footer, end-of-stream marker in the
 * last three sectors; the footer must be the header with the real
 * directory offset.
 */
static int
read_footer (struct stream_ctx *s)
{
  uint64_t size = s->f->file_size, at;
  unsigned char buf[3 * SECTOR];
  const unsigned char *marker = buf, *footer = buf + SECTOR,
    *eos = buf + 2 * SECTOR;
  struct sparse_header f;
  const char *file = s->c->file;
  const char *what = NULL;

  if (size < 4 * SECTOR) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "footer-missing",
                  where_at ("footer", -1, -1, -1, -1), "%s: gdOffset is "
                  "GD_AT_END but the file (%" PRIu64 " bytes) is too short "
                  "to hold a footer", file, size);
    return 0;
  }
  at = size - sizeof buf;
  if (io_pread_full (s->f->io, buf, sizeof buf, at, "footer") == -1)
    return -1;
  if (get_le32 (marker + 8) != 0 || get_le32 (marker + 12) != MARKER_FOOTER)
    what = "no footer marker in the third sector from the end";
  else if (!all_zero (eos, 16) || get_le32 (eos + 12) != MARKER_EOS)
    what = "no end-of-stream marker in the last sector";
  else if (sparse_header_decode (footer, &f, file) == -1)
    what = vmdk_errmsg ();
  else if (f.gd_offset == SPARSE_GD_AT_END)
    what = "the footer's gdOffset is GD_AT_END too";
  if (what) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "footer-missing",
                  where_at ("footer", -1, -1, at, -1), "%s: gdOffset is "
                  "GD_AT_END but the end of the file holds no valid footer "
                  "(%s): the stream is cut short or torn", file, what);
    return 0;
  }
  if (f.capacity != s->h.capacity || f.grain_size != s->h.grain_size ||
      f.num_gtes_per_gt != s->h.num_gtes_per_gt ||
      f.desc_offset != s->h.desc_offset || f.desc_size != s->h.desc_size ||
      f.overhead != s->h.overhead || f.version != s->h.version)
    check_report (s->c, VMDK_CHECK_CORRUPT, "footer-mismatch",
                  where_at ("footer", -1, -1, at + SECTOR, -1),
                  "%s: the footer (byte %" PRIu64 ") disagrees with the "
                  "header on version, capacity, grain, table size, "
                  "descriptor or overHead", file, at + SECTOR);
  s->footer_unclean = f.unclean_shutdown != 0;
  s->footer_ok = true;
  s->h = f;                     /* "the footer takes precedence" */
  return 0;
}

/* ------------------------------------------------------------------ */
/* The walk over the markers. */

static void
marker_finding (struct stream_ctx *s, const char *code, uint64_t pos,
                const char *what)
{
  check_report (s->c, VMDK_CHECK_CORRUPT, code,
                where_at ("stream", -1, -1, pos, -1),
                "%s: byte %" PRIu64 ": %s", s->c->file, pos, what);
}

/* A grain marker at pos (sector holds its first bytes).  Returns the
 * next position, or 0 to stop the walk.
 */
static int
walk_grain (struct stream_ctx *s, uint64_t pos, const unsigned char *sector,
            uint64_t *next)
{
  uint64_t lba = get_le64 (sector), g;
  uint32_t csize = get_le32 (sector + 8);
  uint64_t grain_sectors = s->h.grain_size, old;
  struct run run;

  *next = 0;
  if (lba >= s->h.capacity || lba % grain_sectors != 0 ||
      csize > STREAM_MAX_COMPRESSED (grain_sectors * SECTOR) -
              GRAIN_MARKER_SIZE ||
      GRAIN_MARKER_SIZE + (uint64_t) csize > s->f->file_size - pos) {
    marker_finding (s, "bad-marker", pos, "not a valid grain marker "
                    "(lba, size or length out of bounds): the rest of the "
                    "stream cannot be walked");
    s->torn = true;
    return 0;
  }
  g = lba / grain_sectors;
  run.kind = RUN_COMPRESSED;
  run.file_offset = pos;
  run.grain_start = lba * SECTOR;
  run.length = grain_sectors * SECTOR;
  if (stream_check_grain (s->reader, &run) == -1) {
    if (errno == ENOMEM)
      return -1;
    check_report (s->c, VMDK_CHECK_CORRUPT, "grain-corrupt",
                  where_at ("stream", -1, -1, pos, -1), "%s", vmdk_errmsg ());
  }
  else if (s->found_ok) {
    old = stream_map_get (&s->found, g);
    if (old && s->nr_superseded++ < MAX_SUPERSEDED)
      s->superseded[s->nr_superseded - 1] = old;
    if (stream_map_set (&s->found, g, pos / SECTOR) == -1)
      return -1;
  }
  *next = pos + div_round_up (GRAIN_MARKER_SIZE + (uint64_t) csize, SECTOR)
    * SECTOR;
  return 0;
}

/* The order of metadata markers: GD, then footer, then EOS. */
enum stage { IN_GRAINS, AFTER_GD, AFTER_FOOTER };

/* A metadata marker at pos.  Returns the next position in *next, or 0
 * to stop.
 */
static void
walk_metadata (struct stream_ctx *s, uint64_t pos, const unsigned char *sector,
               enum stage *stage, uint64_t *next)
{
  uint64_t n = get_le64 (sector), avail = (s->f->file_size - pos) / SECTOR;
  uint32_t type = get_le32 (sector + 12);
  uint64_t gt_sectors = div_round_up ((uint64_t) s->h.num_gtes_per_gt * 4,
                                      SECTOR);
  uint64_t gd_sectors = div_round_up (s->d.nr_gts * 4, SECTOR);

  *next = 0;
  if (type > MARKER_PROGRESS || n >= avail) {
    marker_finding (s, "bad-marker", pos, type > MARKER_PROGRESS ?
                    "not a marker (unknown type): the rest of the stream "
                    "cannot be walked" : "a metadata marker whose length "
                    "runs past the end of the file");
    s->torn = true;
    return;
  }
  if (type == MARKER_EOS) {
    if (pos + SECTOR != s->f->file_size)
      check_report (s->c, s->at_end ? VMDK_CHECK_CORRUPT : VMDK_CHECK_NOTE,
                    "data-after-eos", where_at ("stream", -1, -1, pos, -1),
                    "%s: %" PRIu64 " bytes follow the end-of-stream marker "
                    "at byte %" PRIu64, s->c->file,
                    s->f->file_size - pos - SECTOR, pos);
    *next = s->f->file_size;
    return;
  }
  if ((type == MARKER_GT && *stage != IN_GRAINS) ||
      (type == MARKER_GD && *stage != IN_GRAINS) ||
      (type == MARKER_FOOTER && *stage == AFTER_FOOTER))
    marker_finding (s, "marker-order", pos, "a metadata marker out of "
                    "order (grain tables, then the directory, then the "
                    "footer, then the end-of-stream marker)");
  if ((type == MARKER_GT && n != gt_sectors) ||
      (type == MARKER_GD && s->footer_ok && n != gd_sectors) ||
      (type == MARKER_FOOTER && n != 1))
    marker_finding (s, "marker-size", pos, "a metadata marker whose length "
                    "does not fit what follows it");
  if (type == MARKER_GD) {
    *stage = AFTER_GD;
    s->gd_marker = pos;
  }
  else if (type == MARKER_FOOTER)
    *stage = AFTER_FOOTER;
  else if (*stage == AFTER_FOOTER)
    marker_finding (s, "marker-order", pos, "a marker after the footer "
                    "other than the end-of-stream marker");
  *next = pos + (n + 1) * SECTOR;
}

static int
walk (struct stream_ctx *s)
{
  uint64_t pos = MAX (s->h.overhead, (uint64_t) 1), next;
  unsigned char sector[SECTOR];
  enum stage stage = IN_GRAINS;
  bool eos = false;

  if (s->h.desc_offset && s->h.desc_size &&
      s->h.desc_offset <= UINT64_MAX / SECTOR - s->h.desc_size)
    pos = MAX (pos, s->h.desc_offset + s->h.desc_size);
  if (pos > s->f->file_size / SECTOR) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "overhead-past-eof",
                  where_at ("header", -1, -1, 0, -1), "%s: the grains would "
                  "start at sector %" PRIu64 " (overHead), past the end of "
                  "the file (%" PRIu64 " bytes)", s->c->file, pos,
                  s->f->file_size);
    s->walk_end = s->f->file_size;
    return 0;
  }
  pos *= SECTOR;
  while (s->f->file_size - pos >= SECTOR) {
    if (io_pread_full (s->f->io, sector, SECTOR, pos, "marker") == -1)
      return -1;
    if (get_le32 (sector + 8) != 0) {
      if (walk_grain (s, pos, sector, &next) == -1)
        return -1;
    }
    else {
      eos = get_le32 (sector + 12) == MARKER_EOS && get_le64 (sector) == 0;
      walk_metadata (s, pos, sector, &stage, &next);
    }
    if (next == 0)
      break;
    pos = next;
  }
  s->walk_end = pos;
  if (!eos && !s->torn && !s->at_end)
    check_report (s->c, VMDK_CHECK_NOTE, "no-eos", where_file (),
                  "%s: the stream has no end-of-stream marker (VMware's "
                  "importers want one)", s->c->file);
  else if (!s->torn && pos < s->f->file_size && !eos)
    marker_finding (s, "bad-marker", pos, "the stream ends in a partial "
                    "sector");
  return 0;
}

/* ------------------------------------------------------------------ */
/* The tables. */

/* A table entry must name an intact marker of its own grain. */
static enum verdict
judge_stream (struct dir_check *d, unsigned k, uint64_t t, uint32_t i,
              uint32_t v, int64_t entry_offset, bool report)
{
  struct stream_ctx *s = d->opaque;
  uint64_t g = t * d->gtes_per_gt + i;
  struct where w = where_at (table_name (k), t, i, entry_offset,
                             (int64_t) v * SECTOR);
  struct run run;

  w.disk_offset = d->extent_start + g * d->grain_bytes;
  w.disk_length = d->grain_bytes;
  if (v == 1 && (s->h.flags & SPARSE_FLAG_ZERO_GRAIN))
    return V_OK;
  if (g >= s->nr_grains) {
    if (report)
      check_report (s->c, VMDK_CHECK_CORRUPT, "grain-past-capacity", w,
                    "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                    ") = sector %" PRIu32 " names a grain past the disk's "
                    "capacity", s->c->file, table_name (k), t, i,
                    entry_offset, v);
    return V_CLEAR;
  }
  if (s->found_ok && stream_map_get (&s->found, g) == v) {
    /* Named: not leaked (what stays in found is). */
    return stream_map_set (&s->found, g, 0) == -1 ? V_ERROR : V_OK;
  }
  run.kind = RUN_COMPRESSED;
  run.file_offset = (uint64_t) v * SECTOR;
  run.grain_start = g * d->grain_bytes;
  run.length = d->grain_bytes;
  if (stream_check_grain (s->reader, &run) == 0)
    return V_OK;
  if (errno == ENOMEM)
    return V_ERROR;
  if (report)
    check_report (s->c, VMDK_CHECK_CORRUPT, "grain-marker-bad", w,
                  "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                  "): %s", s->c->file, table_name (k), t, i, entry_offset,
                  vmdk_errmsg ());
  return V_CLEAR;
}

/* Tables and the directory that lie among the markers must each follow
 * a marker of their type.
 */
static int
check_table_markers (struct stream_ctx *s)
{
  struct dir_check *d = &s->d;
  unsigned char sector[SECTOR];
  uint64_t t, off, start = MAX (s->h.overhead, (uint64_t) 1) * SECTOR;
  unsigned k;

  for (k = 0; k < d->copies; ++k)
    for (t = 0; d->dir_ok[k] && t < d->nr_gts; ++t) {
      off = (uint64_t) d->gde[k][t] * SECTOR;
      if (d->loc[k][t] != LOC_OK || off <= start)
        continue;
      if (io_pread_full (d->io, sector, SECTOR, off - SECTOR,
                         "table marker") == -1)
        return -1;
      if (get_le32 (sector + 8) != 0 ||
          get_le32 (sector + 12) != MARKER_GT)
        check_report (s->c, VMDK_CHECK_CORRUPT, "table-without-marker",
                      where_at (table_name (k), t, -1, off, -1),
                      "%s: %s %" PRIu64 " (byte %" PRIu64 ") lies among "
                      "the grains without a grain table marker before it",
                      s->c->file, table_name (k), t, off);
    }
  if (s->at_end && s->footer_ok && d->dir_ok[0] &&
      d->dir_start[0] > start && d->dir_start[0] != s->gd_marker + SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "directory-without-marker",
                  where_at (dir_name (0), -1, -1, d->dir_start[0], -1),
                  "%s: the grain directory (byte %" PRIu64 ") does not "
                  "follow the directory marker", s->c->file,
                  d->dir_start[0]);
  return 0;
}

/* The bytes a grain marker and its data take (0 if unreadable). */
static uint64_t
grain_bytes_at (struct stream_ctx *s, uint64_t sector)
{
  unsigned char m[GRAIN_MARKER_SIZE];

  if (io_pread_full (s->f->io, m, sizeof m, sector * SECTOR,
                     "grain marker") == -1)
    return 0;
  return div_round_up (GRAIN_MARKER_SIZE + (uint64_t) get_le32 (m + 8),
                       SECTOR) * SECTOR;
}

static void
orphan (struct stream_ctx *s, uint64_t sector, const char *why)
{
  uint64_t bytes = grain_bytes_at (s, sector);

  if (!s->c->repairing)
    s->c->sum->leaked_bytes += bytes;
  check_report (s->c, VMDK_CHECK_LEAK, "orphan-grain",
                where_at ("stream", -1, -1, (int64_t) sector * SECTOR, -1),
                "%s: the grain marker at byte %" PRIu64 " (%" PRIu64
                " bytes) %s: leaked space", s->c->file, sector * SECTOR,
                bytes, why);
}

/* Grain markers no entry names: older versions of rewritten grains. */
static void
report_orphans (struct stream_ctx *s)
{
  uint64_t t, g, e;
  uint32_t sector;
  size_t j;

  for (t = 0; t < s->found.nr_gts; ++t) {
    if (s->found.tables[t] == NULL)
      continue;
    g = t * s->found.gtes_per_gt;
    for (e = g; e < MIN (g + s->found.gtes_per_gt, s->nr_grains); ++e) {
      sector = stream_map_get (&s->found, e);
      if (sector)
        orphan (s, sector, "is named by no table");
    }
  }
  for (j = 0; j < MIN (s->nr_superseded, (uint64_t) MAX_SUPERSEDED); ++j)
    orphan (s, s->superseded[j], "holds an older version of a grain "
            "stored again later");
  if (s->nr_superseded > MAX_SUPERSEDED)
    check_report (s->c, VMDK_CHECK_LEAK, "orphan-grain", where_file (),
                  "%s: %" PRIu64 " more older versions of grains: leaked "
                  "space", s->c->file, s->nr_superseded - MAX_SUPERSEDED);
}

/* The directories and tables (the footer's, with GD_AT_END). */
static int
check_tables (struct stream_ctx *s)
{
  struct dir_check *d = &s->d;
  const struct sparse_header *h = &s->h;
  uint64_t off;

  if (space_init (&s->space, s->f->file_size, 0) == -1 ||
      space_add_meta (&s->space, 0, SECTOR, "header", -1, 0) == -1)
    return -1;
  if (h->desc_offset && h->desc_size &&
      h->desc_offset < s->f->file_size / SECTOR &&
      space_add_meta (&s->space, h->desc_offset * SECTOR,
                      MIN (h->desc_size, s->f->file_size / SECTOR) * SECTOR,
                      "descriptor", -1, 0) == -1)
    return -1;
  d->c = s->c;
  d->io = s->f->io;
  d->file_size = s->f->file_size;
  d->extent_start = s->f->extent_start;
  d->extent_length = s->f->extent_length;
  d->space = &s->space;
  d->judge = judge_stream;
  d->opaque = s;
  d->tables_movable = false;
  d->gtes_per_gt = h->num_gtes_per_gt;
  d->grain_bytes = h->grain_size * SECTOR;
  d->copies = (h->flags & SPARSE_FLAG_RGD) && h->rgd_offset ? 2 : 1;
  d->dir_start[0] = MUL_OVERFLOW (h->gd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  d->dir_start[1] = MUL_OVERFLOW (h->rgd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  if (dir_load (d) == -1 || dir_walk (d) == -1 ||
      check_table_markers (s) == -1)
    return -1;
  s->walked = true;
  s->c->sum->grains += d->grains;
  if (s->found_ok && !s->torn && (d->dir_ok[0] || d->dir_ok[1]))
    report_orphans (s);
  return 0;
}

static int
analyze (struct stream_ctx *s, const unsigned char *buf)
{
  struct sparse_header *h = &s->h;
  struct where w = where_at ("header", -1, -1, 0, -1);
  uint64_t coverage;
  int r = 0;

  s->c->file_corruptions = 0;
  if (sparse_header_decode (buf, h, s->c->file) == -1) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                  vmdk_errmsg ());
    s->stop = "its header is not valid";
    return 0;
  }
  s->header_unclean = h->unclean_shutdown != 0;
  s->at_end = h->gd_offset == SPARSE_GD_AT_END;
  if (s->at_end && read_footer (s) == -1)
    return -1;
  if (s->f->extent_length != h->capacity * SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "extent-size", w,
                  "%s: the descriptor's extent line says %" PRIu64
                  " sectors, the header's capacity is %" PRIu64,
                  s->c->file, s->f->extent_length / SECTOR, h->capacity);
  coverage = h->grain_size * h->num_gtes_per_gt;
  s->d.nr_gts = div_round_up (h->capacity, coverage);
  s->nr_grains = div_round_up (h->capacity, h->grain_size);
  if (s->d.nr_gts > MAX_GTS) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "directory-too-large", w,
                  "%s: the grain directory would have %" PRIu64 " entries, "
                  "more than %" PRIu64 ": the header is not sane",
                  s->c->file, s->d.nr_gts, MAX_GTS);
    s->stop = "its header is not sane";
    return 0;
  }
  s->reader = stream_new (s->f->io, s->c->cache, s->f->file_size,
                          h->grain_size * SECTOR, h->capacity * SECTOR, true);
  if (s->reader == NULL) {
    if (errno == ENOMEM)
      return -1;
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                  vmdk_errmsg ());
    s->stop = "its grains cannot be read";
    return 0;
  }
  if (stream_map_init (&s->found, s->nr_grains, h->num_gtes_per_gt) == -1)
    return -1;
  s->found_ok = true;
  if (walk (s) == -1)
    return -1;
  if (!s->at_end || s->footer_ok)
    r = check_tables (s);
  s->corruptions = s->c->file_corruptions;
  if (r == 0 && (s->header_unclean || s->footer_unclean))
    check_report (s->c, VMDK_CHECK_CORRUPT, "unclean-shutdown",
                  where_at (s->header_unclean ? "header" : "footer", -1, -1,
                            s->header_unclean ? 72 :
                            (int64_t) s->f->file_size - 2 * SECTOR + 72, -1),
                  "%s: the %s's uncleanShutdown flag is set: the stream was "
                  "not closed cleanly", s->c->file,
                  s->header_unclean ? "header" : "footer");
  return r;
}

static void
release (struct stream_ctx *s)
{
  dir_free (&s->d);
  space_free (&s->space);
  if (s->found_ok)
    stream_map_free (&s->found);
  stream_free (s->reader);
  memset (&s->d, 0, sizeof s->d);
  s->reader = NULL;
  s->found_ok = s->walked = s->torn = s->footer_ok = false;
  s->nr_superseded = s->gd_marker = 0;
}

/* ------------------------------------------------------------------ */
/* Repairs. */

/* A writer crashed: the markers say what was stored.  The engine's
 * recovery walks them and its writer writes the tail (tables,
 * directory, footer, end-of-stream marker), cuts what follows, syncs
 * and only then marks the header clean.
 */
static int
rewrite_tail (struct stream_ctx *s)
{
  const struct sparse_header *h = &s->h;
  struct stream_writer *w;
  struct stream_map m;
  uint64_t end;
  int r;

  if (s->f->io->ops->truncate == NULL)
    return vmdk_error (ENOTSUP, "%s: the file cannot be truncated",
                       s->c->file);
  if (stream_map_init (&m, s->nr_grains, h->num_gtes_per_gt) == -1)
    return -1;
  r = stream_map_recover (&m, s->f->io, s->reader, h, s->f->file_size,
                          h->grain_size * SECTOR, &end);
  if (r == 0) {
    w = stream_writer_new (s->f->io, s->reader, h, &m, end, false, 0,
                           h->capacity * SECTOR,
                           vmdk_deflate_default_level ());
    r = w ? stream_writer_flush (w) : -1;
    stream_writer_free (w);
  }
  stream_map_free (&m);
  if (r == 0)
    check_report (s->c, VMDK_CHECK_REPAIRED, "rewrote-tail", where_file (),
                  "%s: rewrote the end of the stream after its last intact "
                  "grain (byte %" PRIu64 "): grain tables, directory, "
                  "footer and end-of-stream marker, from the grain markers",
                  s->c->file, end);
  return r;
}

static int
clear_unclean (struct stream_ctx *s)
{
  if (s->header_unclean && fix_write_sync (s->f->io, "", 1, 72) == -1)
    return -1;
  if (s->footer_unclean &&
      fix_write_sync (s->f->io, "", 1, s->f->file_size - 2 * SECTOR + 72)
      == -1)
    return -1;
  check_report (s->c, VMDK_CHECK_REPAIRED, "cleared-unclean", where_file (),
                "%s: cleared uncleanShutdown in the %s", s->c->file,
                s->header_unclean && s->footer_unclean ? "header and footer"
                : s->header_unclean ? "header" : "footer");
  return 0;
}

static int
repair (struct stream_ctx *s, const unsigned char *buf)
{
  struct dir_check *d = &s->d;
  uint64_t new_dir[2] = { 0, 0 };
  struct alloc a = { .next = s->f->file_size, .grain_align = SECTOR,
                     .limit = s->f->file_size };
  const char *why;

  if (s->stop) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                  "%s: not repaired: %s", s->c->file, s->stop);
    return 0;
  }
  if (s->at_end && !s->footer_ok) {
    if (!s->header_unclean) {
      check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                    "%s: the stream's end was not rewritten: its header "
                    "says it was closed cleanly, so the lost end held grains "
                    "that would then read as zeroes", s->c->file);
      return 0;
    }
    return rewrite_tail (s);
  }
  if (s->walked && dir_needs_repair (d)) {
    why = dir_plan_refusal (d);
    if (why) {
      check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                    "%s: the grain tables were not repaired: %s",
                    s->c->file, why);
      return 0;
    }
    if (fix_directories (d, &a, new_dir, NULL, NULL) == -1)
      return -1;
    check_report (s->c, VMDK_CHECK_REPAIRED, "fixed-tables", where_file (),
                  "%s: cleared %zu table entries that named no intact grain "
                  "and made the copies of the tables agree, in place",
                  s->c->file, d->nr_fixes);
    release (s);
    if (analyze (s, buf) == -1)
      return -1;
  }
  if (s->corruptions > 0) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "left-inconsistent",
                  where_file (), "%s: %" PRIu64 " inconsistencies were not "
                  "repaired (the check names them)", s->c->file,
                  s->corruptions);
    return 0;
  }
  if (s->walked && s->nr_superseded)
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "leaks-kept", where_file (),
                  "%s: leaked grain versions were left: a stream cannot be "
                  "compacted in place", s->c->file);
  if (s->header_unclean || s->footer_unclean)
    return clear_unclean (s);
  return 0;
}

int
check_stream (struct checker *c, struct extent_file *f,
              const unsigned char *header)
{
  struct stream_ctx s = { .c = c, .f = f };
  int r;

  r = analyze (&s, header);
  if (r == 0 && c->repairing)
    r = repair (&s, header);
  release (&s);
  return r;
}
