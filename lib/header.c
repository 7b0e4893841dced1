/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "header.h"
#include "le.h"

/* Layout of the 512-byte KDMV header (all little-endian, packed):
 *
 *   0  u32 magic            44  u32 numGTEsPerGT
 *   4  u32 version          48  u64 rgdOffset
 *   8  u32 flags            56  u64 gdOffset
 *  12  u64 capacity         64  u64 overHead
 *  20  u64 grainSize        72  u8  uncleanShutdown
 *  28  u64 descriptorOffset 73  4 bytes "\n \r\n"
 *  36  u64 descriptorSize   77  u16 compressAlgorithm
 */

bool
sparse_header_is_magic (const unsigned char *buf)
{
  return get_le32 (buf) == SPARSE_MAGIC;
}

int
sparse_header_decode (const unsigned char buf[SPARSE_HEADER_SIZE],
                      struct sparse_header *h, const char *name)
{
  uint32_t incompat;
  uint64_t coverage;

  if (get_le32 (buf) != SPARSE_MAGIC)
    return vmdk_error (EINVAL, "%s: bad magic 0x%08" PRIx32 " in sparse "
                       "header (expected \"KDMV\")", name, get_le32 (buf));
  h->version = get_le32 (buf + 4);
  h->flags = get_le32 (buf + 8);
  h->capacity = get_le64 (buf + 12);
  h->grain_size = get_le64 (buf + 20);
  h->desc_offset = get_le64 (buf + 28);
  h->desc_size = get_le64 (buf + 36);
  h->num_gtes_per_gt = get_le32 (buf + 44);
  h->rgd_offset = get_le64 (buf + 48);
  h->gd_offset = get_le64 (buf + 56);
  h->overhead = get_le64 (buf + 64);
  h->unclean_shutdown = buf[72];
  h->compress_algorithm = get_le16 (buf + 77);

  if (h->version < 1 || h->version > 3)
    return vmdk_error (ENOTSUP, "%s: sparse header version %" PRIu32
                       " is not supported (expected 1, 2 or 3)",
                       name, h->version);
  incompat = h->flags & SPARSE_INCOMPAT_MASK & ~SPARSE_KNOWN_INCOMPAT;
  if (incompat)
    return vmdk_error (ENOTSUP, "%s: sparse header flags 0x%08" PRIx32
                       " has unknown incompatible bits 0x%08" PRIx32,
                       name, h->flags, incompat);
  if ((h->flags & SPARSE_FLAG_NL_DETECT) &&
      memcmp (buf + 73, "\n \r\n", 4) != 0)
    return vmdk_error (EINVAL, "%s: sparse header newline detector bytes "
                       "are wrong: the file was corrupted by CR/LF "
                       "translation (e.g. an FTP transfer in text mode)",
                       name);
  if (h->grain_size == 0 || !is_power_of_2 (h->grain_size) ||
      h->grain_size > SPARSE_MAX_GRAIN_SECTORS)
    return vmdk_error (EINVAL, "%s: sparse header grainSize %" PRIu64
                       " sectors is invalid (expected a power of 2 from 1 "
                       "to %d)", name, h->grain_size,
                       SPARSE_MAX_GRAIN_SECTORS);
  if (h->num_gtes_per_gt == 0 ||
      h->num_gtes_per_gt > SPARSE_MAX_GTES_PER_GT)
    return vmdk_error (EINVAL, "%s: sparse header numGTEsPerGT %" PRIu32
                       " is invalid (expected 1 to %d)", name,
                       h->num_gtes_per_gt, SPARSE_MAX_GTES_PER_GT);
  if (MUL_OVERFLOW (h->grain_size, (uint64_t) h->num_gtes_per_gt, &coverage))
    return vmdk_error (EINVAL, "%s: sparse header numGTEsPerGT x grainSize "
                       "overflows", name);
  if (h->capacity > SPARSE_MAX_CAPACITY)
    return vmdk_error (EINVAL, "%s: sparse header capacity %" PRIu64
                       " sectors is too large (at most %" PRIu64 ")",
                       name, h->capacity, SPARSE_MAX_CAPACITY);
  if ((h->flags & SPARSE_FLAG_COMPRESSED) &&
      h->compress_algorithm != SPARSE_COMPRESS_DEFLATE)
    return vmdk_error (ENOTSUP, "%s: sparse header compressAlgorithm %"
                       PRIu16 " is not supported (expected 1, deflate)",
                       name, h->compress_algorithm);
  if (!(h->flags & SPARSE_FLAG_COMPRESSED) &&
      h->compress_algorithm != SPARSE_COMPRESS_NONE)
    return vmdk_error (ENOTSUP, "%s: sparse header compressAlgorithm %"
                       PRIu16 " is set but the compressed flag is not",
                       name, h->compress_algorithm);
  if ((h->flags & SPARSE_FLAG_COMPRESSED) &&
      !(h->flags & SPARSE_FLAG_MARKERS))
    return vmdk_error (ENOTSUP, "%s: compressed grains without grain "
                       "markers (flags 0x%08" PRIx32 ") are not supported",
                       name, h->flags);
  if (h->gd_offset == SPARSE_GD_AT_END &&
      !(h->flags & SPARSE_FLAG_COMPRESSED))
    return vmdk_error (EINVAL, "%s: gdOffset is GD_AT_END but the image is "
                       "not compressed (streamOptimized)", name);
  if (h->gd_offset == 0)
    return vmdk_error (EINVAL, "%s: sparse header gdOffset is 0", name);
  return 0;
}

void
sparse_header_encode (const struct sparse_header *h,
                      unsigned char buf[SPARSE_HEADER_SIZE])
{
  memset (buf, 0, SPARSE_HEADER_SIZE);
  put_le32 (buf, SPARSE_MAGIC);
  put_le32 (buf + 4, h->version);
  put_le32 (buf + 8, h->flags);
  put_le64 (buf + 12, h->capacity);
  put_le64 (buf + 20, h->grain_size);
  put_le64 (buf + 28, h->desc_offset);
  put_le64 (buf + 36, h->desc_size);
  put_le32 (buf + 44, h->num_gtes_per_gt);
  put_le64 (buf + 48, h->rgd_offset);
  put_le64 (buf + 56, h->gd_offset);
  put_le64 (buf + 64, h->overhead);
  buf[72] = h->unclean_shutdown;
  memcpy (buf + 73, "\n \r\n", 4);
  put_le16 (buf + 77, h->compress_algorithm);
}

bool
cowd_is_magic (const unsigned char *buf)
{
  return memcmp (buf, "COWD", 4) == 0;
}

int
cowd_header_decode (const unsigned char *buf, struct cowd_header *h,
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

  if (cowd_header_decode (buf, &h, name) == -1)
    return -1;
  *sectors = h.capacity;
  return 0;
}
