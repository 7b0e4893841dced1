/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* libFuzzer target: vmdk check --repair on a hostile image, from
 * memory.  The input is an image in fuzz-image's format (a main file,
 * more files behind "#%FILE name" lines: see fuzz-image.c).
 *
 * What is checked besides memory safety (ASan, UBSan, leaks):
 *   - every finding is well formed: a known kind, a code and a
 *     message naming its file;
 *   - no valid grain is ever corrupted: the disk is read (its first
 *     and last READ_WINDOW bytes) before and after the repair, and
 *     every chunk that read before reads the same after, unless a
 *     finding named its range (an entry the repair clears or takes
 *     from the redundant copy); this holds even when the repair fails
 *     half-way (a file may not grow past 64 MiB here: like a full disk);
 *   - the repair never makes the image unopenable;
 *   - if the repair did something and refused nothing, a check
 *     afterwards finds no corruption (leaked space may stay: the memory
 *     source has no holes to punch);
 *   - a repair that refused everything changed nothing.
 * A violation aborts, which libFuzzer reports as a crash.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-files.h"
#include "io.h"
#include "vmdk.h"

#define READ_WINDOW (1024 * 1024)       /* head and tail of the disk */
#define CHUNK 4096
#define MAX_RANGES 4096                 /* disk ranges findings name */
#define GT_CACHE_BYTES (256 * 1024)

static bool verbose;

static void
ignore_log (unsigned category, const char *msg)
{
  CHECK (msg != NULL);
  if (verbose)
    fprintf (stderr, "fuzz-check: log %#x: %s\n", category, msg);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *v = getenv ("FUZZ_VERBOSE");

  verbose = v && *v && strcmp (v, "0") != 0;
  vmdk_set_debug (ignore_log, VMDK_DEBUG_OPEN);
  return 0;
}

static const struct vmdk_options read_opts = {
  .readonly = true,
  .gt_cache_bytes = GT_CACHE_BYTES,
  .ignore_parent_cid = true,
};

/* The disk as it reads: a window at each end, in chunks. */
struct snapshot {
  bool opened;
  uint64_t size;
  uint64_t start[2], len[2];
  unsigned char *data[2];
  bool *ok[2];                  /* per chunk: it read */
};

static void
snapshot_free (struct snapshot *s)
{
  int w;

  for (w = 0; w < 2; ++w) {
    free (s->data[w]);
    free (s->ok[w]);
  }
}

static void
take_snapshot (struct vmdk_source *files, struct snapshot *s)
{
  struct vmdk_source *src = fuzz_borrow_files (files);
  struct vmdk_image *img;
  uint64_t off;
  int w;

  memset (s, 0, sizeof *s);
  if (src == NULL)
    return;
  img = vmdk_open_source (src, MAIN_NAME, &read_opts);
  if (img == NULL)
    return;
  s->opened = true;
  s->size = vmdk_get_size (img);
  if (s->size <= 2 * (uint64_t) READ_WINDOW)
    s->len[0] = s->size;
  else {
    s->len[0] = s->len[1] = READ_WINDOW;
    s->start[1] = s->size - READ_WINDOW;
  }
  for (w = 0; w < 2; ++w) {
    size_t chunks = (s->len[w] + CHUNK - 1) / CHUNK;

    s->data[w] = malloc (s->len[w] ? s->len[w] : 1);
    s->ok[w] = calloc (chunks ? chunks : 1, sizeof (bool));
    CHECK (s->data[w] && s->ok[w]);
    for (off = 0; off < s->len[w]; off += CHUNK) {
      size_t n = s->len[w] - off < CHUNK ? s->len[w] - off : CHUNK;

      s->ok[w][off / CHUNK] =
        vmdk_pread (img, s->data[w] + off, n, s->start[w] + off) == 0;
    }
  }
  vmdk_close (img);
}

/* What the findings said. */
struct findings {
  uint64_t ranges[MAX_RANGES][2];
  size_t nr_ranges;
  bool too_many;                /* some ranges were not kept */
  uint64_t corrupt, repaired, refused;
};

static void
on_finding (void *opaque, const struct vmdk_check_finding *f)
{
  struct findings *fs = opaque;

  CHECK (f->kind <= VMDK_CHECK_NOT_REPAIRED);
  CHECK (f->code != NULL && f->code[0] != '\0');
  CHECK (f->message != NULL && f->message[0] != '\0');
  CHECK (f->count >= 1);
  CHECK (f->file == NULL || f->file[0] != '\0');
  if (verbose)
    fprintf (stderr, "fuzz-check: %d %s: %s\n", f->kind, f->code,
             f->message);
  switch (f->kind) {
  case VMDK_CHECK_CORRUPT: fs->corrupt += f->count; break;
  case VMDK_CHECK_REPAIRED: fs->repaired++; break;
  case VMDK_CHECK_NOT_REPAIRED: fs->refused++; break;
  default: break;
  }
  if (f->disk_length == 0)
    return;
  if (fs->nr_ranges == MAX_RANGES) {
    fs->too_many = true;
    return;
  }
  fs->ranges[fs->nr_ranges][0] = f->disk_offset;
  fs->ranges[fs->nr_ranges++][1] = f->disk_offset + f->disk_length;
}

static bool
named (const struct findings *fs, uint64_t start, uint64_t end)
{
  size_t i;

  if (fs->too_many)
    return true;
  for (i = 0; i < fs->nr_ranges; ++i)
    if (start < fs->ranges[i][1] && fs->ranges[i][0] < end)
      return true;
  return false;
}

/* Every chunk that read before reads the same now, unless named. */
static void
compare (const struct snapshot *before, const struct snapshot *after,
         const struct findings *fs)
{
  uint64_t off, at;
  int w;

  if (!before->opened)
    return;
  CHECK (after->opened);        /* a repair never makes it unopenable */
  CHECK (after->size == before->size);
  for (w = 0; w < 2; ++w)
    for (off = 0; off < before->len[w]; off += CHUNK) {
      size_t n = before->len[w] - off < CHUNK ? before->len[w] - off : CHUNK;

      at = before->start[w] + off;
      if (!before->ok[w][off / CHUNK] || named (fs, at, at + n))
        continue;
      if (!after->ok[w][off / CHUNK] ||
          memcmp (before->data[w] + off, after->data[w] + off, n) != 0) {
        fprintf (stderr, "fuzz-check: disk bytes %" PRIu64 "-%" PRIu64
                 " read %s after the repair\n", at, at + n - 1,
                 after->ok[w][off / CHUNK] ? "differently" : "with an error");
        abort ();
      }
    }
}

/* The input's file names (fuzz_add_files says them). */
struct names {
  char name[MAX_FILES + 1][MAX_NAME + 1];
  size_t n;
};

static void
note_name (void *opaque, const char *name, bool main, const uint8_t *data,
           size_t len)
{
  struct names *ns = opaque;

  if (ns->n < MAX_FILES + 1)
    snprintf (ns->name[ns->n++], MAX_NAME + 1, "%s", name);
}

/* A digest of the files' bytes, to see that a refused repair changed
 * none.
 */
static uint64_t
files_digest (struct vmdk_source *files, const struct names *ns)
{
  uint64_t h = UINT64_C (0xcbf29ce484222325), off;
  unsigned char buf[4096];
  struct vmdk_io *io;
  int64_t n, i;
  size_t k;

  for (k = 0; k < ns->n; ++k) {
    io = files->ops->open (files, ns->name[k], true);
    if (io == NULL)
      continue;
    for (off = 0; (n = io->ops->pread (io, buf, sizeof buf, off)) > 0;
         off += n)
      for (i = 0; i < n; ++i)
        h = (h ^ buf[i]) * UINT64_C (0x100000001b3);
    h ^= off;
    io_close (io);
  }
  return h;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct findings *fs = calloc (1, sizeof *fs), *again = NULL;
  struct vmdk_check_options opts = {
    .repair = true, .fn = on_finding, .opaque = fs, .max_reports = 1000000,
  };
  struct vmdk_check_summary sum;
  struct snapshot before, after;
  struct vmdk_source *files, *src;
  struct names *ns = calloc (1, sizeof *ns);
  uint64_t digest;
  int r;

  files = vmdk_source_memory_new ();
  if (files == NULL || fs == NULL || ns == NULL ||
      fuzz_add_files (files, data, size, note_name, ns) == -1)
    goto out;
  take_snapshot (files, &before);
  digest = files_digest (files, ns);

  src = fuzz_borrow_files (files);
  if (src == NULL)
    goto out_snapshot;
  r = vmdk_check_source (src, MAIN_NAME, &opts, &sum);
  src->ops->close (src);
  if (r == -1) {
    CHECK (strlen (vmdk_errmsg ()) > 0);
    if (verbose)
      fprintf (stderr, "fuzz-check: %s\n", vmdk_errmsg ());
  }
  else {
    CHECK (sum.corruptions == fs->corrupt);
    CHECK (sum.repairs == fs->repaired);
  }

  take_snapshot (files, &after);
  compare (&before, &after, fs);
  if (r == 0 && fs->repaired == 0)
    CHECK (files_digest (files, ns) == digest);

  /* A repair that did what it did and refused nothing leaves no
   * corruption behind.
   */
  if (r == 0 && fs->repaired > 0 && fs->refused == 0) {
    again = calloc (1, sizeof *again);
    src = fuzz_borrow_files (files);
    if (again && src) {
      opts.repair = false;
      opts.opaque = again;
      if (vmdk_check_source (src, MAIN_NAME, &opts, &sum) == 0 &&
          sum.corruptions != 0) {
        fprintf (stderr, "fuzz-check: %" PRIu64 " corruptions are left "
                 "after a repair that refused nothing\n", sum.corruptions);
        abort ();
      }
    }
    if (src)
      src->ops->close (src);
    free (again);
  }
  snapshot_free (&after);
 out_snapshot:
  snapshot_free (&before);
 out:
  if (files)
    files->ops->close (files);
  free (fs);
  free (ns);
  return 0;
}
