/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A seeded random sequence of writes, zeroes, trims and flushes against
 * a running server, checked against a model of the disk.
 *
 *   test-write-random URI MODEL SEED [NOPS]
 *
 * MODEL is a raw file of the export's size holding its current contents
 * (a sparse file made by the caller, e.g. with qemu-img convert).  Every
 * change is applied to it as well, so that when this program succeeds
 * MODEL is what the disk must contain (the caller compares it with the
 * image after the server has gone, and again through a new server).
 *
 * Operations cluster around "hot spots" (the start and end of the disk,
 * grain-table boundaries every 32 MiB, extent-file boundaries every
 * 2 GiB, random grains, and the byte offsets listed in the environment
 * variable TEST_WRITE_SPOTS="a,b,...") so that writes cross grain, table and file
 * boundaries and overwrite each other.  Lengths run from 1 byte to
 * 512 KiB, offsets are mostly unaligned, zero and trim are often
 * grain-aligned so that whole grains are deallocated.
 *
 * NBD semantics checked:
 * - write and zero (with and without MAY_TRIM) must read back exactly;
 * - a FAST_ZERO zero either succeeds (then reads zero) or fails with
 *   ENOTSUP having changed nothing;
 * - after a trim each byte of the range reads either as before or as
 *   zero; what it reads is then adopted into the model (the contents
 *   must stay that way, also after a restart);
 * - block status never calls a range zero that holds data.
 * The touched ranges are read back every 50 operations and at the end.
 *
 * On failure the seed and the last operations are printed.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#define GRAIN (UINT64_C (64) * 1024)
#define TABLE (UINT64_C (32) * 1024 * 1024)
#define EXTENT_FILE (UINT64_C (2) * 1024 * 1024 * 1024)
#define MAX_LEN (512 * 1024)
#define HISTORY 24

static struct nbd_handle *nbd;
static int model_fd;
static uint64_t size;
static uint64_t seed, rng;
static unsigned op_no;
static bool can_fua, can_fast_zero, can_trim, can_zero;

static char history[HISTORY][160];

static uint64_t
rnd (void)
{
  /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * UINT64_C (2685821657736338717);
}

static uint64_t
rnd_below (uint64_t n)
{
  return n ? rnd () % n : 0;
}

static void
note (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (history[op_no % HISTORY], sizeof history[0], fmt, ap);
  va_end (ap);
}

static void __attribute__ ((noreturn, format (printf, 1, 2)))
die (const char *fmt, ...)
{
  va_list ap;
  unsigned i, first = op_no >= HISTORY ? op_no - HISTORY + 1 : 0;

  fprintf (stderr, "test-write-random: FAIL (seed %" PRIu64 ", operation %u): ",
           seed, op_no);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\nlast operations:\n");
  for (i = first; i <= op_no; ++i)
    fprintf (stderr, "  #%u %s\n", i, history[i % HISTORY]);
  fprintf (stderr, "rerun: test-write-random URI MODEL %" PRIu64 "\n", seed);
  exit (EXIT_FAILURE);
}

static void
model_read (void *buf, uint64_t len, uint64_t off)
{
  if (pread (model_fd, buf, len, off) != (ssize_t) len)
    die ("pread model: %m");
}

static void
model_write (const void *buf, uint64_t len, uint64_t off)
{
  if (pwrite (model_fd, buf, len, off) != (ssize_t) len)
    die ("pwrite model: %m");
}

static void
model_zero (uint64_t len, uint64_t off)
{
  /* Punch: the model stays sparse. */
  if (fallocate (model_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 off, len) == -1) {
    static unsigned char z[MAX_LEN];
    while (len > 0) {
      uint64_t n = len < sizeof z ? len : sizeof z;
      model_write (z, n, off);
      off += n;
      len -= n;
    }
  }
}

/* Touched ranges, to read back. */
struct range { uint64_t off, len; };
static struct range *touched;
static size_t nr_touched, touched_alloc;

static void
touch (uint64_t off, uint64_t len)
{
  if (nr_touched == touched_alloc) {
    touched_alloc = touched_alloc ? touched_alloc * 2 : 256;
    touched = realloc (touched, touched_alloc * sizeof *touched);
    if (!touched) abort ();
  }
  touched[nr_touched].off = off;
  touched[nr_touched++].len = len;
}

static int
cmp_range (const void *a, const void *b)
{
  const struct range *x = a, *y = b;
  return x->off < y->off ? -1 : x->off > y->off;
}

static void
merge_touched (void)
{
  size_t i, j = 0;

  if (nr_touched == 0)
    return;
  qsort (touched, nr_touched, sizeof *touched, cmp_range);
  for (i = 1; i < nr_touched; ++i) {
    uint64_t end = touched[j].off + touched[j].len;
    if (touched[i].off <= end) {
      uint64_t e2 = touched[i].off + touched[i].len;
      if (e2 > end)
        touched[j].len = e2 - touched[j].off;
    }
    else
      touched[++j] = touched[i];
  }
  nr_touched = j + 1;
}

static unsigned char buf[MAX_LEN], want[MAX_LEN], old[MAX_LEN];

/* Read [off, off+len) through NBD and compare with the model. */
static void
check (uint64_t off, uint64_t len, const char *why)
{
  while (len > 0) {
    uint64_t n = len < MAX_LEN ? len : MAX_LEN, i;

    if (nbd_pread (nbd, buf, n, off, 0) == -1)
      die ("%s: pread %" PRIu64 " bytes at %" PRIu64 ": %s", why, n, off,
           nbd_get_error ());
    model_read (want, n, off);
    if (memcmp (buf, want, n) != 0) {
      for (i = 0; i < n && buf[i] == want[i]; ++i)
        ;
      die ("%s: byte at offset %" PRIu64 " (grain %" PRIu64 " + %" PRIu64
           ") reads 0x%02x, expected 0x%02x", why, off + i,
           (off + i) / GRAIN, (off + i) % GRAIN, buf[i], want[i]);
    }
    off += n;
    len -= n;
  }
}

/* Block status must not call data zero. */
struct map_state { uint64_t pos, end; const char *why; };

static int
map_cb (void *opaque, const char *metacontext, uint64_t offset,
        uint32_t *entries, size_t nr, int *error)
{
  struct map_state *m = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  m->pos = offset;
  for (i = 0; i + 1 < nr && m->pos < m->end; i += 2) {
    uint64_t len = entries[i], p;

    if (entries[i + 1] & LIBNBD_STATE_ZERO) {
      uint64_t stop = m->pos + len < m->end ? m->pos + len : m->end;
      for (p = m->pos; p < stop; ) {
        uint64_t n = stop - p < MAX_LEN ? stop - p : MAX_LEN, k;
        model_read (want, n, p);
        for (k = 0; k < n; ++k)
          if (want[k])
            die ("%s: block status says [%" PRIu64 ", +%" PRIu64 ") reads "
                 "as zeroes (flags %" PRIu32 ") but byte %" PRIu64
                 " is 0x%02x", m->why, m->pos, len, entries[i + 1], p + k,
                 want[k]);
        p += n;
      }
    }
    m->pos += len;
  }
  return 0;
}

static void
check_map (uint64_t off, uint64_t len, const char *why)
{
  struct map_state m = { off, off + len, why };

  while (m.pos < m.end) {
    uint64_t start = m.pos;
    if (nbd_block_status (nbd, m.end - m.pos, m.pos,
                          (nbd_extent_callback) { .callback = map_cb,
                                                  .user_data = &m },
                          0) == -1)
      die ("%s: block status at %" PRIu64 ": %s", why, m.pos,
           nbd_get_error ());
    if (m.pos <= start)
      die ("%s: block status made no progress at %" PRIu64, why, start);
  }
}

static void
check_touched (const char *why)
{
  size_t i;

  merge_touched ();
  for (i = 0; i < nr_touched; ++i) {
    /* A grain either side, to catch writes that spill over. */
    uint64_t a = touched[i].off > GRAIN ? touched[i].off - GRAIN : 0;
    uint64_t b = touched[i].off + touched[i].len + GRAIN;
    if (b > size) b = size;
    check (a, b - a, why);
    check_map (a, b - a, why);
  }
}

/* Hot spots. */
static uint64_t *spots;
static size_t nr_spots;

static void
add_spot (uint64_t s)
{
  spots = realloc (spots, (nr_spots + 1) * sizeof *spots);
  if (!spots) abort ();
  spots[nr_spots++] = s;
}

static void
make_spots (void)
{
  uint64_t b;
  int i;

  add_spot (0);
  add_spot (size);
  for (b = EXTENT_FILE; b < size; b += EXTENT_FILE)
    add_spot (b);
  /* Up to four table boundaries, including the first. */
  if (TABLE < size)
    add_spot (TABLE);
  for (i = 0; i < 3 && size > 2 * TABLE; ++i)
    add_spot ((1 + rnd_below (size / TABLE - 1)) * TABLE);
  /* A few random grains. */
  for (i = 0; i < 4; ++i)
    add_spot (rnd_below (size / GRAIN) * GRAIN);
  /* More from the caller: extent boundaries of custom descriptors. */
  if (getenv ("TEST_WRITE_SPOTS")) {
    char *list = strdup (getenv ("TEST_WRITE_SPOTS")), *p, *save = NULL;
    for (p = strtok_r (list, ",", &save); p; p = strtok_r (NULL, ",", &save))
      if (strtoull (p, NULL, 0) <= size)
        add_spot (strtoull (p, NULL, 0));
    free (list);
  }
}

/* A random range near a hot spot; aligned to whole grains if asked. */
static void
pick (uint64_t *offp, uint64_t *lenp, bool grains)
{
  uint64_t spot = spots[rnd_below (nr_spots)], off, len;
  int64_t delta;

  if (grains) {
    uint64_t g = 1 + rnd_below (8);
    delta = (int64_t) rnd_below (16) - 8;
    off = spot / GRAIN * GRAIN;
    if (delta < 0 && (uint64_t) -delta * GRAIN > off) off = 0;
    else off += delta * (int64_t) GRAIN;
    if (off >= size) off = size > g * GRAIN ? size - g * GRAIN : 0;
    off = off / GRAIN * GRAIN;
    len = g * GRAIN;
    if (len > size - off) len = size - off;
  }
  else {
    switch (rnd_below (10)) {
    case 0: case 1: len = 1; break;
    case 2: case 3: case 4: len = 1 + rnd_below (4096); break;
    case 5: case 6: case 7: len = 1 + rnd_below (2 * GRAIN); break;
    default: len = 1 + rnd_below (MAX_LEN); break;
    }
    delta = (int64_t) rnd_below (2 * 256 * 1024) - 256 * 1024;
    if (rnd_below (4) == 0)       /* right across the boundary */
      delta = -(int64_t) rnd_below (len + 1);
    if (delta < 0 && (uint64_t) -delta > spot) off = 0;
    else off = spot + delta;
    if (off >= size) off = size - 1 - rnd_below (size < 4096 ? size : 4096);
    if (len > size - off) len = size - off;
  }
  *offp = off;
  *lenp = len;
}

static void
op_write (void)
{
  uint64_t off, len, i;
  uint32_t flags = 0;
  unsigned style = rnd_below (4);

  pick (&off, &len, rnd_below (5) == 0);
  if (can_fua && rnd_below (8) == 0)
    flags |= LIBNBD_CMD_FLAG_FUA;
  /* Random bytes, a fill byte, or data with zero runs. */
  for (i = 0; i < len; ++i)
    buf[i] = style == 0 ? (unsigned char) (op_no * 7 + 1)
           : style == 1 && (i / 512) % 3 == 0 ? 0
           : (unsigned char) rnd ();
  note ("write %" PRIu64 " bytes at %" PRIu64 "%s", len, off,
        flags ? " FUA" : "");
  if (nbd_pwrite (nbd, buf, len, off, flags) == -1)
    die ("pwrite %" PRIu64 " bytes at %" PRIu64 ": %s", len, off,
         nbd_get_error ());
  model_write (buf, len, off);
  touch (off, len);
}

static void
op_zero (void)
{
  uint64_t off, len;
  uint32_t flags = 0;
  bool may_trim = rnd_below (2), fast = can_fast_zero && rnd_below (3) == 0;

  pick (&off, &len, rnd_below (2));
  if (!may_trim) flags |= LIBNBD_CMD_FLAG_NO_HOLE;
  if (fast) flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
  if (can_fua && rnd_below (8) == 0) flags |= LIBNBD_CMD_FLAG_FUA;
  note ("zero %" PRIu64 " bytes at %" PRIu64 "%s%s%s", len, off,
        may_trim ? " MAY_TRIM" : "", fast ? " FAST_ZERO" : "",
        flags & LIBNBD_CMD_FLAG_FUA ? " FUA" : "");
  touch (off, len);
  if (nbd_zero (nbd, len, off, flags) == -1) {
    int e = nbd_get_errno ();

    if (fast && (e == ENOTSUP || e == EOPNOTSUPP)) {
      /* Refused: nothing may have changed. */
      check (off, len, "after a refused FAST_ZERO");
      return;
    }
    die ("zero %" PRIu64 " bytes at %" PRIu64 ": %s (errno %d)", len, off,
         nbd_get_error (), e);
  }
  model_zero (len, off);
  if (rnd_below (3) == 0)
    check (off, len, "right after zero");
}

static void
op_trim (void)
{
  uint64_t off, len, p;
  uint32_t flags = 0;

  pick (&off, &len, rnd_below (3) != 0);
  if (can_fua && rnd_below (8) == 0) flags |= LIBNBD_CMD_FLAG_FUA;
  note ("trim %" PRIu64 " bytes at %" PRIu64 "%s", len, off,
        flags ? " FUA" : "");
  touch (off, len);
  if (nbd_trim (nbd, len, off, flags) == -1)
    die ("trim %" PRIu64 " bytes at %" PRIu64 ": %s", len, off,
         nbd_get_error ());
  /* Each byte is now old or zero; adopt what the server shows. */
  for (p = 0; p < len; ) {
    uint64_t n = len - p < MAX_LEN ? len - p : MAX_LEN, k;

    if (nbd_pread (nbd, buf, n, off + p, 0) == -1)
      die ("pread after trim: %s", nbd_get_error ());
    model_read (old, n, off + p);
    for (k = 0; k < n; ++k)
      if (buf[k] != old[k] && buf[k] != 0)
        die ("after trim, byte at %" PRIu64 " reads 0x%02x: neither the "
             "old 0x%02x nor zero", off + p + k, buf[k], old[k]);
    if (memcmp (buf, old, n) != 0)
      model_write (buf, n, off + p);
    p += n;
  }
}

static void
op_read (void)
{
  uint64_t off, len;

  pick (&off, &len, false);
  note ("read %" PRIu64 " bytes at %" PRIu64, len, off);
  check (off, len, "read");
}

int
main (int argc, char *argv[])
{
  unsigned nops = 400;
  struct stat st;
  int64_t s;

  if (argc < 4 || argc > 5) {
    fprintf (stderr, "usage: test-write-random URI MODEL SEED [NOPS]\n");
    exit (EXIT_FAILURE);
  }
  seed = strtoull (argv[3], NULL, 0);
  rng = seed * UINT64_C (0x9E3779B97F4A7C15) + 1;
  if (argc == 5)
    nops = atoi (argv[4]);

  model_fd = open (argv[2], O_RDWR);
  if (model_fd == -1 || fstat (model_fd, &st) == -1) {
    perror (argv[2]);
    exit (EXIT_FAILURE);
  }

  nbd = nbd_create ();
  if (nbd == NULL ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (nbd, argv[1]) == -1)
    die ("connect: %s", nbd_get_error ());
  s = nbd_get_size (nbd);
  if (s == -1)
    die ("get_size: %s", nbd_get_error ());
  size = s;
  if ((uint64_t) st.st_size != size)
    die ("the model is %jd bytes, the export %" PRIu64, (intmax_t) st.st_size,
         size);
  if (nbd_is_read_only (nbd) != 0)
    die ("the export is read-only");
  can_fua = nbd_can_fua (nbd) == 1;
  can_fast_zero = nbd_can_fast_zero (nbd) == 1;
  can_trim = nbd_can_trim (nbd) == 1;
  can_zero = nbd_can_zero (nbd) == 1;
  printf ("test-write-random: seed %" PRIu64 ", %u operations, size %" PRIu64
          ", fua %d fast_zero %d trim %d zero %d\n", seed, nops, size,
          can_fua, can_fast_zero, can_trim, can_zero);
  make_spots ();

  for (op_no = 0; op_no < nops; ++op_no) {
    unsigned k = rnd_below (100);

    if (k < 50) op_write ();
    else if (k < 70 && can_zero) op_zero ();
    else if (k < 80 && can_trim) op_trim ();
    else if (k < 85) {
      note ("flush");
      if (nbd_flush (nbd, 0) == -1)
        die ("flush: %s", nbd_get_error ());
    }
    else op_read ();
    if (op_no % 50 == 49) {
      note ("check touched ranges");
      check_touched ("periodic check");
    }
  }
  note ("final flush and check");
  if (nbd_flush (nbd, 0) == -1)
    die ("flush: %s", nbd_get_error ());
  check_touched ("final check");
  if (nbd_shutdown (nbd, 0) == -1)
    die ("shutdown: %s", nbd_get_error ());
  nbd_close (nbd);
  if (fsync (model_fd) == -1 || close (model_fd) == -1)
    die ("model: %m");
  printf ("test-write-random: seed %" PRIu64 ": %zu touched ranges OK\n",
          seed, nr_touched);
  return 0;
}
