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
 * Repairs (check-stream-fix.c): a stream whose footer is gone and whose header says it was
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
#include "check-stream.h"
#include "checked.h"
#include "error.h"
#include "header.h"
#include "le.h"
#include "stream.h"
#include "stream-map.h"
#include "zero.h"

/* Memory for the maps of the grain markers found. */
#define MAPS_BYTES (UINT64_C (256) << 20)



/* ------------------------------------------------------------------ */
/* The footer. */

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
  if (!is_all_zero (eos, 16) || get_le32 (eos + 12) != MARKER_EOS) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "eos-missing",
                  where_at ("stream", -1, -1, at + 2 * SECTOR, -1),
                  "%s: the footer is followed by no end-of-stream marker "
                  "(the last sector, byte %" PRIu64 ")", file,
                  at + 2 * SECTOR);
    s->eos_bad = true;
  }
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

static void
leak_marker (struct stream_ctx *s, uint64_t pos, uint64_t bytes,
             const char *why)
{
  s->leaks++;
  if (!s->c->repairing)
    s->c->sum->leaked_bytes += bytes;
  check_report (s->c, VMDK_CHECK_LEAK, "orphan-grain",
                where_at ("stream", -1, -1, pos, -1),
                "%s: the grain marker at byte %" PRIu64 " (%" PRIu64
                " bytes) %s: leaked space", s->c->file, pos, bytes, why);
}

/* Remember a marker of grain g in m, while the maps take no more
 * than MAPS_BYTES (each table of a map is allocated when a grain of
 * it is first set: a hostile stream could name a new table with each
 * marker).  Past that, leaks are not looked for, and entries are
 * checked against the markers they name one by one.
 */
static int
remember (struct stream_ctx *s, struct stream_map *m, uint64_t g,
          uint32_t sector)
{
  uint64_t table_bytes = (uint64_t) m->gtes_per_gt * 4;

  if (s->maps_full)
    return 0;
  if (m->tables[g / m->gtes_per_gt] == NULL) {
    if (s->maps_bytes + table_bytes > MAPS_BYTES) {
      s->maps_full = true;
      check_report (s->c, VMDK_CHECK_NOTE, "not-checked-leaks",
                    where_file (), "%s: too many grain markers in too many "
                    "tables to look for leaked ones", s->c->file);
      return 0;
    }
    s->maps_bytes += table_bytes;
  }
  return stream_map_set (m, g, sector);
}

/* A grain marker at pos (sector holds its first bytes).  Sets *next to
 * where the next item starts, or 0 to stop the walk.
 */
static int
walk_grain (struct stream_ctx *s, uint64_t pos, const unsigned char *sector,
            uint64_t *next)
{
  uint64_t lba = get_le64 (sector), g, bytes;
  uint32_t csize = get_le32 (sector + 8), old;
  uint64_t grain_sectors = s->h.grain_size;
  struct run run;

  *next = 0;
  if (csize > STREAM_MAX_COMPRESSED (grain_sectors * SECTOR) -
      GRAIN_MARKER_SIZE ||
      GRAIN_MARKER_SIZE + (uint64_t) csize > s->f->file_size - pos) {
    marker_finding (s, "bad-marker", pos, csize > STREAM_MAX_COMPRESSED
                    (grain_sectors * SECTOR) - GRAIN_MARKER_SIZE ?
                    "not a valid grain marker (its size is out of bounds): "
                    "the rest of the stream cannot be walked" :
                    "a grain marker whose data runs past the end of the "
                    "file: the stream is cut short");
    s->torn = true;
    return 0;
  }
  bytes = div_round_up (GRAIN_MARKER_SIZE + (uint64_t) csize, SECTOR) * SECTOR;
  *next = pos + bytes;
  if (lba >= s->h.capacity || lba % grain_sectors != 0) {
    leak_marker (s, pos, bytes, "names no grain of the disk");
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
    old = stream_map_get (&s->damaged, g);
    if (old)
      leak_marker (s, (uint64_t) old * SECTOR, 0, "does not inflate and "
                   "was stored again");
    return remember (s, &s->damaged, g, pos / SECTOR);
  }
  s->markers++;
  s->intact_end = *next;
  return remember (s, &s->found, g, pos / SECTOR);
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
  s->walk_start = s->intact_end = pos;
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
  uint64_t g = t * d->gtes_per_gt + i, off = (uint64_t) v * SECTOR;
  struct where w = entry_where (d, k, t, i, entry_offset, v);
  struct run run;

  if (v == 1 && (s->h.flags & SPARSE_FLAG_ZERO_GRAIN))
    return V_OK;
  if (g >= s->nr_grains) {
    if (report)
      report_entry (s->c, "grain-past-capacity", w, "it names a grain past "
                    "the disk's capacity");
    return V_CLEAR;
  }
  /* Named: what stays in found and damaged is leaked. */
  if (stream_map_get (&s->found, g) == v) {
    s->named++;
    return stream_map_set (&s->found, g, 0) == -1 ? V_ERROR : V_OK;
  }
  if (stream_map_get (&s->damaged, g) == v &&
      stream_map_set (&s->damaged, g, 0) == -1)
    return V_ERROR;
  run.kind = RUN_COMPRESSED;
  run.file_offset = off;
  run.grain_start = g * d->grain_bytes;
  run.length = d->grain_bytes;
  if (stream_check_grain (s->reader, &run) == 0) {
    s->named_older += off >= s->walk_start && off < s->walk_end;
    return V_OK;
  }
  if (errno == ENOMEM)
    return V_ERROR;
  if (report)
    report_entry (s->c, "grain-marker-bad", w, "%s", vmdk_errmsg ());
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

/* Report the markers left in m (named by no entry); returns how many. */
static uint64_t
leftover (struct stream_ctx *s, const struct stream_map *m, const char *why)
{
  uint64_t t, e, n = 0;
  uint32_t sector;

  for (t = 0; t < m->nr_gts; ++t) {
    if (m->tables[t] == NULL)
      continue;
    for (e = t * m->gtes_per_gt;
         e < (t + 1) * m->gtes_per_gt && e < m->nr_grains; ++e) {
      sector = stream_map_get (m, e);
      if (sector) {
        leak_marker (s, (uint64_t) sector * SECTOR,
                     grain_bytes_at (s, sector), why);
        n++;
      }
    }
  }
  return n;
}

/* Grain markers no entry names: older versions of rewritten grains,
 * damaged ones.  Older intact versions are counted, not found one by
 * one (only the last of each grain is remembered).
 */
static void
report_orphans (struct stream_ctx *s)
{
  uint64_t left = leftover (s, &s->found, "is named by no table"), older;

  leftover (s, &s->damaged, "does not inflate and is named by no table");
  older = s->markers - s->named - left;
  older = older > s->named_older ? older - s->named_older : 0;
  if (older) {
    s->leaks++;
    check_report (s->c, VMDK_CHECK_LEAK, "orphan-grain", where_file (),
                  "%s: %" PRIu64 " grain markers hold older versions of "
                  "grains stored again later: leaked space", s->c->file,
                  older);
  }
}

/* The directories and tables (the footer's, with GD_AT_END). */
static int
check_tables (struct stream_ctx *s)
{
  struct dir_check *d = &s->d;
  const struct sparse_header *h = &s->h;

  if (space_init (&s->space, s->f->file_size, 0) == -1 ||
      space_add_meta (&s->space, 0, SECTOR, "header", -1, 0) == -1 ||
      (s->footer_ok &&
       space_add_meta (&s->space, s->f->file_size - 3 * SECTOR, 3 * SECTOR,
                       "footer", -1, 0) == -1))
    return -1;
  if (h->desc_offset && h->desc_size &&
      h->desc_offset < s->f->file_size / SECTOR &&
      space_add_meta (&s->space, h->desc_offset * SECTOR,
                      MIN (h->desc_size, s->f->file_size / SECTOR) * SECTOR,
                      "descriptor", -1, 0) == -1)
    return -1;
  if (dir_check_file (d, s->c, s->f, &s->space, judge_stream, s,
                      false, false) == -1 ||
      check_table_markers (s) == -1)
    return -1;
  s->walked = true;
  s->c->sum->grains += d->grains;
  if (!s->torn && !s->maps_full && (d->dir_ok[0] || d->dir_ok[1]))
    report_orphans (s);
  return 0;
}

int
stream_check_analyze (struct stream_ctx *s, const unsigned char *buf)
{
  struct sparse_header *h = &s->h;
  struct where w = where_at ("header", -1, -1, 0, -1);
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
  s->stop = dir_from_header (&s->d, s->c, h, s->f->extent_length);
  if (s->stop)
    return 0;
  s->nr_grains = div_round_up (h->capacity, h->grain_size);
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
  s->maps_ok = true;
  if (stream_map_init (&s->found, s->nr_grains, h->num_gtes_per_gt) == -1 ||
      stream_map_init (&s->damaged, s->nr_grains, h->num_gtes_per_gt) == -1)
    return -1;
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

void
stream_check_release (struct stream_ctx *s)
{
  dir_free (&s->d);
  space_free (&s->space);
  if (s->maps_ok) {
    stream_map_free (&s->found);
    stream_map_free (&s->damaged);
  }
  stream_free (s->reader);
  memset (&s->d, 0, sizeof s->d);
  s->reader = NULL;
  s->maps_ok = s->walked = s->torn = s->footer_ok = s->eos_bad = false;
  s->maps_full = false;
  s->maps_bytes = 0;
  s->markers = s->named = s->named_older = s->leaks = s->gd_marker = 0;
}

int
check_stream (struct checker *c, struct extent_file *f,
              const unsigned char *header)
{
  struct stream_ctx s = { .c = c, .f = f };
  int r;

  r = stream_check_analyze (&s, header);
  if (r == 0 && c->repairing)
    r = stream_check_repair (&s, header);
  stream_check_release (&s);
  return r;
}
