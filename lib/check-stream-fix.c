/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Repairing streamOptimized files: the tail of a stream a writer left
 * torn, entries that name no intact grain (cleared in place, as tables
 * never move within a stream), and uncleanShutdown.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "check-stream.h"
#include "checked.h"
#include "deflate.h"
#include "error.h"
#include "header.h"
#include "stream.h"
#include "stream-map.h"
#include "stream-write.h"

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
  /* The recovery stops at the first grain that does not inflate: if
   * intact grains follow it, they would be lost.  Metadata after the
   * last grain (an old tail) is written over.
   */
  if (r == 0 && s->intact_end > end) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "refused", where_file (),
                  "%s: the stream's end was not rewritten: intact grains "
                  "follow a damaged one at byte %" PRIu64 " and would be "
                  "lost", s->c->file, end);
    stream_map_free (&m);
    return 0;
  }
  end = MIN (end, s->intact_end);
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

int
stream_check_repair (struct stream_ctx *s, const unsigned char *buf)
{
  struct dir_check *d = &s->d;
  uint64_t new_dir[2] = { 0, 0 };
  struct alloc a = { .next = s->f->file_size, .grain_align = SECTOR,
                     .limit = s->f->file_size };
  static const unsigned char zero[SECTOR];
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
  /* A footer without its end-of-stream marker: the last sector is
   * the marker by the layout (all zeroes).
   */
  if (s->eos_bad) {
    if (fix_write_sync (s->f->io, zero, SECTOR,
                        s->f->file_size - SECTOR) == -1)
      return -1;
    check_report (s->c, VMDK_CHECK_REPAIRED, "rewrote-eos", where_file (),
                  "%s: wrote the end-of-stream marker after the footer",
                  s->c->file);
    stream_check_release (s);
    if (stream_check_analyze (s, buf) == -1)
      return -1;
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
    stream_check_release (s);
    if (stream_check_analyze (s, buf) == -1)
      return -1;
  }
  if (s->corruptions > 0) {
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "left-inconsistent",
                  where_file (), "%s: %" PRIu64 " inconsistencies were not "
                  "repaired (the check names them)", s->c->file,
                  s->corruptions);
    return 0;
  }
  if (s->walked && s->leaks)
    check_report (s->c, VMDK_CHECK_NOT_REPAIRED, "leaks-kept", where_file (),
                  "%s: leaked grain versions were left: a stream cannot be "
                  "compacted in place", s->c->file);
  if (s->header_unclean || s->footer_unclean)
    return clear_unclean (s);
  return 0;
}

