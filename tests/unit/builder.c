/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* See builder.h.  Layouts follow shared/VMDK-FORMAT.md:
 *
 * b.1 header (512 bytes, little-endian):
 *   0 magic "KDMV"   4 version   8 flags   12 capacity (u64)
 *   20 grainSize     28 descriptorOffset   36 descriptorSize
 *   44 numGTEsPerGT (u32)  48 rgdOffset  56 gdOffset  64 overHead
 *   72 uncleanShutdown (u8)  73 "\n \r\n"  77 compressAlgorithm (u16)
 * b.3 GD: one u32 per table, the table's sector (0: no table);
 *     GT: one u32 per grain, the grain's sector (0: unallocated,
 *     1: zeroed grain when flag bit 2 is set).
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "vmdk.h"

void *
xmalloc (size_t n)
{
  void *p = malloc (n ? n : 1);

  if (p == NULL) {
    perror ("malloc");
    abort ();
  }
  return p;
}

void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size ? size : 1);

  if (p == NULL) {
    perror ("calloc");
    abort ();
  }
  return p;
}

char *
xstrdup (const char *s)
{
  char *p = strdup (s);

  if (p == NULL) {
    perror ("strdup");
    abort ();
  }
  return p;
}

void
b_put_le16 (unsigned char *p, uint16_t v)
{
  p[0] = v;
  p[1] = v >> 8;
}

void
b_put_le32 (unsigned char *p, uint32_t v)
{
  int i;

  for (i = 0; i < 4; ++i)
    p[i] = v >> (8 * i);
}

void
b_put_le64 (unsigned char *p, uint64_t v)
{
  int i;

  for (i = 0; i < 8; ++i)
    p[i] = v >> (8 * i);
}

void
rng_init (struct rng *r, uint64_t seed)
{
  r->s = seed;
}

uint64_t
rng_next (struct rng *r)
{
  uint64_t z = (r->s += UINT64_C (0x9e3779b97f4a7c15));

  z = (z ^ (z >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C (0x94d049bb133111eb);
  return z ^ (z >> 31);
}

uint64_t
rng_below (struct rng *r, uint64_t n)
{
  return rng_next (r) % n;
}

void
rng_fill (struct rng *r, void *buf, size_t len)
{
  unsigned char *p = buf;
  size_t i;
  uint64_t v = 0;

  for (i = 0; i < len; ++i) {
    if (i % 8 == 0)
      v = rng_next (r);
    p[i] = v;
    v >>= 8;
  }
}

static void
bytes_reserve (struct bytes *b, size_t len)
{
  size_t cap = b->cap ? b->cap : 4096;

  if (len <= b->cap)
    return;
  while (cap < len)
    cap *= 2;
  b->data = realloc (b->data, cap);
  if (b->data == NULL) {
    perror ("realloc");
    abort ();
  }
  memset (b->data + b->cap, 0, cap - b->cap);
  b->cap = cap;
}

void
bytes_put_at (struct bytes *b, size_t offset, const void *data, size_t len)
{
  bytes_reserve (b, offset + len);
  memcpy (b->data + offset, data, len);
  if (offset + len > b->len)
    b->len = offset + len;
}

void
bytes_fill_at (struct bytes *b, size_t offset, int c, size_t len)
{
  bytes_reserve (b, offset + len);
  memset (b->data + offset, c, len);
  if (offset + len > b->len)
    b->len = offset + len;
}

void
bytes_append (struct bytes *b, const void *data, size_t len)
{
  bytes_put_at (b, b->len, data, len);
}

void
bytes_printf (struct bytes *b, const char *fs, ...)
{
  va_list args;
  char *s;
  int n;

  va_start (args, fs);
  n = vasprintf (&s, fs, args);
  va_end (args);
  if (n < 0) {
    perror ("vasprintf");
    abort ();
  }
  bytes_append (b, s, n);
  free (s);
}

void
bytes_free (struct bytes *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* Models. */

static uint64_t
ceil_div (uint64_t a, uint64_t b)
{
  return (a + b - 1) / b;
}

void
sparse_model_init (struct sparse_model *m, uint64_t capacity,
                   uint64_t grain_sectors, uint32_t gtes_per_gt)
{
  m->capacity = capacity;
  m->grain_sectors = grain_sectors;
  m->gtes_per_gt = gtes_per_gt;
  m->nr_grains = ceil_div (capacity, grain_sectors);
  m->nr_gts = ceil_div (m->nr_grains, gtes_per_gt);
  m->state = xcalloc (m->nr_grains, 1);
  m->gd_hole = xcalloc (m->nr_gts, sizeof (bool));
  m->bytes = xcalloc (m->nr_grains, grain_sectors * B_SECTOR);
}

void
sparse_model_set (struct sparse_model *m, uint64_t grain,
                  enum grain_state st, struct rng *r)
{
  uint64_t gb = m->grain_sectors * B_SECTOR;
  unsigned char *p = m->bytes + grain * gb;

  m->state[grain] = st;
  if (st == GS_DATA) {
    rng_fill (r, p, gb);
    /* Never an all-zero sector by chance, and the grain's own number
     * in the first bytes makes misplaced grains obvious.
     */
    b_put_le64 (p, grain | UINT64_C (0xa5a5000000000000));
  }
  else
    memset (p, 0, gb);
  /* The tail of a partial last grain is junk that must never show. */
  if (grain == m->nr_grains - 1 && m->capacity % m->grain_sectors) {
    uint64_t in = (m->capacity % m->grain_sectors) * B_SECTOR;
    memset (p + in, 0xee, gb - in);
  }
}

void
sparse_model_set_hole (struct sparse_model *m, uint64_t table)
{
  uint64_t g;

  m->gd_hole[table] = true;
  for (g = table * m->gtes_per_gt;
       g < (table + 1) * m->gtes_per_gt && g < m->nr_grains; ++g)
    sparse_model_set (m, g, GS_UNALLOC, NULL);
}

void
sparse_model_randomize (struct sparse_model *m, struct rng *r,
                        unsigned pct_data, unsigned pct_zero,
                        unsigned pct_holes)
{
  uint64_t g, t;

  for (g = 0; g < m->nr_grains; ) {
    uint64_t p = rng_below (r, 100), n = 1 + rng_below (r, 6), i;
    enum grain_state st = p < pct_data ? GS_DATA
      : p < pct_data + pct_zero ? GS_ZERO : GS_UNALLOC;

    for (i = 0; i < n && g < m->nr_grains; ++i, ++g)
      sparse_model_set (m, g, st, r);
  }
  for (t = 0; t < m->nr_gts; ++t)
    if (rng_below (r, 100) < pct_holes)
      sparse_model_set_hole (m, t);
}

void
sparse_model_free (struct sparse_model *m)
{
  free (m->state);
  free (m->gd_hole);
  free (m->bytes);
  memset (m, 0, sizeof *m);
}

/* Sparse files. */

/* Write a grain directory or table of u32 entries at sector. */
static void
put_table (struct bytes *b, uint64_t sector, const uint32_t *v, uint64_t n)
{
  unsigned char *raw = xmalloc (n * 4);
  uint64_t i;

  for (i = 0; i < n; ++i)
    b_put_le32 (raw + i * 4, v[i]);
  bytes_put_at (b, sector * B_SECTOR, raw, n * 4);
  free (raw);
}

/* Fill [sector, sector + n) with junk. */
static void
put_junk (struct bytes *b, struct rng *r, uint64_t sector, uint64_t n)
{
  unsigned char *junk = xmalloc (n * B_SECTOR);

  rng_fill (r, junk, n * B_SECTOR);
  bytes_put_at (b, sector * B_SECTOR, junk, n * B_SECTOR);
  free (junk);
}

void
build_sparse (const struct sparse_model *m, const struct sparse_opts *o,
              struct sparse_file *f)
{
  uint64_t gb = m->grain_sectors * B_SECTOR;
  uint64_t gd_sectors = ceil_div (m->nr_gts * 4, B_SECTOR);
  uint64_t gt_sectors = ceil_div ((uint64_t) m->gtes_per_gt * 4, B_SECTOR);
  uint64_t desc_sectors = 0, next, g, t, i, nr_data = 0;
  uint64_t *rgt_sector = xcalloc (m->nr_gts, sizeof (uint64_t));
  uint64_t *order;
  uint32_t *entries;
  unsigned char hdr[B_SECTOR];
  struct rng r;

  memset (f, 0, sizeof *f);
  rng_init (&r, o->seed ^ UINT64_C (0x5eed));
  f->nr_gts = m->nr_gts;
  f->nr_grains = m->nr_grains;
  f->gtes_per_gt = m->gtes_per_gt;
  f->gt_sector = xcalloc (m->nr_gts, sizeof (uint64_t));
  f->gte = xcalloc (m->nr_grains, sizeof (uint64_t));

  if (o->descriptor)
    desc_sectors = o->desc_sectors ? o->desc_sectors
      : strlen (o->descriptor) / B_SECTOR + 1;

  /* Place everything.  next is the first free sector. */
  next = 1 + desc_sectors;
  if (!o->scattered) {
    /* QEMU's layout: descriptor, RGD and its tables, GD and its
     * tables, grains from overHead (rounded up to a grain) on.
     */
    if (o->flags & B_FLAG_RGD) {
      f->rgd_sector = next;
      next += gd_sectors;
      for (t = 0; t < m->nr_gts; ++t)
        if (!m->gd_hole[t]) {
          rgt_sector[t] = next;
          next += gt_sectors;
        }
    }
    f->gd_sector = next;
    next += gd_sectors;
    for (t = 0; t < m->nr_gts; ++t)
      if (!m->gd_hole[t]) {
        f->gt_sector[t] = next;
        next += gt_sectors;
      }
    f->overhead = ceil_div (next, m->grain_sectors) * m->grain_sectors;
    next = f->overhead;
    for (g = 0; g < m->nr_grains; ++g)
      if (m->state[g] == GS_DATA) {
        f->gte[g] = next;
        next += m->grain_sectors;
      }
  }
  else {
    /* Grains in random order, never two adjacent, at sectors that are
     * not grain-aligned; then the tables in reverse order; then GD and
     * RGD.  Junk everywhere in between.
     */
    next += 1 + rng_below (&r, 4);
    f->overhead = next;
    order = xcalloc (m->nr_grains, sizeof (uint64_t));
    for (g = 0; g < m->nr_grains; ++g)
      if (m->state[g] == GS_DATA)
        order[nr_data++] = g;
    for (i = nr_data; i > 1; --i) {
      uint64_t j = rng_below (&r, i), tmp = order[i - 1];
      order[i - 1] = order[j];
      order[j] = tmp;
    }
    for (i = 0; i < nr_data; ++i) {
      f->gte[order[i]] = next;
      next += m->grain_sectors + 1 + rng_below (&r, 3);
    }
    free (order);
    for (t = m->nr_gts; t-- > 0; )
      if (!m->gd_hole[t]) {
        f->gt_sector[t] = next;
        next += gt_sectors + rng_below (&r, 2);
      }
    f->gd_sector = next;
    next += gd_sectors + 1;
    if (o->flags & B_FLAG_RGD) {
      f->rgd_sector = next;
      next += gd_sectors;
      for (t = 0; t < m->nr_gts; ++t)
        if (!m->gd_hole[t]) {
          rgt_sector[t] = next;
          next += gt_sectors;
        }
    }
  }
  for (g = 0; g < m->nr_grains; ++g)
    if (m->state[g] == GS_ZERO)
      f->gte[g] = 1;

  /* Junk first, then the structures over it. */
  put_junk (&f->file, &r, 0, next);

  memset (hdr, 0, sizeof hdr);
  memcpy (hdr, "KDMV", 4);
  b_put_le32 (hdr + 4, o->version);
  b_put_le32 (hdr + 8, o->flags);
  b_put_le64 (hdr + 12, m->capacity);
  b_put_le64 (hdr + 20, m->grain_sectors);
  b_put_le64 (hdr + 28, desc_sectors ? 1 : 0);
  b_put_le64 (hdr + 36, desc_sectors);
  b_put_le32 (hdr + 44, m->gtes_per_gt);
  b_put_le64 (hdr + 48, f->rgd_sector);
  b_put_le64 (hdr + 56, f->gd_sector);
  b_put_le64 (hdr + 64, f->overhead);
  hdr[72] = o->unclean_shutdown;
  memcpy (hdr + 73, "\n \r\n", 4);
  b_put_le16 (hdr + 77, 0);
  bytes_put_at (&f->file, 0, hdr, sizeof hdr);

  if (desc_sectors) {
    bytes_fill_at (&f->file, B_SECTOR, 0, desc_sectors * B_SECTOR);
    bytes_put_at (&f->file, B_SECTOR, o->descriptor,
                  strlen (o->descriptor));
  }

  /* Directories and tables.  The tail of a directory's or a table's
   * last sector stays junk: readers must read only the entries.
   */
  entries = xcalloc (m->nr_gts > m->gtes_per_gt ? m->nr_gts
                     : m->gtes_per_gt, sizeof (uint32_t));
  for (t = 0; t < m->nr_gts; ++t)
    entries[t] = f->gt_sector[t];
  put_table (&f->file, f->gd_sector, entries, m->nr_gts);
  if (o->flags & B_FLAG_RGD) {
    for (t = 0; t < m->nr_gts; ++t)
      entries[t] = rgt_sector[t];
    put_table (&f->file, f->rgd_sector, entries, m->nr_gts);
  }
  for (t = 0; t < m->nr_gts; ++t) {
    if (m->gd_hole[t])
      continue;
    for (i = 0; i < m->gtes_per_gt; ++i) {
      g = t * m->gtes_per_gt + i;
      /* Entries past the last grain (a partly used last table). */
      entries[i] = g < m->nr_grains ? f->gte[g] : 0;
    }
    put_table (&f->file, f->gt_sector[t], entries, m->gtes_per_gt);
    if (o->flags & B_FLAG_RGD) {
      if (o->rgd_garbage)
        for (i = 0; i < m->gtes_per_gt; ++i)
          entries[i] = rng_next (&r);
      put_table (&f->file, rgt_sector[t], entries, m->gtes_per_gt);
    }
  }
  free (entries);

  for (g = 0; g < m->nr_grains; ++g)
    if (m->state[g] == GS_DATA)
      bytes_put_at (&f->file, f->gte[g] * B_SECTOR, m->bytes + g * gb, gb);
  free (rgt_sector);
}

void
sparse_file_set_gte (struct sparse_file *f, uint64_t grain, uint32_t v)
{
  uint64_t t = grain / f->gtes_per_gt, i = grain % f->gtes_per_gt;

  if (f->gt_sector[t] == 0)
    abort ();                   /* a test bug: no table there */
  b_put_le32 (f->file.data + f->gt_sector[t] * B_SECTOR + i * 4, v);
  f->gte[grain] = v;
}

void
sparse_file_set_gde (struct sparse_file *f, uint64_t table, uint32_t v)
{
  b_put_le32 (f->file.data + f->gd_sector * B_SECTOR + table * 4, v);
}

void
sparse_file_free (struct sparse_file *f)
{
  bytes_free (&f->file);
  free (f->gt_sector);
  free (f->gte);
  memset (f, 0, sizeof *f);
}

/* Descriptors (b.7). */

void
desc_begin (struct bytes *t, const char *create_type)
{
  bytes_printf (t,
                "# Disk DescriptorFile\n"
                "version=1\n"
                "encoding=\"UTF-8\"\n"
                "CID=fffffffe\n"
                "parentCID=ffffffff\n"
                "isNativeSnapshot=\"no\"\n"
                "createType=\"%s\"\n"
                "\n"
                "# Extent description\n", create_type);
}

void
desc_extent (struct bytes *t, const char *access, uint64_t sectors,
             const char *type, const char *file, int64_t offset)
{
  bytes_printf (t, "%s %llu %s", access, (unsigned long long) sectors, type);
  if (file)
    bytes_printf (t, " \"%s\"", file);
  if (offset >= 0)
    bytes_printf (t, " %lld", (long long) offset);
  bytes_printf (t, "\n");
}

void
desc_end (struct bytes *t)
{
  bytes_printf (t,
                "\n"
                "# The Disk Data Base\n"
                "#DDB\n"
                "\n"
                "ddb.virtualHWVersion = \"4\"\n"
                "ddb.geometry.cylinders = \"16383\"\n"
                "ddb.geometry.heads = \"16\"\n"
                "ddb.geometry.sectors = \"63\"\n"
                "ddb.adapterType = \"ide\"\n");
  bytes_fill_at (t, t->len, 0, 1);
  t->len--;                     /* NUL-terminated, not counted */
}

void
source_add (struct vmdk_source *src, const char *name, const void *data,
            size_t len)
{
  if (vmdk_source_memory_add (src, name, data, len) == -1) {
    fprintf (stderr, "vmdk_source_memory_add: %s: %s\n", name,
             vmdk_errmsg ());
    abort ();
  }
}

/* Image models. */

void
image_model_init (struct image_model *im)
{
  memset (im, 0, sizeof *im);
}

static void
add_point (struct image_model *im, uint64_t p)
{
  if (im->nr_points == im->cap_points) {
    im->cap_points = im->cap_points ? im->cap_points * 2 : 256;
    im->points = realloc (im->points, im->cap_points * sizeof *im->points);
    if (im->points == NULL)
      abort ();
  }
  im->points[im->nr_points++] = p;
}

/* Grow by sectors; returns the first new sector. */
static uint64_t
grow (struct image_model *im, uint64_t sectors)
{
  uint64_t first = im->size / B_SECTOR, n = first + sectors;

  if (n > im->cap_sectors) {
    size_t cap = im->cap_sectors ? im->cap_sectors : 64;

    while (cap < n)
      cap *= 2;
    im->bytes = realloc (im->bytes, cap * B_SECTOR);
    im->type = realloc (im->type, cap);
    im->split = realloc (im->split, cap + 1);
    im->eio = realloc (im->eio, cap);
    if (!im->bytes || !im->type || !im->split || !im->eio)
      abort ();
    im->cap_sectors = cap;
  }
  memset (im->bytes + first * B_SECTOR, 0, sectors * B_SECTOR);
  memset (im->type + first, VMDK_MAP_HOLE, sectors);
  memset (im->split + first, 0, sectors + 1);
  memset (im->eio + first, 0, sectors);
  im->split[first] = SPLIT_ANY;           /* extent boundary */
  im->split[n] = SPLIT_ANY;
  im->size = n * B_SECTOR;
  add_point (im, first * B_SECTOR);
  return first;
}

void
image_model_add_sparse (struct image_model *im, const struct sparse_model *m,
                        bool scattered, bool zero_flag)
{
  uint64_t first = grow (im, m->capacity), g;
  uint64_t gs = m->grain_sectors;

  memcpy (im->bytes + first * B_SECTOR, m->bytes, m->capacity * B_SECTOR);
  for (g = 0; g < m->nr_grains; ++g) {
    uint64_t s0 = first + g * gs;
    uint64_t n = g == m->nr_grains - 1 ? m->capacity - g * gs : gs;
    int type = VMDK_MAP_HOLE;
    bool bad = false;

    switch (m->state[g]) {
    case GS_DATA: type = VMDK_MAP_DATA; break;
    case GS_ZERO:
      if (zero_flag)
        type = VMDK_MAP_ZERO;
      else
        bad = true;             /* GTE 1 without the flag: corrupt */
      break;
    default: break;
    }
    memset (im->type + s0, type, n);
    memset (im->eio + s0, bad, n);
    if (g % m->gtes_per_gt == 0) {
      im->split[s0] |= SPLIT_ANY;
      add_point (im, s0 * B_SECTOR);
    }
    else if (scattered)
      im->split[s0] |= SPLIT_DATA;
    /* Grain boundaries: all of them for small models, else a sample. */
    if (m->nr_grains <= 4096 || g % 16 == 0)
      add_point (im, s0 * B_SECTOR);
  }
}

void
image_model_add_flat (struct image_model *im, const unsigned char *data,
                      uint64_t sectors)
{
  uint64_t first = grow (im, sectors);

  memcpy (im->bytes + first * B_SECTOR, data, sectors * B_SECTOR);
  memset (im->type + first, VMDK_MAP_DATA, sectors);
}

void
image_model_add_zero (struct image_model *im, uint64_t sectors)
{
  grow (im, sectors);
}

void
image_model_add_noaccess (struct image_model *im, uint64_t sectors)
{
  uint64_t first = grow (im, sectors);

  /* Block status cannot know the contents: it says data. */
  memset (im->type + first, VMDK_MAP_DATA, sectors);
  memset (im->eio + first, 1, sectors);
}

void
image_model_mark_eio (struct image_model *im, uint64_t offset, uint64_t len)
{
  memset (im->eio + offset / B_SECTOR, 1, len / B_SECTOR);
}

void
image_model_free (struct image_model *im)
{
  free (im->bytes);
  free (im->type);
  free (im->split);
  free (im->eio);
  free (im->points);
  memset (im, 0, sizeof *im);
}
