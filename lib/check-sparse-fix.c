/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Repairing hosted sparse (KDMV) and COWD files, in this order, each
 * step judged on the file as the one before left it:
 *   1. the directories, tables and entries (check-fix.c);
 *   2. COWD's next free sector, past everything in use;
 *   3. leaked space: grains from the end of the file move into it,
 *      the end is cut, what stays between grains is punched out;
 *   4. uncleanShutdown, once nothing else is wrong in the file.
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

/* Grains moved into leaked space per run (16 bytes each). */
#define MAX_MOVES (1024 * 1024)

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
      (d->copies == 2 && !d->dir_ok[1]) || d->dir_move[0] || d->dir_move[1])
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
  unsigned char buf[8];
  struct alloc a;
  const char *why;
  unsigned k;

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
  /* A directory that moved (KDMV only): point the header at it. */
  for (k = 0; k < 2; ++k) {
    if (new_dir[k] == 0)
      continue;
    put_le64 (buf, new_dir[k] / SECTOR);
    if (fix_write_sync (s->f->io, buf, 8, k ? 48 : 56) == -1)
      return -1;
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
  s->leaked -= s->tail_data;
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

static void
punch_leak (struct sparse_ctx *s, uint64_t start, uint64_t length)
{
  struct vmdk_io *io = s->f->io;

  if (s->io_failed)
    return;
  if (io->ops->punch == NULL || io->ops->punch (io, start, length) == -1) {
    s->io_failed = true;
    return;
  }
  s->leaked -= length;
}

static void
on_leak_punch (void *opaque, uint64_t start, uint64_t length)
{
  struct sparse_ctx *s = opaque;

  if (sparse_for_each_data (s->f->io, start, length, punch_leak, s) == -1)
    s->io_failed = true;
}

/* What leaked space is left gives its host blocks back (a hole of the
 * file wastes nothing: the engine leaves trimmed grains so).
 */
static int
punch_leaks (struct sparse_ctx *s)
{
  uint64_t before = s->leaked;

  space_leaks (&s->space, s->data_start, on_leak_punch, s);
  if (s->io_failed || s->f->io->ops->flush (s->f->io) == -1) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "leaks-kept",
                  where_file (), "%s: %" PRIu64 " leaked bytes were left: "
                  "%s", s->c->file, s->leaked, vmdk_errmsg ());
    return 0;
  }
  check_report (s->c, VMDK_CHECK_REPAIRED, "punched-leaks", where_file (),
                "%s: gave back the host blocks of %" PRIu64 " leaked bytes "
                "between grains in use (they are holes of the file now)",
                s->c->file, before);
  return 0;
}

/* Analyse the file again (silently) after a repair changed it. */
static int
reanalyze (struct sparse_ctx *s, const unsigned char *buf)
{
  sparse_release (s);
  if (s->f->io->ops->get_size (s->f->io, &s->f->file_size) == -1 ||
      sparse_analyze (s, buf) == -1)
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
int
sparse_repair (struct sparse_ctx *s, const unsigned char *buf)
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
    if (truncate_tail (s) == -1 || (s->leaked && punch_leaks (s) == -1))
      return -1;
  }
  return clear_unclean (s);
}

