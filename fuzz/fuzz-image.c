/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* libFuzzer target: open a whole image from memory, read it, map it.
 *
 * Input format.  The input is the main file, "disk.vmdk": a monolithic
 * sparse or streamOptimized file, a COWD file, or a text descriptor.
 * Further files may follow, each introduced by a marker line
 *
 *   \n#%FILE name\n<bytes of the file up to the next marker or the end>
 *
 * so that a descriptor's FLAT / SPARSE / VMFSSPARSE / SESPARSE extents
 * and parentFileNameHint parents can be fuzzed too.  Marker lines
 * belong to no file: the main file is everything before the first
 * marker, each named file everything from the end of its marker line
 * to the next marker or the end of the input.
 *
 * What is checked besides memory safety (ASan, UBSan, leaks):
 *   - every vmdk_map answer is a run sequence that starts at or before
 *     the requested offset, is contiguous, ascending, non-empty, of a
 *     known type and inside the disk;
 *   - bytes that vmdk_map reports as zero or hole read as zeroes;
 *   - reading the same range twice gives the same bytes (the grain
 *     table cache is tiny, so the second read goes through evictions);
 *   - reads of any size at any offset never touch memory outside the
 *     buffer (the buffer is exactly the size of the request).
 * A violation aborts, which libFuzzer reports as a crash.
 *
 * The amount read is capped (first and last READ_WINDOW bytes and a few
 * sampled ranges) so that images claiming huge capacities stay fast.
 *
 * Then, if the image is writable, it is opened read-write and a few
 * writes, zeroes, trims and flushes derived from the input are applied
 * near its start and end; the image must read back what was written,
 * at once and after close and reopen (see write_phase).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descriptor.h"
#include "error.h"
#include "fuzz-files.h"
#include "io.h"
#include "vmdk.h"


#define READ_WINDOW (1024 * 1024)       /* head and tail of the disk */
#define HEAD_CHUNK (64 * 1024)
#define TAIL_CHUNK 4093                 /* odd: unaligned requests */
#define NR_SAMPLES 8
#define SAMPLE_LEN (96 * 1024 + 512 + 7)
#define MAX_MAP_RUNS 4096               /* per vmdk_map call */
#define MAX_MAP_TOTAL_RUNS 65536        /* for the whole-disk map */
#define MAP_STEP (UINT64_C (1) << 32)   /* like an NBD block status */
#define GT_CACHE_BYTES (256 * 1024)     /* 4 KiB per cache shard */
#define WRITE_WINDOW (128 * 1024)       /* head and tail, for writes */
#define WRITE_CHUNK (64 * 1024)         /* largest write */
#define NR_WRITES 8
#define MAX_WRITE_GRAIN (1024 * 1024)

/* FUZZ_VERBOSE=1 in the environment prints what each input opened
 * as, and every error and log message (to check seeds, or to see what
 * a crashing input means).
 */
static bool verbose;

/* FUZZ_WRITE_CLEAN_ONLY=1 skips the write phase of images that had an
 * error when read: a way to keep a long run away from a known, still
 * open bug of the write path on corrupt images.
 */
static bool write_clean_only;
static unsigned nr_errors;

static void
ignore_log (unsigned category, const char *msg)
{
  /* Formatting the messages is the point; printing them is noise. */
  CHECK (msg != NULL);
  if (verbose)
    fprintf (stderr, "fuzz-image: log %#x: %s\n", category, msg);
}

static void
note_error (const char *what)
{
  const char *msg = vmdk_errmsg ();

  CHECK (strlen (msg) > 0);
  nr_errors++;
  if (verbose)
    fprintf (stderr, "fuzz-image: %s: %s\n", what, msg);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *v = getenv ("FUZZ_VERBOSE");

  verbose = v && *v && strcmp (v, "0") != 0;
  v = getenv ("FUZZ_WRITE_CLEAN_ONLY");
  write_clean_only = v && *v && strcmp (v, "0") != 0;
  /* Every category, so that every log format string is exercised. */
  vmdk_set_debug (ignore_log, VMDK_DEBUG_OPEN | VMDK_DEBUG_GRAINS |
                  VMDK_DEBUG_CACHE);
  return 0;
}

/* Writes are only checked on images whose storage is not shared: in
 * a corrupt file two grain-table entries may point at overlapping
 * sectors (or a grain at a table), and then a write through one
 * legitimately changes what the other reads.  This independent
 * reading of the KDMV and COWD layouts (VMDK-FORMAT.md b.1, b.5)
 * finds such overlaps among everything inside the file; entries
 * pointing past the end of the file are left out, since what the
 * engine does with those is its own business.  Likewise a descriptor
 * naming one file twice, or naming itself or its parent as an extent.
 */
static bool layout_shared;

struct interval {
  uint64_t start, end;          /* sectors, end exclusive */
};

static int
cmp_interval (const void *a, const void *b)
{
  const struct interval *x = a, *y = b;

  return x->start < y->start ? -1 : x->start > y->start;
}

#define MAX_INTERVALS (1 << 20)

struct intervals {
  struct interval *v;
  size_t n;
  bool too_many;
};

static void
add_interval (struct intervals *iv, uint64_t start, uint64_t sectors,
              uint64_t file_sectors)
{
  if (sectors == 0 || start >= file_sectors)
    return;
  if (iv->n >= MAX_INTERVALS) {
    iv->too_many = true;
    return;
  }
  iv->v[iv->n].start = start;
  iv->v[iv->n].end = start + sectors;
  iv->n++;
}

static uint32_t
le32_at (const uint8_t *f, size_t len, uint64_t off)
{
  if (off > len || len - off < 4)
    return 0;
  return f[off] | f[off + 1] << 8 | f[off + 2] << 16 |
    (uint32_t) f[off + 3] << 24;
}

static uint64_t
le64_at (const uint8_t *f, size_t len, uint64_t off)
{
  return le32_at (f, len, off) |
    (uint64_t) le32_at (f, len, off + 4) << 32;
}

/* Add a two-level directory: the directory, its tables and (unless
 * grain is 0: a redundant directory, whose tables name the same
 * grains) their grains.
 */
static void
add_directory (struct intervals *iv, const uint8_t *f, size_t len,
               uint64_t gd_sector, uint64_t nr_gts, uint64_t gtes,
               uint64_t gt_sectors, uint64_t grain, bool zeroed)
{
  uint64_t file_sectors = len / 512 + (len % 512 != 0), t, i;

  add_interval (iv, gd_sector, (nr_gts * 4 + 511) / 512, file_sectors);
  for (t = 0; t < nr_gts && !iv->too_many; ++t) {
    uint64_t gt = le32_at (f, len, gd_sector * 512 + t * 4);

    if (gt == 0 || gt >= file_sectors)
      continue;
    add_interval (iv, gt, gt_sectors, file_sectors);
    for (i = 0; grain && i < gtes && !iv->too_many; ++i) {
      uint64_t gte = le32_at (f, len, gt * 512 + i * 4);

      if (gte == 0 || (gte == 1 && zeroed))
        continue;
      add_interval (iv, gte, grain, file_sectors);
    }
  }
}

static bool
file_layout_shared (const uint8_t *f, size_t len)
{
  struct intervals iv = { .n = 0 };
  uint64_t file_sectors = len / 512 + (len % 512 != 0);
  bool shared = false;
  size_t i;

  if (len < 512)
    return false;
  iv.v = malloc (MAX_INTERVALS * sizeof *iv.v);
  if (iv.v == NULL)
    return true;
  if (memcmp (f, "KDMV", 4) == 0) {
    uint32_t flags = le32_at (f, len, 8);
    uint64_t capacity = le64_at (f, len, 12), grain = le64_at (f, len, 20);
    uint64_t gtes = le32_at (f, len, 44), coverage, nr_gts;
    uint64_t gd = le64_at (f, len, 56), rgd = le64_at (f, len, 48);
    bool zeroed = flags & 4;

    if (grain == 0 || gtes == 0 || grain > (1 << 21) || gtes > 65536 ||
        gd == UINT64_MAX || (flags & 0x10000)) {
      free (iv.v);
      return false;             /* refused, or compressed: read-only */
    }
    coverage = grain * gtes;
    nr_gts = capacity / coverage + (capacity % coverage != 0);
    if (nr_gts * gtes > MAX_INTERVALS) {
      free (iv.v);
      return true;              /* too big to check: do not write */
    }
    add_interval (&iv, 0, 1, file_sectors);
    add_interval (&iv, le64_at (f, len, 28), le64_at (f, len, 36),
                  file_sectors);
    add_directory (&iv, f, len, gd, nr_gts, gtes, (gtes * 4 + 511) / 512,
                   grain, zeroed);
    if ((flags & 2) && rgd != 0)
      add_directory (&iv, f, len, rgd, nr_gts, gtes,
                     (gtes * 4 + 511) / 512, 0, zeroed);
  }
  else if (memcmp (f, "COWD", 4) == 0) {
    uint64_t grain = le32_at (f, len, 16), gd = le32_at (f, len, 20);
    uint64_t entries = le32_at (f, len, 24);

    if (grain == 0 || entries > MAX_INTERVALS / 4096) {
      free (iv.v);
      return entries > MAX_INTERVALS / 4096;
    }
    add_interval (&iv, 0, 4, file_sectors);
    add_directory (&iv, f, len, gd, entries, 4096, 32, grain, false);
  }
  if (iv.too_many)
    shared = true;
  else {
    qsort (iv.v, iv.n, sizeof *iv.v, cmp_interval);
    for (i = 1; i < iv.n && !shared; ++i)
      if (iv.v[i].start < iv.v[i - 1].end)
        shared = true;
  }
  free (iv.v);
  return shared;
}

/* A descriptor that names one file twice, itself, or its parent among
 * its extents.
 */
static bool
descriptor_shared (const uint8_t *f, size_t len)
{
  struct descriptor *d;
  bool shared = false;
  size_t i, j;

  if (!descriptor_probe ((const char *) f, len))
    return false;
  d = descriptor_parse ((const char *) f, len, MAIN_NAME);
  if (d == NULL)
    return false;
  for (i = 0; i < d->nr_extents; ++i) {
    const char *fi = d->extents[i].filename;

    if (fi == NULL)
      continue;
    if (strcmp (fi, MAIN_NAME) == 0 ||
        (d->parent_hint && strcmp (fi, d->parent_hint) == 0))
      shared = true;
    for (j = i + 1; j < d->nr_extents; ++j)
      if (d->extents[j].filename &&
          strcmp (fi, d->extents[j].filename) == 0)
        shared = true;
  }
  descriptor_free (d);
  return shared;
}

/* Add the main file and any marker-separated files to src. */
/* Storage shared within a file, or a descriptor naming one file twice. */
static void
note_layout (void *opaque, const char *name, bool main, const uint8_t *f,
             size_t len)
{
  if (!layout_shared)
    layout_shared = file_layout_shared (f, len) ||
      (main && descriptor_shared (f, len));
}

struct map_check {
  uint64_t req_offset, req_end;   /* what was asked */
  uint64_t disk_size;
  uint64_t next;                  /* where the next run must start */
  bool first;
  unsigned runs, max_runs;
  /* If buf is set, zero / hole runs must read as zeroes in it. */
  const unsigned char *buf;
  uint64_t buf_offset;
  size_t buf_len;
};

static int
map_cb (void *opaque, uint64_t offset, uint64_t length,
        enum vmdk_map_type type)
{
  struct map_check *c = opaque;
  uint64_t end;

  CHECK (length > 0);
  CHECK (type == VMDK_MAP_DATA || type == VMDK_MAP_ZERO ||
         type == VMDK_MAP_HOLE);
  CHECK (!__builtin_add_overflow (offset, length, &end));
  CHECK (end <= c->disk_size);
  if (c->first) {
    CHECK (offset <= c->req_offset);
    CHECK (end > c->req_offset);
    c->first = false;
  }
  else
    CHECK (offset == c->next);
  c->next = end;

  if (c->buf && type != VMDK_MAP_DATA) {
    uint64_t lo = offset > c->buf_offset ? offset : c->buf_offset;
    uint64_t hi = end < c->buf_offset + c->buf_len
      ? end : c->buf_offset + c->buf_len;
    const unsigned char *p = c->buf + (lo - c->buf_offset);

    /* The range is zero iff its first byte is and it equals itself
     * shifted by one (fast, unlike an instrumented byte loop).
     */
    if (lo < hi && (p[0] != 0 || memcmp (p, p + 1, hi - lo - 1) != 0)) {
      uint64_t i = lo;

      while (c->buf[i - c->buf_offset] == 0)
        i++;
      fprintf (stderr, "map says %s at [%" PRIu64 ", %" PRIu64 ") but "
               "byte %" PRIu64 " reads as 0x%02x\n",
               type == VMDK_MAP_ZERO ? "zero" : "hole", offset, end, i,
               c->buf[i - c->buf_offset]);
      abort ();
    }
  }

  if (++c->runs >= c->max_runs)
    return 1;
  return 0;
}

/* Map [offset, offset + count) and check the answer.  Returns where
 * the answer ended (offset + count or more if complete), or 0 on
 * error; *runs is the number of runs reported.
 */
static uint64_t
map_and_check (struct vmdk_image *img, uint64_t offset, uint64_t count,
               unsigned max_runs, const unsigned char *buf, unsigned *runs)
{
  struct map_check c = {
    .req_offset = offset, .req_end = offset + count,
    .disk_size = vmdk_get_size (img), .first = true,
    .max_runs = max_runs,
    .buf = buf, .buf_offset = offset, .buf_len = buf ? count : 0,
  };

  *runs = 0;
  if (vmdk_map (img, offset, count, map_cb, &c) == -1) {
    note_error ("map");
    return 0;
  }
  *runs = c.runs;
  /* Unless the callback stopped it, the answer covers the request. */
  if (c.runs < max_runs)
    CHECK (!c.first && c.next >= c.req_end);
  return c.first ? 0 : c.next;
}

/* Read [offset, offset + len) in chunks of at most chunk bytes, each
 * into a buffer of exactly its size; then map the range and check the
 * map against the bytes, and read the first chunk again.
 */
static void
read_range (struct vmdk_image *img, uint64_t offset, uint64_t len,
            size_t chunk)
{
  unsigned char *buf, *again;
  uint64_t done;
  bool ok = true;
  unsigned runs;

  if (len == 0)
    return;
  buf = malloc (len);
  if (buf == NULL)
    return;
  for (done = 0; done < len; ) {
    size_t n = len - done < chunk ? len - done : chunk;
    unsigned char *tmp = malloc (n);

    if (tmp == NULL)
      break;
    if (vmdk_pread (img, tmp, n, offset + done) == -1) {
      note_error ("pread");
      memset (buf + done, 0, n);
      ok = false;
    }
    else
      memcpy (buf + done, tmp, n);
    free (tmp);
    done += n;
  }

  if (ok) {
    size_t n = len < chunk ? len : chunk;

    map_and_check (img, offset, len, UINT32_MAX, buf, &runs);
    again = malloc (n);
    if (again) {
      if (vmdk_pread (img, again, n, offset) == 0)
        CHECK (memcmp (again, buf, n) == 0);
      free (again);
    }
  }
  free (buf);
}

/* Map the whole disk in NBD-sized steps, up to a number of runs. */
static void
map_everything (struct vmdk_image *img, uint64_t size)
{
  uint64_t offset = 0;
  unsigned total = 0;

  while (offset < size && total < MAX_MAP_TOTAL_RUNS) {
    uint64_t count = size - offset < MAP_STEP ? size - offset : MAP_STEP;
    unsigned runs;
    uint64_t end = map_and_check (img, offset, count, MAX_MAP_RUNS, NULL,
                                  &runs);

    if (end <= offset)
      break;
    offset = end;
    total += runs;
  }
}

static struct vmdk_image *
open_image (struct vmdk_source *files, const struct vmdk_options *opts,
            const char *what)
{
  struct vmdk_source *b = fuzz_borrow_files (files);
  struct vmdk_image *img;

  if (b == NULL)
    return NULL;
  img = vmdk_open_source (b, MAIN_NAME, opts);
  if (img == NULL) {
    note_error (what);
    return NULL;
  }
  CHECK (vmdk_get_size (img) <= INT64_MAX);
  CHECK (vmdk_get_grain_size (img) >= 512);
  CHECK (vmdk_get_chain_length (img) >= 1);
  CHECK (vmdk_get_chain_length (img) <= VMDK_MAX_CHAIN_DEPTH);
  CHECK (vmdk_get_create_type (img) != NULL);
  CHECK (vmdk_get_extent_count (img) >= 1);
  if (verbose)
    fprintf (stderr, "fuzz-image: %s: opened: %s, %zu extents, %" PRIu64
             " bytes, grain %" PRIu32 ", chain of %u\n", what,
             vmdk_get_create_type (img), vmdk_get_extent_count (img),
             vmdk_get_size (img), vmdk_get_grain_size (img),
             vmdk_get_chain_length (img));
  return img;
}

/* Phase 1: read (capped) and map everything. */
static void
read_phase (struct vmdk_image *img)
{
  uint64_t disk_size = vmdk_get_size (img), head, tail, off;
  unsigned char b[1];
  unsigned i;

  /* Head, in large aligned chunks. */
  head = disk_size < READ_WINDOW ? disk_size : READ_WINDOW;
  read_range (img, 0, head, HEAD_CHUNK);

  /* Tail, in small odd-sized chunks from an unaligned offset. */
  if (disk_size > head) {
    tail = disk_size - head < READ_WINDOW ? disk_size - head : READ_WINDOW;
    off = disk_size - tail;
    if (tail > 1) {
      off++;
      tail--;
    }
    read_range (img, off, tail, TAIL_CHUNK);
  }

  /* Samples spread over the middle, each one request. */
  if (disk_size > 2 * (uint64_t) READ_WINDOW) {
    for (i = 1; i <= NR_SAMPLES; ++i) {
      uint64_t len = SAMPLE_LEN;

      off = disk_size / (NR_SAMPLES + 2) * i - 3;
      if (off + len > disk_size)
        len = disk_size - off;
      read_range (img, off, len, SAMPLE_LEN);
    }
  }

  /* Edge cases of the API: empty and out-of-range requests. */
  CHECK (vmdk_pread (img, b, 0, disk_size) == 0);
  CHECK (vmdk_pread (img, b, 1, disk_size) == -1);
  CHECK (vmdk_pread (img, b, 1, UINT64_MAX) == -1);

  map_everything (img, disk_size);
}

/* Phase 2: writes.  A window of the disk (its head and tail) is read,
 * a few writes, zeroes and trims derived from the input are applied to
 * the image and to a shadow copy, and the image must then read as the
 * shadow says: at once, and again after flush, close and reopen.
 * Bytes whose contents are not defined (trimmed, or touched by a
 * request that failed, or unreadable before) are not compared.
 */
struct shadow {
  uint64_t start[2], len[2];    /* the windows (len 0: unused) */
  unsigned char *data[2];
  unsigned char *known[2];      /* 1 if data[] is the expected byte */
};

static void
shadow_free (struct shadow *sh)
{
  int w;

  for (w = 0; w < 2; ++w) {
    free (sh->data[w]);
    free (sh->known[w]);
  }
}

/* Read each window; unreadable chunks become unknown. */
static void
shadow_init (struct shadow *sh, struct vmdk_image *img)
{
  uint64_t size = vmdk_get_size (img);
  int w;

  memset (sh, 0, sizeof *sh);
  if (size <= 2 * (uint64_t) WRITE_WINDOW)
    sh->len[0] = size;
  else {
    sh->len[0] = sh->len[1] = WRITE_WINDOW;
    sh->start[1] = size - WRITE_WINDOW;
  }
  for (w = 0; w < 2; ++w) {
    uint64_t off;

    if (sh->len[w] == 0)
      continue;
    sh->data[w] = malloc (sh->len[w]);
    sh->known[w] = malloc (sh->len[w]);
    CHECK (sh->data[w] && sh->known[w]);
    for (off = 0; off < sh->len[w]; off += WRITE_CHUNK) {
      size_t n = sh->len[w] - off < WRITE_CHUNK ? sh->len[w] - off
                                                 : WRITE_CHUNK;
      bool ok = vmdk_pread (img, sh->data[w] + off, n,
                            sh->start[w] + off) == 0;

      memset (sh->known[w] + off, ok, n);
    }
  }
}

/* Compare the image with the shadow where known. */
static void
shadow_check (struct shadow *sh, struct vmdk_image *img, const char *when)
{
  unsigned char *buf = malloc (WRITE_CHUNK);
  uint64_t off, i;
  int w;

  CHECK (buf != NULL);
  for (w = 0; w < 2; ++w) {
    for (off = 0; off < sh->len[w]; off += WRITE_CHUNK) {
      size_t n = sh->len[w] - off < WRITE_CHUNK ? sh->len[w] - off
                                                 : WRITE_CHUNK;

      if (vmdk_pread (img, buf, n, sh->start[w] + off) == -1) {
        note_error ("pread after writes");
        continue;
      }
      if (memcmp (buf, sh->data[w] + off, n) == 0)
        continue;               /* the common case, fast */
      for (i = 0; i < n; ++i)
        if (sh->known[w][off + i] && buf[i] != sh->data[w][off + i]) {
          fprintf (stderr, "%s: byte %" PRIu64 " reads as 0x%02x, "
                   "expected 0x%02x\n", when, sh->start[w] + off + i,
                   buf[i], sh->data[w][off + i]);
          abort ();
        }
    }
  }
  free (buf);
}

/* A small deterministic generator, seeded from the input. */
static uint64_t
next_rand (uint64_t *state)
{
  uint64_t x = *state;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

enum op { OP_WRITE, OP_WRITE_FUA, OP_ZERO, OP_ZERO_TRIM, OP_ZERO_FAST,
          OP_TRIM, OP_FLUSH, NR_OPS };

static void
write_phase (struct vmdk_source *files, const struct vmdk_options *ro_opts,
             const uint8_t *data, size_t size)
{
  struct vmdk_options opts = *ro_opts;
  struct vmdk_image *img;
  struct shadow sh;
  uint64_t state = UINT64_C (0x9e3779b97f4a7c15), grain;
  unsigned char *wbuf;
  const char *reason;
  size_t i;
  int k;

  for (i = 0; i < size && i < 4096; ++i)
    state = (state ^ data[i]) * UINT64_C (0x100000001b3);
  state |= 1;

  opts.readonly = false;
  img = open_image (files, &opts, "open read-write");
  if (img == NULL)
    return;
  if (!vmdk_is_writable (img, &reason)) {
    unsigned char b = 1;

    CHECK (reason != NULL);
    CHECK (vmdk_get_size (img) == 0 ||
           vmdk_pwrite (img, &b, 1, 0, 0) == -1);
    vmdk_close (img);
    return;
  }
  /* Huge grains make each allocating write copy a whole grain. */
  grain = vmdk_get_grain_size (img);
  if (grain > MAX_WRITE_GRAIN || vmdk_get_size (img) == 0) {
    vmdk_close (img);
    return;
  }

  shadow_init (&sh, img);
  wbuf = malloc (WRITE_CHUNK);
  CHECK (wbuf != NULL);

  for (k = 0; k < NR_WRITES; ++k) {
    uint64_t r = next_rand (&state);
    enum op op = r % NR_OPS;
    int w = sh.len[1] && (r >> 8) % 2 ? 1 : 0;
    uint64_t wlen = sh.len[w], off, len, g;
    int ret = 0;

    /* Offsets near grain boundaries, lengths around a grain. */
    g = (r >> 16) % (wlen / grain + 1);
    off = g * grain;
    switch ((r >> 32) % 4) {
    case 0: break;
    case 1: off += grain - 1; break;
    case 2: off += 512; break;
    case 3: off += (r >> 40) % grain; break;
    }
    if (off >= wlen)
      off = wlen - 1;
    switch ((r >> 48) % 5) {
    case 0: len = 1; break;
    case 1: len = 512; break;
    case 2: len = grain; break;
    case 3: len = grain + 1; break;
    default: len = 2 * grain + 3; break;
    }
    if (len > wlen - off)
      len = wlen - off;
    if (len > WRITE_CHUNK)
      len = WRITE_CHUNK;

    switch (op) {
    case OP_WRITE:
    case OP_WRITE_FUA:
      for (i = 0; i < len; ++i)
        wbuf[i] = 0x80 | ((k * 37 + off + i) & 0x7f);  /* never 0 */
      ret = vmdk_pwrite (img, wbuf, len, sh.start[w] + off,
                         op == OP_WRITE_FUA ? VMDK_FUA : 0);
      if (ret == 0) {
        memcpy (sh.data[w] + off, wbuf, len);
        memset (sh.known[w] + off, 1, len);
      }
      break;
    case OP_ZERO:
    case OP_ZERO_TRIM:
    case OP_ZERO_FAST:
      ret = vmdk_zero (img, len, sh.start[w] + off,
                       op == OP_ZERO_TRIM ? VMDK_MAY_TRIM
                       : op == OP_ZERO_FAST ? VMDK_FAST_ZERO : 0);
      if (ret == 0) {
        memset (sh.data[w] + off, 0, len);
        memset (sh.known[w] + off, 1, len);
      }
      break;
    case OP_TRIM:
      ret = vmdk_trim (img, len, sh.start[w] + off, 0);
      memset (sh.known[w] + off, 0, len);
      break;
    case OP_FLUSH:
      ret = vmdk_flush (img);
      break;
    case NR_OPS:
      abort ();
    }
    if (verbose)
      fprintf (stderr, "fuzz-image: op %d: %s offset %" PRIu64 " length %"
               PRIu64 ": %s\n", k,
               (const char *[]) { "write", "write+fua", "zero",
                 "zero+may_trim", "zero+fast", "trim", "flush" }[op],
               sh.start[w] + off, len, ret == 0 ? "ok" : "failed");
    if (ret == -1) {
      note_error ("write");
      /* A request that failed may have been partly applied. */
      if (op != OP_FLUSH)
        memset (sh.known[w] + off, 0, len);
    }
  }
  free (wbuf);

  shadow_check (&sh, img, "after writes");
  /* Block status and repeatability where the writes landed. */
  for (k = 0; k < 2; ++k)
    read_range (img, sh.start[k], sh.len[k], TAIL_CHUNK);
  map_everything (img, vmdk_get_size (img));
  if (vmdk_flush (img) == -1)
    note_error ("flush");
  vmdk_close (img);

  /* Everything written must have reached the files. */
  img = open_image (files, ro_opts, "reopen");
  if (img) {
    shadow_check (&sh, img, "after reopen");
    map_everything (img, vmdk_get_size (img));
    vmdk_close (img);
  }
  shadow_free (&sh);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vmdk_options opts = {
    .readonly = true,
    .gt_cache_bytes = GT_CACHE_BYTES,
    /* Take the chain paths the CID check would otherwise cut short. */
    .ignore_parent_cid = true,
    .single_link = (size & 15) == 15,
  };
  struct vmdk_source *files;
  struct vmdk_image *img;

  files = vmdk_source_memory_new ();
  if (files == NULL)
    return 0;
  layout_shared = false;
  if (fuzz_add_files (files, data, size, note_layout, NULL) == 0) {
    nr_errors = 0;
    img = open_image (files, &opts, "open");
    if (img) {
      read_phase (img);
      vmdk_close (img);
      /* Only images that open read-only are worth writing to. */
      if (!layout_shared && (!write_clean_only || nr_errors == 0))
        write_phase (files, &opts, data, size);
      else if (verbose)
        fprintf (stderr, "fuzz-image: no writes: %s\n", layout_shared
                 ? "storage shared between grains, tables or extents"
                 : "the image had errors (FUZZ_WRITE_CLEAN_ONLY)");
    }
  }
  files->ops->close (files);
  return 0;
}
