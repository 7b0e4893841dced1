/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The inflate limit of a streamOptimized image: how fast the engine's
 * inflate (lib/inflate.c, the library the plugin uses) turns every
 * stored grain back into data, with the whole file already in memory
 * and no NBD, no cache, no locks: what a reader of the image could at
 * best reach on this machine.
 *
 *   inflate-limit IMAGE THREADS [ROUNDS]
 *
 * Walks the markers from overHead, then inflates every grain ROUNDS
 * times (default 3) with THREADS threads taking grains in order, and
 * prints the best round as one line:
 *
 *   threads=N grains=G bytes=B seconds=S MB/s=R
 *
 * where B is the inflated bytes of one round.  Not a test.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "header.h"
#include "inflate.h"
#include "le.h"
#include "stream.h"

#define MAX_THREADS 256

struct grain {
  const unsigned char *data;
  uint32_t csize;
};

static const unsigned char *file;
static size_t file_size;
static struct grain *grains;
static size_t nr_grains;
static size_t grain_bytes;
static atomic_size_t next_grain;
static atomic_size_t inflated;       /* bytes, in the last round */

static void
die (const char *msg)
{
  fprintf (stderr, "inflate-limit: %s\n", msg);
  exit (EXIT_FAILURE);
}

/* Collect every grain marker's data, from overHead to the end-of-stream
 * marker: a grain marker is (lba, size != 0, data); a metadata marker
 * is (sectors, 0, type) followed by that many sectors.
 */
static void
find_grains (const struct sparse_header *h)
{
  size_t pos = h->overhead * SECTOR, room = 0;

  while (pos <= file_size - SECTOR) {
    const unsigned char *m = file + pos;
    uint32_t csize = get_le32 (m + 8);
    uint64_t sectors;

    if (csize != 0) {
      if (csize > file_size - pos - GRAIN_MARKER_SIZE)
        die ("a grain marker runs past the end of the file");
      if (nr_grains == room) {
        room = room ? room * 2 : 1024;
        grains = realloc (grains, room * sizeof *grains);
        if (grains == NULL)
          die ("out of memory");
      }
      grains[nr_grains++] = (struct grain) { m + GRAIN_MARKER_SIZE, csize };
      pos += (GRAIN_MARKER_SIZE + (size_t) csize + SECTOR - 1)
        / SECTOR * SECTOR;
      continue;
    }
    if (get_le32 (m + 12) == MARKER_EOS)
      return;
    sectors = get_le64 (m);
    if (sectors >= (file_size - pos) / SECTOR)
      die ("a metadata marker runs past the end of the file");
    pos += (sectors + 1) * SECTOR;
  }
  die ("no end-of-stream marker");
}

static void *
worker (void *arg)
{
  unsigned char *out = malloc (grain_bytes);
  size_t i, total = 0;

  if (out == NULL)
    die ("out of memory");
  while ((i = atomic_fetch_add (&next_grain, 1)) < nr_grains) {
    long n = vmdk_inflate (grains[i].data, grains[i].csize, out, grain_bytes,
                           "image", 0);

    if (n == -1)
      die ("a grain does not inflate");
    total += n;
  }
  atomic_fetch_add (&inflated, total);
  free (out);
  return NULL;
}

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
one_round (unsigned threads)
{
  pthread_t tids[MAX_THREADS];
  double start = now ();
  unsigned t;

  atomic_store (&next_grain, 0);
  atomic_store (&inflated, 0);
  for (t = 0; t < threads; ++t)
    if (pthread_create (&tids[t], NULL, worker, NULL) != 0)
      die ("pthread_create failed");
  for (t = 0; t < threads; ++t)
    pthread_join (tids[t], NULL);
  return now () - start;
}

int
main (int argc, char *argv[])
{
  struct sparse_header h;
  struct stat st;
  unsigned threads, rounds = 3, r;
  double best = 0;
  int fd;

  if (argc < 3 || argc > 4)
    die ("usage: inflate-limit IMAGE THREADS [ROUNDS]");
  threads = atoi (argv[2]);
  if (argc == 4)
    rounds = atoi (argv[3]);
  if (threads < 1 || threads > MAX_THREADS || rounds < 1)
    die ("THREADS must be 1 to 256 and ROUNDS at least 1");

  fd = open (argv[1], O_RDONLY | O_CLOEXEC);
  if (fd == -1 || fstat (fd, &st) == -1) {
    perror (argv[1]);
    exit (EXIT_FAILURE);
  }
  file_size = st.st_size;
  if (file_size < 2 * SECTOR)
    die ("the file is too short for a stream image");
  file = mmap (NULL, file_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (file == MAP_FAILED)
    die ("mmap failed");
  if (sparse_header_decode (file, &h, argv[1]) == -1)
    die ("not a hosted sparse image");
  if (!(h.flags & SPARSE_FLAG_COMPRESSED) || !(h.flags & SPARSE_FLAG_MARKERS))
    die ("not a streamOptimized image (compressed grains with markers)");
  grain_bytes = h.grain_size * SECTOR;
  find_grains (&h);

  for (r = 0; r < rounds; ++r) {
    double s = one_round (threads);

    if (r == 0 || s < best)
      best = s;
  }
  printf ("threads=%u grains=%zu bytes=%zu seconds=%.3f MB/s=%.1f\n",
          threads, nr_grains, atomic_load (&inflated), best,
          atomic_load (&inflated) / 1e6 / best);
  return 0;
}
