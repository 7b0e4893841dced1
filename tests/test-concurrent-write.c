/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Concurrent writers on one server (multi-conn).
 *
 *   test-concurrent-write URI MODEL [ROUNDS]
 *
 * MODEL is a raw file with the export's current contents (size equal to
 * the export); on success it is updated to the expected contents.
 *
 * NCONN connections to the one server, one thread each with many aio
 * requests in flight:
 * - "racing" grains: every connection writes its own 4 KiB pieces
 *   (pieces c and c + 8 of 16) of the same unallocated 64 KiB grains
 *   at once, so they race to allocate the grain: all pieces must be
 *   there afterwards, and the pieces nobody wrote must still read as
 *   before (zeroes, or the parent's data in a snapshot child);
 * - disjoint ranges: each connection writes its own unaligned runs
 *   crossing grains and grain tables;
 * - then a flush on one connection, and every byte is checked from
 *   another connection.
 * Writes are spread over the whole export so that many grain tables
 * are touched (with a small gt-cache they are evicted and reloaded
 * while being updated).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#define NCONN 4
#define GRAIN 65536
#define PIECE 4096
#define MAX_IN_FLIGHT 32

static const char *uri;
static uint64_t size;
static int model_fd;

struct req {
  uint64_t off;
  uint32_t len;
  unsigned char byte;           /* pattern: byte ^ (offset & 0xff) */
};

struct conn {
  struct nbd_handle *nbd;
  int id;
  struct req *reqs;
  size_t nr_reqs;
  const char *error;
  unsigned nr_flushes;
};

static struct conn conns[NCONN];

/* A reader connection keeps missing the grain-table cache (random
 * reads all over the disk) while the writers update tables and flush
 * them: a table read from disk before a flush must never replace the
 * newer one in the cache.
 */
static struct nbd_handle *reader_nbd;
static volatile int writers_done;
static unsigned long reads_done;
static const char *reader_error;

static unsigned char
pattern (const struct req *r, uint64_t i)
{
  return r->byte ^ (unsigned char) ((r->off + i) * 131 >> 8);
}

static void
fill (unsigned char *buf, const struct req *r)
{
  uint64_t i;

  for (i = 0; i < r->len; ++i)
    buf[i] = pattern (r, i);
}

static void
add_req (struct conn *c, uint64_t off, uint32_t len, unsigned char byte)
{
  if (off >= size)
    return;
  if (len > size - off)
    len = size - off;
  c->reqs = realloc (c->reqs, (c->nr_reqs + 1) * sizeof *c->reqs);
  if (!c->reqs) abort ();
  c->reqs[c->nr_reqs].off = off;
  c->reqs[c->nr_reqs].len = len;
  c->reqs[c->nr_reqs++].byte = byte;
}

static void *
writer (void *arg)
{
  struct conn *c = arg;
  size_t next = 0;
  bool want_flush = false;
  unsigned char *bufs[MAX_IN_FLIGHT];
  int64_t cookies[MAX_IN_FLIGHT];
  size_t i;

  for (i = 0; i < MAX_IN_FLIGHT; ++i) {
    bufs[i] = malloc (512 * 1024);
    cookies[i] = 0;
    if (!bufs[i]) abort ();
  }
  for (;;) {
    bool busy = false;

    for (i = 0; i < MAX_IN_FLIGHT; ++i) {
      if (cookies[i] > 0) {
        int r = nbd_aio_command_completed (c->nbd, cookies[i]);
        if (r == -1) {
          c->error = strdup (nbd_get_error ());
          goto out;
        }
        if (r == 0) {
          busy = true;
          continue;
        }
        cookies[i] = 0;
      }
      if (want_flush) {
        /* Flushes in the middle of the writes, too. */
        cookies[i] = nbd_aio_flush (c->nbd, NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1) {
          c->error = strdup (nbd_get_error ());
          goto out;
        }
        want_flush = false;
        c->nr_flushes++;
        busy = true;
      }
      else if (next < c->nr_reqs) {
        fill (bufs[i], &c->reqs[next]);
        cookies[i] = nbd_aio_pwrite (c->nbd, bufs[i], c->reqs[next].len,
                                     c->reqs[next].off,
                                     NBD_NULL_COMPLETION, 0);
        if (cookies[i] == -1) {
          c->error = strdup (nbd_get_error ());
          goto out;
        }
        next++;
        if (c->id == 0 && next % 64 == 0)
          want_flush = true;
        busy = true;
      }
    }
    if (!busy)
      break;
    if (nbd_poll (c->nbd, -1) == -1) {
      c->error = strdup (nbd_get_error ());
      goto out;
    }
  }
 out:
  for (i = 0; i < MAX_IN_FLIGHT; ++i)
    free (bufs[i]);
  return NULL;
}

static void *
reader (void *arg)
{
  unsigned char *buf = malloc (65536);
  uint64_t r = 12345;

  if (!buf) abort ();
  while (!__atomic_load_n (&writers_done, __ATOMIC_ACQUIRE)) {
    r ^= r << 13; r ^= r >> 7; r ^= r << 17;
    if (nbd_pread (reader_nbd, buf, 65536,
                   (r % (size / 65536)) * 65536, 0) == -1) {
      reader_error = strdup (nbd_get_error ());
      break;
    }
    reads_done++;
  }
  free (buf);
  return NULL;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t
rnd (void)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

int
main (int argc, char *argv[])
{
  pthread_t th[NCONN], rth;
  unsigned rounds = 1, round;
  unsigned char *got, *want;
  uint64_t off;
  int i, failures = 0;
  struct stat st;

  if (argc < 3) {
    fprintf (stderr, "usage: test-concurrent-write URI MODEL [ROUNDS]\n");
    exit (EXIT_FAILURE);
  }
  uri = argv[1];
  if (argc > 3)
    rounds = atoi (argv[3]);
  model_fd = open (argv[2], O_RDWR);
  if (model_fd == -1 || fstat (model_fd, &st) == -1) {
    perror (argv[2]);
    exit (EXIT_FAILURE);
  }

  for (i = 0; i < NCONN; ++i) {
    conns[i].id = i;
    conns[i].nbd = nbd_create ();
    if (conns[i].nbd == NULL ||
        nbd_connect_uri (conns[i].nbd, uri) == -1) {
      fprintf (stderr, "connect: %s\n", nbd_get_error ());
      exit (EXIT_FAILURE);
    }
  }
  size = nbd_get_size (conns[0].nbd);
  if ((uint64_t) st.st_size != size) {
    fprintf (stderr, "model is %jd bytes, export %" PRIu64 "\n",
             (intmax_t) st.st_size, size);
    exit (EXIT_FAILURE);
  }
  if (nbd_can_multi_conn (conns[0].nbd) != 1) {
    fprintf (stderr, "FAIL: the server does not advertise multi-conn\n");
    exit (EXIT_FAILURE);
  }
  reader_nbd = nbd_create ();
  if (reader_nbd == NULL || nbd_connect_uri (reader_nbd, uri) == -1) {
    fprintf (stderr, "connect: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  if (nbd_is_read_only (conns[0].nbd) != 0) {
    fprintf (stderr, "FAIL: the export is read-only\n");
    exit (EXIT_FAILURE);
  }

  for (round = 0; round < rounds; ++round) {
    uint64_t nr_grains = size / GRAIN, g, k;
    uint64_t race_stride = nr_grains / 512 ? nr_grains / 512 : 1;
    struct req *all = NULL;
    size_t nr_all = 0;

    for (i = 0; i < NCONN; ++i) {
      conns[i].nr_reqs = 0;
      conns[i].nr_flushes = 0;
    }
    /* Racing grains: 256 grains spread over the disk (in a different
     * place each round), pieces c and c+8 from connection c.  Issue
     * order is interleaved so the connections hit the same grain at
     * about the same moment.
     */
    for (k = 0; k < 256; ++k) {
      g = k * race_stride + round % race_stride;
      if (g >= nr_grains / 2) break;
      for (i = 0; i < NCONN; ++i) {
        add_req (&conns[i], g * GRAIN + i * PIECE, PIECE, 0x10 + i + round);
        add_req (&conns[i], g * GRAIN + (i + 8) * PIECE, PIECE,
                 0x50 + i + round);
      }
    }
    /* Disjoint: connection c owns every NCONN-th 1 MiB block of the
     * second half of the disk, with unaligned runs inside it.
     */
    for (k = 0; k < 64; ++k) {
      uint64_t mib = 1024 * 1024, blocks = size / 2 / mib;
      uint64_t groups = blocks / NCONN, step = groups / 64 ? groups / 64 : 1;
      uint64_t b, start, len;

      if (k >= groups) break;
      /* Distinct groups: no connection overlaps itself either. */
      b = (size / 2 + mib - 1) / mib + (k * step + rnd () % step) * NCONN;
      for (i = 0; i < NCONN; ++i) {
        start = (b + i) * mib + rnd () % (mib / 2);
        len = 1 + rnd () % (mib / 2 - 1);
        add_req (&conns[i], start, len, 0xa0 + i * 8 + round);
      }
    }

    writers_done = 0;
    reads_done = 0;
    if (pthread_create (&rth, NULL, reader, NULL) != 0)
      abort ();
    for (i = 0; i < NCONN; ++i)
      if (pthread_create (&th[i], NULL, writer, &conns[i]) != 0)
        abort ();
    for (i = 0; i < NCONN; ++i) {
      pthread_join (th[i], NULL);
      if (conns[i].error) {
        fprintf (stderr, "FAIL: connection %d: %s\n", i, conns[i].error);
        exit (EXIT_FAILURE);
      }
    }
    __atomic_store_n (&writers_done, 1, __ATOMIC_RELEASE);
    pthread_join (rth, NULL);
    if (reader_error) {
      fprintf (stderr, "FAIL: reader: %s\n", reader_error);
      exit (EXIT_FAILURE);
    }
    /* Flush on one connection: every completed write is durable. */
    if (nbd_flush (conns[round % NCONN].nbd, 0) == -1) {
      fprintf (stderr, "FAIL: flush: %s\n", nbd_get_error ());
      exit (EXIT_FAILURE);
    }

    /* Apply to the model in any order: the requests never overlap. */
    for (i = 0; i < NCONN; ++i) {
      all = realloc (all, (nr_all + conns[i].nr_reqs) * sizeof *all);
      if (!all) abort ();
      memcpy (all + nr_all, conns[i].reqs,
              conns[i].nr_reqs * sizeof *all);
      nr_all += conns[i].nr_reqs;
    }
    for (k = 0; k < nr_all; ++k) {
      unsigned char *b = malloc (all[k].len);
      if (!b) abort ();
      fill (b, &all[k]);
      if (pwrite (model_fd, b, all[k].len, all[k].off) != all[k].len) {
        perror ("pwrite model");
        exit (EXIT_FAILURE);
      }
      free (b);
    }
    free (all);
    printf ("round %u: %zu+%zu+%zu+%zu requests (%u flushes), "
            "%lu reads meanwhile, flushed\n", round,
            conns[0].nr_reqs, conns[1].nr_reqs, conns[2].nr_reqs,
            conns[3].nr_reqs, conns[0].nr_flushes, reads_done);
  }

  /* Check everything from another connection than the flusher, in
   * chunks, against the model.
   */
  got = malloc (4 * 1024 * 1024);
  want = malloc (4 * 1024 * 1024);
  if (!got || !want) abort ();
  for (off = 0; off < size && failures < 20; ) {
    uint64_t n = size - off < 4 * 1024 * 1024 ? size - off : 4 * 1024 * 1024;
    uint64_t j;
    off_t data;

    /* Chunks that are holes in the model were never written: they are
     * compared offline (qemu-img compare) by the caller, so big images
     * stay quick.
     */
    data = lseek (model_fd, off, SEEK_DATA);
    if (data == -1 || (uint64_t) data >= off + n) {
      off += n;
      continue;
    }
    if (nbd_pread (conns[1].nbd, got, n, off, 0) == -1) {
      fprintf (stderr, "FAIL: pread %" PRIu64 ": %s\n", off,
               nbd_get_error ());
      exit (EXIT_FAILURE);
    }
    if (pread (model_fd, want, n, off) != (ssize_t) n) {
      perror ("pread model");
      exit (EXIT_FAILURE);
    }
    for (j = 0; j < n; j += PIECE) {
      uint64_t m = n - j < PIECE ? n - j : PIECE;
      if (memcmp (got + j, want + j, m) != 0) {
        uint64_t b = j;
        while (got[b] == want[b]) b++;
        fprintf (stderr, "FAIL: 4 KiB piece at %" PRIu64 " (grain %" PRIu64
                 " piece %" PRIu64 ") differs: byte %" PRIu64 " is 0x%02x, "
                 "expected 0x%02x (lost update?)\n", off + j,
                 (off + j) / GRAIN, (off + j) % GRAIN / PIECE, off + b,
                 got[b], want[b]);
        if (++failures >= 20)
          break;
      }
    }
    off += n;
  }
  nbd_shutdown (reader_nbd, 0);
  nbd_close (reader_nbd);
  for (i = 0; i < NCONN; ++i) {
    nbd_shutdown (conns[i].nbd, 0);
    nbd_close (conns[i].nbd);
  }
  if (fsync (model_fd) == -1) {
    perror ("fsync");
    exit (EXIT_FAILURE);
  }
  if (failures) {
    fprintf (stderr, "test-concurrent-write: FAIL\n");
    exit (EXIT_FAILURE);
  }
  printf ("test-concurrent-write: all data read back from another "
          "connection\n");
  return 0;
}
