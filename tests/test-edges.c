/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Edge cases through a real NBD client (libnbd), checked against the raw
 * disk the VMDKs were made from:
 *
 * - a 4.5 GiB sparse raw disk (not a multiple of the grain) with random
 *   data, explicit zero runs and holes around grain, grain-table and
 *   2 GiB extent-file boundaries and up to the last byte, converted by
 *   qemu-img to monolithicSparse, twoGbMaxExtentSparse, monolithicFlat
 *   and twoGbMaxExtentFlat;
 * - reads of odd lengths at odd offsets across every boundary, the
 *   first and last bytes, and reads spanning several grain tables;
 * - block status at unaligned offsets with and without REQ_ONE, and a
 *   map of the whole disk: no range reported as zero may hold data;
 * - size, read-only (the plugin's readonly=true, and nbdkit -r), and
 *   writes refused with EPERM;
 * - 4 connections to one server, many reads in flight on each;
 * - a grain-table entry pointing outside the file fails with EIO while
 *   the neighbouring grains still read correctly (test-edges-corrupt.c).
 *
 * The plugin can write, so every server here is read-only: the images
 * must stay equal to the reference.
 *
 * Exit status: 0 pass, 1 fail, 77 skip (no nbdkit or qemu-img).
 * TEST_EDGES_SEED=N repeats a run; KEEP_SCRATCH=1 keeps the files.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "test-edges.h"

unsigned failures;
const char *plugin;

static char *scratch;
static uint64_t rnd_state;

/* Print one failure (the first 200 of them) and count it. */
void
fail (const char *fmt, ...)
{
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  va_list ap;

  pthread_mutex_lock (&lock);
  failures++;
  if (failures <= 200) {
    fprintf (stderr, "FAIL: ");
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fprintf (stderr, "\n");
  }
  else if (failures == 201)
    fprintf (stderr, "FAIL: (further failures not shown)\n");
  pthread_mutex_unlock (&lock);
}

void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);

  if (p == NULL) {
    perror ("malloc");
    exit (EXIT_FAILURE);
  }
  return p;
}

void *
xrealloc (void *p, size_t n)
{
  p = realloc (p, n ? n : 1);
  if (p == NULL) {
    perror ("realloc");
    exit (EXIT_FAILURE);
  }
  return p;
}

static char *
xasprintf (const char *fmt, ...)
{
  va_list ap;
  char *s;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&s, fmt, ap);
  va_end (ap);
  if (r == -1) {
    perror ("vasprintf");
    exit (EXIT_FAILURE);
  }
  return s;
}

/* xorshift64*: fast, and repeatable from the printed seed. */
uint64_t
rnd_r (uint64_t *state)
{
  *state ^= *state >> 12;
  *state ^= *state << 25;
  *state ^= *state >> 27;
  return *state * 0x2545F4914F6CDD1DULL;
}

uint64_t
rnd (void)
{
  return rnd_r (&rnd_state);
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run a shell command; return its exit status (-1 if it did not exit). */
int
run (const char *fmt, ...)
{
  va_list ap;
  char *cmd;
  int r;

  va_start (ap, fmt);
  r = vasprintf (&cmd, fmt, ap);
  va_end (ap);
  if (r == -1) {
    perror ("vasprintf");
    exit (EXIT_FAILURE);
  }
  printf ("+ %s\n", cmd);
  fflush (stdout);
  r = system (cmd);
  free (cmd);
  if (r == -1 || !WIFEXITED (r))
    return -1;
  return WEXITSTATUS (r);
}

static void
cleanup (void)
{
  const char *keep = getenv ("KEEP_SCRATCH");

  if (scratch == NULL)
    return;
  if (keep && strcmp (keep, "1") == 0)
    printf ("keeping %s\n", scratch);
  else if (run ("rm -rf '%s'", scratch) != 0)
    fprintf (stderr, "could not remove %s\n", scratch);
}

/* One new handle connected to a private nbdkit serving vmdk.  The
 * plugin is writable unless told otherwise: opt is "readonly=true" (the
 * plugin's own read-only mode) or "-r" (nbdkit's).
 */
struct nbd_handle *
connect_image (const char *vmdk, bool meta, const char *opt)
{
  struct nbd_handle *nbd;
  char *file = xasprintf ("file=%s", vmdk);
  char *argv[8];
  size_t i = 0;

  argv[i++] = "nbdkit";
  argv[i++] = "-s";
  argv[i++] = "--exit-with-parent";
  if (opt && opt[0] == '-')
    argv[i++] = (char *) opt;
  argv[i++] = (char *) plugin;
  argv[i++] = file;
  if (opt && opt[0] != '-')
    argv[i++] = (char *) opt;
  argv[i] = NULL;

  nbd = nbd_create ();
  if (nbd == NULL) {
    fprintf (stderr, "nbd_create: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  if (meta && nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION)
      == -1) {
    fprintf (stderr, "nbd_add_meta_context: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  if (nbd_connect_command (nbd, argv) == -1) {
    fail ("%s: nbd_connect_command: %s", vmdk, nbd_get_error ());
    nbd_close (nbd);
    nbd = NULL;
  }
  free (file);
  return nbd;
}

/* The reference disk.  Every write records its edges as points of
 * interest unless quiet.
 */
static void
add_point (struct points *pts, uint64_t p, uint64_t size)
{
  if (p > size)
    return;
  pts->v = xrealloc (pts->v, (pts->n + 1) * sizeof *pts->v);
  pts->v[pts->n++] = p;
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

  return x < y ? -1 : x > y;
}

static void
put (struct reference *ref, struct points *pts, uint64_t offset,
     uint64_t len, bool zero)
{
  static unsigned char buf[GRAIN];
  uint64_t done, n, i;

  if (offset >= ref->size)
    return;
  if (len > ref->size - offset)
    len = ref->size - offset;
  if (pts) {
    add_point (pts, offset, ref->size);
    add_point (pts, offset + len, ref->size);
  }
  for (done = 0; done < len; done += n) {
    n = len - done < sizeof buf ? len - done : sizeof buf;
    if (zero)
      memset (buf, 0, n);
    else {
      for (i = 0; i + 8 <= n; i += 8) {
        uint64_t r = rnd ();
        memcpy (buf + i, &r, 8);
      }
      for (; i < n; i++)
        buf[i] = rnd ();
    }
    if (pwrite (ref->fd, buf, n, offset + done) != (ssize_t) n) {
      perror (ref->path);
      exit (EXIT_FAILURE);
    }
  }
}

static void
make_reference (struct reference *ref, struct points *pts)
{
  uint64_t size = ref->size, g, b;

  ref->fd = open (ref->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (ref->fd == -1 || ftruncate (ref->fd, size) == -1) {
    perror (ref->path);
    exit (EXIT_FAILURE);
  }

  put (ref, pts, 0, 3 * GRAIN, false);                    /* grains 0-2 */
  put (ref, pts, GRAIN + 4096, GRAIN, true);              /* zero run */
  put (ref, pts, 5 * GRAIN - 1234, 5000, false);          /* grain 4/5 */
  put (ref, pts, 9 * GRAIN + 512, 512, false);            /* one sector */
  put (ref, pts, 17 * GRAIN, 4 * GRAIN, false);           /* grains 17-20 */
  put (ref, pts, 30 * GRAIN, 2 * GRAIN, true);            /* zero grains */
  put (ref, pts, GT_SPAN - 100000, 200000, false);        /* table 0/1 */

  /* Grain tables 2 and 3: grains of data, zeroes, partial data and
   * holes in turn, so a 32 MiB read sees every kind.
   */
  for (g = 2 * GT_SPAN; g < 4 * GT_SPAN; g += GRAIN) {
    switch ((g / GRAIN) % 4) {
    case 0: put (ref, NULL, g + (g / GRAIN % 7) * 1000, 4097, false); break;
    case 1: put (ref, NULL, g, GRAIN, true); break;
    case 2: put (ref, NULL, g, GRAIN, false); break;
    default: break;
    }
  }
  put (ref, pts, 3 * GT_SPAN - 512 * KiB, MiB, false);    /* table 2/3 */
  add_point (pts, 2 * GT_SPAN, size);
  add_point (pts, 3 * GT_SPAN, size);
  add_point (pts, 4 * GT_SPAN, size);

  /* Every 2 GiB extent-file boundary. */
  for (b = EXTENT_SPAN; b < size; b += EXTENT_SPAN) {
    put (ref, pts, b - 3 * GRAIN / 2, 3 * GRAIN, false);
    put (ref, pts, b + 7 * GRAIN, 1000, false);
    for (g = b - 16 * MiB; g < b + 16 * MiB; g += 5 * GRAIN)
      put (ref, NULL, g + 100, 513, false);
    put (ref, pts, b - GT_SPAN - 3, 6, false);
    add_point (pts, b, size);
    add_point (pts, b - GT_SPAN, size);
    add_point (pts, b + GT_SPAN, size);
  }

  put (ref, pts, size - 70000, 70000, false);             /* to the end */
  add_point (pts, size - size % GRAIN, size);             /* last grain */
  add_point (pts, 0, size);

  qsort (pts->v, pts->n, sizeof *pts->v, cmp_u64);
  if (fsync (ref->fd) == -1) {
    perror (ref->path);
    exit (EXIT_FAILURE);
  }
}

/* qemu-img convert leaves zero runs unallocated.  Turn some of them
 * into zeroed grains (grain-table entry 1, allocated zeroes) with
 * qemu-io, so that block status reports ZERO without HOLE too.
 */
static void
add_zeroed_grains (const struct reference *ref, const char *vmdk)
{
  static unsigned char buf[GRAIN];
  char *cmd = NULL, *tmp;
  uint64_t g, starts[] = { 30 * GRAIN, 31 * GRAIN, 2 * GT_SPAN,
                           4 * GT_SPAN - 8 * MiB };
  size_t i, n = 0;

  if (run ("qemu-io --version >/dev/null 2>&1") != 0) {
    printf ("qemu-io missing: no zeroed grains\n");
    return;
  }
  cmd = xasprintf ("qemu-io -f vmdk");
  for (i = 0; i < sizeof starts / sizeof starts[0]; i++) {
    for (g = starts[i]; g < starts[i] + (i < 2 ? GRAIN : 8 * MiB);
         g += GRAIN) {
      if (g + GRAIN > ref->size)
        break;
      if (pread (ref->fd, buf, GRAIN, g) != GRAIN) {
        perror (ref->path);
        exit (EXIT_FAILURE);
      }
      if (first_nonzero (buf, GRAIN) >= 0)
        continue;
      tmp = xasprintf ("%s -c 'write -z %" PRIu64 " %" PRIu64 "'", cmd,
                       g, GRAIN);
      free (cmd);
      cmd = tmp;
      n++;
    }
  }
  if (run ("%s '%s' >/dev/null", cmd, vmdk) != 0)
    fail ("qemu-io write -z on %s failed", vmdk);
  printf ("%zu zeroed grains\n", n);
  free (cmd);
}

static const char *subformats[] = {
  "monolithicSparse", "twoGbMaxExtentSparse",
  "monolithicFlat", "twoGbMaxExtentFlat",
};

int
main (int argc, char *argv[])
{
  const char *builddir = getenv ("abs_builddir");
  const char *seed_env = getenv ("TEST_EDGES_SEED");
  struct reference ref = { 0 };
  struct points pts = { 0 };
  uint64_t seed;
  double t0 = now (), t;
  size_t i;

  setvbuf (stdout, NULL, _IOLBF, 0);
  plugin = getenv ("VMDK_PLUGIN");
  if (plugin == NULL || access (plugin, R_OK) == -1) {
    printf ("%s: VMDK_PLUGIN not set or not built: test skipped\n", argv[0]);
    exit (77);
  }
  if (run ("nbdkit --version >/dev/null 2>&1") != 0
      || run ("qemu-img --version >/dev/null 2>&1") != 0) {
    printf ("%s: nbdkit or qemu-img missing: test skipped\n", argv[0]);
    exit (77);
  }

  seed = seed_env ? strtoull (seed_env, NULL, 0) : (uint64_t) time (NULL);
  printf ("TEST_EDGES_SEED=%" PRIu64 "\n", seed);
  rnd_state = seed * 0x9E3779B97F4A7C15ULL + 1;

  scratch = xasprintf ("%s/tmp/test-edges", builddir ? builddir : ".");
  if (strchr (scratch, '\'')) {
    fprintf (stderr, "%s: quote in path, cannot run shell commands\n",
             scratch);
    exit (EXIT_FAILURE);
  }
  if (run ("rm -rf '%s' && mkdir -p '%s'", scratch, scratch) != 0)
    exit (EXIT_FAILURE);
  atexit (cleanup);

  /* Not a multiple of the grain, so the last grain is partial. */
  ref.size = 4 * GiB + 512 * MiB + 12345 * 512;
  ref.path = xasprintf ("%s/ref.raw", scratch);
  make_reference (&ref, &pts);
  printf ("reference: %" PRIu64 " bytes, %zu points, %.1f s\n",
          ref.size, pts.n, now () - t0);

  for (i = 0; i < sizeof subformats / sizeof subformats[0]; i++) {
    const char *sf = subformats[i];
    char *vmdk = xasprintf ("%s/%s.vmdk", scratch, sf);
    struct nbd_handle *nbd;

    t = now ();
    if (run ("qemu-img convert -q -f raw -O vmdk -o subformat=%s%s '%s' '%s'",
             sf, i == 0 ? ",zeroed_grain=on" : "", ref.path, vmdk) != 0) {
      fail ("%s: qemu-img convert failed", sf);
      free (vmdk);
      continue;
    }
    if (i == 0)
      add_zeroed_grains (&ref, vmdk);
    printf ("%s: converted in %.1f s\n", sf, now () - t);

    t = now ();
    nbd = connect_image (vmdk, false, "-r");
    if (nbd) {
      check_size_and_readonly (nbd, sf, &ref, "nbdkit -r");
      nbd_shutdown (nbd, 0);
      nbd_close (nbd);
    }
    nbd = connect_image (vmdk, true, "readonly=true");
    if (nbd) {
      check_size_and_readonly (nbd, sf, &ref, "readonly=true");
      check_reads (nbd, sf, &ref, &pts);
      check_block_status (nbd, sf, &ref, &pts);
      check_full_map (nbd, sf, &ref);
      nbd_shutdown (nbd, 0);
      nbd_close (nbd);
    }
    printf ("%s: single-connection checks in %.1f s\n", sf, now () - t);

    t = now ();
    check_parallel (vmdk, sf, &ref, &pts, scratch);
    printf ("%s: parallel checks in %.1f s\n", sf, now () - t);

    /* Keep the disk usage down: this image is done. */
    run ("rm -f '%s/%s'*.vmdk", scratch, sf);
    free (vmdk);
  }

  t = now ();
  check_corrupt (scratch);
  printf ("corrupt grain table: %.1f s\n", now () - t);

  close (ref.fd);
  free (pts.v);
  printf ("%s: %u failure(s), %.1f s\n", failures ? "FAIL" : "PASS",
          failures, now () - t0);
  exit (failures ? EXIT_FAILURE : EXIT_SUCCESS);
}
