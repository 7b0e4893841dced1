/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* streamOptimized files, checked (check-stream.c) and repaired
 * (check-stream-fix.c).
 */

#ifndef VMDK_CHECK_STREAM_H
#define VMDK_CHECK_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "header.h"
#include "stream-map.h"

struct stream_ctx {
  struct checker *c;
  struct extent_file *f;
  struct sparse_header h;       /* the header, or the footer if valid */
  bool header_ok;
  bool at_end;                  /* gdOffset is GD_AT_END */
  bool footer_ok;
  bool eos_bad;                 /* a footer, but no end-of-stream marker */
  bool header_unclean, footer_unclean;
  uint64_t nr_grains;
  struct stream *reader;
  /* What the walk found: the last intact marker of each grain, and
   * markers whose data does not inflate to their grain.
   */
  struct stream_map found, damaged;
  bool maps_ok;
  bool maps_full;               /* they took what they may */
  uint64_t maps_bytes;
  uint64_t markers;             /* intact grain markers walked */
  uint64_t named;               /* of those, named as found[] says */
  uint64_t named_older;         /* entries naming an older intact one */
  uint64_t walk_start, walk_end;
  uint64_t intact_end;          /* where the last intact grain ends */
  uint64_t leaks;
  bool torn;                    /* it stopped at something not a marker */
  uint64_t gd_marker;           /* byte of the GD marker, 0: none */
  struct space space;
  struct dir_check d;
  bool walked;
  uint64_t corruptions;
  const char *stop;
};

/* Analyse the stream whose header is buf, reporting what is wrong. */
extern int stream_check_analyze (struct stream_ctx *s,
                                 const unsigned char *buf);
extern void stream_check_release (struct stream_ctx *s);
/* The repair pass, after stream_check_analyze. */
extern int stream_check_repair (struct stream_ctx *s,
                                const unsigned char *buf);

#endif /* VMDK_CHECK_STREAM_H */
