/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* mkcowd: write a COWD (VMDK3 / ESX vmfsSparse) file from a raw image,
 * for the tests.  Independent of lib/: it follows the published layout
 * (VMware cow_ext.h COWDisk_Header; libvmdk's format document; QEMU's
 * VMDK3Header), so that the reader is checked against a second reading
 * of the format rather than against itself.
 *
 *   mkcowd [-q] [-g grainsectors] [-p parentname] [-D desc.vmdk]
 *          [-m mapfile] raw out.vmdk
 *
 * Layout: 2048-byte header, grain directory at sector 4, then every
 * grain table (16 KiB each), then the grains.  Only grains with a
 * non-zero byte are allocated; tables with no grain are GD holes.
 * Grains of even-numbered tables are allocated in order (so runs of
 * them are physically contiguous), those of odd-numbered tables in
 * reverse order (so none are), to exercise both coalescing and lookup.
 *
 * -D also writes a vmfsSparse descriptor naming out.vmdk; -m writes
 * the expected allocation map, one "offset length type" line per run
 * with the types of "nbdinfo --map" (0 data, 3 hole,zero).
 *
 * -q (root disks only) puts "CID=... parentCID=..." text at byte 512,
 * in the unused tail of the root geometry area.  QEMU (7.2 at least)
 * reads a CID from byte 512 of every sparse file it opens and refuses
 * the file with EINVAL if it finds none, so without this qemu-img
 * cannot open a bare COWD file at all; the reader must ignore it.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512
#define HEADER_SIZE 2048
#define GTES_PER_GT 4096
#define GT_SECTORS (GTES_PER_GT * 4 / SECTOR)
#define PARENT_LEN 1024

#define QEMU_CID_TEXT "CID=fffffffe\nparentCID=ffffffff\n"

#define FLAG_ROOT 0x01
#define FLAG_CHECKCAPABLE 0x02

static void __attribute__ ((noreturn))
usage (void)
{
  fprintf (stderr, "usage: mkcowd [-q] [-g grainsectors] [-p parentname] "
           "[-D desc.vmdk] [-m mapfile] raw out.vmdk\n");
  exit (EXIT_FAILURE);
}

static void __attribute__ ((noreturn))
die (const char *what)
{
  perror (what);
  exit (EXIT_FAILURE);
}

static void
put32 (unsigned char *p, uint32_t v)
{
  p[0] = v;
  p[1] = v >> 8;
  p[2] = v >> 16;
  p[3] = v >> 24;
}

static void
pwrite_all (int fd, const void *buf, size_t count, uint64_t offset)
{
  const char *b = buf;

  while (count > 0) {
    ssize_t r = pwrite (fd, b, count, offset);

    if (r == -1) {
      if (errno == EINTR)
        continue;
      die ("pwrite");
    }
    b += r;
    count -= r;
    offset += r;
  }
}

static unsigned char *
read_file (const char *path, uint64_t *size)
{
  struct stat st;
  unsigned char *buf;
  size_t done = 0;
  int fd;

  fd = open (path, O_RDONLY);
  if (fd == -1 || fstat (fd, &st) == -1)
    die (path);
  *size = st.st_size;
  buf = malloc (*size ? *size : 1);
  if (buf == NULL)
    die ("malloc");
  while (done < *size) {
    ssize_t r = read (fd, buf + done, *size - done);

    if (r <= 0) {
      if (r == -1 && errno == EINTR)
        continue;
      die (path);
    }
    done += r;
  }
  close (fd);
  return buf;
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  size_t i;

  for (i = 0; i < n; ++i)
    if (p[i])
      return false;
  return true;
}

/* Append a run to the map, merging it with the previous one if alike. */
static void
map_add (FILE *fp, uint64_t *start, uint64_t *len, int *type,
         uint64_t off, uint64_t n, int t)
{
  if (*len > 0 && *type == t && *start + *len == off) {
    *len += n;
    return;
  }
  if (*len > 0)
    fprintf (fp, "%" PRIu64 " %" PRIu64 " %d\n", *start, *len, *type);
  *start = off;
  *len = n;
  *type = t;
}

static void
write_descriptor (const char *path, const char *extent, uint64_t sectors)
{
  FILE *fp = fopen (path, "w");
  char *copy = strdup (extent);

  if (fp == NULL || copy == NULL)
    die (path);
  fprintf (fp,
           "# Disk DescriptorFile\n"
           "version=1\n"
           "CID=c0dec0de\n"
           "parentCID=ffffffff\n"
           "createType=\"vmfsSparse\"\n"
           "\n"
           "# Extent description\n"
           "RW %" PRIu64 " VMFSSPARSE \"%s\"\n"
           "\n"
           "# The Disk Data Base\n"
           "#DDB\n"
           "\n"
           "ddb.virtualHWVersion = \"4\"\n"
           "ddb.adapterType = \"lsilogic\"\n"
           "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
           "ddb.geometry.heads = \"255\"\n"
           "ddb.geometry.sectors = \"63\"\n",
           sectors, basename (copy), sectors / (255 * 63));
  if (fclose (fp) == EOF)
    die (path);
  free (copy);
}

int
main (int argc, char *argv[])
{
  uint32_t grain = 1;
  const char *parent = NULL, *desc = NULL, *mapfile = NULL;
  unsigned char *raw, *grain_buf, header[HEADER_SIZE] = { 0 };
  unsigned char *gd;
  uint32_t *gts;
  uint64_t raw_size, capacity, grain_bytes, nr_grains, nr_gts, gd_sectors;
  uint64_t next, t, i;
  bool qemu_cid = false;
  int c, fd;

  while ((c = getopt (argc, argv, "qg:p:D:m:")) != -1) {
    switch (c) {
    case 'q':
      qemu_cid = true;
      break;
    case 'g':
      grain = strtoul (optarg, NULL, 0);
      break;
    case 'p':
      parent = optarg;
      if (strlen (parent) >= PARENT_LEN)
        usage ();
      break;
    case 'D':
      desc = optarg;
      break;
    case 'm':
      mapfile = optarg;
      break;
    default:
      usage ();
    }
  }
  if (argc - optind != 2 || grain == 0 || (qemu_cid && parent))
    usage ();

  raw = read_file (argv[optind], &raw_size);
  capacity = (raw_size + SECTOR - 1) / SECTOR;
  if (capacity == 0 || capacity > UINT32_MAX) {
    fprintf (stderr, "mkcowd: raw file size must be 1..2^32-1 sectors\n");
    exit (EXIT_FAILURE);
  }
  grain_bytes = (uint64_t) grain * SECTOR;
  nr_grains = (capacity + grain - 1) / grain;
  nr_gts = (nr_grains + GTES_PER_GT - 1) / GTES_PER_GT;
  gd_sectors = (nr_gts * 4 + SECTOR - 1) / SECTOR;

  gd = calloc (gd_sectors, SECTOR);
  gts = calloc (nr_gts * GTES_PER_GT, sizeof *gts);
  /* The last grain may run past the raw data: pad it with zeroes. */
  grain_buf = malloc (grain_bytes);
  if (gd == NULL || gts == NULL || grain_buf == NULL)
    die ("malloc");

  fd = open (argv[optind + 1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd == -1)
    die (argv[optind + 1]);

  /* First pass: which tables are needed.  Tables go right after the
   * directory, grains after all the tables.
   */
  next = HEADER_SIZE / SECTOR + gd_sectors;
  for (t = 0; t < nr_gts; ++t) {
    uint64_t first = t * GTES_PER_GT * grain_bytes;
    uint64_t end = first + GTES_PER_GT * grain_bytes;

    if (end > raw_size)
      end = raw_size;
    if (!all_zero (raw + first, end - first)) {
      put32 (gd + t * 4, next);
      next += GT_SECTORS;
    }
  }

  for (t = 0; t < nr_gts; ++t) {
    for (i = 0; i < GTES_PER_GT; ++i) {
      /* Odd tables: last grain first. */
      uint64_t j = t % 2 ? GTES_PER_GT - 1 - i : i;
      uint64_t g = t * GTES_PER_GT + j, off = g * grain_bytes, n;

      if (g >= nr_grains)
        continue;
      n = raw_size - off < grain_bytes ? raw_size - off : grain_bytes;
      if (all_zero (raw + off, n))
        continue;
      memset (grain_buf, 0, grain_bytes);
      memcpy (grain_buf, raw + off, n);
      gts[t * GTES_PER_GT + j] = next;
      pwrite_all (fd, grain_buf, grain_bytes, next * SECTOR);
      next += grain;
    }
  }

  /* Header. */
  memcpy (header, "COWD", 4);
  put32 (header + 4, 1);                        /* version */
  put32 (header + 8, parent ? FLAG_CHECKCAPABLE
                            : FLAG_ROOT | FLAG_CHECKCAPABLE);
  put32 (header + 12, capacity);
  put32 (header + 16, grain);
  put32 (header + 20, HEADER_SIZE / SECTOR);    /* GD sector */
  put32 (header + 24, nr_gts);
  put32 (header + 28, next);                    /* next free sector */
  if (parent) {
    memcpy (header + 32, parent, strlen (parent));
    put32 (header + 1056, 1);                   /* parent generation */
  }
  else {
    put32 (header + 32, capacity / (16 * 63)); /* cylinders */
    put32 (header + 36, 16);                    /* heads */
    put32 (header + 40, 63);                    /* sectors */
    if (qemu_cid)
      memcpy (header + 512, QEMU_CID_TEXT, strlen (QEMU_CID_TEXT));
  }
  put32 (header + 1060, 1);                     /* generation */
  memcpy (header + 1064, "mkcowd", 6);          /* name */
  memcpy (header + 1124, "nbdkit-vmdk test image", 22); /* description */
  put32 (header + 1636, 1);                     /* saved generation */
  pwrite_all (fd, header, sizeof header, 0);

  pwrite_all (fd, gd, gd_sectors * SECTOR, HEADER_SIZE);
  for (t = 0; t < nr_gts; ++t) {
    uint32_t sector = gd[t * 4] | gd[t * 4 + 1] << 8 |
      gd[t * 4 + 2] << 16 | (uint32_t) gd[t * 4 + 3] << 24;
    unsigned char table[GTES_PER_GT * 4];

    if (sector == 0)
      continue;
    for (i = 0; i < GTES_PER_GT; ++i)
      put32 (table + i * 4, gts[t * GTES_PER_GT + i]);
    pwrite_all (fd, table, sizeof table, (uint64_t) sector * SECTOR);
  }
  if (ftruncate (fd, next * SECTOR) == -1 || close (fd) == -1)
    die (argv[optind + 1]);

  if (desc)
    write_descriptor (desc, argv[optind + 1], capacity);

  if (mapfile) {
    FILE *fp = fopen (mapfile, "w");
    uint64_t start = 0, len = 0, end = capacity * SECTOR;
    int type = 0;

    if (fp == NULL)
      die (mapfile);
    for (i = 0; i < nr_grains; ++i) {
      uint64_t off = i * grain_bytes;
      uint64_t n = end - off < grain_bytes ? end - off : grain_bytes;

      map_add (fp, &start, &len, &type, off, n,
               gts[i] != 0 ? 0 : 3);
    }
    map_add (fp, &start, &len, &type, end, 0, -1); /* flush */
    if (fclose (fp) == EOF)
      die (mapfile);
  }

  free (raw);
  free (gd);
  free (gts);
  free (grain_buf);
  return EXIT_SUCCESS;
}
