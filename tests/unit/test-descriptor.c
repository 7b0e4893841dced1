/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* descriptor_parse: descriptors as several producers write them, every
 * extent-line form, and every refusal with its message.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "descriptor.h"
#include "tap.h"

#define NAME "t.vmdk"

static struct descriptor *
parse (const char *text)
{
  struct descriptor *d = descriptor_parse (text, strlen (text), NAME);

  if (d == NULL)
    fprintf (stderr, "descriptor_parse failed: %s\n", vmdk_errmsg ());
  return d;
}

/* The text must be refused with errno e and a message naming the file
 * and containing each given string.
 */
#define REFUSE(text, e, ...)                                            \
  do {                                                                  \
    const char *_t = (text);                                            \
    struct descriptor *_d = descriptor_parse (_t, strlen (_t), NAME);   \
    int _e = errno;                                                     \
    CHECK_MSG (_d == NULL, "accepted: %s", _t);                         \
    if (_d == NULL)                                                     \
      CHECK_ERROR (_e, (e), NAME ": ", __VA_ARGS__);                    \
    descriptor_free (_d);                                               \
  } while (0)

#define CHECK_STR(a, b)                                                 \
  do {                                                                  \
    const char *_a = (a), *_b = (b);                                    \
    CHECK_MSG (_a && _b && strcmp (_a, _b) == 0, "\"%s\" != \"%s\"",    \
               _a ? _a : "(null)", _b ? _b : "(null)");                 \
  } while (0)

/* VMware Workstation, split sparse: trailing spaces, "# The Disk Data
 * Base " with a trailing space, windows-1252.
 */
static const char vmware[] =
  "# Disk DescriptorFile\n"
  "version=1\n"
  "encoding=\"windows-1252\"   \n"
  "CID=a1b2c3d4  \n"
  "parentCID=ffffffff\n"
  "isNativeSnapshot=\"no\"\n"
  "createType=\"twoGbMaxExtentSparse\"\n"
  "\n"
  "# Extent description\n"
  "RW 4192256 SPARSE \"disk-s001.vmdk\"\n"
  "RW 4192256 SPARSE \"disk-s002.vmdk\"  \n"
  "RW 2048 SPARSE \"disk-s003.vmdk\"\t\n"
  "\n"
  "# The Disk Data Base \n"
  "#DDB\n"
  "\n"
  "ddb.adapterType = \"lsilogic\"\n"
  "ddb.geometry.cylinders = \"522\"\n"
  "ddb.geometry.heads = \"255\"\n"
  "ddb.geometry.sectors = \"63\"\n"
  "ddb.longContentID = \"8b3f1e0c6c1d4a0a9e0f7b2ca1b2c3d4\"\n"
  "ddb.uuid = \"60 00 C2 9a 5b 7c 0d 1e-2f 3a 4b 5c 6d 7e 8f 90\"\n"
  "ddb.virtualHWVersion = \"10\"\n";

static void
check_vmware (struct descriptor *d)
{
  CHECK (d != NULL);
  if (!d)
    return;
  CHECK_EQ (d->version, 1);
  CHECK (d->has_cid);
  CHECK_EQ (d->cid, 0xa1b2c3d4);
  CHECK_EQ (d->parent_cid, CID_NONE);
  CHECK_STR (d->create_type, "twoGbMaxExtentSparse");
  CHECK (d->parent_hint == NULL);
  CHECK_EQ (d->nr_extents, 3);
  if (d->nr_extents != 3)
    return;
  CHECK_EQ (d->extents[0].access, ACCESS_RW);
  CHECK_EQ (d->extents[0].type, EXTENT_SPARSE);
  CHECK_EQ (d->extents[0].sectors, 4192256);
  CHECK_STR (d->extents[0].filename, "disk-s001.vmdk");
  CHECK_EQ (d->extents[0].line_no, 10);
  CHECK_STR (d->extents[0].line, "RW 4192256 SPARSE \"disk-s001.vmdk\"");
  CHECK_STR (d->extents[1].filename, "disk-s002.vmdk");
  CHECK_EQ (d->extents[1].line_no, 11);
  CHECK_STR (d->extents[1].line, "RW 4192256 SPARSE \"disk-s002.vmdk\"");
  CHECK_STR (d->extents[2].filename, "disk-s003.vmdk");
  CHECK_EQ (d->extents[2].sectors, 2048);
  CHECK_EQ (d->extents[2].line_no, 12);
  /* The disk database, in order, values unquoted. */
  CHECK_EQ (d->nr_ddb, 7);
  if (d->nr_ddb != 7)
    return;
  CHECK_STR (d->ddb[0].key, "ddb.adapterType");
  CHECK_STR (d->ddb[0].value, "lsilogic");
  CHECK_STR (d->ddb[5].key, "ddb.uuid");
  CHECK_STR (d->ddb[5].value, "60 00 C2 9a 5b 7c 0d 1e-2f 3a 4b 5c 6d 7e 8f 90");
  CHECK_STR (d->ddb[6].value, "10");
}

/* descriptor_rewrite: new extent lines where the old ones were, a new
 * CID and cylinders, every other line (and its line ending) kept; the
 * result parses to what was asked.
 */
static void
test_rewrite (void)
{
  const char text[] =
    "# Disk DescriptorFile\r\n"
    "CID=a1b2c3d4\r\n"
    "parentCID=ffffffff\r\n"
    "createType=\"twoGbMaxExtentSparse\"\r\n"
    "RW 100 SPARSE \"d-s001.vmdk\"\r\n"
    "  RW 200 SPARSE \"d-s002.vmdk\"\r\n"
    "# after the extents\r\n"
    "ddb.geometry.cylinders = \"1\"\r\n"
    "ddb.adapterType = \"ide\"";
  struct descriptor_extent exts[3] = {
    { .access = ACCESS_RW, .sectors = 100, .type = EXTENT_SPARSE,
      .filename = (char *) "d-s001.vmdk" },
    { .access = ACCESS_RDONLY, .sectors = 4192256, .type = EXTENT_SPARSE,
      .filename = (char *) "d-s002.vmdk" },
    { .access = ACCESS_RW, .sectors = 8, .type = EXTENT_FLAT,
      .filename = (char *) "f 1.img", .offset = 3 },
  };
  const char want[] =
    "# Disk DescriptorFile\r\n"
    "CID=0000abcd\r\n"
    "parentCID=ffffffff\r\n"
    "createType=\"twoGbMaxExtentSparse\"\r\n"
    "RW 100 SPARSE \"d-s001.vmdk\"\r\n"
    "RDONLY 4192256 SPARSE \"d-s002.vmdk\"\r\n"
    "RW 8 FLAT \"f 1.img\" 3\r\n"
    "# after the extents\r\n"
    "ddb.geometry.cylinders = \"4161\"\r\n"
    "ddb.adapterType = \"ide\"\n";
  struct descriptor *d;
  size_t len;
  char *out = descriptor_rewrite (text, sizeof text - 1, exts, 3, 0xabcd,
                                  4161, &len);

  CHECK (out != NULL);
  if (out == NULL)
    return;
  CHECK_EQ (len, strlen (out));
  CHECK_STR (out, want);
  d = parse (out);
  CHECK (d != NULL);
  if (d) {
    CHECK_EQ (d->cid, 0xabcd);
    CHECK_EQ (d->nr_extents, 3);
    if (d->nr_extents == 3) {
      CHECK_EQ (d->extents[1].access, ACCESS_RDONLY);
      CHECK_EQ (d->extents[2].offset, 3);
      CHECK_STR (d->extents[2].filename, "f 1.img");
    }
  }
  descriptor_free (d);
  free (out);
}

/* A repeated ddb key keeps its first place and takes the last value. */
static void
test_ddb_repeated (void)
{
  struct descriptor *d = parse ("# Disk DescriptorFile\n"
                                "createType=\"monolithicFlat\"\n"
                                "RW 8 FLAT \"f.img\" 0\n"
                                "ddb.adapterType = \"ide\"\n"
                                "ddb.toolsVersion=\"1\"\n"
                                "DDB.ADAPTERTYPE = \"lsilogic\"\n");

  CHECK (d != NULL);
  if (d == NULL)
    return;
  CHECK_EQ (d->nr_ddb, 2);
  if (d->nr_ddb == 2) {
    CHECK_STR (d->ddb[0].key, "ddb.adapterType");
    CHECK_STR (d->ddb[0].value, "lsilogic");
    CHECK_STR (d->ddb[1].key, "ddb.toolsVersion");
    CHECK_STR (d->ddb[1].value, "1");
  }
  descriptor_free (d);
}

static void
test_producers (void)
{
  struct descriptor *d;
  char *crlf;
  size_t i, j;

  d = parse (vmware);
  check_vmware (d);
  descriptor_free (d);

  /* The same with CRLF line endings (a descriptor edited on Windows). */
  crlf = xmalloc (2 * sizeof vmware);
  for (i = j = 0; vmware[i]; ++i) {
    if (vmware[i] == '\n')
      crlf[j++] = '\r';
    crlf[j++] = vmware[i];
  }
  crlf[j] = '\0';
  d = parse (crlf);
  check_vmware (d);
  descriptor_free (d);
  free (crlf);

  /* VirtualBox: no spaces around '=', "The disk Data Base",
   * ddb.uuid.* keys.
   */
  d = parse ("# Disk DescriptorFile\n"
             "version=1\n"
             "CID=5b2a1c3e\n"
             "parentCID=ffffffff\n"
             "createType=\"monolithicSparse\"\n"
             "\n"
             "# Extent description\n"
             "RW 41943040 SPARSE \"vbox.vmdk\"\n"
             "\n"
             "# The disk Data Base\n"
             "#DDB\n"
             "\n"
             "ddb.virtualHWVersion=\"4\"\n"
             "ddb.adapterType=\"ide\"\n"
             "ddb.uuid.image=\"0e1c3f56-7d3a-4f2e-9a6b-1c2d3e4f5a6b\"\n"
             "ddb.uuid.parent=\"00000000-0000-0000-0000-000000000000\"\n"
             "ddb.uuid.modification=\"6d7e8f90-1a2b-3c4d-5e6f-708192a3b4c5\"\n"
             "ddb.uuid.parentmodification=\"00000000-0000-0000-0000-"
             "000000000000\"\n"
             "ddb.geometry.cylinders=\"16383\"\n"
             "ddb.geometry.heads=\"16\"\n"
             "ddb.geometry.sectors=\"63\"\n");
  CHECK (d != NULL);
  if (d) {
    CHECK_EQ (d->cid, 0x5b2a1c3e);
    CHECK_STR (d->create_type, "monolithicSparse");
    CHECK_EQ (d->nr_extents, 1);
    CHECK_EQ (d->extents[0].sectors, 41943040);
    CHECK_STR (d->extents[0].filename, "vbox.vmdk");
  }
  descriptor_free (d);

  /* ovftool streamOptimized: unquoted createType, RDONLY extent. */
  d = parse ("# Disk DescriptorFile\n"
             "version=1\n"
             "CID=7e5b80a7\n"
             "parentCID=ffffffff\n"
             "createType=streamOptimized\n"
             "\n"
             "# Extent description\n"
             "RDONLY 16777216 SPARSE \"generated-stream.vmdk\"\n"
             "\n"
             "# The disk Data Base\n"
             "#DDB\n"
             "\n"
             "ddb.adapterType = \"lsilogic\"\n"
             "ddb.geometry.cylinders = \"1044\"\n"
             "ddb.toolsInstallType = \"4\"\n"
             "ddb.toolsVersion = \"12352\"\n"
             "ddb.virtualHWVersion = \"4\"\n");
  CHECK (d != NULL);
  if (d) {
    CHECK_STR (d->create_type, "streamOptimized");
    CHECK_EQ (d->nr_extents, 1);
    CHECK_EQ (d->extents[0].access, ACCESS_RDONLY);
    CHECK_EQ (d->extents[0].type, EXTENT_SPARSE);
    CHECK_STR (d->extents[0].filename, "generated-stream.vmdk");
  }
  descriptor_free (d);

  /* QEMU, a delta: parentFileNameHint and a parent CID. */
  d = parse ("# Disk DescriptorFile\n"
             "version=1\n"
             "CID=0f1e2d3c\n"
             "parentCID=12345678\n"
             "createType=\"monolithicSparse\"\n"
             "parentFileNameHint=\"base image.vmdk\"\n"
             "\n"
             "# Extent description\n"
             "RW 2097152 SPARSE \"delta.vmdk\"\n"
             "\n"
             "# The Disk Data Base\n"
             "#DDB\n"
             "\n"
             "ddb.virtualHWVersion = \"4\"\n"
             "ddb.geometry.cylinders = \"2080\"\n"
             "ddb.adapterType = \"ide\"\n"
             "ddb.toolsVersion = \"2147483647\"\n");
  CHECK (d != NULL);
  if (d) {
    CHECK_EQ (d->cid, 0x0f1e2d3c);
    CHECK_EQ (d->parent_cid, 0x12345678);
    CHECK_STR (d->parent_hint, "base image.vmdk");
  }
  descriptor_free (d);

  /* Case differences everywhere: keys, createType, access, types. */
  d = parse ("# DISK DESCRIPTORFILE\n"
             "VERSION=1\n"
             "cid=ABCDEF01\n"
             "PARENTcid=FFFFFFFF\n"
             "CREATETYPE=\"MONOLITHICFLAT\"\n"
             "rw 2048 flat \"Disk-Flat.vmdk\" 0\n"
             "Rdonly 100 Zero\n"
             "noaccess 8 Vmfs \"V.vmdk\"\n"
             "Rw 16 sparse \"S.VMDK\"\n");
  CHECK (d != NULL);
  if (d) {
    CHECK_EQ (d->cid, 0xabcdef01);
    CHECK_EQ (d->parent_cid, 0xffffffff);
    /* Normalised to the canonical spelling. */
    CHECK_STR (d->create_type, "monolithicFlat");
    CHECK_EQ (d->nr_extents, 4);
    if (d->nr_extents == 4) {
      CHECK_EQ (d->extents[0].access, ACCESS_RW);
      CHECK_EQ (d->extents[0].type, EXTENT_FLAT);
      CHECK_STR (d->extents[0].filename, "Disk-Flat.vmdk");
      CHECK_EQ (d->extents[1].access, ACCESS_RDONLY);
      CHECK_EQ (d->extents[1].type, EXTENT_ZERO);
      CHECK_EQ (d->extents[2].access, ACCESS_NOACCESS);
      CHECK_EQ (d->extents[2].type, EXTENT_VMFS);
      CHECK_STR (d->extents[3].filename, "S.VMDK");
    }
  }
  descriptor_free (d);

  /* Odd but valid spellings: quoted version with spaces around '=',
   * indented comments, CID fffffffe (VMware with longContentID),
   * version 2 and 3, CBT lines.
   */
  for (i = 1; i <= 3; ++i) {
    char text[1024];

    snprintf (text, sizeof text,
              "   # Disk DescriptorFile\n"
              "version = \"%zu\"\n"
              "CID = fffffffe\n"
              "  createType = \"vmfs\"  \n"
              "\t# indented comment\n"
              "RW 100 VMFS \"x-flat.vmdk\"\n"
              "# Change Tracking File\n"
              "changeTrackPath=\"x-ctk.vmdk\"\n"
              "ddb.comment = \"a = b \\\" c\"\n", i);
    d = parse (text);
    CHECK (d != NULL);
    if (d) {
      CHECK_EQ (d->version, i);
      CHECK_EQ (d->cid, 0xfffffffe);
      CHECK_STR (d->create_type, "vmfs");
    }
    descriptor_free (d);
  }

  /* Every createType we accept. */
  {
    static const char *const types[] = {
      "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
      "2GbMaxExtentSparse", "twoGbMaxExtentFlat", "2GbMaxExtentFlat",
      "streamOptimized", "vmfs", "vmfsPreallocated",
      "vmfsEagerZeroedThick", "vmfsThin", "vmfsSparse", "seSparse",
      "custom",
      /* Raw-disk types parse; image.c refuses them unless devices
       * are allowed (tests/test-paths.sh).
       */
      "fullDevice", "partitionedDevice",
    };

    for (i = 0; i < sizeof types / sizeof types[0]; ++i) {
      char text[256];

      snprintf (text, sizeof text, "createType=\"%s\"\nRW 8 ZERO\n",
                types[i]);
      d = parse (text);
      CHECK_MSG (d != NULL, "createType %s", types[i]);
      if (d)
        CHECK_STR (d->create_type, types[i]);
      descriptor_free (d);
    }
  }
}

static void
test_extent_forms (void)
{
  struct descriptor *d;
  char *long_name, *text;
  const struct {
    enum extent_access access;
    uint64_t sectors;
    enum extent_type type;
    const char *filename;
    uint64_t offset;
  } want[] = {
    { ACCESS_RW, 100, EXTENT_FLAT, "a.img", 0 },
    { ACCESS_RDONLY, 200, EXTENT_FLAT, "a.img", 100 },
    { ACCESS_NOACCESS, 300, EXTENT_FLAT, "b.img", 36028797018963967ULL },
    { ACCESS_RW, 400, EXTENT_VMFS, "c-flat.vmdk", 0 },
    { ACCESS_RW, 500, EXTENT_ZERO, NULL, 0 },
    { ACCESS_RDONLY, 600, EXTENT_SPARSE, "d.vmdk", 0 },
    { ACCESS_RW, 700, EXTENT_VMFSSPARSE, "e-delta.vmdk", 0 },
    { ACCESS_RW, 800, EXTENT_SESPARSE, "f-sesparse.vmdk", 0 },
    { ACCESS_RW, 900, EXTENT_FLAT, "name with spaces.vmdk", 7 },
    { ACCESS_RW, 1000, EXTENT_SPARSE, "tabs.vmdk", 0 },
    { ACCESS_RW, 1100, EXTENT_SPARSE, "unquoted.vmdk", 0 },
    { ACCESS_RW, 1200, EXTENT_FLAT, "x.img", 42 },
    { ACCESS_NOACCESS, 1300, EXTENT_ZERO, NULL, 0 },
    { ACCESS_RW, 36028797018963967ULL, EXTENT_ZERO, NULL, 0 },
    { ACCESS_RW, 1, EXTENT_SPARSE, "dir/sub.vmdk", 0 },
  };
  size_t i;

  d = parse ("createType=\"custom\"\n"
             "RW 100 FLAT \"a.img\" 0\n"
             "RDONLY 200 FLAT \"a.img\" 100\n"
             "NOACCESS 300 FLAT \"b.img\" 36028797018963967\n"
             "RW 400 VMFS \"c-flat.vmdk\"\n"
             "RW 500 ZERO\n"
             "RDONLY 600 SPARSE \"d.vmdk\"\n"
             "RW 700 VMFSSPARSE \"e-delta.vmdk\"\n"
             "RW 800 SESPARSE \"f-sesparse.vmdk\"\n"
             "RW 900 FLAT \"name with spaces.vmdk\" 7\n"
             "RW\t1000\tSPARSE\t\"tabs.vmdk\"\n"
             "RW 1100 SPARSE unquoted.vmdk\n"
             "RW    1200   FLAT   \"x.img\"    42    \n"
             "NOACCESS 1300 ZERO\n"
             "RW 36028797018963967 ZERO\n"
             "RW 1 SPARSE \"dir/sub.vmdk\"\n");
  CHECK (d != NULL);
  if (d) {
    CHECK_EQ (d->nr_extents, sizeof want / sizeof want[0]);
    for (i = 0; i < d->nr_extents && i < sizeof want / sizeof want[0];
         ++i) {
      const struct descriptor_extent *e = &d->extents[i];

      CHECK_MSG (e->access == want[i].access, "extent %zu", i);
      CHECK_MSG (e->sectors == want[i].sectors, "extent %zu", i);
      CHECK_MSG (e->type == want[i].type, "extent %zu", i);
      CHECK_MSG (e->line_no == i + 2, "extent %zu line %u", i, e->line_no);
      if (want[i].filename)
        CHECK_STR (e->filename, want[i].filename);
      else
        CHECK (e->filename == NULL);
      if (want[i].type == EXTENT_FLAT)
        CHECK_MSG (e->offset == want[i].offset, "extent %zu", i);
    }
  }
  descriptor_free (d);

  /* The longest file name, and one byte more. */
  long_name = xmalloc (DESCRIPTOR_MAX_NAME + 2);
  memset (long_name, 'n', DESCRIPTOR_MAX_NAME + 1);
  long_name[DESCRIPTOR_MAX_NAME] = '\0';
  text = xmalloc (DESCRIPTOR_MAX_NAME + 100);
  snprintf (text, DESCRIPTOR_MAX_NAME + 100,
            "createType=\"custom\"\nRW 8 SPARSE \"%s\"\n", long_name);
  d = parse (text);
  CHECK (d != NULL);
  if (d)
    CHECK (strlen (d->extents[0].filename) == DESCRIPTOR_MAX_NAME);
  descriptor_free (d);
  long_name[DESCRIPTOR_MAX_NAME] = 'n';
  long_name[DESCRIPTOR_MAX_NAME + 1] = '\0';
  snprintf (text, DESCRIPTOR_MAX_NAME + 100,
            "createType=\"custom\"\nRW 8 SPARSE \"%s\"\n", long_name);
  REFUSE (text, EINVAL, "line 2", "too long");
  free (text);
  free (long_name);

  CHECK (strcmp (extent_type_name (EXTENT_FLAT), "FLAT") == 0);
  CHECK (strcmp (extent_type_name (EXTENT_VMFSSPARSE), "VMFSSPARSE") == 0);
  CHECK (strcmp (extent_type_name (EXTENT_SESPARSE), "SESPARSE") == 0);
}

#define CT "createType=\"custom\"\n"

static void
test_refusals (void)
{
  /* Extent lines. */
  REFUSE (CT "READ 100 SPARSE \"a.vmdk\"\n", EINVAL,
          "line 2", "READ 100 SPARSE");
  REFUSE (CT "RWX 100 SPARSE \"a.vmdk\"\n", EINVAL, "line 2", "RWX");
  REFUSE (CT "RW 0 SPARSE \"a.vmdk\"\n", EINVAL,
          "line 2", "RW 0 SPARSE", "positive");
  REFUSE (CT "RW -8 SPARSE \"a.vmdk\"\n", EINVAL, "line 2", "positive");
  REFUSE (CT "RW 0x10 SPARSE \"a.vmdk\"\n", EINVAL, "line 2", "positive");
  REFUSE (CT "RW 8k SPARSE \"a.vmdk\"\n", EINVAL, "line 2", "positive");
  REFUSE (CT "RW abc SPARSE \"a.vmdk\"\n", EINVAL, "line 2", "positive");
  /* More than 2^64 bytes. */
  REFUSE (CT "RW 36028797018963968 ZERO\n", EINVAL, "line 2", "positive");
  REFUSE (CT "RW 18446744073709551616 ZERO\n", EINVAL, "line 2",
          "positive");
  REFUSE (CT "RW 100 VMFSRDM \"rdm.vmdk\"\n", EINVAL,
          "line 2", "VMFSRDM", "not supported");
  REFUSE (CT "RW 100 VMFSRAW \"raw.vmdk\"\n", EINVAL,
          "line 2", "VMFSRAW", "not supported");
  REFUSE (CT "RW 100 FLATTISH \"a.vmdk\" 0\n", EINVAL,
          "line 2", "not supported");
  REFUSE (CT "RW 100 FLAT \"a.img\"\n", EINVAL, "line 2", "offset");
  REFUSE (CT "RW 100 FLAT \"a.img\" 1x\n", EINVAL, "line 2", "offset");
  REFUSE (CT "RW 100 FLAT \"a.img\" -1\n", EINVAL, "line 2", "offset");
  REFUSE (CT "RW 100 VMFS \"a-flat.vmdk\" 0\n", EINVAL,
          "line 2", "unexpected field");
  REFUSE (CT "RW 100 SPARSE \"a.vmdk\" 0\n", EINVAL,
          "line 2", "unexpected field");
  REFUSE (CT "RW 100 ZERO \"z.img\"\n", EINVAL,
          "line 2", "ZERO extent takes no file name");
  REFUSE (CT "RW 100 SPARSE\n", EINVAL, "line 2", "missing file name");
  REFUSE (CT "RW 100 SPARSE \"\"\n", EINVAL, "line 2", "empty");
  REFUSE (CT "RW 100 SPARSE \"a.vmdk\n", EINVAL, "line 2", "unterminated");
  REFUSE (CT "RW 100 FLAT \"a.img 0\n", EINVAL, "line 2", "unterminated");
  REFUSE (CT "RW 100 SPARSE \"a\"b.vmdk\n", EINVAL, "line 2");
  REFUSE (CT "RW 100 FLAT \"a.img\" 0 extra\n", EINVAL,
          "line 2", "too many fields");
  REFUSE (CT "RW 100 FLAT \"\\\\.\\PhysicalDrive1\" 0 "
          "partition-uuid 3\n", EINVAL, "too many fields");
  REFUSE (CT "RW 100\n", EINVAL, "line 2", "expected ACCESS SECTORS TYPE");

  /* Keys. */
  REFUSE ("version=1\nRW 100 ZERO\n", EINVAL, "no createType");
  REFUSE ("createType=\"vmfsRDM\"\nRW 8 ZERO\n", ENOTSUP, "vmfsRDM");
  REFUSE ("createType=\"vmfsRaw\"\nRW 8 ZERO\n", ENOTSUP, "vmfsRaw");
  REFUSE ("createType=\"\"\nRW 8 ZERO\n", ENOTSUP, "createType");
  REFUSE (CT "CID=xyz\nRW 8 ZERO\n", EINVAL, "line 2", "CID=\"xyz\"");
  REFUSE (CT "CID=\nRW 8 ZERO\n", EINVAL, "line 2", "CID");
  REFUSE (CT "CID=123456789\nRW 8 ZERO\n", EINVAL, "line 2", "CID",
          "32-bit");
  REFUSE (CT "CID=-1\nRW 8 ZERO\n", EINVAL, "line 2", "CID");
  REFUSE (CT "parentCID=fffffffg\nRW 8 ZERO\n", EINVAL,
          "line 2", "parentCID");
  REFUSE ("version=4\n" CT "RW 8 ZERO\n", ENOTSUP, "line 1", "version=4");
  REFUSE ("version=0\n" CT "RW 8 ZERO\n", ENOTSUP, "line 1", "version=0");
  REFUSE ("version=one\n" CT "RW 8 ZERO\n", ENOTSUP, "version=one");
  REFUSE ("# Disk DescriptorFile\nversion=1\n" CT, EINVAL,
          "no extent lines");
  REFUSE ("", EINVAL, "no extent lines");

  /* Not text. */
  REFUSE (CT "RW 8 ZERO\x01\n", EINVAL, "line 2", "control character");
  REFUSE (CT "ddb.x = \"\x1b[31m\"\nRW 8 ZERO\n", EINVAL,
          "line 2", "control character");
  REFUSE (CT "RW 8 ZERO\rRW 8 ZERO\n", EINVAL, "line 2",
          "control character");
  REFUSE (CT "hello world\nRW 8 ZERO\n", EINVAL,
          "line 2", "cannot parse", "hello world");
}

static void
test_limits (void)
{
  struct descriptor *d;
  struct bytes t = { 0 };
  size_t i;

  /* DESCRIPTOR_MAX_LINES lines, the last without a newline: fine. */
  bytes_printf (&t, CT);
  for (i = 2; i < DESCRIPTOR_MAX_LINES; ++i)
    bytes_printf (&t, "#\n");
  bytes_printf (&t, "RW 8 ZERO");
  bytes_fill_at (&t, t.len, 0, 1);
  t.len--;
  d = descriptor_parse ((char *) t.data, t.len, NAME);
  CHECK_MSG (d != NULL, "%d lines: %s", DESCRIPTOR_MAX_LINES,
             vmdk_errmsg ());
  if (d)
    CHECK_EQ (d->extents[0].line_no, DESCRIPTOR_MAX_LINES);
  descriptor_free (d);

  /* The same number of lines, each ended by a newline as editors
   * write them: still DESCRIPTOR_MAX_LINES lines.
   */
  bytes_printf (&t, "\n");
  d = descriptor_parse ((char *) t.data, t.len, NAME);
  CHECK_MSG (d != NULL, "%d newline-terminated lines: %s",
             DESCRIPTOR_MAX_LINES, vmdk_errmsg ());
  descriptor_free (d);

  /* One line more. */
  bytes_printf (&t, "#");
  bytes_fill_at (&t, t.len, 0, 1);
  t.len--;
  REFUSE ((char *) t.data, EINVAL, "more than 20000 lines");
  bytes_free (&t);

  /* Exactly DESCRIPTOR_MAX_BYTES: fine; one more byte: refused. */
  bytes_printf (&t, CT "RW 8 ZERO\n");
  while (t.len + 101 <= DESCRIPTOR_MAX_BYTES) {
    bytes_fill_at (&t, t.len, '#', 100);
    bytes_printf (&t, "\n");
  }
  bytes_fill_at (&t, t.len, '#', DESCRIPTOR_MAX_BYTES - t.len);
  CHECK_EQ (t.len, DESCRIPTOR_MAX_BYTES);
  d = descriptor_parse ((char *) t.data, t.len, NAME);
  CHECK_MSG (d != NULL, "1 MiB: %s", vmdk_errmsg ());
  descriptor_free (d);
  bytes_fill_at (&t, t.len, '#', 1);
  d = descriptor_parse ((char *) t.data, t.len, NAME);
  CHECK (d == NULL);
  if (d == NULL)
    CHECK_ERROR (errno, EINVAL, NAME, "larger than");
  descriptor_free (d);
  bytes_free (&t);

  /* Parsing stops at the first NUL: what follows (padding, junk, even
   * another extent line) is not looked at, however long it is.
   */
  bytes_printf (&t, CT "RW 8 ZERO\n");
  bytes_fill_at (&t, t.len, 0, 1);
  bytes_printf (&t, "RW 16 ZERO\n\x01\x02 junk \xff\n");
  bytes_fill_at (&t, t.len, 0x7f, DESCRIPTOR_MAX_BYTES);
  d = descriptor_parse ((char *) t.data, t.len, NAME);
  CHECK_MSG (d != NULL, "NUL: %s", vmdk_errmsg ());
  if (d) {
    CHECK_EQ (d->nr_extents, 1);
    CHECK_EQ (d->extents[0].sectors, 8);
  }
  descriptor_free (d);
  /* len is honoured: the text need not be NUL-terminated. */
  d = descriptor_parse ((char *) t.data, strlen (CT "RW 8 ZE"), NAME);
  CHECK (d == NULL);
  descriptor_free (d);
  d = descriptor_parse ((char *) t.data, strlen (CT "RW 8 ZERO"), NAME);
  CHECK (d != NULL);
  descriptor_free (d);
  bytes_free (&t);
}

static void
test_probe (void)
{
  static const unsigned char junk[] = { 0x4b, 0x44, 0x4d, 0x00, 0xff, 0x01,
                                        'c', 'r', 'e', 'a', 't', 'e' };

  CHECK (descriptor_probe (vmware, strlen (vmware)));
  CHECK (descriptor_probe ("# disk descriptorfile\n", 22));
  CHECK (descriptor_probe ("version=1\ncreateType=\"vmfs\"\n", 28));
  CHECK (!descriptor_probe ((const char *) junk, sizeof junk));
  CHECK (!descriptor_probe ("version=1\n\x01createType=\"vmfs\"\n", 29));
  CHECK (!descriptor_probe ("hello, world\n", 13));
  CHECK (!descriptor_probe ("", 0));
}

int
main (void)
{
  test_producers ();
  test_ddb_repeated ();
  test_rewrite ();
  test_extent_forms ();
  test_refusals ();
  test_limits ();
  test_probe ();
  return test_exit ("test-descriptor");
}
