/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Checking and repairing hosted sparse (KDMV) and COWD files: the
 * header, the directories and tables (check-dir.c), what every grain
 * entry points at, the space nothing references, and the
 * uncleanShutdown flag.
 *
 * A grain entry is judged by what it points at:
 *   past the end of the file, or into metadata (header, descriptor,
 *     a directory or table)      it points nowhere: cleared;
 *   before overHead, or at a grain another entry names (or overlaps)
 *                                its bytes are kept, copied to a grain
 *                                of its own at the end of the file;
 *   a grain cut by the end of the file
 *                                the file is extended over it (reads
 *                                do not change).
 * The repair then reclaims leaked space at the end of the file, and
 * clears uncleanShutdown once nothing else is wrong in the file.
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

/* The directory is held in memory: the engine's own limit. */
#define MAX_GTS (UINT64_C (4) << 20)
/* Grains moved into leaked space per run (16 bytes each). */
#define MAX_MOVES (1024 * 1024)

struct sparse_ctx {
  struct checker *c;
  struct extent_file *f;
  bool cowd;
  struct sparse_header h;       /* KDMV */
  struct cowd_header ch;        /* COWD */
  unsigned char cowd_buf[COWD_HEADER_SIZE];
  uint32_t cowd_unclean;
  struct space space;
  struct dir_check d;
  bool walked;                  /* the directories were checked */
  uint64_t data_start;          /* grains lie at or after this byte */
  uint32_t zero_value;          /* the zeroed-grain entry, 0: none */
  uint64_t grains_end;          /* the furthest end of a grain */
  uint64_t corruptions;         /* found in this file, before unclean */
  uint64_t leaked, tail_leak;   /* bytes; where a leak at EOF starts */
  bool unclean;
  uint64_t next_free;           /* COWD: the next free sector it needs */
  const char *stop;             /* why the file cannot be repaired */
};

static enum verdict
judge_grain (struct dir_check *d, unsigned k, uint64_t t, uint32_t i,
             uint32_t v, int64_t entry_offset, bool report)
{
  struct sparse_ctx *s = d->opaque;
  uint64_t off = (uint64_t) v * SECTOR, end = off + d->grain_bytes;
  struct where w = where_at (table_name (k), t, i, entry_offset, off);
  const char *file = s->c->file;
  const struct meta *m;
  enum claim claim;

  w.disk_offset = d->extent_start +
    (t * d->gtes_per_gt + i) * d->grain_bytes;
  w.disk_length = d->grain_bytes;
  if (v == s->zero_value)
    return V_OK;
  if (off >= d->file_size) {
    if (report)
      check_report (s->c, VMDK_CHECK_CORRUPT, "grain-past-eof", w,
                    "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                    ") = sector %" PRIu32 ": the grain lies past the end of "
                    "the file (%" PRIu64 " bytes)", file, table_name (k), t,
                    i, entry_offset, v, d->file_size);
    return V_CLEAR;
  }
  claim = space_claim (d->space, off, d->grain_bytes, t, i, &m);
  if (claim == CLAIM_NOMEM)
    return V_ERROR;
  if (claim == CLAIM_META) {
    if (report)
      check_report (s->c, VMDK_CHECK_CORRUPT, "grain-in-metadata", w,
                    "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                    ") = sector %" PRIu32 ": the grain lies over the %s%s "
                    "(bytes %" PRIu64 "-%" PRIu64 ")%s", file,
                    table_name (k), t, i, entry_offset, v, m->table,
                    m->index >= 0 ? " named there" : "", m->start,
                    m->end - 1, v == 1 && !s->cowd ?
                    "; 1 means a zeroed grain only with header flag 0x4" :
                    "");
    return V_CLEAR;
  }
  if (off < s->data_start || claim == CLAIM_SHARED) {
    if (report)
      check_report (s->c, VMDK_CHECK_CORRUPT, off < s->data_start ?
                    "grain-before-data" : "grain-shared", w,
                    "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                    ") = sector %" PRIu32 ": %s", file, table_name (k), t,
                    i, entry_offset, v, off < s->data_start ?
                    "the grain lies before the start of the grains "
                    "(overHead, or the end of the directory)" :
                    "another entry names the same grain");
    return V_RELOCATE;
  }
  s->grains_end = MAX (s->grains_end, end);
  if (end > d->file_size) {
    if (report)
      check_report (s->c, VMDK_CHECK_CORRUPT, "grain-cut-by-eof", w,
                    "%s: %s %" PRIu64 " entry %" PRIu32 " (byte %" PRId64
                    ") = sector %" PRIu32 ": the grain is cut short by the "
                    "end of the file (%" PRIu64 " bytes)", file,
                    table_name (k), t, i, entry_offset, v, d->file_size);
    d->min_size = MAX (d->min_size, end);
  }
  return V_OK;
}

static void
on_leak (void *opaque, uint64_t start, uint64_t length)
{
  struct sparse_ctx *s = opaque;
  struct where w = where_at ("file", -1, -1, start, -1);

  s->leaked += length;
  if (!s->c->repairing)
    s->c->sum->leaked_bytes += length;
  if (start + length >= s->d.file_size)
    s->tail_leak = start;
  check_report (s->c, VMDK_CHECK_LEAK, "leaked-space", w,
                "%s: bytes %" PRIu64 "-%" PRIu64 " (%" PRIu64 " bytes, %"
                PRIu64 " grains) are named by no table: leaked space",
                s->c->file, start, start + length - 1, length,
                div_round_up (length, s->d.grain_bytes));
}

/* The space map of the file, with the header in it (d->grain_bytes
 * must be set).
 */
static int
prepare_space (struct sparse_ctx *s)
{
  if (space_init (&s->space, s->f->file_size, s->d.grain_bytes) == -1 ||
      space_add_meta (&s->space, 0, s->cowd ? COWD_HEADER_SIZE : SECTOR,
                      "header", -1, 0) == -1)
    return -1;
  if (s->space.slot == 0)
    check_report (s->c, VMDK_CHECK_NOTE, "not-checked-space", where_file (),
                  "%s: the file has too many grain slots to check for "
                  "shared grains and leaked space", s->c->file);
  return 0;
}

/* The walk, shared by both kinds once the header set d up. */
static int
walk (struct sparse_ctx *s)
{
  struct dir_check *d = &s->d;

  d->c = s->c;
  d->io = s->f->io;
  d->file_size = s->f->file_size;
  d->extent_start = s->f->extent_start;
  d->extent_length = s->f->extent_length;
  d->space = &s->space;
  d->judge = judge_grain;
  d->opaque = s;
  d->tables_movable = true;
  if (dir_load (d) == -1 || dir_walk (d) == -1)
    return -1;
  s->walked = true;
  if (s->space.odd_overflow)
    check_report (s->c, VMDK_CHECK_NOTE, "not-checked-odd", where_file (),
                  "%s: too many grains off the grain-size boundaries to "
                  "check them all for overlaps", s->c->file);
  space_leaks (&s->space, s->data_start, on_leak, s);
  s->c->sum->grains += d->grains;
  return 0;
}

/* The KDMV header, then the walk. */
static int
kdmv_analyze (struct sparse_ctx *s, const unsigned char *buf)
{
  const struct sparse_header *h = &s->h;
  struct dir_check *d = &s->d;
  uint64_t file_size = s->f->file_size, coverage, off;
  struct where w = where_at ("header", -1, -1, 0, -1);

  if (sparse_header_decode (buf, &s->h, s->c->file) == -1) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                  vmdk_errmsg ());
    s->stop = "its header is not valid";
    return 0;
  }
  if (s->f->extent_length != h->capacity * SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "extent-size", w,
                  "%s: the descriptor's extent line says %" PRIu64
                  " sectors, the header's capacity is %" PRIu64,
                  s->c->file, s->f->extent_length / SECTOR, h->capacity);
  coverage = h->grain_size * h->num_gtes_per_gt;
  d->nr_gts = div_round_up (h->capacity, coverage);
  if (d->nr_gts > MAX_GTS) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "directory-too-large", w,
                  "%s: the grain directory would have %" PRIu64 " entries, "
                  "more than %" PRIu64 ": the header is not sane",
                  s->c->file, d->nr_gts, MAX_GTS);
    s->stop = "its header is not sane";
    return 0;
  }
  if (h->overhead > file_size / SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "overhead-past-eof", w,
                  "%s: the header's overHead (%" PRIu64 " sectors) lies past "
                  "the end of the file (%" PRIu64 " bytes)", s->c->file,
                  h->overhead, file_size);
  s->data_start = MIN (h->overhead, file_size / SECTOR) * SECTOR;
  s->data_start = MAX (s->data_start, (uint64_t) SECTOR);
  d->gtes_per_gt = h->num_gtes_per_gt;
  d->grain_bytes = h->grain_size * SECTOR;
  if (prepare_space (s) == -1)
    return -1;
  if (h->desc_offset > 0 && h->desc_size > 0) {
    if (h->desc_offset >= file_size / SECTOR ||
        h->desc_size > file_size / SECTOR - h->desc_offset)
      check_report (s->c, VMDK_CHECK_CORRUPT, "descriptor-outside-file", w,
                    "%s: the embedded descriptor (sectors %" PRIu64 "+%"
                    PRIu64 ") lies past the end of the file (%" PRIu64
                    " bytes)", s->c->file, h->desc_offset, h->desc_size,
                    file_size);
    else if (space_add_meta (&s->space, h->desc_offset * SECTOR,
                             h->desc_size * SECTOR, "descriptor", -1,
                             0) == -1)
      return -1;
  }
  if ((h->flags & SPARSE_FLAG_RGD) && h->rgd_offset == 0)
    check_report (s->c, VMDK_CHECK_NOTE, "no-redundant-directory", w,
                  "%s: the header flags a redundant grain directory but its "
                  "rgdOffset is 0: there is none", s->c->file);
  s->zero_value = (h->flags & SPARSE_FLAG_ZERO_GRAIN) ? 1 : 0;
  s->unclean = h->unclean_shutdown != 0;
  d->copies = (h->flags & SPARSE_FLAG_RGD) && h->rgd_offset ? 2 : 1;
  d->dir_start[0] = MUL_OVERFLOW (h->gd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  d->dir_start[1] = MUL_OVERFLOW (h->rgd_offset, (uint64_t) SECTOR, &off)
    ? UINT64_MAX : off;
  return walk (s);
}

/* The COWD header, then the walk. */
static int
cowd_analyze (struct sparse_ctx *s)
{
  struct dir_check *d = &s->d;
  struct cowd_header *h = &s->ch;
  struct where w = where_at ("header", -1, -1, 0, -1);
  uint64_t gd_end, used;

  if (s->f->file_size < COWD_HEADER_SIZE) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w,
                  "%s: the COWD header is cut short: the file is %" PRIu64
                  " bytes", s->c->file, s->f->file_size);
    s->stop = "its header is cut short";
    return 0;
  }
  if (io_pread_full (s->f->io, s->cowd_buf, COWD_HEADER_SIZE, 0,
                     "COWD header") == -1)
    return -1;
  if (cowd_header_decode (s->cowd_buf, h, s->c->file) == -1) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                  vmdk_errmsg ());
    s->stop = "its header is not valid";
    return 0;
  }
  if (s->f->extent_length != (uint64_t) h->capacity * SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "extent-size", w,
                  "%s: the descriptor's extent line says %" PRIu64
                  " sectors, the COWD header's capacity is %" PRIu32,
                  s->c->file, s->f->extent_length / SECTOR, h->capacity);
  s->cowd_unclean = get_le32 (s->cowd_buf + COWD_OFF_UNCLEAN);
  s->unclean = s->cowd_unclean != 0;
  if (h->flags & COWD_FLAG_INCONSISTENT)
    check_report (s->c, VMDK_CHECK_NOTE, "cowd-inconsistent-flag", w,
                  "%s: the COWD header's flags (0x%" PRIx32 ") have the "
                  "inconsistent bit 0x4 set", s->c->file, h->flags);
  /* Grains lie past the directory as the header declares it. */
  gd_end = (uint64_t) h->gd_sector * SECTOR +
    div_round_up ((uint64_t) h->gd_entries * 4, SECTOR) * SECTOR;
  s->data_start = gd_end;
  d->nr_gts = h->nr_gts;
  d->gtes_per_gt = COWD_GTES_PER_GT;
  d->grain_bytes = (uint64_t) h->grain_size * SECTOR;
  d->copies = 1;
  d->dir_start[0] = (uint64_t) h->gd_sector * SECTOR;
  if (prepare_space (s) == -1 || walk (s) == -1)
    return -1;
  /* VMware allocates from the next free sector: it must lie past
   * everything in use, or new grains would alias old ones.
   */
  used = div_round_up (MAX (space_used_end (&s->space), s->grains_end),
                      SECTOR);
  if (s->walked && h->next_free < used) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "next-free-too-low",
                  where_at ("header", -1, -1, COWD_OFF_NEXT_FREE, -1),
                  "%s: the COWD header's next free sector (%" PRIu32 ") "
                  "lies before the end of the grains and tables in use "
                  "(sector %" PRIu64 "): new grains would overwrite them",
                  s->c->file, h->next_free, used);
    s->next_free = used;
  }
  return 0;
}

static int
analyze (struct sparse_ctx *s, const unsigned char *buf)
{
  int r;

  s->c->file_corruptions = 0;
  r = s->cowd ? cowd_analyze (s) : kdmv_analyze (s, buf);
  s->corruptions = s->c->file_corruptions;
  if (r == 0 && s->unclean)
    check_report (s->c, VMDK_CHECK_CORRUPT, "unclean-shutdown",
                  where_at ("header", -1, -1,
                            s->cowd ? COWD_OFF_UNCLEAN : 72, -1),
                  "%s: the header's uncleanShutdown flag is set: the file "
                  "was not closed cleanly", s->c->file);
  return r;
}

static void
release (struct sparse_ctx *s)
{
  dir_free (&s->d);
  space_free (&s->space);
  memset (&s->d, 0, sizeof s->d);
  s->walked = false;
  s->grains_end = s->leaked = s->tail_leak = s->next_free = 0;
}

/* ------------------------------------------------------------------ */
/* Repairs. */

static int
write_u32_sync (struct vmdk_io *io, uint64_t offset, uint32_t v)
{
  unsigned char buf[4];

  put_le32 (buf, v);
  return fix_write_sync (io, buf, 4, offset);
}

/* COWD: the next free sector covers everything allocated, written
 * before the data it covers is synced (as the engine does).
 */
static int
raise_next_free (void *opaque, uint64_t end)
{
  struct sparse_ctx *s = opaque;
  uint64_t sectors = div_round_up (end, SECTOR);
  unsigned char buf[4];

  if (sectors <= s->ch.next_free)
    return 0;
  put_le32 (buf, MIN (sectors, (uint64_t) UINT32_MAX));
  return s->f->io->ops->pwrite (s->f->io, buf, 4, COWD_OFF_NEXT_FREE);
}

static void
report_fixes (struct sparse_ctx *s)
{
  const struct dir_check *d = &s->d;
  uint64_t n[3] = { 0, 0, 0 };
  size_t j;

  for (j = 0; j < d->nr_fixes; ++j)
    n[d->fixes[j].kind]++;
  if (n[FIX_CLEAR])
    check_report (s->c, VMDK_CHECK_REPAIRED, "cleared-entries", where_file (),
                  "%s: cleared %" PRIu64 " grain table entries that pointed "
                  "nowhere (their range now reads as %s)", s->c->file,
                  n[FIX_CLEAR], s->f->has_parent ? "the parent" : "zeroes");
  if (n[FIX_REDUNDANT])
    check_report (s->c, VMDK_CHECK_REPAIRED, "took-redundant", where_file (),
                  "%s: took %" PRIu64 " grain table entries from the "
                  "redundant copy, where the primary pointed nowhere",
                  s->c->file, n[FIX_REDUNDANT]);
  if (n[FIX_RELOCATE])
    check_report (s->c, VMDK_CHECK_REPAIRED, "copied-grains", where_file (),
                  "%s: gave %" PRIu64 " grains that shared their sectors "
                  "(or lay before the grain area) a copy of their own at the "
                  "end of the file", s->c->file, n[FIX_RELOCATE]);
  if (d->min_size > d->file_size)
    check_report (s->c, VMDK_CHECK_REPAIRED, "extended-file", where_file (),
                  "%s: extended the file from %" PRIu64 " to %" PRIu64
                  " bytes over grains and tables it cut short", s->c->file,
                  d->file_size, d->min_size);
  if (d->copies_differ || d->misplaced || !d->dir_ok[0] ||
      (d->copies == 2 && !d->dir_ok[1]))
    check_report (s->c, VMDK_CHECK_REPAIRED, "rebuilt-directories",
                  where_file (), "%s: made both copies of the grain "
                  "directory and tables agree, rebuilding the damaged or "
                  "missing ones from the good copy", s->c->file);
}

/* Make the directories, tables and entries consistent.  Returns 1 if
 * something changed.
 */
static int
repair_structure (struct sparse_ctx *s)
{
  struct dir_check *d = &s->d;
  uint64_t new_dir[2] = { 0, 0 };
  struct alloc a;
  const char *why;

  if (!dir_needs_repair (d))
    return 0;
  why = dir_plan_refusal (d);
  if (why) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                  "%s: the grain directory was not repaired: %s",
                  s->c->file, why);
    s->stop = why;
    return 0;
  }
  a.next = MAX (d->file_size, d->min_size);
  a.grain_align = d->grain_bytes;
  if (s->cowd) {
    a.next = MAX (a.next, (uint64_t) s->ch.next_free * SECTOR);
    a.limit = (uint64_t) UINT32_MAX * SECTOR;
  }
  else
    a.limit = (UINT64_C (1) << 32) * SECTOR;
  if (fix_directories (d, &a, new_dir, s->cowd ? raise_next_free : NULL,
                       s) == -1)
    return -1;
  /* A directory that moved: point the header at it. */
  if (s->cowd && new_dir[0] &&
      write_u32_sync (s->f->io, COWD_OFF_GD, new_dir[0] / SECTOR) == -1)
    return -1;
  if (!s->cowd) {
    unsigned char buf[8];
    unsigned k;

    for (k = 0; k < 2; ++k) {
      if (new_dir[k] == 0)
        continue;
      put_le64 (buf, new_dir[k] / SECTOR);
      if (fix_write_sync (s->f->io, buf, 8, k ? 48 : 56) == -1)
        return -1;
    }
  }
  report_fixes (s);
  return 1;
}

/* Leaked space between grains: the grains at the end of the file move
 * into it (at most MAX_MOVES per run).  Returns 1 if some moved.
 */
static int
compact (struct sparse_ctx *s)
{
  uint64_t *holes = malloc (MAX_MOVES * sizeof *holes);
  uint64_t *grains = malloc (MAX_MOVES * sizeof *grains);
  size_t n;
  int r = -1;

  if (holes == NULL || grains == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    goto out;
  }
  n = space_plan_moves (&s->space, s->data_start, holes, grains, MAX_MOVES);
  r = 0;
  if (n > 0) {
    if (fix_move_grains (&s->d, holes, grains, n) == -1) {
      r = -1;
      goto out;
    }
    check_report (s->c, VMDK_CHECK_REPAIRED, "moved-grains", where_file (),
                  "%s: moved %zu grains from the end of the file into "
                  "leaked space between grains", s->c->file, n);
    r = 1;
  }
 out:
  free (holes);
  free (grains);
  return r;
}

/* Leaked space at the end of the file goes; the COWD next free sector
 * follows it down.
 */
static int
truncate_tail (struct sparse_ctx *s)
{
  uint64_t end = s->tail_leak;

  if (end == 0)
    return 0;
  if (fix_truncate (s->c, s->f->io, s->f->file_size, end) == -1)
    return -1;
  if (s->cowd && s->ch.next_free > div_round_up (end, SECTOR) &&
      write_u32_sync (s->f->io, COWD_OFF_NEXT_FREE,
                      div_round_up (end, SECTOR)) == -1)
    return -1;
  check_report (s->c, VMDK_CHECK_REPAIRED, "reclaimed-tail", where_file (),
                "%s: cut the file from %" PRIu64 " to %" PRIu64 " bytes, "
                "reclaiming the leaked space at its end", s->c->file,
                s->f->file_size, end);
  s->leaked -= s->f->file_size - end;
  s->f->file_size = end;
  return 0;
}

/* Once nothing else is wrong in the file. */
static int
clear_unclean (struct sparse_ctx *s)
{
  if (s->corruptions > 0) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "left-inconsistent",
                  where_file (), "%s: %" PRIu64 " inconsistencies were not "
                  "repaired (the check names them)%s", s->c->file,
                  s->corruptions, s->unclean ? "; uncleanShutdown was left "
                  "set" : "");
    return 0;
  }
  if (!s->unclean)
    return 0;
  if ((s->cowd ? write_u32_sync (s->f->io, COWD_OFF_UNCLEAN, 0)
               : fix_write_sync (s->f->io, "", 1, 72)) == -1)
    return -1;
  check_report (s->c, VMDK_CHECK_REPAIRED, "cleared-unclean", where_file (),
                "%s: cleared uncleanShutdown in the header", s->c->file);
  return 0;
}

/* Analyse the file again (silently) after a repair changed it. */
static int
reanalyze (struct sparse_ctx *s, const unsigned char *buf)
{
  release (s);
  if (s->f->io->ops->get_size (s->f->io, &s->f->file_size) == -1 ||
      analyze (s, buf) == -1)
    return -1;
  if (s->stop || dir_needs_repair (&s->d)) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "still-inconsistent",
                  where_file (), "%s: still inconsistent after the repair",
                  s->c->file);
    return 1;
  }
  return 0;
}

/* The repair pass: the leaks and the unclean flag are judged on the
 * file as the structural repairs left it.
 */
static int
repair (struct sparse_ctx *s, const unsigned char *buf)
{
  int r;

  if (s->stop) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                  "%s: not repaired: %s", s->c->file, s->stop);
    return 0;
  }
  r = repair_structure (s);
  if (r == 1)
    r = reanalyze (s, buf);
  if (r != 0 || s->stop)
    return r == -1 ? -1 : 0;
  if (s->next_free) {
    if (write_u32_sync (s->f->io, COWD_OFF_NEXT_FREE, s->next_free) == -1)
      return -1;
    check_report (s->c, VMDK_CHECK_REPAIRED, "raised-next-free",
                  where_file (), "%s: set the COWD header's next free sector "
                  "from %" PRIu32 " to %" PRIu64 ", past everything in use",
                  s->c->file, s->ch.next_free, s->next_free);
    s->corruptions--;
  }
  if (s->leaked) {
    r = compact (s);
    if (r == 1)
      r = reanalyze (s, buf);
    if (r != 0)
      return r == -1 ? -1 : 0;
    if (truncate_tail (s) == -1)
      return -1;
    if (s->leaked)
      check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "leaks-kept",
                    where_file (), "%s: %" PRIu64 " leaked bytes were left "
                    "(grains that cannot move lie after them)", s->c->file,
                    s->leaked);
  }
  return clear_unclean (s);
}

static int
check_sparse (struct checker *c, struct extent_file *f, bool cowd,
              const unsigned char *buf)
{
  struct sparse_ctx s = { .c = c, .f = f, .cowd = cowd };
  int r;

  r = analyze (&s, buf);
  if (r == 0 && c->repairing)
    r = repair (&s, buf);
  release (&s);
  return r;
}

int
check_kdmv (struct checker *c, struct extent_file *f)
{
  unsigned char buf[SPARSE_HEADER_SIZE];

  if (f->file_size < SPARSE_HEADER_SIZE) {
    check_report (c, VMDK_CHECK_CORRUPT, "header-invalid",
                  where_at ("header", -1, -1, 0, -1), "%s: the sparse "
                  "header is cut short: the file is %" PRIu64 " bytes",
                  c->file, f->file_size);
    return 0;
  }
  if (io_pread_full (f->io, buf, sizeof buf, 0, "sparse header") == -1)
    return -1;
  if (get_le32 (buf + 8) & SPARSE_FLAG_COMPRESSED)
    return check_stream (c, f, buf);
  return check_sparse (c, f, false, buf);
}

int
check_cowd (struct checker *c, struct extent_file *f)
{
  return check_sparse (c, f, true, NULL);
}
