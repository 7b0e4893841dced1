/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Copying ranges of a disk from a source to a destination, each a
 * VMDK image or a raw file, on every core (vmdk convert, vmdk commit),
 * with an optional progress report.
 */

#ifndef VMDK_TOOL_COPY_H
#define VMDK_TOOL_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmdk_image;

/* One side of a copy: an image (img), or a raw file (fd). */
struct disk {
  const char *name;             /* for messages */
  struct vmdk_image *img;       /* NULL: raw */
  int fd;
  /* A raw destination may also be open with O_DIRECT (else -1): aligned
   * writes go there, past the page cache, whose copying and writeback
   * would otherwise cost as much CPU as inflating a stream image.
   */
  int direct_fd;
};

struct range {
  uint64_t offset, length;
};

/* A growing list of ascending ranges; adjacent ones are merged. */
struct range_list {
  struct range *r;
  size_t nr, alloc;
  uint64_t total;               /* bytes in all ranges */
};
extern int range_add (struct range_list *l, uint64_t offset,
                      uint64_t length);
extern void range_list_free (struct range_list *l);

/* The ranges of src that may hold data (the rest reads as zeroes): its
 * DATA runs through the whole chain, or a raw file's data regions.
 */
extern int data_ranges (const struct disk *src, uint64_t size,
                        struct range_list *l);

/* Copy every range from src to dst, the grains (aligned 64 KiB
 * pieces) that read as zeroes apart: a VMDK destination zeroes them
 * through the engine (which changes nothing in a new image, and lets a
 * stream writer move on); a raw one skips them, so it must read as
 * zeroes there already.  progress: report on stderr.  Errors are
 * printed ("vmdk: FILE: ...").
 */
extern int copy_ranges (const struct disk *src, const struct disk *dst,
                        const struct range_list *l, bool progress);

#endif /* VMDK_TOOL_COPY_H */
