/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* check-stream: a strict structural checker of streamOptimized VMDK
 * files, for the tests of the stream writer.  Independent of lib/: it
 * follows the published format (VMDK-FORMAT.md b.1, b.2, b.4 and
 * "streamOptimized, as importers accept it"), so that the engine's
 * writer is checked against a second reading of the format.
 *
 *   check-stream [-o] [-q] FILE
 *
 * Exit status 0 if FILE is a valid stream image as VMware's importers
 * want it, 1 if not (each violation on stderr as "check-stream: FILE:
 * <what> at byte OFFSET"), 2 on usage or I/O errors.  Without -q, a
 * one-line summary goes to stdout.  -o also requires the grains in
 * strictly ascending LBA order.
 *
 * What is checked: the header (version 3, flags exactly newline test +
 * compressed + markers, deflate, gdOffset = GD_AT_END, no redundant
 * directory, a clean shutdown, zero padding); the embedded descriptor
 * (its first line, createType, one SPARSE extent of the capacity, the
 * keys VMware writes, each once); then every item from overHead on: a
 * grain marker with zlib data inflating (Adler-32 checked) to exactly
 * its grain, not all zeroes, zero padded to a sector, or a metadata
 * marker with zero padding and the size its type implies; the order
 * [grains and GT markers]... GD marker, footer marker, footer, EOS as
 * the last sector; the footer equal to the header but for gdOffset,
 * which names the directory; and the directory and tables naming only
 * tables and grain markers the walk found, each at most once, each
 * grain for its own LBA.
 *
 * Memory stays bounded for big files: the walk streams, and what it
 * remembers is one u32 (the sector) per grain marker and per table.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#define SECTOR 512
#define GD_AT_END UINT64_C (0xffffffffffffffff)
#define STREAM_FLAGS UINT32_C (0x00030001)
#define MAX_GRAIN_SECTORS (UINT64_C (1) << 16)  /* 32 MiB, a buffer */
#define MAX_DESCRIPTOR_SECTORS 2048             /* 1 MiB of text */
#define READ_CHUNK (1024 * 1024)
#define ENTRY_CHUNK 4096
#define MAX_SHOWN 200           /* violations printed; the rest counted */

enum marker_type {
  MARKER_EOS = 0, MARKER_GT = 1, MARKER_GD = 2, MARKER_FOOTER = 3,
  MARKER_PROGRESS = 4,
};

/* Where the walk is in the order "grains and GT markers, GD marker,
 * footer marker, end-of-stream marker". */
enum stage {
  IN_GRAINS, AFTER_GD, AFTER_FOOTER, AFTER_EOS,
};

/* Sectors of the grain markers or of the tables, ascending (the walk
 * finds them in file order), and which of them an entry names. */
struct sector_set {
  uint32_t *sector;
  size_t n, cap;
  unsigned char *named;         /* bitmap, allocated for the check */
};

struct stream {
  const char *file;
  int fd;
  uint64_t file_size;
  bool ordered;                 /* -o */
  uint64_t violations;

  unsigned char header[SECTOR];
  uint64_t capacity, grain_sectors, overhead;
  uint32_t gtes_per_gt;
  uint64_t gt_sectors, gd_entries, gd_sectors;

  unsigned char *grain;         /* inflated grain, grain bytes + 1 */
  unsigned char *chunk;         /* READ_CHUNK bytes of file */

  struct sector_set grains, tables;
  uint64_t grain_bytes;         /* on disk, markers and padding included */
  uint64_t inversions;
  bool have_last_lba;
  uint64_t last_lba;
  uint64_t gd_at;               /* sector of the directory, 0 if none */
  uint64_t footer_at;           /* sector of the footer, 0 if none */
  bool gd_marker_seen, footer_marker_seen;
  bool eos_seen;
  bool directory_checked;
};

static void __attribute__ ((noreturn))
usage (void)
{
  fprintf (stderr, "usage: check-stream [-o] [-q] FILE\n");
  exit (2);
}

static void __attribute__ ((noreturn, format (printf, 2, 3)))
fail_io (const struct stream *s, const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "check-stream: %s: ", s->file);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  exit (2);
}

/* Report a violation of the format at byte OFFSET of the file. */
static void __attribute__ ((format (printf, 3, 4)))
violation (struct stream *s, uint64_t offset, const char *fmt, ...)
{
  va_list ap;

  if (s->violations++ >= MAX_SHOWN)
    return;
  fprintf (stderr, "check-stream: %s: ", s->file);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, " at byte %" PRIu64 "\n", offset);
}

static void *
xmalloc (const struct stream *s, size_t n)
{
  void *p = malloc (n ? n : 1);

  if (p == NULL)
    fail_io (s, "out of memory (%zu bytes)", n);
  return p;
}

/* Read LEN bytes at OFFSET; false if the file ends first. */
static bool
read_at (const struct stream *s, void *buf, size_t len, uint64_t offset)
{
  unsigned char *b = buf;

  if (offset > s->file_size || len > s->file_size - offset)
    return false;
  while (len > 0) {
    ssize_t r = pread (s->fd, b, len, offset);

    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      fail_io (s, "read at byte %" PRIu64 ": %s", offset, strerror (errno));
    if (r == 0)
      fail_io (s, "file shrank while being read (at byte %" PRIu64 ")",
               offset);
    b += r;
    len -= r;
    offset += r;
  }
  return true;
}

static uint16_t
le16 (const unsigned char *p)
{
  return p[0] | (uint16_t) p[1] << 8;
}

static uint32_t
le32 (const unsigned char *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
    | (uint32_t) p[3] << 24;
}

static uint64_t
le64 (const unsigned char *p)
{
  return le32 (p) | (uint64_t) le32 (p + 4) << 32;
}

/* Offset of the first nonzero byte of P[0..N), or N. */
static size_t
first_nonzero (const unsigned char *p, size_t n)
{
  size_t i;

  for (i = 0; i < n && p[i] == 0; ++i)
    ;
  return i;
}

static uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

/* ------------------------------------------------------------------ */
/* Sets of sectors. */

static void
set_add (const struct stream *s, struct sector_set *set, uint32_t sector)
{
  if (set->n == set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 1024;
    uint32_t *p = realloc (set->sector, cap * sizeof *p);

    if (p == NULL)
      fail_io (s, "out of memory (%zu markers)", cap);
    set->sector = p;
    set->cap = cap;
  }
  set->sector[set->n++] = sector;
}

/* Index of SECTOR in SET, or -1. */
static ssize_t
set_find (const struct sector_set *set, uint64_t sector)
{
  size_t lo = 0, hi = set->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (set->sector[mid] == sector)
      return mid;
    if (set->sector[mid] < sector)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

static void
set_prepare_names (const struct stream *s, struct sector_set *set)
{
  size_t n = set->n / 8 + 1;

  set->named = xmalloc (s, n);
  memset (set->named, 0, n);
}

/* Mark entry I named; false if it already was. */
static bool
set_name (struct sector_set *set, size_t i)
{
  unsigned char bit = 1 << (i % 8);

  if (set->named[i / 8] & bit)
    return false;
  set->named[i / 8] |= bit;
  return true;
}

static uint64_t
set_unnamed (const struct sector_set *set)
{
  uint64_t n = 0;
  size_t i;

  for (i = 0; i < set->n; ++i)
    if (!(set->named[i / 8] & (1 << (i % 8))))
      n++;
  return n;
}

/* ------------------------------------------------------------------ */
/* The header (and the footer, a copy of it). */

struct field {
  unsigned offset, size;
  const char *name;
};

static const struct field header_fields[] = {
  { 0, 4, "magicNumber" }, { 4, 4, "version" }, { 8, 4, "flags" },
  { 12, 8, "capacity" }, { 20, 8, "grainSize" },
  { 28, 8, "descriptorOffset" }, { 36, 8, "descriptorSize" },
  { 44, 4, "numGTEsPerGT" }, { 48, 8, "rgdOffset" }, { 56, 8, "gdOffset" },
  { 64, 8, "overHead" }, { 72, 1, "uncleanShutdown" },
  { 73, 4, "newline detector" }, { 77, 2, "compressAlgorithm" },
  { 79, 433, "padding" },
};

static uint64_t
field_value (const unsigned char *h, const struct field *f)
{
  switch (f->size) {
  case 1: return h[f->offset];
  case 2: return le16 (h + f->offset);
  case 4: return le32 (h + f->offset);
  case 8: return le64 (h + f->offset);
  default: return 0;
  }
}

/* Check the fixed fields; false if the magic is wrong (not a KDMV
 * file: nothing else is worth reporting). */
static bool
check_header_constants (struct stream *s)
{
  const unsigned char *h = s->header;
  uint32_t flags = le32 (h + 8);
  size_t pad;

  if (memcmp (h, "KDMV", 4) != 0) {
    violation (s, 0, "magic %02x %02x %02x %02x, expected \"KDMV\"",
               h[0], h[1], h[2], h[3]);
    return false;
  }
  if (le32 (h + 4) != 3)
    violation (s, 4, "header version %" PRIu32 ", expected 3", le32 (h + 4));
  if (flags != STREAM_FLAGS)
    violation (s, 8, "header flags 0x%08" PRIx32 ", expected 0x%08" PRIx32
               " (bits not expected 0x%08" PRIx32 ", missing 0x%08" PRIx32 ")",
               flags, STREAM_FLAGS, flags & ~STREAM_FLAGS,
               STREAM_FLAGS & ~flags);
  if (memcmp (h + 73, "\n \r\n", 4) != 0)
    violation (s, 73, "newline detector bytes %02x %02x %02x %02x, "
               "expected 0a 20 0d 0a", h[73], h[74], h[75], h[76]);
  if (le16 (h + 77) != 1)
    violation (s, 77, "compressAlgorithm %u, expected 1 (deflate)",
               le16 (h + 77));
  if (le64 (h + 56) != GD_AT_END)
    violation (s, 56, "header gdOffset %" PRIu64 ", expected GD_AT_END "
               "(0xffffffffffffffff)", le64 (h + 56));
  if (le64 (h + 48) != 0)
    violation (s, 48, "rgdOffset %" PRIu64 ", expected 0", le64 (h + 48));
  if (h[72] != 0)
    violation (s, 72, "uncleanShutdown %u, expected 0", h[72]);
  pad = first_nonzero (h + 79, SECTOR - 79);
  if (pad < SECTOR - 79)
    violation (s, 79 + pad, "header padding byte 0x%02x, expected 0",
               h[79 + pad]);
  return true;
}

/* Check the geometry fields; false if they do not allow a walk. */
static bool
check_header_geometry (struct stream *s)
{
  const unsigned char *h = s->header;
  uint64_t file_sectors = s->file_size / SECTOR;
  uint64_t desc_at = le64 (h + 28), desc_sectors = le64 (h + 36);
  uint64_t cover;
  bool ok = true;

  s->capacity = le64 (h + 12);
  s->grain_sectors = le64 (h + 20);
  s->gtes_per_gt = le32 (h + 44);
  s->overhead = le64 (h + 64);

  if (s->capacity == 0 || s->capacity > UINT64_MAX / SECTOR / 2) {
    violation (s, 12, "capacity %" PRIu64 " sectors out of range",
               s->capacity);
    ok = false;
  }
  if (s->grain_sectors == 0
      || (s->grain_sectors & (s->grain_sectors - 1)) != 0) {
    violation (s, 20, "grainSize %" PRIu64 " is not a power of 2",
               s->grain_sectors);
    ok = false;
  }
  else if (s->grain_sectors > MAX_GRAIN_SECTORS) {
    violation (s, 20, "grainSize %" PRIu64 " over the checker's limit of %"
               PRIu64 " sectors", s->grain_sectors, MAX_GRAIN_SECTORS);
    ok = false;
  }
  if (s->gtes_per_gt == 0) {
    violation (s, 44, "numGTEsPerGT 0");
    ok = false;
  }
  if (s->overhead == 0 || s->overhead > file_sectors) {
    violation (s, 64, "overHead %" PRIu64 " sectors, but the file has %"
               PRIu64 " sectors", s->overhead, file_sectors);
    ok = false;
  }
  if (desc_at == 0)
    violation (s, 28, "descriptorOffset 0: no embedded descriptor");
  else if (desc_at > file_sectors
      || desc_sectors > file_sectors - desc_at)
    violation (s, 28, "descriptor at sector %" PRIu64 " (%" PRIu64
               " sectors) is not inside the %" PRIu64 "-sector file",
               desc_at, desc_sectors, file_sectors);
  else if (desc_sectors > s->overhead || desc_at > s->overhead - desc_sectors)
    violation (s, 28, "descriptor at sector %" PRIu64 " (%" PRIu64
               " sectors) ends after overHead %" PRIu64,
               desc_at, desc_sectors, s->overhead);
  if (!ok)
    return false;

  cover = s->grain_sectors * s->gtes_per_gt;
  s->gt_sectors = div_round_up ((uint64_t) s->gtes_per_gt * 4, SECTOR);
  s->gd_entries = div_round_up (s->capacity, cover);
  s->gd_sectors = div_round_up (s->gd_entries * 4, SECTOR);
  return true;
}

/* ------------------------------------------------------------------ */
/* The embedded descriptor. */

/* The keys that must each appear exactly once, and the values some of
 * them must have (NULL: any). */
static const struct {
  const char *key, *value;
} descriptor_keys[] = {
  { "version", "1" }, { "CID", NULL }, { "parentCID", "ffffffff" },
  { "createType", "\"streamOptimized\"" },
  { "ddb.virtualHWVersion", NULL }, { "ddb.adapterType", NULL },
  { "ddb.geometry.cylinders", NULL }, { "ddb.geometry.heads", NULL },
  { "ddb.geometry.sectors", NULL }, { "ddb.longContentID", NULL },
  { "ddb.toolsInstallType", NULL }, { "ddb.toolsVersion", NULL },
};
#define NR_KEYS (sizeof descriptor_keys / sizeof descriptor_keys[0])

static bool
is_space (char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

/* Trim [*START, *END) of surrounding blanks. */
static void
trim (const char **start, const char **end)
{
  while (*start < *end && is_space (**start))
    (*start)++;
  while (*end > *start && is_space ((*end)[-1]))
    (*end)--;
}

static bool
span_equals (const char *p, const char *end, const char *word)
{
  size_t n = strlen (word);

  return (size_t) (end - p) == n && memcmp (p, word, n) == 0;
}

static bool
is_hex8 (const char *p, const char *end)
{
  if (end - p != 8)
    return false;
  for (; p < end; ++p)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')
          || (*p >= 'A' && *p <= 'F')))
      return false;
  return true;
}

/* An extent line starts with an access mode. */
static bool
is_extent_line (const char *p, const char *end)
{
  const char *word_end = memchr (p, ' ', end - p);

  if (word_end == NULL)
    word_end = end;
  return span_equals (p, word_end, "RW") || span_equals (p, word_end, "RDONLY")
    || span_equals (p, word_end, "NOACCESS");
}

/* RW|RDONLY <sectors> SPARSE "<name>", with the capacity. */
static void
check_extent_line (struct stream *s, const char *p, const char *end,
                   uint64_t at)
{
  char line[256], access[16], type[16], name[200], rest[2];
  unsigned long long sectors;
  size_t n = end - p;

  if (n >= sizeof line) {
    violation (s, at, "extent line too long (%zu bytes)", n);
    return;
  }
  memcpy (line, p, n);
  line[n] = '\0';
  if (sscanf (line, "%15s %llu %15s \"%199[^\"]\"%1s", access, &sectors, type,
              name, rest) != 4
      || (strcmp (access, "RW") != 0 && strcmp (access, "RDONLY") != 0)
      || strcmp (type, "SPARSE") != 0 || line[n - 1] != '"') {
    violation (s, at, "extent line \"%s\", expected RW|RDONLY <sectors> "
               "SPARSE \"<name>\"", line);
    return;
  }
  if (sectors != s->capacity)
    violation (s, at, "extent of %llu sectors, but the header's capacity is %"
               PRIu64, sectors, s->capacity);
}

static void
check_key (struct stream *s, const char *key, const char *key_end,
           const char *value, const char *value_end, uint64_t at,
           unsigned *count)
{
  size_t i;

  for (i = 0; i < NR_KEYS; ++i) {
    if (!span_equals (key, key_end, descriptor_keys[i].key))
      continue;
    count[i]++;
    if (descriptor_keys[i].value
        && !span_equals (value, value_end, descriptor_keys[i].value))
      violation (s, at, "descriptor %s=%.*s, expected %s",
                 descriptor_keys[i].key, (int) (value_end - value), value,
                 descriptor_keys[i].value);
    if (strcmp (descriptor_keys[i].key, "CID") == 0
        && !is_hex8 (value, value_end))
      violation (s, at, "descriptor CID=%.*s, expected 8 hex digits",
                 (int) (value_end - value), value);
  }
}

static void
check_descriptor_text (struct stream *s, const char *text, size_t len,
                       uint64_t base)
{
  const char *p = text, *end = text + len;
  unsigned count[NR_KEYS] = { 0 }, extents = 0;
  size_t i;
  bool first = true;

  while (p < end) {
    const char *nl = memchr (p, '\n', end - p);
    const char *line_end = nl ? nl : end, *eq;
    const char *a = p, *b = line_end;
    uint64_t at = base + (p - text);

    trim (&a, &b);
    if (first && !span_equals (p, line_end, "# Disk DescriptorFile"))
      violation (s, at, "descriptor's first line \"%.*s\", expected "
                 "\"# Disk DescriptorFile\"", (int) (line_end - p), p);
    first = false;
    if (a == b || *a == '#')
      ;
    else if (is_extent_line (a, b)) {
      extents++;
      check_extent_line (s, a, b, at);
    }
    else if ((eq = memchr (a, '=', b - a)) != NULL) {
      const char *k = a, *ke = eq, *v = eq + 1, *ve = b;

      trim (&k, &ke);
      trim (&v, &ve);
      check_key (s, k, ke, v, ve, at, count);
    }
    else
      violation (s, at, "descriptor line \"%.*s\" is neither a comment, "
                 "an extent nor key=value", (int) (b - a), a);
    p = nl ? nl + 1 : end;
  }
  if (first)
    violation (s, base, "descriptor is empty");
  if (extents != 1)
    violation (s, base, "descriptor has %u extent lines, expected 1",
               extents);
  for (i = 0; i < NR_KEYS; ++i)
    if (count[i] != 1)
      violation (s, base, "descriptor key %s appears %u times, expected once",
                 descriptor_keys[i].key, count[i]);
}

static void
check_descriptor (struct stream *s)
{
  uint64_t at = le64 (s->header + 28), sectors = le64 (s->header + 36);
  uint64_t base = at * SECTOR;
  size_t len, text_len, pad;
  char *buf;

  if (sectors > MAX_DESCRIPTOR_SECTORS) {
    violation (s, 36, "descriptorSize %" PRIu64 " over the checker's limit "
               "of %d sectors", sectors, MAX_DESCRIPTOR_SECTORS);
    return;
  }
  if (at == 0 || at > s->file_size / SECTOR)
    return;                     /* reported with the header */
  len = sectors * SECTOR;
  buf = xmalloc (s, len);
  if (!read_at (s, buf, len, base)) {
    free (buf);
    return;                     /* reported with the header */
  }
  text_len = strnlen (buf, len);
  pad = first_nonzero ((unsigned char *) buf + text_len, len - text_len);
  if (pad < len - text_len)
    violation (s, base + text_len + pad, "descriptor text followed by a "
               "nonzero byte 0x%02x after its NUL padding began",
               (unsigned char) buf[text_len + pad]);
  check_descriptor_text (s, buf, text_len, base);
  free (buf);
}

/* ------------------------------------------------------------------ */
/* The walk: grain markers. */

static const char *
stage_name (enum stage stage)
{
  switch (stage) {
  case AFTER_GD: return "after the grain directory";
  case AFTER_FOOTER: return "after the footer";
  default: return "after the end-of-stream marker";
  }
}

/* Inflate the LEN bytes of zlib data at OFFSET into s->grain; returns
 * the inflated size, or -1 after reporting invalid data. */
static int64_t
inflate_grain (struct stream *s, uint64_t offset, uint64_t len,
               size_t expect, uint64_t lba)
{
  z_stream z = { 0 };
  uint64_t left = len, pos = offset;
  int r = Z_OK;
  int64_t out;

  if (inflateInit (&z) != Z_OK)
    fail_io (s, "inflateInit failed");
  z.next_out = s->grain;
  z.avail_out = expect + 1;     /* one more: a longer grain shows */
  while (r != Z_STREAM_END) {
    if (z.avail_in == 0) {
      size_t n = left < READ_CHUNK ? left : READ_CHUNK;

      if (n == 0)
        break;
      read_at (s, s->chunk, n, pos);
      z.next_in = s->chunk;
      z.avail_in = n;
      left -= n;
      pos += n;
    }
    r = inflate (&z, Z_NO_FLUSH);
    if (r != Z_OK && r != Z_STREAM_END)
      break;
  }
  out = z.total_out;
  if (r == Z_OK || r == Z_BUF_ERROR) {
    if (out > (int64_t) expect)
      violation (s, offset, "grain (lba %" PRIu64 ") inflates to more than "
                 "%zu bytes", lba, expect);
    else
      violation (s, offset, "grain (lba %" PRIu64 ") zlib data ends before "
                 "the end of its stream (size %" PRIu64 ")", lba, len);
    out = -1;
  }
  else if (r != Z_STREAM_END) {
    violation (s, offset, "grain (lba %" PRIu64 ") zlib data invalid: %s",
               lba, z.msg ? z.msg : zError (r));
    out = -1;
  }
  else if (z.total_in != len) {
    violation (s, offset, "grain (lba %" PRIu64 ") marker size %" PRIu64
               " but its zlib stream ends after %lu bytes", lba, len,
               z.total_in);
    out = -1;
  }
  inflateEnd (&z);
  return out;
}

static void
check_order (struct stream *s, uint64_t pos, uint64_t lba)
{
  if (s->have_last_lba && lba < s->last_lba) {
    s->inversions++;
    if (s->ordered)
      violation (s, pos, "grain marker lba %" PRIu64 " after lba %" PRIu64
                 " (out of order)", lba, s->last_lba);
  }
  else if (s->have_last_lba && lba == s->last_lba && s->ordered)
    violation (s, pos, "grain marker lba %" PRIu64 " stored again right "
               "after itself (not strictly ascending)", lba);
  s->have_last_lba = true;
  s->last_lba = lba;
}

/* A grain marker at POS; returns the position of the next item, or 0
 * if the walk cannot go on. */
static uint64_t
check_grain (struct stream *s, uint64_t pos, const unsigned char *marker,
             enum stage stage)
{
  uint64_t lba = le64 (marker), size = le32 (marker + 8);
  uint64_t grain_bytes = s->grain_sectors * SECTOR;
  uint64_t end = pos + 12 + size, next;
  size_t expect = grain_bytes, pad;
  unsigned char tail[SECTOR];
  int64_t got;

  next = div_round_up (end, SECTOR) * SECTOR;
  if (next > s->file_size) {
    violation (s, pos, "grain marker (lba %" PRIu64 ", size %" PRIu64
               ") runs past the end of the file", lba, size);
    return 0;
  }
  if (stage != IN_GRAINS)
    violation (s, pos, "grain marker (lba %" PRIu64 ") %s", lba,
               stage_name (stage));
  if (lba % s->grain_sectors != 0)
    violation (s, pos, "grain marker lba %" PRIu64 " is not a multiple of "
               "grainSize %" PRIu64, lba, s->grain_sectors);
  if (lba >= s->capacity)
    violation (s, pos, "grain marker lba %" PRIu64 " is at or past the "
               "capacity %" PRIu64, lba, s->capacity);
  else if (s->capacity - lba < s->grain_sectors)
    expect = (s->capacity - lba) * SECTOR;

  got = inflate_grain (s, pos + 12, size, expect, lba);
  if (got >= 0 && (size_t) got != expect)
    violation (s, pos + 12, "grain (lba %" PRIu64 ") inflates to %" PRId64
               " bytes, expected %zu", lba, got, expect);
  else if (got >= 0 && first_nonzero (s->grain, expect) == expect)
    violation (s, pos, "stored grain (lba %" PRIu64 ") is all zeroes", lba);

  read_at (s, tail, next - end, end);
  pad = first_nonzero (tail, next - end);
  if (pad < next - end)
    violation (s, end + pad, "grain marker (lba %" PRIu64 ") padding byte "
               "0x%02x, expected 0", lba, tail[pad]);

  check_order (s, pos, lba);
  if (pos / SECTOR > UINT32_MAX)
    violation (s, pos, "grain marker beyond what a 32-bit grain table entry "
               "can name");
  else
    set_add (s, &s->grains, pos / SECTOR);
  s->grain_bytes += next - pos;
  return next;
}

/* ------------------------------------------------------------------ */
/* The walk: metadata markers. */

static const char *
marker_name (uint32_t type)
{
  switch (type) {
  case MARKER_EOS: return "end-of-stream";
  case MARKER_GT: return "grain table";
  case MARKER_GD: return "grain directory";
  case MARKER_FOOTER: return "footer";
  case MARKER_PROGRESS: return "progress";
  default: return "unknown";
  }
}

static void
check_footer (struct stream *s, uint64_t pos)
{
  unsigned char footer[SECTOR];
  size_t i;

  read_at (s, footer, SECTOR, pos);
  for (i = 0; i < sizeof header_fields / sizeof header_fields[0]; ++i) {
    const struct field *f = &header_fields[i];

    if (f->offset == 56
        || memcmp (footer + f->offset, s->header + f->offset, f->size) == 0)
      continue;
    if (f->size <= 8)
      violation (s, pos + f->offset, "footer %s %" PRIu64 " differs from the "
                 "header's %" PRIu64, f->name, field_value (footer, f),
                 field_value (s->header, f));
    else
      violation (s, pos + f->offset, "footer %s differs from the header's",
                 f->name);
  }
  if (s->gd_at != 0 && le64 (footer + 56) != s->gd_at)
    violation (s, pos + 56, "footer gdOffset %" PRIu64 ", but the grain "
               "directory is at sector %" PRIu64, le64 (footer + 56),
               s->gd_at);
}

/* The size a metadata marker of TYPE must announce. */
static uint64_t
expected_sectors (const struct stream *s, uint32_t type)
{
  switch (type) {
  case MARKER_GT: return s->gt_sectors;
  case MARKER_GD: return s->gd_sectors;
  case MARKER_FOOTER: return 1;
  default: return 0;
  }
}

/* Check the place of a metadata marker of TYPE in the order, and move
 * *STAGE on.  PREV is the type of the item before (-1 for a grain). */
static void
check_marker_place (struct stream *s, uint64_t pos, uint32_t type,
                    int64_t prev, enum stage *stage)
{
  switch (type) {
  case MARKER_GT:
  case MARKER_PROGRESS:
    if (*stage != IN_GRAINS)
      violation (s, pos, "%s marker %s", marker_name (type),
                 stage_name (*stage));
    break;
  case MARKER_GD:
    if (*stage == AFTER_GD)
      violation (s, pos, "second grain directory marker");
    else if (*stage != IN_GRAINS)
      violation (s, pos, "grain directory marker %s", stage_name (*stage));
    *stage = AFTER_GD;
    break;
  case MARKER_FOOTER:
    if (prev != MARKER_GD)
      violation (s, pos, "footer marker not right after the grain directory");
    *stage = AFTER_FOOTER;
    break;
  case MARKER_EOS:
    if (prev != MARKER_FOOTER)
      violation (s, pos, "end-of-stream marker not right after the footer");
    if (pos + SECTOR != s->file_size)
      violation (s, pos, "end-of-stream marker is not the last sector "
                 "(%" PRIu64 " bytes follow)", s->file_size - pos - SECTOR);
    *stage = AFTER_EOS;
    break;
  }
}

/* A metadata marker at POS; returns the position of the next item, or
 * 0 if the walk cannot (or must not) go on. */
static uint64_t
check_metadata (struct stream *s, uint64_t pos, const unsigned char *marker,
                int64_t prev, enum stage *stage)
{
  uint64_t sectors = le64 (marker);
  uint32_t type = le32 (marker + 12);
  size_t pad = first_nonzero (marker + 16, SECTOR - 16);
  uint64_t data = pos + SECTOR;

  if (type > MARKER_PROGRESS) {
    violation (s, pos, "metadata marker of unknown type %" PRIu32, type);
    return 0;
  }
  if (type == MARKER_PROGRESS) {
    /* Undocumented (ovftool writes a counter in its padding): skipped
     * as VirtualBox does, with whatever follows it. */
    if (sectors > (s->file_size - data) / SECTOR) {
      violation (s, pos, "progress marker of %" PRIu64 " sectors runs past "
                 "the end of the file", sectors);
      return 0;
    }
    check_marker_place (s, pos, type, prev, stage);
    return data + sectors * SECTOR;
  }
  if (pad < SECTOR - 16)
    violation (s, pos + 16 + pad, "%s marker padding byte 0x%02x, expected 0",
               marker_name (type), marker[16 + pad]);
  if (sectors != expected_sectors (s, type))
    violation (s, pos, "%s marker numSectors %" PRIu64 ", expected %" PRIu64,
               marker_name (type), sectors, expected_sectors (s, type));
  check_marker_place (s, pos, type, prev, stage);
  s->gd_marker_seen |= type == MARKER_GD;
  s->footer_marker_seen |= type == MARKER_FOOTER;
  if (type == MARKER_EOS)
    return 0;
  if (sectors > (s->file_size - data) / SECTOR) {
    violation (s, pos, "%s marker of %" PRIu64 " sectors runs past the end "
               "of the file", marker_name (type), sectors);
    return 0;
  }
  if (sectors == expected_sectors (s, type)) {
    if (type == MARKER_GT && data / SECTOR > UINT32_MAX)
      violation (s, pos, "grain table beyond what a 32-bit directory entry "
                 "can name");
    else if (type == MARKER_GT)
      set_add (s, &s->tables, data / SECTOR);
    else if (type == MARKER_GD && s->gd_at == 0)
      s->gd_at = data / SECTOR;
    else if (type == MARKER_FOOTER && s->footer_at == 0)
      s->footer_at = data / SECTOR;
  }
  return data + sectors * SECTOR;
}

static void
walk (struct stream *s)
{
  uint64_t pos = s->overhead * SECTOR;
  enum stage stage = IN_GRAINS;
  int64_t prev = -2;            /* nothing yet */

  while (pos != 0) {
    unsigned char marker[SECTOR];
    uint64_t next;

    if (!read_at (s, marker, SECTOR, pos)) {
      if (pos == s->file_size)
        violation (s, pos, "the file ends without an end-of-stream marker");
      else
        violation (s, pos, "the file ends inside a marker");
      break;
    }
    if (le32 (marker + 8) != 0) {
      next = check_grain (s, pos, marker, stage);
      prev = -1;
    }
    else {
      next = check_metadata (s, pos, marker, prev, &stage);
      prev = le32 (marker + 12);
    }
    pos = next;
  }
  s->eos_seen = stage == AFTER_EOS;
  if (s->eos_seen && !s->gd_marker_seen)
    violation (s, s->file_size, "no grain directory marker");
  if (s->eos_seen && !s->footer_marker_seen)
    violation (s, s->file_size, "no footer marker");
  if (s->footer_at != 0)
    check_footer (s, s->footer_at * SECTOR);
}

/* ------------------------------------------------------------------ */
/* The directory and the tables. */

static void
check_table_entry (struct stream *s, uint64_t grain, uint32_t entry,
                   uint64_t at)
{
  uint64_t lba = grain * s->grain_sectors;
  unsigned char marker[8];
  ssize_t i;

  if (lba >= s->capacity) {
    if (entry != 0)
      violation (s, at, "grain table entry %" PRIu32 " for lba %" PRIu64
                 ", at or past the capacity %" PRIu64 ", expected 0", entry,
                 lba, s->capacity);
    return;
  }
  if (entry == 0)
    return;
  i = set_find (&s->grains, entry);
  if (i < 0) {
    violation (s, at, "grain table entry for lba %" PRIu64 " names sector %"
               PRIu32 ", where the walk found no grain marker", lba, entry);
    return;
  }
  if (!set_name (&s->grains, i))
    violation (s, at, "grain table entry for lba %" PRIu64 " names the grain "
               "marker at sector %" PRIu32 ", which another entry names",
               lba, entry);
  read_at (s, marker, sizeof marker, (uint64_t) entry * SECTOR);
  if (le64 (marker) != lba)
    violation (s, at, "grain table entry for lba %" PRIu64 " names the grain "
               "marker at sector %" PRIu32 ", whose lba is %" PRIu64, lba,
               entry, le64 (marker));
}

/* Call FN for each of the N u32 entries at byte OFFSET, numbered from
 * FIRST.  The buffer is local: a directory entry's FN walks a table. */
static void
for_each_entry (struct stream *s, uint64_t offset, uint64_t n,
                void (*fn) (struct stream *, uint64_t, uint32_t, uint64_t),
                uint64_t first)
{
  unsigned char buf[ENTRY_CHUNK * 4];
  uint64_t done = 0;

  while (done < n) {
    uint64_t k = n - done < ENTRY_CHUNK ? n - done : ENTRY_CHUNK, j;

    read_at (s, buf, k * 4, offset + done * 4);
    for (j = 0; j < k; ++j)
      fn (s, first + done + j, le32 (buf + 4 * j), offset + (done + j) * 4);
    done += k;
  }
}

static void
check_directory_entry (struct stream *s, uint64_t t, uint32_t entry,
                       uint64_t at)
{
  ssize_t i;

  if (entry == 0)
    return;
  i = set_find (&s->tables, entry);
  if (i < 0) {
    violation (s, at, "grain directory entry %" PRIu64 " names sector %"
               PRIu32 ", which does not follow a grain table marker",
               t, entry);
    return;
  }
  if (!set_name (&s->tables, i)) {
    violation (s, at, "grain directory entry %" PRIu64 " names the table at "
               "sector %" PRIu32 ", which another entry names", t, entry);
    return;
  }
  for_each_entry (s, (uint64_t) entry * SECTOR, s->gtes_per_gt,
                  check_table_entry, t * s->gtes_per_gt);
}

static void
check_directory (struct stream *s)
{
  if (s->gd_at == 0)
    return;
  set_prepare_names (s, &s->grains);
  set_prepare_names (s, &s->tables);
  for_each_entry (s, s->gd_at * SECTOR, s->gd_entries,
                  check_directory_entry, 0);
  s->directory_checked = true;
}

/* ------------------------------------------------------------------ */

static void
print_summary (const struct stream *s)
{
  char unnamed[64] = "unknown";

  if (s->directory_checked)
    snprintf (unnamed, sizeof unnamed, "%" PRIu64, set_unnamed (&s->grains));
  printf ("%s: %zu grains stored, %" PRIu64 " bytes, %" PRIu64
          " order inversions, %s unreferenced grains, %zu tables, "
          "virtual size %" PRIu64 "\n",
          s->file, s->grains.n, s->grain_bytes, s->inversions, unnamed,
          s->tables.n, s->capacity * SECTOR);
}

int
main (int argc, char *argv[])
{
  struct stream s = { 0 };
  bool quiet = false;
  struct stat st;
  int c;

  while ((c = getopt (argc, argv, "oq")) != -1) {
    switch (c) {
    case 'o': s.ordered = true; break;
    case 'q': quiet = true; break;
    default: usage ();
    }
  }
  if (optind != argc - 1)
    usage ();
  s.file = argv[optind];
  s.fd = open (s.file, O_RDONLY);
  if (s.fd == -1 || fstat (s.fd, &st) == -1)
    fail_io (&s, "%s", strerror (errno));
  s.file_size = st.st_size;

  if (!read_at (&s, s.header, SECTOR, 0))
    violation (&s, 0, "file of %" PRIu64 " bytes is shorter than a header",
               s.file_size);
  else if (check_header_constants (&s)) {
    if (s.file_size % SECTOR != 0)
      violation (&s, s.file_size, "file size %" PRIu64 " is not a multiple "
                 "of %d", s.file_size, SECTOR);
    if (check_header_geometry (&s)) {
      check_descriptor (&s);
      s.grain = xmalloc (&s, s.grain_sectors * SECTOR + 1);
      s.chunk = xmalloc (&s, READ_CHUNK);
      walk (&s);
      check_directory (&s);
    }
  }
  if (!quiet)
    print_summary (&s);
  if (s.violations > MAX_SHOWN)
    fprintf (stderr, "check-stream: %s: %" PRIu64 " more violations not "
             "shown\n", s.file, s.violations - MAX_SHOWN);
  close (s.fd);
  free (s.grain);
  free (s.chunk);
  free (s.grains.sector);
  free (s.grains.named);
  free (s.tables.sector);
  free (s.tables.named);
  return s.violations ? 1 : 0;
}
