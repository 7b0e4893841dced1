/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* COWD extents: VMDK3 / ESX "vmfsSparse" redo logs.
 *
 * A 2048-byte header, then a grain directory of u32 sector numbers of
 * grain tables, each of exactly 4096 u32 grain sector numbers.  0 means
 * "not allocated here" at both levels; there is no zeroed-grain value.
 * Layout: VMware's cow_ext.h COWDisk_Header, as described by libvmdk's
 * format document and QEMU's VMDK3Header (VMDK-FORMAT.md b.5).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "extent.h"
#include "header.h"
#include "le.h"

#define COWD_VERSION 1
#define COWD_GTES_PER_GT 4096
/* The header occupies sectors 0-3: nothing may point inside it. */
#define COWD_HEADER_SECTORS (COWD_HEADER_SIZE / SECTOR)
/* Grains of 1 sector (ESX's default) up to 1 MiB, so one table covers
 * at most 4 GiB.  Larger grains are not known to exist.
 */
#define COWD_MAX_GRAIN_SECTORS 2048
#define COWD_PARENT_NAME_LEN 1024

/* Header offsets. */
#define COWD_OFF_VERSION     4
#define COWD_OFF_FLAGS       8
#define COWD_OFF_CAPACITY   12
#define COWD_OFF_GRAIN      16
#define COWD_OFF_GD         20
#define COWD_OFF_GD_ENTRIES 24
#define COWD_OFF_NEXT_FREE  28
#define COWD_OFF_PARENT     32    /* child only: parent file name[1024] */
#define COWD_OFF_PARENT_GEN 1056  /* child only: parent generation */
#define COWD_OFF_GENERATION 1060
#define COWD_OFF_UNCLEAN    1648

/* Flags (cow_ext.h).  ROOT says the union at offset 32 holds geometry,
 * not a parent name.
 */
#define COWD_FLAG_ROOT          0x01
#define COWD_FLAG_CHECKCAPABLE  0x02
#define COWD_FLAG_INCONSISTENT  0x04
#define COWD_KNOWN_FLAGS \
  (COWD_FLAG_ROOT | COWD_FLAG_CHECKCAPABLE | COWD_FLAG_INCONSISTENT)

struct cowd_header {
  uint32_t version;
  uint32_t flags;
  uint32_t capacity;            /* sectors */
  uint32_t grain_size;          /* sectors */
  uint32_t gd_sector;
  uint32_t gd_entries;
  uint32_t next_free;           /* sectors; advisory only */
  uint64_t nr_gts;              /* tables needed to cover capacity */
};

struct cowd {
  struct cowd_header h;
  struct grain_dir dir;
  uint64_t capacity_bytes;
  /* Parent name (child redo logs only); "" if none.  parent_bad if the
   * name is not NUL-terminated: an error only when someone asks.
   */
  char parent[COWD_PARENT_NAME_LEN];
  bool parent_bad;
};

bool
cowd_is_magic (const unsigned char *buf)
{
  return memcmp (buf, "COWD", 4) == 0;
}

/* Decode and validate the fields in the first 32 bytes: everything that
 * does not need the file size.
 */
static int
decode_header (const unsigned char *buf, struct cowd_header *h,
               const char *name)
{
  uint64_t coverage;

  if (!cowd_is_magic (buf))
    return vmdk_error (EINVAL, "%s: not a COWD file (bad magic)", name);
  h->version = get_le32 (buf + COWD_OFF_VERSION);
  h->flags = get_le32 (buf + COWD_OFF_FLAGS);
  h->capacity = get_le32 (buf + COWD_OFF_CAPACITY);
  h->grain_size = get_le32 (buf + COWD_OFF_GRAIN);
  h->gd_sector = get_le32 (buf + COWD_OFF_GD);
  h->gd_entries = get_le32 (buf + COWD_OFF_GD_ENTRIES);
  h->next_free = get_le32 (buf + COWD_OFF_NEXT_FREE);

  if (h->version != COWD_VERSION)
    return vmdk_error (EINVAL, "%s: COWD header version is %" PRIu32
                       ", only version %d is known", name, h->version,
                       COWD_VERSION);
  if (h->capacity == 0)
    return vmdk_error (EINVAL, "%s: COWD header capacity is 0 sectors",
                       name);
  if (!is_power_of_2 (h->grain_size) ||
      h->grain_size > COWD_MAX_GRAIN_SECTORS)
    return vmdk_error (EINVAL, "%s: COWD header grainSize is %" PRIu32
                       " sectors, it must be a power of 2 from 1 to %d",
                       name, h->grain_size, COWD_MAX_GRAIN_SECTORS);
  if (h->gd_sector < COWD_HEADER_SECTORS)
    return vmdk_error (EINVAL, "%s: COWD header grain directory sector is %"
                       PRIu32 ", inside the %d-byte header", name,
                       h->gd_sector, COWD_HEADER_SIZE);
  /* Both factors are bounded above, so no overflow. */
  coverage = (uint64_t) COWD_GTES_PER_GT * h->grain_size;
  h->nr_gts = div_round_up (h->capacity, coverage);
  if (h->gd_entries < h->nr_gts)
    return vmdk_error (EINVAL, "%s: COWD header says the grain directory "
                       "has %" PRIu32 " entries, too few to cover the "
                       "capacity of %" PRIu32 " sectors (%" PRIu64
                       " needed with %" PRIu32 "-sector grains)", name,
                       h->gd_entries, h->capacity, h->nr_gts,
                       h->grain_size);
  return 0;
}

int
cowd_capacity (const unsigned char *buf, uint64_t *sectors, const char *name)
{
  struct cowd_header h;

  if (decode_header (buf, &h, name) == -1)
    return -1;
  *sectors = h.capacity;
  return 0;
}

static int
cowd_decode (const struct grain_dir *d, uint64_t gte, uint64_t gt_index,
             uint32_t gte_index, enum grain_kind *kind,
             uint64_t *file_offset)
{
  if (gte == 0) {
    *kind = GRAIN_UNALLOC;
    return 0;
  }
  /* gte is a u32 sector number, so the product cannot overflow. */
  if (gte < COWD_HEADER_SECTORS || gte * SECTOR >= d->file_size)
    return vmdk_error (EIO, "%s: grain table %" PRIu64 " entry %" PRIu32
                       " = sector %" PRIu64 " points %s (file size %"
                       PRIu64 " bytes): corrupt image",
                       d->io->name, gt_index, gte_index, gte,
                       gte < COWD_HEADER_SECTORS ? "into the header"
                                                 : "outside the file",
                       d->file_size);
  *kind = GRAIN_DATA;
  *file_offset = gte * SECTOR;
  return 0;
}

/* Read the grain directory entries that cover the capacity (extra
 * entries the header may declare are never used, so not read).
 */
static int
load_gd (struct cowd *c, const char *name)
{
  struct grain_dir *d = &c->dir;
  uint64_t gd_start = (uint64_t) c->h.gd_sector * SECTOR;
  uint64_t gd_bytes, i;
  unsigned char *raw;

  d->nr_gts = c->h.nr_gts;
  gd_bytes = d->nr_gts * 4;     /* nr_gts < 2^32 */
  /* This also caps memory: the directory must fit in the file. */
  if (gd_start > d->file_size || gd_bytes > d->file_size - gd_start)
    return vmdk_error (EINVAL, "%s: COWD grain directory at sector %" PRIu32
                       " (%" PRIu64 " entries) lies beyond the end of the "
                       "file (%" PRIu64 " bytes)", name, c->h.gd_sector,
                       d->nr_gts, d->file_size);

  raw = malloc (gd_bytes);      /* nr_gts >= 1 as capacity > 0 */
  d->gt_offsets = calloc (d->nr_gts, sizeof (uint64_t));
  if (raw == NULL || d->gt_offsets == NULL) {
    free (raw);
    return vmdk_error (ENOMEM, "malloc: grain directory: %m");
  }
  if (io_pread_full (d->io, raw, gd_bytes, gd_start,
                     "grain directory") == -1) {
    free (raw);
    return -1;
  }
  for (i = 0; i < d->nr_gts; ++i) {
    uint32_t sector = get_le32 (raw + i * 4);

    /* grain_dir_init only knows about a one-sector header.  A table
     * inside ours is corrupt: reads of its range fail with EIO.
     */
    if (sector != 0 && sector < COWD_HEADER_SECTORS) {
      vmdk_debug (VMDK_DEBUG_OPEN, "%s: grain directory entry %" PRIu64
                  " points at sector %" PRIu32 ", inside the header: "
                  "reads of its range will fail", name, i, sector);
      d->gt_offsets[i] = GD_BAD;
    }
    else
      d->gt_offsets[i] = (uint64_t) sector * SECTOR;
  }
  free (raw);
  return grain_dir_init (d, name);
}

static int
cowd_lookup (struct extent *e, uint64_t offset, uint64_t max, bool for_map,
             struct run *run)
{
  struct cowd *c = e->priv;

  /* The descriptor line may describe more than the header's capacity:
   * the rest is unallocated, whatever stale table entries say.
   */
  if (offset >= c->capacity_bytes) {
    run->kind = RUN_UNALLOC;
    run->length = max;
    return 0;
  }
  max = MIN (max, c->capacity_bytes - offset);
  return grain_dir_lookup (&c->dir, offset, max, run);
}

static void
cowd_free (struct extent *e)
{
  struct cowd *c = e->priv;

  if (c) {
    grain_dir_free (&c->dir);
    free (c);
  }
}

static const struct extent_ops cowd_ops = {
  .kind = "COWD",
  .lookup = cowd_lookup,
  .free = cowd_free,
};

int
cowd_parent_name (struct extent *e, char *buf, size_t len)
{
  const struct cowd *c = e->priv;
  size_t n;

  if (e->ops != &cowd_ops)
    return vmdk_error (EINVAL, "extent \"%s\" is not a COWD extent",
                       e->line ? e->line : "");
  if (c->parent_bad)
    return vmdk_error (EINVAL, "%s: COWD parent file name is not "
                       "NUL-terminated within its %d bytes: corrupt header",
                       e->io->name, COWD_PARENT_NAME_LEN);
  n = strlen (c->parent);
  if (n >= len)
    return vmdk_error (ERANGE, "%s: COWD parent file name (%zu bytes) does "
                       "not fit the caller's %zu-byte buffer",
                       e->io->name, n, len);
  memcpy (buf, c->parent, n + 1);
  return 0;
}

/* A child's parent name lives where a root disk keeps its geometry. */
static void
read_parent_name (struct cowd *c, const unsigned char *buf, const char *name)
{
  const unsigned char *p = buf + COWD_OFF_PARENT;

  if (c->h.flags & COWD_FLAG_ROOT)
    return;
  if (memchr (p, '\0', COWD_PARENT_NAME_LEN) == NULL) {
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD parent file name is not "
                "NUL-terminated", name);
    c->parent_bad = true;
    return;
  }
  memcpy (c->parent, p, COWD_PARENT_NAME_LEN);
}

int
extent_cowd_init (struct extent *e, struct gtcache *cache)
{
  const char *name = e->io->name;
  unsigned char buf[COWD_HEADER_SIZE];
  uint64_t file_sectors;
  struct cowd *c;

  c = calloc (1, sizeof *c);
  if (c == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  e->priv = c;
  e->ops = &cowd_ops;

  if (e->io->ops->get_size (e->io, &c->dir.file_size) == -1)
    return -1;
  if (c->dir.file_size < COWD_HEADER_SIZE)
    return vmdk_error (EINVAL, "%s: COWD header is truncated: the file is %"
                       PRIu64 " bytes, the header %d", name,
                       c->dir.file_size, COWD_HEADER_SIZE);
  if (io_pread_full (e->io, buf, sizeof buf, 0, "COWD header") == -1 ||
      decode_header (buf, &c->h, name) == -1)
    return -1;
  read_parent_name (c, buf, name);

  /* "Next free sector in COW file, but file length is real truth"
   * (VMware), and QEMU never updates it: only worth a note.
   */
  file_sectors = c->dir.file_size / SECTOR;
  if (c->h.next_free > file_sectors)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD next free sector %" PRIu32
                " is past the end of the file (%" PRIu64 " sectors): "
                "truncated file?", name, c->h.next_free, file_sectors);
  if (c->h.flags & ~COWD_KNOWN_FLAGS)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD unknown flags 0x%" PRIx32
                " (ignored)", name, c->h.flags & ~COWD_KNOWN_FLAGS);

  c->capacity_bytes = (uint64_t) c->h.capacity * SECTOR;
  e->grain_size = c->h.grain_size * SECTOR;
  c->dir.cache = cache;
  c->dir.io = e->io;
  c->dir.gtes_per_gt = COWD_GTES_PER_GT;
  c->dir.gte_size = 4;
  c->dir.grain_bytes = e->grain_size;
  c->dir.decode = cowd_decode;
  c->dir.opaque = c;
  if (load_gd (c, name) == -1)
    return -1;

  vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD v%" PRIu32 " flags 0x%" PRIx32
              " capacity %" PRIu32 " grain %" PRIu32 " gd@%" PRIu32
              " entries %" PRIu32 " (%" PRIu64 " used) next free %" PRIu32
              " generation %" PRIu32 "%s%s", name, c->h.version,
              c->h.flags, c->h.capacity, c->h.grain_size, c->h.gd_sector,
              c->h.gd_entries, c->h.nr_gts, c->h.next_free,
              get_le32 (buf + COWD_OFF_GENERATION),
              c->h.flags & COWD_FLAG_INCONSISTENT
                ? " (inconsistent flag set)" : "",
              get_le32 (buf + COWD_OFF_UNCLEAN)
                ? " (unclean shutdown flag set)" : "");
  if (!(c->h.flags & COWD_FLAG_ROOT))
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: COWD child of \"%s\" (parent "
                "generation %" PRIu32 ")", name, c->parent,
                get_le32 (buf + COWD_OFF_PARENT_GEN));
  return 0;
}
