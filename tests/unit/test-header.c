/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* sparse_header_decode on hand-made 512-byte KDMV headers (layout from
 * shared/VMDK-FORMAT.md b.1, written here byte by byte).
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "builder.h"
#include "header.h"
#include "tap.h"

#define NAME "h.vmdk"

/* Field offsets (b.1). */
enum {
  O_MAGIC = 0, O_VERSION = 4, O_FLAGS = 8, O_CAPACITY = 12, O_GRAIN = 20,
  O_DESC_OFF = 28, O_DESC_SIZE = 36, O_GTES = 44, O_RGD = 48, O_GD = 56,
  O_OVERHEAD = 64, O_UNCLEAN = 72, O_NL = 73, O_COMPRESS = 77,
};

/* A valid header as QEMU writes it for a 1 GiB monolithicSparse image. */
static void
good (unsigned char *h)
{
  memset (h, 0, 512);
  memcpy (h, "KDMV", 4);
  b_put_le32 (h + O_VERSION, 1);
  b_put_le32 (h + O_FLAGS, B_FLAG_NL_DETECT | B_FLAG_RGD);
  b_put_le64 (h + O_CAPACITY, 2097152);
  b_put_le64 (h + O_GRAIN, 128);
  b_put_le64 (h + O_DESC_OFF, 1);
  b_put_le64 (h + O_DESC_SIZE, 20);
  b_put_le32 (h + O_GTES, 512);
  b_put_le64 (h + O_RGD, 21);
  b_put_le64 (h + O_GD, 153);
  b_put_le64 (h + O_OVERHEAD, 384);
  h[O_UNCLEAN] = 0;
  memcpy (h + O_NL, "\n \r\n", 4);
  b_put_le16 (h + O_COMPRESS, 0);
}

static int
decode (const unsigned char *h, struct sparse_header *out)
{
  memset (out, 0xcc, sizeof *out);
  return sparse_header_decode (h, out, NAME);
}

#define ACCEPT(h)                                                       \
  do {                                                                  \
    struct sparse_header _s;                                            \
    int _r = decode ((h), &_s);                                         \
    CHECK_MSG (_r == 0, "refused: %s", vmdk_errmsg ());                 \
  } while (0)

#define REFUSE(h, e, ...)                                               \
  do {                                                                  \
    struct sparse_header _s;                                            \
    int _r = decode ((h), &_s);                                         \
    int _e = errno;                                                     \
    CHECK (_r == -1);                                                   \
    if (_r == -1)                                                       \
      CHECK_ERROR (_e, (e), NAME ": ", __VA_ARGS__);                    \
  } while (0)

static void
test_valid (void)
{
  unsigned char h[512];
  struct sparse_header s;
  uint32_t v;

  CHECK_EQ (SPARSE_HEADER_SIZE, 512);

  good (h);
  CHECK (sparse_header_is_magic (h));
  CHECK (decode (h, &s) == 0);
  CHECK_EQ (s.version, 1);
  CHECK_EQ (s.flags, 3);
  CHECK_EQ (s.capacity, 2097152);
  CHECK_EQ (s.grain_size, 128);
  CHECK_EQ (s.desc_offset, 1);
  CHECK_EQ (s.desc_size, 20);
  CHECK_EQ (s.num_gtes_per_gt, 512);
  CHECK_EQ (s.rgd_offset, 21);
  CHECK_EQ (s.gd_offset, 153);
  CHECK_EQ (s.overhead, 384);
  CHECK_EQ (s.unclean_shutdown, 0);
  CHECK_EQ (s.compress_algorithm, 0);

  /* Every field distinct and wide, to catch offset mix-ups. */
  good (h);
  b_put_le32 (h + O_VERSION, 2);
  b_put_le32 (h + O_FLAGS, B_FLAG_NL_DETECT | B_FLAG_ZERO_GRAIN | 0x0100);
  b_put_le64 (h + O_CAPACITY, UINT64_C (0x000000ab12345678));
  b_put_le64 (h + O_GRAIN, 0x10000);
  b_put_le64 (h + O_DESC_OFF, UINT64_C (0x0102030405060708));
  b_put_le64 (h + O_DESC_SIZE, UINT64_C (0x1112131415161718));
  b_put_le32 (h + O_GTES, 4096);
  b_put_le64 (h + O_RGD, UINT64_C (0x2122232425262728));
  b_put_le64 (h + O_GD, UINT64_C (0x3132333435363738));
  b_put_le64 (h + O_OVERHEAD, UINT64_C (0x4142434445464748));
  h[O_UNCLEAN] = 1;
  CHECK (decode (h, &s) == 0);
  CHECK_EQ (s.version, 2);
  CHECK_EQ (s.flags, 0x0105);
  CHECK_EQ (s.capacity, UINT64_C (0x000000ab12345678));
  CHECK_EQ (s.grain_size, 0x10000);
  CHECK_EQ (s.desc_offset, UINT64_C (0x0102030405060708));
  CHECK_EQ (s.desc_size, UINT64_C (0x1112131415161718));
  CHECK_EQ (s.num_gtes_per_gt, 4096);
  CHECK_EQ (s.rgd_offset, UINT64_C (0x2122232425262728));
  CHECK_EQ (s.gd_offset, UINT64_C (0x3132333435363738));
  CHECK_EQ (s.overhead, UINT64_C (0x4142434445464748));
  CHECK_EQ (s.unclean_shutdown, 1);

  /* Version 3, streamOptimized: compressed, markers, GD at end. */
  good (h);
  b_put_le32 (h + O_VERSION, 3);
  b_put_le32 (h + O_FLAGS, B_FLAG_NL_DETECT | B_FLAG_COMPRESSED |
              B_FLAG_MARKERS);
  b_put_le64 (h + O_GD, UINT64_MAX);
  b_put_le16 (h + O_COMPRESS, 1);
  CHECK (decode (h, &s) == 0);
  CHECK_EQ (s.version, 3);
  CHECK_EQ (s.gd_offset, SPARSE_GD_AT_END);
  CHECK_EQ (s.compress_algorithm, SPARSE_COMPRESS_DEFLATE);
  CHECK_EQ (s.flags, 0x30001);

  /* The same with a real gdOffset. */
  b_put_le64 (h + O_GD, 1234);
  ACCEPT (h);

  /* Unknown compatible flag bits are ignored. */
  for (v = 0x8; v <= 0x8000; v <<= 1) {
    good (h);
    b_put_le32 (h + O_FLAGS, v | B_FLAG_RGD);
    ACCEPT (h);
  }

  /* Limits, just inside. */
  good (h);
  b_put_le64 (h + O_GRAIN, 1);
  ACCEPT (h);
  b_put_le64 (h + O_GRAIN, 0x200000);
  ACCEPT (h);
  good (h);
  b_put_le32 (h + O_GTES, 1);
  ACCEPT (h);
  b_put_le32 (h + O_GTES, 3);           /* need not be a power of 2 */
  ACCEPT (h);
  b_put_le32 (h + O_GTES, 65536);
  ACCEPT (h);
  good (h);
  b_put_le64 (h + O_CAPACITY, UINT64_C (1) << 40);
  ACCEPT (h);
  b_put_le64 (h + O_CAPACITY, 0);       /* a descriptor-only container */
  ACCEPT (h);
  /* Both extremes together: their product must not overflow. */
  good (h);
  b_put_le64 (h + O_GRAIN, 0x200000);
  b_put_le32 (h + O_GTES, 65536);
  ACCEPT (h);

  /* The newline detector is only checked when its flag is set. */
  good (h);
  b_put_le32 (h + O_FLAGS, B_FLAG_RGD);
  memcpy (h + O_NL, "\n \n\0", 4);
  ACCEPT (h);
  memset (h + O_NL, 0, 4);
  ACCEPT (h);
}

static void
test_invalid (void)
{
  unsigned char h[512];
  static const uint32_t bad_incompat[] = {
    0x40000, 0x80000, 0x01000000, 0x80000000, 0xffff0000,
  };
  size_t i;

  good (h);
  memcpy (h, "KDMW", 4);
  CHECK (!sparse_header_is_magic (h));
  REFUSE (h, EINVAL, "magic");
  memcpy (h, "VMDK", 4);                /* byte-swapped */
  CHECK (!sparse_header_is_magic (h));
  REFUSE (h, EINVAL, "magic");
  memcpy (h, "COWD", 4);
  REFUSE (h, EINVAL, "magic");

  good (h);
  b_put_le32 (h + O_VERSION, 0);
  REFUSE (h, ENOTSUP, "version 0");
  b_put_le32 (h + O_VERSION, 4);
  REFUSE (h, ENOTSUP, "version 4");
  b_put_le32 (h + O_VERSION, 0x01000001);
  REFUSE (h, ENOTSUP, "version");

  for (i = 0; i < sizeof bad_incompat / sizeof bad_incompat[0]; ++i) {
    good (h);
    b_put_le32 (h + O_FLAGS, bad_incompat[i] | B_FLAG_NL_DETECT);
    REFUSE (h, ENOTSUP, "flags", "incompatible");
  }

  /* CR/LF translation: "\n \r\n" became "\r\n \r\r\n" or lost its CR. */
  good (h);
  memcpy (h + O_NL, "\r\n \r", 4);
  REFUSE (h, EINVAL, "newline");
  memcpy (h + O_NL, "\n \n\0", 4);
  REFUSE (h, EINVAL, "newline");
  memset (h + O_NL, 0, 4);
  REFUSE (h, EINVAL, "newline");

  good (h);
  b_put_le64 (h + O_GRAIN, 0);
  REFUSE (h, EINVAL, "grainSize 0");
  b_put_le64 (h + O_GRAIN, 3);
  REFUSE (h, EINVAL, "grainSize 3");
  b_put_le64 (h + O_GRAIN, 129);
  REFUSE (h, EINVAL, "grainSize 129");
  b_put_le64 (h + O_GRAIN, 0x400000);
  REFUSE (h, EINVAL, "grainSize 4194304");
  b_put_le64 (h + O_GRAIN, UINT64_C (1) << 63);
  REFUSE (h, EINVAL, "grainSize");

  good (h);
  b_put_le32 (h + O_GTES, 0);
  REFUSE (h, EINVAL, "numGTEsPerGT 0");
  b_put_le32 (h + O_GTES, 65537);
  REFUSE (h, EINVAL, "numGTEsPerGT 65537");
  b_put_le32 (h + O_GTES, UINT32_MAX);
  REFUSE (h, EINVAL, "numGTEsPerGT");

  good (h);
  b_put_le64 (h + O_CAPACITY, (UINT64_C (1) << 40) + 1);
  REFUSE (h, EINVAL, "capacity 1099511627777");
  b_put_le64 (h + O_CAPACITY, UINT64_MAX);
  REFUSE (h, EINVAL, "capacity");

  /* compressAlgorithm must agree with the compressed flag. */
  good (h);
  b_put_le16 (h + O_COMPRESS, 1);
  REFUSE (h, ENOTSUP, "compressAlgorithm 1");
  b_put_le32 (h + O_FLAGS, B_FLAG_COMPRESSED | B_FLAG_MARKERS);
  b_put_le16 (h + O_COMPRESS, 0);
  REFUSE (h, ENOTSUP, "compressAlgorithm 0");
  b_put_le16 (h + O_COMPRESS, 2);
  REFUSE (h, ENOTSUP, "compressAlgorithm 2");
  b_put_le16 (h + O_COMPRESS, 0x0100);  /* 1 in the wrong byte order */
  REFUSE (h, ENOTSUP, "compressAlgorithm 256");

  /* Compressed without markers. */
  good (h);
  b_put_le32 (h + O_FLAGS, B_FLAG_COMPRESSED);
  b_put_le16 (h + O_COMPRESS, 1);
  REFUSE (h, ENOTSUP, "markers");

  /* GD_AT_END only for streamOptimized (compressed). */
  good (h);
  b_put_le64 (h + O_GD, UINT64_MAX);
  REFUSE (h, EINVAL, "GD_AT_END");
  b_put_le32 (h + O_FLAGS, B_FLAG_MARKERS);
  REFUSE (h, EINVAL, "GD_AT_END");

  good (h);
  b_put_le64 (h + O_GD, 0);
  REFUSE (h, EINVAL, "gdOffset");
  b_put_le32 (h + O_FLAGS, B_FLAG_COMPRESSED | B_FLAG_MARKERS);
  b_put_le16 (h + O_COMPRESS, 1);
  REFUSE (h, EINVAL, "gdOffset");
}

int
main (void)
{
  test_valid ();
  test_invalid ();
  return test_exit ("test-header");
}
