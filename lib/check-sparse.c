/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Checking hosted sparse (KDMV) and COWD files: the header, the
 * directories and tables (check-dir.c), what every grain entry points
 * at, the space nothing references (a hole of the host file is not a
 * leak: it wastes nothing), and the uncleanShutdown flag.  The repairs
 * are in check-sparse-fix.c.
 *
 * A grain entry is judged by what it points at, and repaired so:
 *   past the end of the file, or into metadata (header, descriptor,
 *     a directory or table)      it points nowhere: cleared;
 *   before overHead, or at a grain another entry names (or overlaps)
 *                                its bytes are kept, copied to a grain
 *                                of its own at the end of the file;
 *   a grain cut by the end of the file
 *                                the file is extended over it (reads
 *                                do not change).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "check-sparse.h"
#include "checked.h"
#include "error.h"
#include "header.h"
#include "le.h"



static enum verdict
judge_grain (struct dir_check *d, unsigned k, uint64_t t, uint32_t i,
             uint32_t v, int64_t entry_offset, bool report)
{
  struct sparse_ctx *s = d->opaque;
  uint64_t off = (uint64_t) v * SECTOR, end = off + d->grain_bytes;
  struct where w = entry_where (d, k, t, i, entry_offset, v);
  const struct meta *m;
  enum claim claim;

  if (v == s->zero_value)
    return V_OK;
  if (off >= d->file_size) {
    if (report)
      report_entry (s->c, "grain-past-eof", w, "the grain lies past the end "
                    "of the file (%" PRIu64 " bytes)", d->file_size);
    return V_CLEAR;
  }
  claim = space_claim (d->space, off, d->grain_bytes, t, i, &m);
  if (claim == CLAIM_NOMEM)
    return V_ERROR;
  if (claim == CLAIM_META) {
    if (report)
      report_entry (s->c, "grain-in-metadata", w, "the grain lies over the "
                    "%s%s (bytes %" PRIu64 "-%" PRIu64 ")%s", m->table,
                    m->index >= 0 ? " named there" : "", m->start,
                    m->end - 1, v == 1 && !s->cowd ?
                    "; 1 means a zeroed grain only with header flag 0x4" :
                    "");
    return V_CLEAR;
  }
  if (off < s->data_start || claim == CLAIM_SHARED) {
    if (report)
      report_entry (s->c, off < s->data_start ? "grain-before-data" :
                    "grain-shared", w, "%s", off < s->data_start ?
                    "the grain lies before the start of the grains "
                    "(overHead, or the end of the directory)" :
                    "another entry names the same grain");
    return V_RELOCATE;
  }
  s->grains_end = MAX (s->grains_end, end);
  if (end > d->file_size) {
    if (report)
      report_entry (s->c, "grain-cut-by-eof", w, "the grain is cut short by "
                    "the end of the file (%" PRIu64 " bytes)", d->file_size);
    d->min_size = MAX (d->min_size, end);
  }
  return V_OK;
}

/* Call fn for the parts of [start, start+len) that hold data: space
 * the host file does not allocate (a hole, as the engine leaves a
 * grain it trimmed) wastes nothing and is no leak.
 */
int
sparse_for_each_data (struct vmdk_io *io, uint64_t start, uint64_t len,
               void (*fn) (struct sparse_ctx *s, uint64_t start,
                           uint64_t len),
               struct sparse_ctx *s)
{
  uint64_t end = start + len, next;
  bool data;

  while (start < end) {
    if (io->ops->region == NULL) {
      data = true;
      next = end;
    }
    else if (io->ops->region (io, start, &data, &next) == -1)
      return -1;
    next = MAX (next, start + 1);
    next = MIN (next, end);
    if (data)
      fn (s, start, next - start);
    start = next;
  }
  return 0;
}

static void
report_leak (struct sparse_ctx *s, uint64_t start, uint64_t length)
{
  struct where w = where_at ("file", -1, -1, start, -1);

  s->leaked += length;
  if (!s->c->repairing)
    s->c->sum->leaked_bytes += length;
  check_report (s->c, VMDK_CHECK_LEAK, "leaked-space", w,
                "%s: bytes %" PRIu64 "-%" PRIu64 " (%" PRIu64 " bytes) are "
                "named by no table: leaked space", s->c->file, start,
                start + length - 1, length);
}

static void
on_leak (void *opaque, uint64_t start, uint64_t length)
{
  struct sparse_ctx *s = opaque;
  uint64_t before = s->leaked;

  if (sparse_for_each_data (s->f->io, start, length, report_leak, s) == -1)
    s->io_failed = true;
  if (s->leaked > before && start + length >= s->d.file_size) {
    s->tail_leak = start;
    s->tail_data = s->leaked - before;
  }
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

  /* COWD's grains start where its directory ends: it cannot move. */
  if (dir_check_file (d, s->c, s->f, &s->space, judge_grain, s, true,
                      !s->cowd) == -1)
    return -1;
  s->walked = true;
  if (s->space.odd_overflow)
    check_report (s->c, VMDK_CHECK_NOTE, "not-checked-odd", where_file (),
                  "%s: too many grains off the grain-size boundaries to "
                  "check them all for overlaps", s->c->file);
  space_leaks (&s->space, s->data_start, on_leak, s);
  s->c->sum->grains += d->grains;
  return s->io_failed ? -1 : 0;
}

/* The KDMV header, then the walk. */
static int
kdmv_analyze (struct sparse_ctx *s, const unsigned char *buf)
{
  const struct sparse_header *h = &s->h;
  struct dir_check *d = &s->d;
  uint64_t file_size = s->f->file_size;
  struct where w = where_at ("header", -1, -1, 0, -1);

  if (sparse_header_decode (buf, &s->h, s->c->file) == -1) {
    check_report (s->c, VMDK_CHECK_CORRUPT, "header-invalid", w, "%s",
                  vmdk_errmsg ());
    s->stop = "its header is not valid";
    return 0;
  }
  s->stop = dir_from_header (d, s->c, h, s->f->extent_length);
  if (s->stop)
    return 0;
  if (h->overhead > file_size / SECTOR)
    check_report (s->c, VMDK_CHECK_CORRUPT, "overhead-past-eof", w,
                  "%s: the header's overHead (%" PRIu64 " sectors) lies past "
                  "the end of the file (%" PRIu64 " bytes)", s->c->file,
                  h->overhead, file_size);
  s->data_start = MIN (h->overhead, file_size / SECTOR) * SECTOR;
  s->data_start = MAX (s->data_start, (uint64_t) SECTOR);
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

int
sparse_analyze (struct sparse_ctx *s, const unsigned char *buf)
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

void
sparse_release (struct sparse_ctx *s)
{
  dir_free (&s->d);
  space_free (&s->space);
  memset (&s->d, 0, sizeof s->d);
  s->walked = s->io_failed = false;
  s->grains_end = s->leaked = s->tail_leak = s->tail_data = 0;
  s->next_free = 0;
}

static int
check_sparse (struct checker *c, struct extent_file *f, bool cowd,
              const unsigned char *buf)
{
  struct sparse_ctx s = { .c = c, .f = f, .cowd = cowd };
  int r;

  r = sparse_analyze (&s, buf);
  if (r == 0 && c->repairing)
    r = sparse_repair (&s, buf);
  sparse_release (&s);
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
