/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Parallel reads of test-edges: one nbdkit on a Unix socket, several
 * connections (multi-conn), many reads in flight on each, every buffer
 * checked against the reference.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "test-edges.h"

#define HANDLES 4
#define IN_FLIGHT 64
#define REQUESTS 192              /* per handle */
#define MAX_REQUEST (2 * MiB)

extern char **environ;

struct slot {
  unsigned char *buf;
  uint64_t offset;
  size_t len;
  int64_t cookie;               /* 0: free */
};

struct worker {
  unsigned id;
  const char *name;
  struct nbd_handle *nbd;
  const struct reference *ref;
  const struct points *pts;
  uint64_t rnd_state;
  unsigned done;
  uint64_t bytes;
};

static pid_t server_pid = -1;

static void
sleep_ms (long ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

/* A random request: half near a point of interest, half anywhere; a
 * mix of tiny, grain-sized and large lengths.
 */
static void
pick (struct worker *w, uint64_t *offset, size_t *len)
{
  uint64_t size = w->ref->size, r = rnd_r (&w->rnd_state);
  int64_t o;

  switch (r % 4) {
  case 0: *len = 1 + (r >> 8) % 600; break;
  case 1: *len = 1 + (r >> 8) % (2 * GRAIN); break;
  default: *len = 1 + (r >> 8) % MAX_REQUEST; break;
  }
  r = rnd_r (&w->rnd_state);
  if (r % 2 && w->pts->n > 0) {
    o = w->pts->v[(r >> 1) % w->pts->n];
    o += (int64_t) ((r >> 32) % (8 * MiB)) - (int64_t) (4 * MiB);
    if (o < 0)
      o = 0;
  }
  else
    o = (r >> 1) % size;
  if ((uint64_t) o + *len > size)
    o = size - *len;
  *offset = o;
}

static bool
issue (struct worker *w, struct slot *s)
{
  pick (w, &s->offset, &s->len);
  s->cookie = nbd_aio_pread (w->nbd, s->buf, s->len, s->offset,
                             NBD_NULL_COMPLETION, 0);
  if (s->cookie == -1) {
    fail ("%s: connection %u: nbd_aio_pread offset %" PRIu64 " length %zu: "
          "%s", w->name, w->id, s->offset, s->len, nbd_get_error ());
    s->cookie = 0;
    return false;
  }
  return true;
}

static void *
run_worker (void *arg)
{
  struct worker *w = arg;
  struct slot slots[IN_FLIGHT];
  unsigned char *expected = xmalloc (MAX_REQUEST);
  unsigned issued = 0, active = 0, i;
  char what[64];
  int r;

  snprintf (what, sizeof what, "parallel read on connection %u", w->id);
  for (i = 0; i < IN_FLIGHT; i++) {
    slots[i].buf = xmalloc (MAX_REQUEST);
    slots[i].cookie = 0;
    if (issued < REQUESTS && issue (w, &slots[i])) {
      issued++;
      active++;
    }
  }
  while (active > 0) {
    if (nbd_poll (w->nbd, -1) == -1) {
      fail ("%s: connection %u: nbd_poll: %s", w->name, w->id,
            nbd_get_error ());
      break;
    }
    for (i = 0; i < IN_FLIGHT; i++) {
      struct slot *s = &slots[i];

      if (s->cookie == 0)
        continue;
      r = nbd_aio_command_completed (w->nbd, s->cookie);
      if (r == 0)
        continue;
      if (r == -1)
        fail ("%s: connection %u: read offset %" PRIu64 " length %zu "
              "failed: %s", w->name, w->id, s->offset, s->len,
              nbd_get_error ());
      else {
        ref_read (w->ref, expected, s->len, s->offset);
        compare_buffers (w->name, what, s->buf, expected, s->offset,
                         s->len);
        w->bytes += s->len;
      }
      w->done++;
      s->cookie = 0;
      active--;
      if (issued < REQUESTS && issue (w, s)) {
        issued++;
        active++;
      }
    }
  }
  for (i = 0; i < IN_FLIGHT; i++)
    free (slots[i].buf);
  free (expected);
  return NULL;
}

/* Start nbdkit in the foreground on a Unix socket and wait until it has
 * written its pidfile (it does so once it listens).
 */
static bool
start_server (const char *vmdk, const char *sock, const char *pidfile)
{
  char file[4096];
  char *argv[] = { "nbdkit", "-f", "--exit-with-parent", "-U", (char *) sock,
                   "-P", (char *) pidfile, (char *) plugin, file,
                   "readonly=true", NULL };
  struct stat st;
  int status, i, r;

  snprintf (file, sizeof file, "file=%s", vmdk);
  unlink (sock);
  unlink (pidfile);
  r = posix_spawnp (&server_pid, "nbdkit", NULL, NULL, argv, environ);
  if (r != 0) {
    fail ("posix_spawnp nbdkit: %s", strerror (r));
    server_pid = -1;
    return false;
  }
  for (i = 0; i < 600; i++) {
    if (stat (pidfile, &st) == 0 && st.st_size > 0 &&
        stat (sock, &st) == 0)
      return true;
    if (waitpid (server_pid, &status, WNOHANG) == server_pid) {
      fail ("nbdkit serving %s exited at startup (status 0x%x)", vmdk,
            status);
      server_pid = -1;
      return false;
    }
    sleep_ms (100);
  }
  fail ("nbdkit serving %s: no pidfile after 60 s", vmdk);
  return false;
}

/* SIGTERM the server and check that it exits cleanly. */
static void
stop_server (const char *name)
{
  int status, i;

  if (server_pid == -1)
    return;
  kill (server_pid, SIGTERM);
  for (i = 0; i < 600; i++) {
    if (waitpid (server_pid, &status, WNOHANG) == server_pid) {
      if (WIFSIGNALED (status))
        fail ("%s: nbdkit died of signal %d", name, WTERMSIG (status));
      else if (WEXITSTATUS (status) != 0)
        fail ("%s: nbdkit exited with status %d after SIGTERM", name,
              WEXITSTATUS (status));
      server_pid = -1;
      return;
    }
    sleep_ms (100);
  }
  fail ("%s: nbdkit (pid %d) did not exit after SIGTERM", name,
        (int) server_pid);
  kill (server_pid, SIGKILL);
  waitpid (server_pid, &status, 0);
  server_pid = -1;
}

void
check_parallel (const char *vmdk, const char *name,
                const struct reference *ref, const struct points *pts,
                const char *scratch)
{
  struct worker w[HANDLES];
  pthread_t threads[HANDLES];
  char sock[4096], pidfile[4096];
  unsigned i, started = 0;
  uint64_t bytes = 0, done = 0;
  int r;

  /* sun_path holds 108 bytes: fall back to /tmp for a deep builddir. */
  snprintf (sock, sizeof sock, "%s/parallel.sock", scratch);
  if (strlen (sock) >= 100)
    snprintf (sock, sizeof sock, "/tmp/test-edges-%d.sock", (int) getpid ());
  snprintf (pidfile, sizeof pidfile, "%s/parallel.pid", scratch);
  memset (w, 0, sizeof w);
  if (!start_server (vmdk, sock, pidfile))
    return;

  for (i = 0; i < HANDLES; i++) {
    w[i] = (struct worker) { .id = i, .name = name, .ref = ref, .pts = pts,
                             .rnd_state = rnd () | 1 };
    w[i].nbd = nbd_create ();
    if (w[i].nbd == NULL) {
      fprintf (stderr, "nbd_create: %s\n", nbd_get_error ());
      exit (EXIT_FAILURE);
    }
    if (nbd_connect_unix (w[i].nbd, sock) == -1) {
      fail ("%s: connection %u: nbd_connect_unix %s: %s", name, i, sock,
            nbd_get_error ());
      goto out;
    }
    r = nbd_can_multi_conn (w[i].nbd);
    if (r != 1)
      fail ("%s: connection %u: nbd_can_multi_conn = %d, expected 1",
            name, i, r);
    if (nbd_get_size (w[i].nbd) != (int64_t) ref->size)
      fail ("%s: connection %u: nbd_get_size = %" PRIi64, name, i,
            nbd_get_size (w[i].nbd));
  }

  for (started = 0; started < HANDLES; started++) {
    r = pthread_create (&threads[started], NULL, run_worker, &w[started]);
    if (r != 0) {
      fail ("pthread_create: %s", strerror (r));
      break;
    }
  }
  for (i = 0; i < started; i++) {
    pthread_join (threads[i], NULL);
    bytes += w[i].bytes;
    done += w[i].done;
  }
  printf ("%s: %" PRIu64 " parallel reads on %d connections, %" PRIu64
          " MiB\n", name, done, HANDLES, bytes / MiB);
  if (done != (uint64_t) HANDLES * REQUESTS)
    fail ("%s: %" PRIu64 " parallel reads completed, expected %d", name,
          done, HANDLES * REQUESTS);

 out:
  for (i = 0; i < HANDLES; i++) {
    if (w[i].nbd == NULL)
      continue;
    nbd_shutdown (w[i].nbd, 0);
    nbd_close (w[i].nbd);
  }
  stop_server (name);
  unlink (sock);
  unlink (pidfile);
}
