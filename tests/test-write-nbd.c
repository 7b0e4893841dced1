/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A small NBD client for the write tests' shell scripts: runs a list of
 * commands against one server and checks their results, with the exact
 * NBD flags (FUA, MAY_TRIM, FAST_ZERO) that qemu-io cannot send.
 *
 *   test-write-nbd URI CMD...        (CMD "-" reads commands from stdin,
 *                                     one a line)
 *
 * Commands (numbers are decimal, or hex with 0x; BYTE is 0-255):
 *   w:OFF:LEN:BYTE[:fua]     write LEN copies of BYTE
 *   z:OFF:LEN[:trim][:fast][:fua]   write zeroes (MAY_TRIM, FAST_ZERO)
 *   t:OFF:LEN[:fua]          trim
 *   f                        flush
 *   r:OFF:LEN:BYTE           every byte reads as BYTE
 *   oldnew:OFF:LEN:UNIT:OLD:NEW   each UNIT-sized piece reads all OLD or
 *                            all NEW (crash test)
 *   map:OFF:LEN:FLAGS        block status over the range: every extent
 *                            has exactly these base:allocation flags
 *                            (0 data, 2 zero, 3 hole,zero)
 *   is:NAME:0|1              can_write / can_fua / can_multi_conn /
 *                            can_trim / can_zero / can_fast_zero /
 *                            can_flush / read_only equals 0 or 1
 *   size:N                   the export is N bytes
 * Prefix a command with "!ERRNO:" (EPERM, EIO, ENOTSUP, EINVAL, ENOSPC)
 * to require that it fails with that errno; "?" prefix: the result may
 * be either success or any error, and is only printed ("CMD: ok" or
 * "CMD: failed: ...", used while a server is being killed).
 *
 * Exit status: 0 all commands behaved, 1 otherwise, 77 libnbd missing.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

static struct nbd_handle *nbd;
static unsigned failures;

static const struct { const char *name; int value; } errnos[] = {
  { "EPERM", EPERM }, { "EIO", EIO }, { "ENOTSUP", ENOTSUP },
  { "EOPNOTSUPP", EOPNOTSUPP }, { "EINVAL", EINVAL }, { "ENOSPC", ENOSPC },
  { "EROFS", EROFS },
};

static const char *
errno_name (int e)
{
  size_t i;

  for (i = 0; i < sizeof errnos / sizeof errnos[0]; ++i)
    if (errnos[i].value == e)
      return errnos[i].name;
  return "E?";
}

/* Split s at ':' into at most max fields (s is modified). */
static int
split (char *s, char **f, int max)
{
  int n = 0;

  while (n < max) {
    f[n++] = s;
    s = strchr (s, ':');
    if (s == NULL)
      break;
    *s++ = '\0';
  }
  return n;
}

static uint64_t
num (const char *s)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (s, &end, 0);
  if (errno || *end || end == s) {
    fprintf (stderr, "test-write-nbd: bad number '%s'\n", s);
    exit (EXIT_FAILURE);
  }
  return v;
}

struct map_check {
  uint64_t pos;
  uint32_t want;
  bool bad;
};

static int
map_cb (void *opaque, const char *metacontext, uint64_t offset,
        uint32_t *entries, size_t nr, int *error)
{
  struct map_check *m = opaque;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  m->pos = offset;
  for (i = 0; i + 1 < nr; i += 2) {
    if (entries[i + 1] != m->want) {
      fprintf (stderr, "  extent at %" PRIu64 " length %" PRIu32
               " has flags %" PRIu32 ", expected %" PRIu32 "\n",
               m->pos, entries[i], entries[i + 1], m->want);
      m->bad = true;
    }
    m->pos += entries[i];
  }
  return 0;
}

/* Run one command; returns 0 on success, -1 with errno (from libnbd) on
 * a failed NBD request, and exits on a syntax error.  A check that
 * fails (wrong data) counts a failure and returns 0.
 */
static int
run (char *cmd, const char *orig)
{
  char *f[8];
  int n = split (cmd, f, 8), i;
  unsigned char *buf = NULL;
  int r = 0;

  if (strcmp (f[0], "f") == 0)
    return nbd_flush (nbd, 0);
  if (strcmp (f[0], "size") == 0 && n == 2) {
    int64_t s = nbd_get_size (nbd);
    if (s != (int64_t) num (f[1])) {
      fprintf (stderr, "FAIL: %s: size is %" PRIi64 "\n", orig, s);
      failures++;
    }
    return 0;
  }
  if (strcmp (f[0], "is") == 0 && n == 3) {
    int v;
    if (strcmp (f[1], "can_write") == 0) v = !nbd_is_read_only (nbd);
    else if (strcmp (f[1], "read_only") == 0) v = nbd_is_read_only (nbd);
    else if (strcmp (f[1], "can_fua") == 0) v = nbd_can_fua (nbd);
    else if (strcmp (f[1], "can_multi_conn") == 0) v = nbd_can_multi_conn (nbd);
    else if (strcmp (f[1], "can_trim") == 0) v = nbd_can_trim (nbd);
    else if (strcmp (f[1], "can_zero") == 0) v = nbd_can_zero (nbd);
    else if (strcmp (f[1], "can_fast_zero") == 0) v = nbd_can_fast_zero (nbd);
    else if (strcmp (f[1], "can_flush") == 0) v = nbd_can_flush (nbd);
    else {
      fprintf (stderr, "test-write-nbd: unknown property %s\n", f[1]);
      exit (EXIT_FAILURE);
    }
    if (v != (int) num (f[2])) {
      fprintf (stderr, "FAIL: %s: it is %d\n", orig, v);
      failures++;
    }
    return 0;
  }
  if (n < 3) {
    fprintf (stderr, "test-write-nbd: bad command '%s'\n", orig);
    exit (EXIT_FAILURE);
  }

  uint64_t off = num (f[1]), len = num (f[2]);
  uint32_t flags = 0;

  if (strcmp (f[0], "w") == 0 && n >= 4) {
    buf = malloc (len ? len : 1);
    if (!buf) abort ();
    memset (buf, (int) num (f[3]), len);
    for (i = 4; i < n; ++i)
      if (strcmp (f[i], "fua") == 0) flags |= LIBNBD_CMD_FLAG_FUA;
    r = nbd_pwrite (nbd, buf, len, off, flags);
  }
  else if (strcmp (f[0], "z") == 0) {
    for (i = 3; i < n; ++i) {
      if (strcmp (f[i], "fua") == 0) flags |= LIBNBD_CMD_FLAG_FUA;
      else if (strcmp (f[i], "fast") == 0) flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
      else if (strcmp (f[i], "trim") == 0) ;
      else { fprintf (stderr, "bad flag %s\n", f[i]); exit (1); }
    }
    /* NBD's MAY_TRIM is the absence of NO_HOLE. */
    bool trim = false;
    for (i = 3; i < n; ++i)
      if (strcmp (f[i], "trim") == 0) trim = true;
    if (!trim) flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    r = nbd_zero (nbd, len, off, flags);
  }
  else if (strcmp (f[0], "t") == 0) {
    for (i = 3; i < n; ++i)
      if (strcmp (f[i], "fua") == 0) flags |= LIBNBD_CMD_FLAG_FUA;
    r = nbd_trim (nbd, len, off, flags);
  }
  else if (strcmp (f[0], "r") == 0 && n == 4) {
    int byte = (int) num (f[3]);
    buf = malloc (len ? len : 1);
    if (!buf) abort ();
    r = nbd_pread (nbd, buf, len, off, 0);
    if (r == 0) {
      for (uint64_t k = 0; k < len; ++k)
        if (buf[k] != byte) {
          fprintf (stderr, "FAIL: %s: byte at %" PRIu64 " is 0x%02x\n",
                   orig, off + k, buf[k]);
          failures++;
          break;
        }
    }
  }
  else if (strcmp (f[0], "oldnew") == 0 && n == 6) {
    uint64_t unit = num (f[3]);
    int oldb = (int) num (f[4]), newb = (int) num (f[5]);
    buf = malloc (len ? len : 1);
    if (!buf) abort ();
    r = nbd_pread (nbd, buf, len, off, 0);
    for (uint64_t p = 0; r == 0 && p < len; p += unit) {
      uint64_t m = len - p < unit ? len - p : unit, k;
      int want = buf[p] == newb ? newb : oldb;
      for (k = 0; k < m; ++k)
        if (buf[p + k] != want)
          break;
      if (k < m) {
        fprintf (stderr, "FAIL: %s: piece at %" PRIu64 " is neither all "
                 "0x%02x nor all 0x%02x (byte %" PRIu64 " is 0x%02x, first "
                 "0x%02x)\n", orig, off + p, oldb, newb, off + p + k,
                 buf[p + k], buf[p]);
        failures++;
      }
    }
  }
  else if (strcmp (f[0], "map") == 0 && n == 4) {
    struct map_check m = { off, (uint32_t) num (f[3]), false };
    uint64_t end = off + len;

    while (r == 0 && m.pos < end && !m.bad) {
      uint64_t start = m.pos;
      r = nbd_block_status (nbd, end - m.pos, m.pos,
                            (nbd_extent_callback) { .callback = map_cb,
                                                    .user_data = &m }, 0);
      if (r == 0 && m.pos <= start) {
        fprintf (stderr, "FAIL: %s: no progress\n", orig);
        failures++;
        break;
      }
    }
    if (m.bad) {
      fprintf (stderr, "FAIL: %s\n", orig);
      failures++;
    }
  }
  else {
    fprintf (stderr, "test-write-nbd: bad command '%s'\n", orig);
    exit (EXIT_FAILURE);
  }
  free (buf);
  return r;
}

static void
one (const char *arg)
{
  char *copy = strdup (arg), *cmd = copy;
  int expect = 0;              /* 0 success, errno, -1 anything */
  int r, e;

  if (!copy) abort ();
  if (cmd[0] == '?') {
    expect = -1;
    cmd++;
  }
  else if (cmd[0] == '!') {
    char *colon = strchr (cmd, ':');
    size_t i;

    if (colon == NULL) {
      fprintf (stderr, "test-write-nbd: bad command '%s'\n", arg);
      exit (EXIT_FAILURE);
    }
    *colon = '\0';
    for (i = 0; i < sizeof errnos / sizeof errnos[0]; ++i)
      if (strcmp (cmd + 1, errnos[i].name) == 0)
        expect = errnos[i].value;
    if (expect == 0) {
      fprintf (stderr, "test-write-nbd: unknown errno '%s'\n", cmd + 1);
      exit (EXIT_FAILURE);
    }
    cmd = colon + 1;
  }
  r = run (cmd, arg);
  e = r == -1 ? nbd_get_errno () : 0;
  if (expect == -1) {
    if (r == -1)
      printf ("%s: failed: %s\n", arg, nbd_get_error ());
    else
      printf ("%s: ok\n", arg);
    fflush (stdout);
  }
  else if (expect == 0 && r == -1) {
    fprintf (stderr, "FAIL: %s: %s (%s)\n", arg, nbd_get_error (),
             errno_name (e));
    failures++;
  }
  else if (expect > 0 && r == 0) {
    fprintf (stderr, "FAIL: %s: succeeded, expected %s\n", arg,
             errno_name (expect));
    failures++;
  }
  else if (expect > 0 && e != expect &&
           !(expect == ENOTSUP && e == EOPNOTSUPP)) {
    fprintf (stderr, "FAIL: %s: failed with %s (%s), expected %s\n", arg,
             errno_name (e), nbd_get_error (), errno_name (expect));
    failures++;
  }
  free (copy);
}

int
main (int argc, char *argv[])
{
  int i;

  if (argc < 2) {
    fprintf (stderr, "usage: test-write-nbd URI CMD...\n");
    exit (EXIT_FAILURE);
  }
  nbd = nbd_create ();
  if (nbd == NULL ||
      nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (nbd, argv[1]) == -1) {
    fprintf (stderr, "test-write-nbd: %s\n", nbd_get_error ());
    exit (EXIT_FAILURE);
  }
  for (i = 2; i < argc; ++i) {
    if (strcmp (argv[i], "-") == 0) {
      char *line = NULL;
      size_t n = 0;
      ssize_t len;

      while ((len = getline (&line, &n, stdin)) != -1) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == ' '))
          line[--len] = '\0';
        if (len > 0 && line[0] != '#')
          one (line);
      }
      free (line);
    }
    else
      one (argv[i]);
  }
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  if (failures) {
    fprintf (stderr, "test-write-nbd: %u failure(s)\n", failures);
    exit (EXIT_FAILURE);
  }
  return 0;
}
