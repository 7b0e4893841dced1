/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Corrupt grain tables in test-edges: a monolithicSparse image made by
 * qemu-img, with two grain-table entries patched, one far outside the
 * file and one on the file's last sector (so the grain runs past the
 * end).  Reading the first must fail with EIO, the second reads the
 * sector and zeroes (as QEMU does), reading their neighbours must still
 * work, and block status must never call the first zero.
 *
 * Layout (VMDK sparse header, little-endian): 0 magic "KDMV", 20 u64
 * grainSize (sectors), 44 u32 numGTEsPerGT, 56 u64 gdOffset (sector);
 * the grain directory is an array of u32 table sectors, each table an
 * array of u32 grain sectors (0: unallocated).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#include "test-edges.h"

#define C_SIZE (4 * MiB)
#define C_GRAINS 16             /* grains 0..15 hold data, except 7 */
#define HOLE_GRAIN 7
#define FAR_GRAIN 4             /* entry patched to 0x7fffffff */
#define EOF_GRAIN 10            /* entry patched to the last sector */

static const char *name = "corrupt";
static unsigned char *ref;

static uint64_t
get_le64 (const unsigned char *p)
{
  uint64_t v = 0;
  int i;

  for (i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint32_t
get_le32 (const unsigned char *p)
{
  return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t) p[3] << 24;
}

static void
put_le32 (unsigned char *p, uint32_t v)
{
  p[0] = v;
  p[1] = v >> 8;
  p[2] = v >> 16;
  p[3] = v >> 24;
}

static bool
full_pread (int fd, void *buf, size_t len, uint64_t offset)
{
  return pread (fd, buf, len, offset) == (ssize_t) len;
}

static void
expect_eio (struct nbd_handle *nbd, uint64_t offset, size_t len,
            const char *what)
{
  unsigned char *buf = xmalloc (len);

  if (nbd_pread (nbd, buf, len, offset, 0) != -1)
    fail ("%s: %s: read at offset %" PRIu64 " length %zu succeeded, "
          "expected EIO", name, what, offset, len);
  else if (nbd_get_errno () != EIO)
    fail ("%s: %s: read at offset %" PRIu64 " length %zu: errno %d (%s), "
          "expected EIO", name, what, offset, len, nbd_get_errno (),
          nbd_get_error ());
  free (buf);
}

static void
expect_ok (struct nbd_handle *nbd, uint64_t offset, size_t len,
           const char *what)
{
  unsigned char *buf = xmalloc (len);

  if (nbd_pread (nbd, buf, len, offset, 0) == -1)
    fail ("%s: %s: read at offset %" PRIu64 " length %zu failed: %s",
          name, what, offset, len, nbd_get_error ());
  else
    compare_buffers (name, what, buf, ref + offset, offset, len);
  free (buf);
}

/* Block status may fail (EIO) on a corrupt entry or call the grain data,
 * but a zero or hole would hide the corruption from a copying client.
 */
struct bad_map {
  uint64_t offset;              /* of the request */
  bool wrong;
  char msg[256];
};

static int
bad_map_cb (void *user_data, const char *metacontext, uint64_t offset,
            uint32_t *entries, size_t nr_entries, int *error)
{
  struct bad_map *m = user_data;
  uint64_t pos = offset, g;
  size_t i;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (i = 0; i + 1 < nr_entries; pos += entries[i], i += 2) {
    if (entries[i + 1] == 0)
      continue;
    for (g = pos / GRAIN; g * GRAIN < pos + entries[i]; g++) {
      if ((g == FAR_GRAIN || g == EOF_GRAIN) && !m->wrong) {
        m->wrong = true;
        snprintf (m->msg, sizeof m->msg, "[%" PRIu64 ", +%" PRIu32
                  ") with corrupt grain %" PRIu64 " reported with flags %"
                  PRIu32, pos, entries[i], g, entries[i + 1]);
      }
    }
  }
  return 0;
}

static void
check_map (struct nbd_handle *nbd, uint64_t offset, uint64_t count,
           uint32_t flags)
{
  struct bad_map m = { .offset = offset };

  if (nbd_block_status (nbd, count, offset,
                        (nbd_extent_callback) { .callback = bad_map_cb,
                                                .user_data = &m },
                        flags) == -1) {
    if (nbd_get_errno () != EIO)
      fail ("%s: block status offset %" PRIu64 " count %" PRIu64
            ": errno %d (%s), expected EIO or an answer", name, offset,
            count, nbd_get_errno (), nbd_get_error ());
  }
  else if (m.wrong)
    fail ("%s: block status%s offset %" PRIu64 " count %" PRIu64 ": %s",
          name, flags ? " REQ_ONE" : "", offset, count, m.msg);
}

void
check_corrupt (const char *scratch)
{
  char raw[4096], vmdk[4096];
  unsigned char hdr[512], gde[4], gt[C_GRAINS * 4], last[512];
  uint64_t grain, gd, gt_offset, i;
  uint32_t nr_gtes, last_sector;
  struct nbd_handle *nbd;
  struct stat st;
  int fd;

  snprintf (raw, sizeof raw, "%s/corrupt.raw", scratch);
  snprintf (vmdk, sizeof vmdk, "%s/corrupt.vmdk", scratch);

  ref = xmalloc (C_SIZE);
  memset (ref, 0, C_SIZE);
  for (i = 0; i < C_GRAINS * GRAIN; i += 8) {
    uint64_t r = rnd () | 1;    /* no grain of data is all zero */

    if (i / GRAIN != HOLE_GRAIN)
      memcpy (ref + i, &r, 8);
  }
  fd = open (raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1 || pwrite (fd, ref, C_SIZE, 0) != C_SIZE || close (fd) == -1) {
    perror (raw);
    exit (EXIT_FAILURE);
  }
  if (run ("qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse "
           "'%s' '%s'", raw, vmdk) != 0) {
    fail ("%s: qemu-img convert failed", name);
    goto out;
  }

  /* Find the first grain table through the header and the directory. */
  fd = open (vmdk, O_RDWR | O_CLOEXEC);
  if (fd == -1 || fstat (fd, &st) == -1 ||
      !full_pread (fd, hdr, sizeof hdr, 0)) {
    perror (vmdk);
    exit (EXIT_FAILURE);
  }
  grain = get_le64 (hdr + 20);
  nr_gtes = get_le32 (hdr + 44);
  gd = get_le64 (hdr + 56);
  if (memcmp (hdr, "KDMV", 4) != 0 || grain != GRAIN / 512 ||
      nr_gtes != 512 || !full_pread (fd, gde, 4, gd * 512)) {
    fail ("%s: unexpected layout from qemu-img (grain %" PRIu64 " sectors, "
          "%" PRIu32 " entries per table)", name, grain, nr_gtes);
    close (fd);
    goto out;
  }
  gt_offset = (uint64_t) get_le32 (gde) * 512;
  if (!full_pread (fd, gt, sizeof gt, gt_offset)) {
    perror (vmdk);
    exit (EXIT_FAILURE);
  }
  for (i = 0; i < C_GRAINS; i++) {
    if ((get_le32 (gt + 4 * i) == 0) != (i == HOLE_GRAIN)) {
      fail ("%s: qemu-img left grain %" PRIu64 " %s", name, i,
            i == HOLE_GRAIN ? "allocated" : "unallocated");
      close (fd);
      goto out;
    }
  }
  last_sector = st.st_size / 512 - 1;
  if (!full_pread (fd, last, sizeof last, (uint64_t) last_sector * 512)) {
    perror (vmdk);
    exit (EXIT_FAILURE);
  }
  printf ("%s: gdOffset %" PRIu64 ", table at %" PRIu64 ", grain %d at "
          "sector %" PRIu32 " -> 0x7fffffff, grain %d at sector %" PRIu32
          " -> %" PRIu32 " (last sector)\n", name, gd, gt_offset, FAR_GRAIN,
          get_le32 (gt + 4 * FAR_GRAIN), EOF_GRAIN,
          get_le32 (gt + 4 * EOF_GRAIN), last_sector);
  put_le32 (gt + 4 * FAR_GRAIN, 0x7fffffff);
  put_le32 (gt + 4 * EOF_GRAIN, last_sector);
  if (pwrite (fd, gt, sizeof gt, gt_offset) != sizeof gt || close (fd) == -1) {
    perror (vmdk);
    exit (EXIT_FAILURE);
  }

  nbd = connect_image (vmdk, true, "readonly=true");
  if (nbd == NULL)
    goto out;

  /* The entry far outside the file. */
  expect_eio (nbd, FAR_GRAIN * GRAIN, GRAIN, "grain pointing outside");
  expect_eio (nbd, FAR_GRAIN * GRAIN + 12345, 1, "byte of that grain");
  expect_eio (nbd, FAR_GRAIN * GRAIN - 1, 2, "read into that grain");
  expect_eio (nbd, (FAR_GRAIN - 1) * GRAIN, 3 * GRAIN, "read over it");
  expect_ok (nbd, (FAR_GRAIN - 1) * GRAIN, GRAIN, "grain before");
  expect_ok (nbd, (FAR_GRAIN + 1) * GRAIN, GRAIN, "grain after");
  expect_ok (nbd, FAR_GRAIN * GRAIN - 1, 1, "byte before");
  expect_ok (nbd, (FAR_GRAIN + 1) * GRAIN, 1, "byte after");

  /* The entry whose grain starts on the last sector and runs past the
   * end of the file.  Like QEMU (whose check only flags grains that
   * start past the end), the engine is lenient with truncated files:
   * the sector in the file is read and the rest reads as zeroes.
   */
  {
    unsigned char *buf = xmalloc (GRAIN);
    int64_t z;

    if (nbd_pread (nbd, buf, GRAIN, EOF_GRAIN * GRAIN, 0) == -1)
      fail ("%s: grain running past the end of the file: read failed: %s",
            name, nbd_get_error ());
    else {
      compare_buffers (name, "grain on the last sector", buf, last,
                       EOF_GRAIN * GRAIN, 512);
      z = first_nonzero (buf + 512, GRAIN - 512);
      if (z >= 0)
        fail ("%s: grain running past the end of the file: non-zero byte "
              "past the end of the file at offset %" PRIu64, name,
              EOF_GRAIN * GRAIN + 512 + z);
    }
    free (buf);
  }
  expect_ok (nbd, (EOF_GRAIN - 1) * GRAIN, GRAIN, "grain before");
  expect_ok (nbd, (EOF_GRAIN + 1) * GRAIN, GRAIN, "grain after");

  /* Everything else, after the errors. */
  expect_ok (nbd, 0, FAR_GRAIN * GRAIN, "before the bad grains");
  expect_ok (nbd, (FAR_GRAIN + 1) * GRAIN,
             (EOF_GRAIN - FAR_GRAIN - 1) * GRAIN, "between the bad grains");
  expect_ok (nbd, (EOF_GRAIN + 1) * GRAIN, C_SIZE - (EOF_GRAIN + 1) * GRAIN,
             "after the bad grains");

  check_map (nbd, 0, C_SIZE, 0);
  check_map (nbd, FAR_GRAIN * GRAIN + 1, GRAIN, 0);
  check_map (nbd, FAR_GRAIN * GRAIN + 1, GRAIN, LIBNBD_CMD_FLAG_REQ_ONE);
  check_map (nbd, EOF_GRAIN * GRAIN + 1, GRAIN, LIBNBD_CMD_FLAG_REQ_ONE);

  /* The server is still there. */
  expect_ok (nbd, 0, GRAIN, "first grain at the end");
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);

 out:
  unlink (raw);
  unlink (vmdk);
  free (ref);
  ref = NULL;
}
