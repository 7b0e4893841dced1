/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Single-connection checks of test-edges: size and read-only, reads
 * across boundaries, block status.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "test-edges.h"

/* Lengths of the boundary reads: odd, around sectors, pages, grains. */
static const uint64_t lengths[] = {
  1, 511, 513, 4097, 65537, MiB + 3,
};

/* At most this much of each block-status answer is read back. */
#define BS_CHECK_MAX (4 * MiB)

static unsigned char *got_buf, *expected_buf;

static void
alloc_buffers (void)
{
  if (got_buf == NULL) {
    got_buf = xmalloc (MAX_READ);
    expected_buf = xmalloc (MAX_READ);
  }
}

bool
ref_read (const struct reference *ref, void *buf, size_t len,
          uint64_t offset)
{
  size_t done = 0;
  ssize_t r;

  while (done < len) {
    r = pread (ref->fd, (char *) buf + done, len - done, offset + done);
    if (r <= 0) {
      fprintf (stderr, "%s: pread at %" PRIu64 ": %s\n", ref->path,
               offset + done, r == 0 ? "unexpected end of file"
               : strerror (errno));
      exit (EXIT_FAILURE);
    }
    done += r;
  }
  return true;
}

int64_t
first_nonzero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t i = 0;
  uint64_t w;

  for (; i + 8 <= len; i += 8) {
    memcpy (&w, p + i, 8);
    if (w)
      break;
  }
  for (; i < len; i++)
    if (p[i])
      return i;
  return -1;
}

bool
compare_buffers (const char *name, const char *what,
                 const unsigned char *got, const unsigned char *expected,
                 uint64_t offset, size_t len)
{
  size_t i, first = 0, last = 0, n = 0;

  if (memcmp (got, expected, len) == 0)
    return true;
  for (i = 0; i < len; i++) {
    if (got[i] != expected[i]) {
      if (n == 0)
        first = i;
      last = i;
      n++;
    }
  }
  fail ("%s: %s: read at offset %" PRIu64 " length %zu: %zu byte(s) differ "
        "from the reference, first at offset %" PRIu64 " (got 0x%02x, "
        "expected 0x%02x), last at offset %" PRIu64,
        name, what, offset, len, n, offset + first, got[first],
        expected[first], offset + last);
  return false;
}

/* Read through NBD and compare with the reference. */
static bool
read_and_compare (struct nbd_handle *nbd, const char *name,
                  const struct reference *ref, uint64_t offset,
                  uint64_t len, const char *what)
{
  if (nbd_pread (nbd, got_buf, len, offset, 0) == -1) {
    fail ("%s: %s: nbd_pread offset %" PRIu64 " length %" PRIu64
          " failed: %s", name, what, offset, len, nbd_get_error ());
    return false;
  }
  ref_read (ref, expected_buf, len, offset);
  return compare_buffers (name, what, got_buf, expected_buf, offset, len);
}

void
check_size_and_readonly (struct nbd_handle *nbd, const char *name,
                         const struct reference *ref, const char *how)
{
  static const unsigned char sector[512];
  int64_t size = nbd_get_size (nbd);
  char what[64];
  int r;

  alloc_buffers ();
  if (size != (int64_t) ref->size)
    fail ("%s (%s): nbd_get_size = %" PRIi64 ", expected %" PRIu64 " (%s)",
          name, how, size, ref->size, size == -1 ? nbd_get_error () : "");
  r = nbd_is_read_only (nbd);
  if (r != 1)
    fail ("%s (%s): nbd_is_read_only = %d, expected 1", name, how, r);
  r = nbd_can_multi_conn (nbd);
  if (r != 1)
    fail ("%s (%s): nbd_can_multi_conn = %d, expected 1", name, how, r);

  /* libnbd itself refuses the write on a read-only export... */
  if (nbd_pwrite (nbd, sector, sizeof sector, 0, 0) != -1)
    fail ("%s (%s): nbd_pwrite succeeded on a read-only export", name, how);
  else if (nbd_get_errno () != EPERM)
    fail ("%s (%s): nbd_pwrite: errno %d (%s), expected EPERM", name, how,
          nbd_get_errno (), nbd_get_error ());

  /* ...and so does the server when libnbd lets the requests through. */
  if (nbd_set_strict_mode (nbd, 0) == -1) {
    fail ("%s: nbd_set_strict_mode: %s", name, nbd_get_error ());
    return;
  }
  if (nbd_pwrite (nbd, sector, sizeof sector, 512, 0) != -1)
    fail ("%s (%s): server accepted NBD_CMD_WRITE", name, how);
  else if (nbd_get_errno () != EPERM)
    fail ("%s (%s): server NBD_CMD_WRITE: errno %d (%s), expected EPERM",
          name, how, nbd_get_errno (), nbd_get_error ());
  if (nbd_zero (nbd, 4096, 0, 0) != -1)
    fail ("%s (%s): server accepted NBD_CMD_WRITE_ZEROES", name, how);
  else if (nbd_get_errno () != EPERM)
    fail ("%s (%s): server NBD_CMD_WRITE_ZEROES: errno %d (%s), expected "
          "EPERM", name, how, nbd_get_errno (), nbd_get_error ());
  if (nbd_trim (nbd, GRAIN, 0, 0) != -1)
    fail ("%s (%s): server accepted NBD_CMD_TRIM", name, how);
  else if (nbd_get_errno () != EPERM)
    fail ("%s (%s): server NBD_CMD_TRIM: errno %d (%s), expected EPERM",
          name, how, nbd_get_errno (), nbd_get_error ());
  if (nbd_set_strict_mode (nbd, LIBNBD_STRICT_MASK) == -1)
    fail ("%s: nbd_set_strict_mode: %s", name, nbd_get_error ());

  /* Nothing changed. */
  snprintf (what, sizeof what, "after refused writes (%s)", how);
  read_and_compare (nbd, name, ref, 0, GRAIN, what);
}

/* Clip [offset, offset+len) into the disk, keeping len if possible. */
static void
clip (const struct reference *ref, int64_t *offset, uint64_t *len)
{
  if (*len > ref->size)
    *len = ref->size;
  if (*offset < 0)
    *offset = 0;
  if ((uint64_t) *offset + *len > ref->size)
    *offset = ref->size - *len;
}

void
check_reads (struct nbd_handle *nbd, const char *name,
             const struct reference *ref, const struct points *pts)
{
  size_t i, j, k;
  unsigned n = 0;
  char what[128];
  struct { int64_t offset; uint64_t len; const char *what; } big[] = {
    { 0, 1, "first byte" },
    { ref->size - 1, 1, "last byte" },
    { ref->size - 511, 511, "last 511 bytes" },
    { ref->size - ref->size % GRAIN, ref->size % GRAIN, "last partial grain" },
    { ref->size - GRAIN - 7, GRAIN + 7, "last grain and a bit" },
    { ref->size - 32 * MiB, 32 * MiB, "last 32 MiB" },
    { GT_SPAN - 12345, 32 * MiB, "32 MiB across tables 0/1" },
    { 2 * GT_SPAN + 7, 32 * MiB, "32 MiB across tables 2/3" },
    { GT_SPAN - 3, 60 * MiB + 5, "60 MiB over tables 0-2" },
    { EXTENT_SPAN - 16 * MiB - 7, 32 * MiB + 1, "32 MiB across 2 GiB" },
    { 2 * EXTENT_SPAN - GT_SPAN + 1, 64 * MiB - 1, "64 MiB across 4 GiB" },
  };

  alloc_buffers ();
  for (k = 0; k < sizeof big / sizeof big[0]; k++) {
    clip (ref, &big[k].offset, &big[k].len);
    read_and_compare (nbd, name, ref, big[k].offset, big[k].len, big[k].what);
    n++;
  }

  /* Around every point: straddling it, starting one byte before it, and
   * ending on it.
   */
  for (i = 0; i < pts->n; i++) {
    uint64_t p = pts->v[i];

    for (j = 0; j < sizeof lengths / sizeof lengths[0]; j++) {
      uint64_t len = lengths[j];
      int64_t offsets[] = {
        (int64_t) p - (int64_t) len / 2,
        (int64_t) p - 1,
        (int64_t) p - (int64_t) len + 1,
        (int64_t) p + 1,
      };

      for (k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
        int64_t offset = offsets[k];
        uint64_t l = len;

        clip (ref, &offset, &l);
        snprintf (what, sizeof what, "near %" PRIu64, p);
        read_and_compare (nbd, name, ref, offset, l, what);
        n++;
      }
    }
  }
  printf ("%s: %u boundary reads\n", name, n);
}

/* Block status answers. */
struct bs {
  uint64_t offset;              /* the callback's offset */
  unsigned calls;
  bool wrong_context;
  bool odd_entries;
  size_t n;                     /* number of extents */
  uint64_t *len;
  uint32_t *type;
};

static int
bs_cb (void *user_data, const char *metacontext, uint64_t offset,
       uint32_t *entries, size_t nr_entries, int *error)
{
  struct bs *bs = user_data;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0) {
    bs->wrong_context = true;
    return 0;
  }
  bs->calls++;
  bs->offset = offset;
  if (nr_entries % 2)
    bs->odd_entries = true;
  bs->n = nr_entries / 2;
  bs->len = xrealloc (bs->len, bs->n * sizeof *bs->len);
  bs->type = xrealloc (bs->type, bs->n * sizeof *bs->type);
  for (i = 0; i < bs->n; i++) {
    bs->len[i] = entries[2 * i];
    bs->type[i] = entries[2 * i + 1];
  }
  return 0;
}

/* Query and check the shape of the answer.  Returns the number of bytes
 * described (0 on failure).
 */
static uint64_t
query (struct nbd_handle *nbd, const char *name, const struct reference *ref,
       uint64_t offset, uint64_t count, uint32_t flags, struct bs *bs)
{
  const char *how = flags & LIBNBD_CMD_FLAG_REQ_ONE ? " REQ_ONE" : "";
  uint64_t total = 0;
  size_t i;

  bs->calls = 0;
  bs->n = 0;
  bs->wrong_context = bs->odd_entries = false;
  if (nbd_block_status (nbd, count, offset,
                        (nbd_extent_callback) { .callback = bs_cb,
                                                .user_data = bs },
                        flags) == -1) {
    fail ("%s: block status%s offset %" PRIu64 " count %" PRIu64
          " failed: %s", name, how, offset, count, nbd_get_error ());
    return 0;
  }
  if (bs->wrong_context)
    fail ("%s: block status: unrequested meta context", name);
  if (bs->calls != 1 || bs->odd_entries || bs->n == 0) {
    fail ("%s: block status%s offset %" PRIu64 " count %" PRIu64 ": %u "
          "answer(s), %zu extent(s)%s", name, how, offset, count, bs->calls,
          bs->n, bs->odd_entries ? ", odd number of entries" : "");
    return 0;
  }
  if (bs->offset != offset)
    fail ("%s: block status%s offset %" PRIu64 ": answer is for offset %"
          PRIu64, name, how, offset, bs->offset);
  if ((flags & LIBNBD_CMD_FLAG_REQ_ONE) && (bs->n != 1 || bs->len[0] > count))
    fail ("%s: block status REQ_ONE offset %" PRIu64 " count %" PRIu64
          ": %zu extents, the first of length %" PRIu64
          " (expected 1, at most %" PRIu64 ")", name, offset, count,
          bs->n, bs->len[0], count);
  for (i = 0; i < bs->n; i++) {
    if (bs->len[i] == 0)
      fail ("%s: block status%s offset %" PRIu64 ": extent %zu has length 0",
            name, how, offset, i);
    if (bs->type[i] & ~(uint32_t) (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO))
      fail ("%s: block status%s offset %" PRIu64 ": extent %zu has unknown "
            "flags 0x%" PRIx32, name, how, offset, i, bs->type[i]);
    total += bs->len[i];
  }
  if (offset + total > ref->size)
    fail ("%s: block status%s offset %" PRIu64 " count %" PRIu64
          ": extents end at %" PRIu64 ", past the size %" PRIu64,
          name, how, offset, count, offset + total, ref->size);
  return total;
}

/* Offset of the first non-zero reference byte in [offset, offset+len),
 * looking only at the reference's allocated ranges; -1 if all zero.
 */
static int64_t
ref_first_nonzero (const struct reference *ref, uint64_t offset,
                   uint64_t len)
{
  uint64_t end = offset + len, pos = offset, stop, n;
  off_t data, hole;
  int64_t z;

  while (pos < end) {
    data = lseek (ref->fd, pos, SEEK_DATA);
    if (data == -1 && errno == ENXIO)
      return -1;
    if (data == -1) {
      perror ("lseek SEEK_DATA");
      exit (EXIT_FAILURE);
    }
    if ((uint64_t) data >= end)
      return -1;
    hole = lseek (ref->fd, data, SEEK_HOLE);
    if (hole == -1) {
      perror ("lseek SEEK_HOLE");
      exit (EXIT_FAILURE);
    }
    stop = (uint64_t) hole < end ? (uint64_t) hole : end;
    for (pos = data; pos < stop; pos += n) {
      n = stop - pos < MAX_READ ? stop - pos : MAX_READ;
      ref_read (ref, expected_buf, n, pos);
      z = first_nonzero (expected_buf, n);
      if (z >= 0)
        return pos + z;
    }
  }
  return -1;
}

static const char *
type_name (uint32_t t)
{
  switch (t) {
  case 0: return "data";
  case LIBNBD_STATE_ZERO: return "zero";
  case LIBNBD_STATE_HOLE: return "hole";
  case LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO: return "hole,zero";
  default: return "?";
  }
}

/* Read back (up to BS_CHECK_MAX of) an answer: zero and hole ranges
 * must read as zeroes, through NBD and in the reference; data ranges
 * must equal the reference.
 */
static void
check_answer (struct nbd_handle *nbd, const char *name,
              const struct reference *ref, uint64_t offset,
              const struct bs *bs, const char *how)
{
  uint64_t pos = offset, len, budget = BS_CHECK_MAX;
  size_t i;
  int64_t z;

  for (i = 0; i < bs->n && budget > 0; pos += bs->len[i], i++) {
    if (pos >= ref->size)
      break;
    len = bs->len[i] < budget ? bs->len[i] : budget;
    if (pos + len > ref->size)
      len = ref->size - pos;
    budget -= len;
    if (bs->type[i] == 0) {
      read_and_compare (nbd, name, ref, pos, len, "data extent");
      continue;
    }
    if (nbd_pread (nbd, got_buf, len, pos, 0) == -1) {
      fail ("%s: nbd_pread offset %" PRIu64 " length %" PRIu64 " (a %s "
            "extent) failed: %s", name, pos, len, type_name (bs->type[i]),
            nbd_get_error ());
      continue;
    }
    z = first_nonzero (got_buf, len);
    if (z >= 0)
      fail ("%s: block status%s at %" PRIu64 " reported [%" PRIu64 ", +%"
            PRIu64 ") as %s but it reads non-zero at offset %" PRIu64,
            name, how, offset, pos, bs->len[i], type_name (bs->type[i]),
            pos + z);
    z = ref_first_nonzero (ref, pos, len);
    if (z >= 0)
      fail ("%s: block status%s at %" PRIu64 " reported [%" PRIu64 ", +%"
            PRIu64 ") as %s but the reference has data at offset %" PRIu64,
            name, how, offset, pos, bs->len[i], type_name (bs->type[i]), z);
  }
}

void
check_block_status (struct nbd_handle *nbd, const char *name,
                    const struct reference *ref, const struct points *pts)
{
  static const uint64_t counts[] = { 1, 4097, 4 * MiB + 5, 96 * MiB + 1 };
  struct bs full = { 0 }, one = { 0 };
  unsigned n = 0;
  size_t i, j, k;

  alloc_buffers ();
  for (i = 0; i < pts->n; i++) {
    uint64_t p = pts->v[i];
    int64_t offsets[] = {
      (int64_t) p + 1, (int64_t) p - 513, (int64_t) p + GRAIN / 2 + 3,
    };

    for (k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
      uint64_t offset;

      if (offsets[k] < 0 || (uint64_t) offsets[k] >= ref->size)
        continue;
      offset = offsets[k];
      for (j = 0; j < sizeof counts / sizeof counts[0]; j++) {
        uint64_t count = counts[j], t_full, t_one;

        if (count > ref->size - offset)
          count = ref->size - offset;
        t_full = query (nbd, name, ref, offset, count, 0, &full);
        t_one = query (nbd, name, ref, offset, count,
                       LIBNBD_CMD_FLAG_REQ_ONE, &one);
        n += 2;
        if (t_full)
          check_answer (nbd, name, ref, offset, &full, "");
        if (t_one)
          check_answer (nbd, name, ref, offset, &one, " REQ_ONE");
        if (t_full && t_one &&
            (one.type[0] != full.type[0] || one.len[0] > full.len[0]))
          fail ("%s: block status at %" PRIu64 " count %" PRIu64
                ": REQ_ONE gives %s length %" PRIu64 ", without REQ_ONE the "
                "first extent is %s length %" PRIu64, name, offset, count,
                type_name (one.type[0]), one.len[0],
                type_name (full.type[0]), full.len[0]);
      }
    }
  }
  free (full.len);
  free (full.type);
  free (one.len);
  free (one.type);
  printf ("%s: %u block status queries\n", name, n);
}

/* Map the whole disk: no zero or hole range may hold reference data. */
void
check_full_map (struct nbd_handle *nbd, const char *name,
                const struct reference *ref)
{
  struct bs bs = { 0 };
  uint64_t offset = 0, count, total, pos, bytes[4] = { 0 };
  unsigned queries = 0;
  size_t i;
  int64_t z;

  alloc_buffers ();
  while (offset < ref->size) {
    count = ref->size - offset < GiB ? ref->size - offset : GiB;
    total = query (nbd, name, ref, offset, count, 0, &bs);
    queries++;
    if (total == 0)
      break;
    for (i = 0, pos = offset; i < bs.n; pos += bs.len[i], i++) {
      bytes[bs.type[i] & 3] += bs.len[i];
      if (bs.type[i] == 0)
        continue;
      z = ref_first_nonzero (ref, pos, bs.len[i]);
      if (z < 0)
        continue;
      fail ("%s: map: [%" PRIu64 ", +%" PRIu64 ") is reported as %s but "
            "the reference has data at offset %" PRIu64, name, pos,
            bs.len[i], type_name (bs.type[i]), z);
      read_and_compare (nbd, name, ref, z, 4096 < ref->size - z ? 4096
                        : ref->size - z, "data in a zero extent");
    }
    offset += total;
  }
  printf ("%s: map in %u queries: %" PRIu64 " data, %" PRIu64 " zero, %"
          PRIu64 " hole,zero bytes\n", name, queries, bytes[0], bytes[2],
          bytes[3]);
  if (bytes[1])
    fail ("%s: map: %" PRIu64 " bytes reported as hole but not zero",
          name, bytes[1]);
  free (bs.len);
  free (bs.type);
}
