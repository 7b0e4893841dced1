/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* mksesparse: write an seSparse extent (and a descriptor) holding the
 * contents of a raw file, for tests.  Written from the layout in
 * shared/VMDK-FORMAT.md b.6, independently of lib/.
 *
 * Every grain-table entry type can be produced (0x0 unallocated, 0x1
 * scsi-unmapped, 0x2 zero, 0x3 allocated), grain-directory holes,
 * non-contiguous and split-encoded cluster numbers, and, for negative
 * tests, any header field, GD entry or GT entry can be overridden.
 * Run with --help for the options.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512
#define GRAIN_SECTORS 8
#define GRAIN_BYTES (GRAIN_SECTORS * SECTOR)
#define GT_SECTORS 64
#define GTES_PER_GT (GT_SECTORS * SECTOR / 8)          /* 4096 */
#define GT_COVERAGE_SECTORS ((uint64_t) GTES_PER_GT * GRAIN_SECTORS)

enum gtype { T_UNALLOC = 0, T_UNMAPPED = 1, T_ZERO = 2, T_DATA = 3 };

/* Constant header: u64 fields in this order, then 304 bytes of pad. */
static const char *const const_fields[] = {
  "magic", "version", "capacity", "grain_size", "grain_table_size",
  "flags", "reserved1", "reserved2", "reserved3", "reserved4",
  "volatile_header_offset", "volatile_header_size",
  "journal_header_offset", "journal_header_size",
  "journal_offset", "journal_size",
  "grain_dir_offset", "grain_dir_size",
  "grain_tables_offset", "grain_tables_size",
  "free_bitmap_offset", "free_bitmap_size",
  "backmap_offset", "backmap_size",
  "grains_offset", "grains_size",
};
#define NR_CONST_FIELDS (sizeof const_fields / sizeof const_fields[0])

static const char *const volatile_fields[] = {
  "magic", "free_gt_number", "next_txn_seq_number", "replay_journal",
};
#define NR_VOLATILE_FIELDS \
  (sizeof volatile_fields / sizeof volatile_fields[0])

struct override {
  uint64_t index;
  uint64_t value;
};

struct overrides {
  struct override *v;
  size_t n;
};

static const char *progname = "mksesparse";

static void __attribute__ ((noreturn, format (printf, 1, 2)))
die (const char *fs, ...)
{
  va_list args;

  fprintf (stderr, "%s: ", progname);
  va_start (args, fs);
  vfprintf (stderr, fs, args);
  va_end (args);
  fputc ('\n', stderr);
  exit (EXIT_FAILURE);
}

static void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size ? size : 1);

  if (p == NULL)
    die ("calloc: %s", strerror (errno));
  return p;
}

static void
put_le64 (unsigned char *p, uint64_t v)
{
  int i;

  for (i = 0; i < 8; ++i)
    p[i] = v >> (8 * i);
}

static uint64_t
parse_u64 (const char *s, const char *what)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (s, &end, 0);
  if (errno || end == s || *end != '\0' || *s == '-')
    die ("%s: cannot parse number \"%s\"", what, s);
  return v;
}

static void
add_override (struct overrides *o, uint64_t index, uint64_t value)
{
  o->v = realloc (o->v, (o->n + 1) * sizeof *o->v);
  if (o->v == NULL)
    die ("realloc: %s", strerror (errno));
  o->v[o->n].index = index;
  o->v[o->n].value = value;
  o->n++;
}

/* "N=VALUE" */
static void
parse_pair (const char *arg, const char *what, uint64_t *n, uint64_t *v)
{
  const char *eq = strchr (arg, '=');
  char *left;

  if (eq == NULL)
    die ("%s: expected N=VALUE, got \"%s\"", what, arg);
  left = strndup (arg, eq - arg);
  if (left == NULL)
    die ("strndup: %s", strerror (errno));
  *n = parse_u64 (left, what);
  *v = parse_u64 (eq + 1, what);
  free (left);
}

/* "FIELD=VALUE" with FIELD from names[] (or a number): field index. */
static void
parse_field (const char *arg, const char *what, const char *const *names,
             size_t nr_names, struct overrides *o)
{
  const char *eq = strchr (arg, '=');
  size_t i;

  if (eq == NULL)
    die ("%s: expected FIELD=VALUE, got \"%s\"", what, arg);
  for (i = 0; i < nr_names; ++i)
    if (strlen (names[i]) == (size_t) (eq - arg) &&
        strncmp (names[i], arg, eq - arg) == 0) {
      add_override (o, i, parse_u64 (eq + 1, what));
      return;
    }
  die ("%s: unknown field in \"%s\"", what, arg);
}

static enum gtype
parse_type (const char *s)
{
  if (strcmp (s, "unalloc") == 0) return T_UNALLOC;
  if (strcmp (s, "unmapped") == 0) return T_UNMAPPED;
  if (strcmp (s, "zero") == 0) return T_ZERO;
  if (strcmp (s, "data") == 0) return T_DATA;
  die ("unknown grain type \"%s\" (unalloc, unmapped, zero, data)", s);
}

/* Split encoding: the low 12 bits of the cluster number go in bits
 * 48-59, the rest in bits 0-47.
 */
static uint64_t
encode_cluster (uint64_t cluster)
{
  if (cluster >> 60)
    die ("cluster %" PRIu64 " does not fit in a GT entry", cluster);
  return (UINT64_C (3) << 60) | ((cluster & 0xfff) << 48) | (cluster >> 12);
}

static void
pwrite_full (int fd, const void *buf, size_t n, uint64_t off,
             const char *name)
{
  const unsigned char *p = buf;
  ssize_t r;

  while (n > 0) {
    r = pwrite (fd, p, n, off);
    if (r == -1)
      die ("write: %s: %s", name, strerror (errno));
    p += r;
    n -= r;
    off += r;
  }
}

/* Read up to n bytes; zero-fill the rest (the last grain may be short). */
static void
pread_fill (int fd, void *buf, size_t n, uint64_t off, const char *name)
{
  unsigned char *p = buf;
  ssize_t r;

  memset (buf, 0, n);
  while (n > 0) {
    r = pread (fd, p, n, off);
    if (r == -1)
      die ("read: %s: %s", name, strerror (errno));
    if (r == 0)
      break;
    p += r;
    n -= r;
    off += r;
  }
}

static bool
is_zero (const unsigned char *p, size_t n)
{
  size_t i;

  for (i = 0; i < n; ++i)
    if (p[i])
      return false;
  return true;
}

static void
usage (FILE *fp)
{
  fprintf (fp,
"Usage: %s [OPTIONS] RAW EXTENT [DESCRIPTOR]\n"
"Write the contents of RAW (size a multiple of 512) as an seSparse\n"
"EXTENT, and a descriptor naming it if DESCRIPTOR is given.\n"
"\n"
"  --zero-as=TYPE        type of all-zero grains: unalloc (default),\n"
"                        unmapped (0x1), zero (0x2) or data (0x3)\n"
"  --grain=N:TYPE        type of grain N (if unmapped/zero, its data is\n"
"                        dropped)\n"
"  --reverse             allocate clusters and grain tables in reverse\n"
"  --cluster-base=N      number of the first cluster (>= 4096 uses both\n"
"                        halves of the split encoding)\n"
"  --spread=N            leave N unused clusters after each one\n"
"  --all-gts             write grain tables for empty ranges too (no GD\n"
"                        holes)\n"
"  --hdr=FIELD=VALUE     override a constant header field\n"
"  --vol=FIELD=VALUE     override a volatile header field\n"
"  --gde=N=VALUE         override grain directory entry N\n"
"  --gte=N=VALUE         override the GT entry of grain N\n"
"  --gte-cluster=N=C     grain N is allocated at cluster C\n"
"  --poke=OFFSET=BYTE    write BYTE at OFFSET of the extent, last\n"
"  --truncate=BYTES      truncate the extent to BYTES, last\n"
"  --parent=NAME         descriptor: parentFileNameHint\n"
"  --parent-cid=HEX      descriptor: parentCID (default ffffffff)\n"
"  --cid=HEX             descriptor: CID (default fffffffe)\n",
           progname);
}

enum {
  OPT_ZERO_AS = 256, OPT_GRAIN, OPT_REVERSE, OPT_CLUSTER_BASE, OPT_SPREAD,
  OPT_ALL_GTS, OPT_HDR, OPT_VOL, OPT_GDE, OPT_GTE, OPT_GTE_CLUSTER,
  OPT_POKE, OPT_TRUNCATE, OPT_PARENT, OPT_PARENT_CID, OPT_CID, OPT_HELP,
};

static const struct option long_options[] = {
  { "zero-as", required_argument, NULL, OPT_ZERO_AS },
  { "grain", required_argument, NULL, OPT_GRAIN },
  { "reverse", no_argument, NULL, OPT_REVERSE },
  { "cluster-base", required_argument, NULL, OPT_CLUSTER_BASE },
  { "spread", required_argument, NULL, OPT_SPREAD },
  { "all-gts", no_argument, NULL, OPT_ALL_GTS },
  { "hdr", required_argument, NULL, OPT_HDR },
  { "vol", required_argument, NULL, OPT_VOL },
  { "gde", required_argument, NULL, OPT_GDE },
  { "gte", required_argument, NULL, OPT_GTE },
  { "gte-cluster", required_argument, NULL, OPT_GTE_CLUSTER },
  { "poke", required_argument, NULL, OPT_POKE },
  { "truncate", required_argument, NULL, OPT_TRUNCATE },
  { "parent", required_argument, NULL, OPT_PARENT },
  { "parent-cid", required_argument, NULL, OPT_PARENT_CID },
  { "cid", required_argument, NULL, OPT_CID },
  { "help", no_argument, NULL, OPT_HELP },
  { NULL, 0, NULL, 0 },
};

int
main (int argc, char *argv[])
{
  enum gtype zero_as = T_UNALLOC;
  bool reverse = false, all_gts = false, truncate_set = false;
  uint64_t cluster_base = 0, spread = 0, truncate_to = 0;
  const char *parent = NULL, *parent_cid = "ffffffff", *cid = "fffffffe";
  struct overrides grain_types = { 0 }, hdr = { 0 }, vol = { 0 },
    gdes = { 0 }, gtes = { 0 }, pokes = { 0 };
  const char *raw_name, *out_name, *desc_name = NULL, *base;
  int c, rfd, fd;
  struct stat st;
  uint64_t capacity, nr_grains, nr_gts, nr_data, nr_used_gts, i, k, n;
  uint64_t gd_sectors, gd_off, gts_off, gts_size, fb_off, bm_off;
  uint64_t grains_off, grains_size, max_cluster, end, file_size;
  enum gtype *type;
  uint64_t *gte, *gt_slot;
  unsigned char grain[GRAIN_BYTES], sector[SECTOR], *gd, *table;
  FILE *fp;

  while ((c = getopt_long (argc, argv, "", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_ZERO_AS: zero_as = parse_type (optarg); break;
    case OPT_GRAIN: {
      char *colon = strchr (optarg, ':');

      if (colon == NULL)
        die ("--grain: expected N:TYPE, got \"%s\"", optarg);
      *colon = '\0';
      add_override (&grain_types, parse_u64 (optarg, "--grain"),
                    parse_type (colon + 1));
      break;
    }
    case OPT_REVERSE: reverse = true; break;
    case OPT_CLUSTER_BASE:
      cluster_base = parse_u64 (optarg, "--cluster-base");
      break;
    case OPT_SPREAD: spread = parse_u64 (optarg, "--spread"); break;
    case OPT_ALL_GTS: all_gts = true; break;
    case OPT_HDR:
      parse_field (optarg, "--hdr", const_fields, NR_CONST_FIELDS, &hdr);
      break;
    case OPT_VOL:
      parse_field (optarg, "--vol", volatile_fields, NR_VOLATILE_FIELDS,
                   &vol);
      break;
    case OPT_GDE: parse_pair (optarg, "--gde", &k, &n);
      add_override (&gdes, k, n);
      break;
    case OPT_GTE: parse_pair (optarg, "--gte", &k, &n);
      add_override (&gtes, k, n);
      break;
    case OPT_GTE_CLUSTER: parse_pair (optarg, "--gte-cluster", &k, &n);
      add_override (&gtes, k, encode_cluster (n));
      break;
    case OPT_POKE: parse_pair (optarg, "--poke", &k, &n);
      if (n > 255)
        die ("--poke: byte %" PRIu64 " out of range", n);
      add_override (&pokes, k, n);
      break;
    case OPT_TRUNCATE:
      truncate_to = parse_u64 (optarg, "--truncate");
      truncate_set = true;
      break;
    case OPT_PARENT: parent = optarg; break;
    case OPT_PARENT_CID: parent_cid = optarg; break;
    case OPT_CID: cid = optarg; break;
    case OPT_HELP: usage (stdout); exit (EXIT_SUCCESS);
    default: usage (stderr); exit (EXIT_FAILURE);
    }
  }
  if (argc - optind < 2 || argc - optind > 3) {
    usage (stderr);
    exit (EXIT_FAILURE);
  }
  raw_name = argv[optind];
  out_name = argv[optind + 1];
  if (argc - optind == 3)
    desc_name = argv[optind + 2];

  rfd = open (raw_name, O_RDONLY);
  if (rfd == -1 || fstat (rfd, &st) == -1)
    die ("%s: %s", raw_name, strerror (errno));
  if (st.st_size % SECTOR != 0)
    die ("%s: size %jd is not a multiple of %d", raw_name,
         (intmax_t) st.st_size, SECTOR);
  capacity = st.st_size / SECTOR;
  nr_grains = (capacity + GRAIN_SECTORS - 1) / GRAIN_SECTORS;
  nr_gts = (capacity + GT_COVERAGE_SECTORS - 1) / GT_COVERAGE_SECTORS;

  /* Grain types: zero grains per --zero-as, others data, then --grain. */
  type = xcalloc (nr_grains, sizeof *type);
  for (i = 0; i < nr_grains; ++i) {
    pread_fill (rfd, grain, GRAIN_BYTES, i * GRAIN_BYTES, raw_name);
    type[i] = is_zero (grain, GRAIN_BYTES) ? zero_as : T_DATA;
  }
  for (i = 0; i < grain_types.n; ++i) {
    if (grain_types.v[i].index >= nr_grains)
      die ("--grain: grain %" PRIu64 " is beyond the last grain %" PRIu64,
           grain_types.v[i].index, nr_grains - 1);
    type[grain_types.v[i].index] = grain_types.v[i].value;
  }

  /* Clusters, in grain order or reversed, spread out on request. */
  gte = xcalloc (nr_grains, sizeof *gte);
  for (nr_data = 0, i = 0; i < nr_grains; ++i)
    nr_data += type[i] == T_DATA;
  max_cluster = 0;
  for (k = 0, i = 0; i < nr_grains; ++i) {
    uint64_t cluster;

    switch (type[i]) {
    case T_UNALLOC: gte[i] = 0; break;
    case T_UNMAPPED: gte[i] = UINT64_C (1) << 60; break;
    case T_ZERO: gte[i] = UINT64_C (2) << 60; break;
    case T_DATA:
      cluster = cluster_base +
        (reverse ? nr_data - 1 - k : k) * (spread + 1);
      max_cluster = cluster > max_cluster ? cluster : max_cluster;
      gte[i] = encode_cluster (cluster);
      k++;
      break;
    }
  }
  for (i = 0; i < gtes.n; ++i) {
    if (gtes.v[i].index >= nr_grains)
      die ("--gte: grain %" PRIu64 " is beyond the last grain",
           gtes.v[i].index);
    gte[gtes.v[i].index] = gtes.v[i].value;
  }

  /* Grain tables only where some entry is set (else a GD hole). */
  gt_slot = xcalloc (nr_gts, sizeof *gt_slot);
  nr_used_gts = 0;
  for (i = 0; i < nr_gts; ++i) {
    bool used = all_gts;

    for (k = i * GTES_PER_GT; !used && k < nr_grains &&
           k < (i + 1) * GTES_PER_GT; ++k)
      used = gte[k] != 0;
    gt_slot[i] = used ? ++nr_used_gts : 0;     /* 1-based; 0 = hole */
  }

  /* Layout (sectors): const header, volatile header, journal header,
   * journal, GD, GT region (room for every table, like ESXi), free
   * bitmap, backmap, grains.
   */
  gd_sectors = (nr_gts + SECTOR / 8 - 1) / (SECTOR / 8);
  if (gd_sectors == 0)
    gd_sectors = 1;
  gd_off = 8;
  gts_off = gd_off + gd_sectors;
  gts_size = (nr_gts ? nr_gts : 1) * GT_SECTORS;
  fb_off = gts_off + gts_size;
  bm_off = fb_off + 8;
  grains_off = bm_off + 8;
  grains_size = (cluster_base + (nr_grains ? nr_grains : 1) * (spread + 1))
    * GRAIN_SECTORS;

  fd = open (out_name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd == -1)
    die ("%s: %s", out_name, strerror (errno));

  /* Constant header. */
  {
    uint64_t f[NR_CONST_FIELDS] = {
      UINT64_C (0x00000000CAFEBABE), UINT64_C (0x0000000200000001),
      capacity, GRAIN_SECTORS, GT_SECTORS, 0, 0, 0, 0, 0,
      1, 1,                     /* volatile header */
      2, 2,                     /* journal header */
      4, 4,                     /* journal */
      gd_off, gd_sectors,
      gts_off, gts_size,
      fb_off, 8,
      bm_off, 8,
      grains_off, grains_size,
    };

    for (i = 0; i < hdr.n; ++i)
      f[hdr.v[i].index] = hdr.v[i].value;
    memset (sector, 0, sizeof sector);
    for (i = 0; i < NR_CONST_FIELDS; ++i)
      put_le64 (sector + i * 8, f[i]);
    pwrite_full (fd, sector, SECTOR, 0, out_name);
  }

  /* Volatile header. */
  {
    uint64_t f[NR_VOLATILE_FIELDS] = {
      UINT64_C (0x00000000CAFECAFE), nr_used_gts, 1, 0,
    };

    for (i = 0; i < vol.n; ++i)
      f[vol.v[i].index] = vol.v[i].value;
    memset (sector, 0, sizeof sector);
    for (i = 0; i < NR_VOLATILE_FIELDS; ++i)
      put_le64 (sector + i * 8, f[i]);
    pwrite_full (fd, sector, SECTOR, 1 * SECTOR, out_name);
  }

  /* Grain directory: slot s (1-based) is GT index s-1, or reversed. */
  gd = xcalloc (gd_sectors, SECTOR);
  for (i = 0; i < nr_gts; ++i) {
    uint64_t index;

    if (gt_slot[i] == 0)
      continue;
    index = reverse ? nr_used_gts - gt_slot[i] : gt_slot[i] - 1;
    gt_slot[i] = index + 1;
    put_le64 (gd + i * 8, (UINT64_C (0x10000000) << 32) | index);
  }
  for (i = 0; i < gdes.n; ++i) {
    if (gdes.v[i].index >= gd_sectors * (SECTOR / 8))
      die ("--gde: entry %" PRIu64 " is beyond the grain directory",
           gdes.v[i].index);
    put_le64 (gd + gdes.v[i].index * 8, gdes.v[i].value);
  }
  pwrite_full (fd, gd, gd_sectors * SECTOR, gd_off * SECTOR, out_name);

  /* Grain tables. */
  table = xcalloc (GT_SECTORS, SECTOR);
  for (i = 0; i < nr_gts; ++i) {
    if (gt_slot[i] == 0)
      continue;
    memset (table, 0, GT_SECTORS * SECTOR);
    for (k = 0; k < GTES_PER_GT && i * GTES_PER_GT + k < nr_grains; ++k)
      put_le64 (table + k * 8, gte[i * GTES_PER_GT + k]);
    pwrite_full (fd, table, GT_SECTORS * SECTOR,
                 (gts_off + (gt_slot[i] - 1) * GT_SECTORS) * SECTOR,
                 out_name);
  }

  /* Grains (those still allocated by our own layout). */
  for (k = 0, i = 0; i < nr_grains; ++i) {
    uint64_t cluster;

    if (type[i] != T_DATA)
      continue;
    cluster = cluster_base + (reverse ? nr_data - 1 - k : k) * (spread + 1);
    k++;
    pread_fill (rfd, grain, GRAIN_BYTES, i * GRAIN_BYTES, raw_name);
    pwrite_full (fd, grain, GRAIN_BYTES,
                 (grains_off + cluster * GRAIN_SECTORS) * SECTOR, out_name);
  }

  /* The file ends after the last cluster (or at the grains region). */
  end = grains_off * SECTOR;
  if (nr_data)
    end += (max_cluster + 1) * GRAIN_BYTES;
  file_size = truncate_set ? truncate_to : end;
  for (i = 0; i < pokes.n; ++i) {
    unsigned char b = pokes.v[i].value;

    pwrite_full (fd, &b, 1, pokes.v[i].index, out_name);
  }
  if (ftruncate (fd, file_size) == -1 || close (fd) == -1)
    die ("%s: %s", out_name, strerror (errno));
  close (rfd);

  if (desc_name) {
    base = strrchr (out_name, '/');
    base = base ? base + 1 : out_name;
    fp = fopen (desc_name, "w");
    if (fp == NULL)
      die ("%s: %s", desc_name, strerror (errno));
    fprintf (fp,
             "# Disk DescriptorFile\n"
             "version=1\n"
             "encoding=\"UTF-8\"\n"
             "CID=%s\n"
             "parentCID=%s\n"
             "createType=\"seSparse\"\n", cid, parent_cid);
    if (parent)
      fprintf (fp, "parentFileNameHint=\"%s\"\n", parent);
    fprintf (fp,
             "\n"
             "# Extent description\n"
             "RW %" PRIu64 " SESPARSE \"%s\"\n"
             "\n"
             "# The Disk Data Base\n"
             "#DDB\n"
             "\n"
             "ddb.adapterType = \"lsilogic\"\n", capacity, base);
    if (fclose (fp) == EOF)
      die ("%s: %s", desc_name, strerror (errno));
  }

  free (type);
  free (gte);
  free (gt_slot);
  free (gd);
  free (table);
  free (grain_types.v);
  free (hdr.v);
  free (vol.v);
  free (gdes.v);
  free (gtes.v);
  free (pokes.v);
  return EXIT_SUCCESS;
}
