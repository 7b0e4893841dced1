/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Whole images through the public API (vmdk_open_source, vmdk_pread,
 * vmdk_map), built in memory by builder.c and checked against their
 * models: many geometries, contiguous and scattered grain placement,
 * multi-extent descriptors, NOACCESS extents, corrupt tables and
 * open errors.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder.h"
#include "io.h"
#include "tap.h"
#include "vmdk.h"

static struct vmdk_image *
open_mem (struct vmdk_source *src, const char *name, uint64_t cache)
{
  struct vmdk_options o = { .readonly = true, .gt_cache_bytes = cache };

  return vmdk_open_source (src, name, &o);
}

static uint64_t
min_u64 (uint64_t a, uint64_t b)
{
  return a < b ? a : b;
}

static bool
range_has_eio (const struct image_model *im, uint64_t off, uint64_t len)
{
  uint64_t s;

  if (len == 0)
    return false;
  for (s = off / B_SECTOR; s <= (off + len - 1) / B_SECTOR; ++s)
    if (im->eio[s])
      return true;
  return false;
}

/* Each thread's read buffer, kept from one read to the next: a fresh
 * allocation per read costs page faults that make the test 20 times
 * slower under ASan.  release_read_buffer gives it back.
 */
static __thread unsigned char *read_buf;
static __thread size_t read_buf_size;

static unsigned char *
get_read_buffer (size_t size)
{
  if (size > read_buf_size) {
    free (read_buf);
    read_buf = xmalloc (size);
    read_buf_size = size;
  }
  return read_buf;
}

static void
release_read_buffer (void)
{
  free (read_buf);
  read_buf = NULL;
  read_buf_size = 0;
}

/* Read [off, off+len) and compare with the model (or expect EIO).
 * Returns true if it behaved.
 */
static bool
check_one_read (struct vmdk_image *img, const struct image_model *im,
                uint64_t off, size_t len, const char *label)
{
  unsigned char *buf = get_read_buffer (len + 1);
  bool want_eio = range_has_eio (im, off, len);
  bool ok = true;
  int r;

  memset (buf, 0xaa, len + 1);
  errno = 0;
  r = vmdk_pread (img, buf, len, off);
  if (want_eio) {
    if (r != -1 || errno != EIO) {
      test_fail (__FILE__, __LINE__, "%s: read of %zu at %llu: r=%d errno=%d,"
                 " expected EIO", label, len, (unsigned long long) off, r,
                 errno);
      ok = false;
    }
  }
  else if (r != 0) {
    test_fail (__FILE__, __LINE__, "%s: read of %zu at %llu failed: %s",
               label, len, (unsigned long long) off, vmdk_errmsg ());
    ok = false;
  }
  else if (memcmp (buf, im->bytes + off, len) != 0) {
    size_t i;

    for (i = 0; buf[i] == im->bytes[off + i]; ++i)
      ;
    test_fail (__FILE__, __LINE__, "%s: read of %zu at %llu: byte %llu is "
               "0x%02x, expected 0x%02x", label, len,
               (unsigned long long) off, (unsigned long long) (off + i),
               buf[i], im->bytes[off + i]);
    ok = false;
  }
  if (r == 0 && buf[len] != 0xaa) {
    test_fail (__FILE__, __LINE__, "%s: read of %zu at %llu overran the "
               "buffer", label, len, (unsigned long long) off);
    ok = false;
  }
  atomic_fetch_add (&test_checks, 1);
  return ok;
}

/* A random (offset, length), biased towards boundaries. */
static void
random_range (struct rng *r, const struct image_model *im, uint64_t max_len,
              uint64_t *off, size_t *len)
{
  uint64_t o, l;

  if (im->nr_points && rng_below (r, 2)) {
    int64_t delta = (int64_t) rng_below (r, 1201) - 600;

    o = im->points[rng_below (r, im->nr_points)];
    if (delta < 0 && (uint64_t) -delta > o)
      o = 0;
    else
      o += delta;
    if (o >= im->size)
      o = im->size - 1;
  }
  else
    o = rng_below (r, im->size);
  switch (rng_below (r, 10)) {
  case 0: case 1: case 2:
    l = 1 + rng_below (r, 64);
    break;
  case 9:
    l = 1 + rng_below (r, 2 * 1024 * 1024);
    break;
  default:
    l = 1 + rng_below (r, max_len);
  }
  l = min_u64 (l, im->size - o);
  *off = o;
  *len = l;
}

static void
check_reads (struct vmdk_image *img, const struct image_model *im,
             unsigned n, uint64_t seed, uint64_t grain, const char *label)
{
  struct rng r;
  unsigned i, bad = 0;
  unsigned char c;
  uint64_t off;
  size_t len;

  CHECK_EQ (vmdk_get_size (img), im->size);
  rng_init (&r, seed);
  for (i = 0; i < n && bad < 10; ++i) {
    random_range (&r, im, 3 * grain + 1024, &off, &len);
    if (!check_one_read (img, im, off, len, label))
      bad++;
  }
  /* The whole disk in one request, and the very ends. */
  if (!check_one_read (img, im, 0, im->size, label))
    bad++;
  check_one_read (img, im, 0, 1, label);
  check_one_read (img, im, im->size - 1, 1, label);
  check_one_read (img, im, im->size - 513, 513, label);

  /* Empty reads anywhere, including at the very end; reads past the
   * end fail.
   */
  CHECK (vmdk_pread (img, &c, 0, 0) == 0);
  CHECK (vmdk_pread (img, &c, 0, im->size) == 0);
  errno = 0;
  CHECK (vmdk_pread (img, &c, 1, im->size) == -1 && errno == EINVAL);
  errno = 0;
  CHECK (vmdk_pread (img, &c, 1, UINT64_MAX) == -1 && errno == EINVAL);
  release_read_buffer ();
}

/* Block status. */
struct map_run {
  uint64_t off, len;
  enum vmdk_map_type type;
};
struct map_runs {
  struct map_run *v;
  size_t n, cap;
  size_t stop_after;            /* 0: never stop */
  bool fail;
};

static int
collect (void *opaque, uint64_t off, uint64_t len, enum vmdk_map_type type)
{
  struct map_runs *m = opaque;

  if (m->fail) {
    errno = ENOSPC;
    return -1;
  }
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 64;
    m->v = realloc (m->v, m->cap * sizeof *m->v);
    if (m->v == NULL)
      abort ();
  }
  m->v[m->n].off = off;
  m->v[m->n].len = len;
  m->v[m->n].type = type;
  m->n++;
  return m->stop_after && m->n >= m->stop_after ? 1 : 0;
}

static const char *
type_name (int t)
{
  return t == VMDK_MAP_DATA ? "data" : t == VMDK_MAP_ZERO ? "zero"
    : t == VMDK_MAP_HOLE ? "hole" : "?";
}

/* Map [off, off+count); check the runs cover it contiguously, agree
 * with the model, are merged where the grains allow and split where
 * they do not.  Returns vmdk_map's result.
 */
static int
check_map (struct vmdk_image *img, const struct image_model *im,
           uint64_t off, uint64_t count, const char *label)
{
  struct map_runs m = { 0 };
  uint64_t end = min_u64 (off + count, im->size), pos, s;
  size_t i;
  int r, bad = 0;

  r = vmdk_map (img, off, count, collect, &m);
  if (r == -1) {
    free (m.v);
    return -1;
  }
  CHECK_MSG (m.n > 0, "%s: map at %llu: no runs", label,
             (unsigned long long) off);
  pos = off;
  for (i = 0; i < m.n && bad < 5; ++i) {
    const struct map_run *run = &m.v[i];
    uint64_t a = run->off, b = run->off + run->len;

    if ((i == 0 && a > off) || (i > 0 && a != pos) || run->len == 0 ||
        b > im->size) {
      test_fail (__FILE__, __LINE__, "%s: map at %llu: run %zu [%llu, +%llu)"
                 " is not contiguous with %llu", label,
                 (unsigned long long) off, i, (unsigned long long) a,
                 (unsigned long long) run->len, (unsigned long long) pos);
      bad++;
    }
    pos = b;
    for (s = (a < off ? off : a) / B_SECTOR;
         s * B_SECTOR < b && s * B_SECTOR < end; ++s)
      if (im->type[s] != run->type) {
        test_fail (__FILE__, __LINE__, "%s: map: sector %llu is %s, the "
                   "model says %s", label, (unsigned long long) s,
                   type_name (run->type), type_name (im->type[s]));
        bad++;
        break;
      }
    /* Physically discontiguous grains must not be merged. */
    if (run->type == VMDK_MAP_DATA)
      for (s = a / B_SECTOR + 1; s * B_SECTOR < b; ++s)
        if (im->split[s] & SPLIT_DATA) {
          test_fail (__FILE__, __LINE__, "%s: map: data run [%llu, +%llu) "
                     "spans non-contiguous grains at sector %llu", label,
                     (unsigned long long) a, (unsigned long long) run->len,
                     (unsigned long long) s);
          bad++;
          break;
        }
    /* Like grains next to each other are one run, except across a
     * grain table or an extent.
     */
    if (i > 0 && run->type == m.v[i - 1].type) {
      uint8_t sp = a % B_SECTOR ? 0 : im->split[a / B_SECTOR];

      if (!(sp & SPLIT_ANY) &&
          !(run->type == VMDK_MAP_DATA && (sp & SPLIT_DATA))) {
        test_fail (__FILE__, __LINE__, "%s: map: two %s runs meet at %llu,"
                   " inside a grain table", label, type_name (run->type),
                   (unsigned long long) a);
        bad++;
      }
    }
  }
  if (i < m.n)                  /* gave up early: already reported */
    pos = m.v[m.n - 1].off + m.v[m.n - 1].len;
  CHECK_MSG (pos >= end, "%s: map at %llu+%llu ends at %llu", label,
             (unsigned long long) off, (unsigned long long) count,
             (unsigned long long) pos);
  free (m.v);
  return r;
}

static void
check_maps (struct vmdk_image *img, const struct image_model *im,
            unsigned n, uint64_t seed, uint64_t grain, const char *label)
{
  struct rng r;
  unsigned i;
  uint64_t off;
  size_t len;

  rng_init (&r, seed);
  CHECK_MSG (check_map (img, im, 0, im->size, label) == 0, "%s: %s", label,
             vmdk_errmsg ());
  /* count past the end is clamped. */
  CHECK (check_map (img, im, im->size - 1, UINT64_MAX, label) == 0);
  for (i = 0; i < n; ++i) {
    random_range (&r, im, 8 * grain, &off, &len);
    CHECK_MSG (check_map (img, im, off, len, label) == 0, "%s: %s", label,
               vmdk_errmsg ());
  }
}

/* Several threads reading at once through one image. */
struct reader {
  pthread_t th;
  struct vmdk_image *img;
  const struct image_model *im;
  uint64_t seed, grain;
  const char *label;
};

static void *
reader_thread (void *arg)
{
  struct reader *rd = arg;
  struct rng r;
  unsigned i;
  uint64_t off;
  size_t len;

  rng_init (&r, rd->seed);
  for (i = 0; i < 300; ++i) {
    random_range (&r, rd->im, 3 * rd->grain, &off, &len);
    if (!check_one_read (rd->img, rd->im, off, len, rd->label))
      break;
  }
  release_read_buffer ();
  return NULL;
}

static void
check_threads (struct vmdk_image *img, const struct image_model *im,
               uint64_t grain, const char *label)
{
  struct reader rd[4];
  size_t i;

  for (i = 0; i < 4; ++i) {
    rd[i].img = img;
    rd[i].im = im;
    rd[i].seed = 1000 + i;
    rd[i].grain = grain;
    rd[i].label = label;
    CHECK (pthread_create (&rd[i].th, NULL, reader_thread, &rd[i]) == 0);
  }
  for (i = 0; i < 4; ++i)
    pthread_join (rd[i].th, NULL);
}

/* Monolithic sparse images of many shapes. */
struct sparse_case {
  const char *label;
  uint32_t version, flags;
  uint64_t capacity, grain;
  uint32_t gtes;
  bool scattered, embedded, rgd_garbage;
  unsigned pct_data, pct_zero, pct_holes;
  uint64_t cache;
  bool threads;
};

static const struct sparse_case cases[] = {
  /* QEMU-like: grain 64 KiB, capacity not a multiple of the grain. */
  { "v1 grain128 gtes64 contiguous embedded", 1,
    B_FLAG_NL_DETECT | B_FLAG_RGD, 40960 + 17, 128, 64,
    false, true, false, 60, 0, 0, 0, false },
  /* One entry per table: every grain its own table. */
  { "v2 grain1 gtes1 scattered holes", 2,
    B_FLAG_NL_DETECT | B_FLAG_RGD | B_FLAG_ZERO_GRAIN, 3000, 1, 1,
    true, false, false, 40, 30, 10, 0, false },
  /* Odd table size, partial last grain and last table. */
  { "v3 grain4 gtes3 contiguous", 3, B_FLAG_ZERO_GRAIN, 101, 4, 3,
    false, true, false, 40, 30, 20, 0, false },
  { "v2 grain8 gtes128 scattered rgd-garbage", 2,
    B_FLAG_ZERO_GRAIN | B_FLAG_RGD, 16384, 8, 128,
    true, true, true, 50, 20, 10, 0, false },
  /* Big tables; no descriptor at all. */
  { "v1 grain1 gtes4096 no-descriptor", 1, 0, 10240, 1, 4096,
    false, false, false, 70, 0, 0, 0, false },
  { "v3 grain256 gtes16 scattered", 3, B_FLAG_NL_DETECT, 16385, 256, 16,
    true, true, false, 60, 0, 20, 0, false },
  /* 1 MiB grains. */
  { "v1 grain2048 gtes2", 1, 0, 10240 + 3, 2048, 2,
    false, true, false, 50, 0, 0, 0, false },
  /* A 4 KiB cache: tables evicted all the time, 4 reader threads. */
  { "tiny cache scattered", 2, B_FLAG_ZERO_GRAIN | B_FLAG_RGD,
    16384, 8, 128, true, true, false, 50, 20, 10, 4096, true },
  { "tiny cache contiguous", 1, 0, 8192, 4, 512,
    false, false, false, 80, 0, 0, 4096, true },
  /* Nothing allocated; everything allocated. */
  { "empty", 1, B_FLAG_RGD, 4096, 16, 32, false, true, false, 0, 0, 0, 0,
    false },
  { "full contiguous", 2, B_FLAG_ZERO_GRAIN, 4096, 16, 32, false, true,
    false, 100, 0, 0, 0, false },
  { "full scattered", 2, B_FLAG_ZERO_GRAIN, 4096, 16, 32, true, true,
    false, 100, 0, 0, 0, false },
  { "all zeroed grains", 2, B_FLAG_ZERO_GRAIN, 4096, 16, 32, true, true,
    false, 0, 100, 0, 0, false },
};

static void
make_embedded_descriptor (struct bytes *t, uint64_t capacity)
{
  /* ovftool names the extent "generated-stream.vmdk" whatever the file
   * is called; the engine must read this file, never open that name.
   */
  desc_begin (t, "monolithicSparse");
  desc_extent (t, "RW", capacity, "SPARSE", "generated-stream.vmdk", -1);
  desc_end (t);
}

static void
run_sparse_case (const struct sparse_case *c, uint64_t seed)
{
  struct sparse_model m;
  struct sparse_opts o = { 0 };
  struct sparse_file f;
  struct image_model im;
  struct bytes desc = { 0 };
  struct vmdk_source *src;
  struct vmdk_image *img;
  struct rng r;
  uint64_t grain_bytes = c->grain * B_SECTOR;

  rng_init (&r, seed);
  sparse_model_init (&m, c->capacity, c->grain, c->gtes);
  sparse_model_randomize (&m, &r, c->pct_data, c->pct_zero, c->pct_holes);
  if (c->embedded)
    make_embedded_descriptor (&desc, c->capacity);
  o.version = c->version;
  o.flags = c->flags;
  o.scattered = c->scattered;
  o.rgd_garbage = c->rgd_garbage;
  o.descriptor = c->embedded ? (const char *) desc.data : NULL;
  o.seed = seed;
  build_sparse (&m, &o, &f);

  image_model_init (&im);
  image_model_add_sparse (&im, &m, c->scattered,
                          c->flags & B_FLAG_ZERO_GRAIN);

  src = vmdk_source_memory_new ();
  source_add (src, "disk.vmdk", f.file.data, f.file.len);
  img = open_mem (src, "disk.vmdk", c->cache);
  CHECK_MSG (img != NULL, "%s: open: %s", c->label, vmdk_errmsg ());
  if (img) {
    CHECK_EQ (vmdk_get_size (img), c->capacity * B_SECTOR);
    CHECK_EQ (vmdk_get_grain_size (img), grain_bytes);
    CHECK_EQ (vmdk_get_extent_count (img), 1);
    CHECK (strcmp (vmdk_get_create_type (img), "monolithicSparse") == 0);
    check_reads (img, &im, 1500, seed + 1, grain_bytes, c->label);
    check_maps (img, &im, 300, seed + 2, grain_bytes, c->label);
    if (c->threads)
      check_threads (img, &im, grain_bytes, c->label);
    vmdk_close (img);
  }
  image_model_free (&im);
  sparse_file_free (&f);
  sparse_model_free (&m);
  bytes_free (&desc);
}

static void
test_sparse_cases (void)
{
  size_t i;

  for (i = 0; i < sizeof cases / sizeof cases[0]; ++i)
    run_sparse_case (&cases[i], 0x1234 + i * 77);
}

/* Contiguous data grains come back as one run per grain table,
 * scattered ones as one run per grain.
 */
static void
test_merging (void)
{
  struct sparse_model m;
  struct sparse_opts o = { .version = 1 };
  struct sparse_file f;
  struct vmdk_source *src;
  struct vmdk_image *img;
  struct map_runs runs = { 0 };
  struct rng r;
  uint64_t g;
  int scattered;

  for (scattered = 0; scattered <= 1; ++scattered) {
    rng_init (&r, 99);
    /* 3 tables of 8 grains of 4 KiB, all allocated. */
    sparse_model_init (&m, 3 * 8 * 8, 8, 8);
    for (g = 0; g < m.nr_grains; ++g)
      sparse_model_set (&m, g, GS_DATA, &r);
    o.scattered = scattered;
    o.seed = 5;
    build_sparse (&m, &o, &f);
    src = vmdk_source_memory_new ();
    source_add (src, "m.vmdk", f.file.data, f.file.len);
    img = open_mem (src, "m.vmdk", 0);
    CHECK (img != NULL);
    if (img) {
      runs.n = 0;
      CHECK (vmdk_map (img, 0, vmdk_get_size (img), collect, &runs) == 0);
      if (!scattered) {
        CHECK_EQ (runs.n, 3);
        for (g = 0; g < runs.n && g < 3; ++g) {
          CHECK_EQ (runs.v[g].off, g * 8 * 4096);
          CHECK_EQ (runs.v[g].len, 8 * 4096);
          CHECK_EQ (runs.v[g].type, VMDK_MAP_DATA);
        }
      }
      else {
        CHECK_EQ (runs.n, 24);
        for (g = 0; g < runs.n && g < 24; ++g) {
          CHECK_EQ (runs.v[g].off, g * 4096);
          CHECK_EQ (runs.v[g].len, 4096);
        }
      }
      /* Starting mid-grain: the first run starts there. */
      runs.n = 0;
      CHECK (vmdk_map (img, 4096 + 100, 10, collect, &runs) == 0);
      CHECK (runs.n >= 1);
      if (runs.n >= 1) {
        CHECK_EQ (runs.v[0].off, 4096 + 100);
        CHECK (runs.v[0].off + runs.v[0].len >= 4096 + 110);
      }
      /* The callback can stop early, or fail. */
      runs.n = 0;
      runs.stop_after = 2;
      CHECK (vmdk_map (img, 0, vmdk_get_size (img), collect, &runs) == 0);
      CHECK_EQ (runs.n, 2);
      runs.stop_after = 0;
      runs.fail = true;
      errno = 0;
      CHECK (vmdk_map (img, 0, vmdk_get_size (img), collect, &runs) == -1);
      CHECK_EQ (errno, ENOSPC);
      runs.fail = false;
      vmdk_close (img);
    }
    sparse_file_free (&f);
    sparse_model_free (&m);
  }
  free (runs.v);
}

/* SPARSE + FLAT + ZERO + VMFS + FLAT (same file) + VMFSSPARSE + SPARSE. */
static void
test_multi_extent (void)
{
  struct sparse_model m1, m2, m3;
  struct sparse_opts o1 = { .version = 2, .flags = B_FLAG_ZERO_GRAIN,
                            .scattered = true, .seed = 11 };
  struct sparse_opts o2 = { .version = 1, .flags = B_FLAG_RGD, .seed = 12 };
  struct sparse_opts o3 = { .version = 3, .flags = B_FLAG_ZERO_GRAIN,
                            .seed = 13 };
  struct sparse_file f1, f2, f3;
  struct bytes flat = { 0 }, vmfs = { 0 }, desc = { 0 };
  struct image_model im;
  struct vmdk_source *src;
  struct vmdk_image *img;
  struct rng r;

  rng_init (&r, 77);
  sparse_model_init (&m1, 1000 + 5, 16, 32);
  sparse_model_randomize (&m1, &r, 50, 20, 10);
  sparse_model_init (&m2, 2048 + 100, 128, 4);
  sparse_model_randomize (&m2, &r, 60, 0, 0);
  sparse_model_init (&m3, 777, 1, 1000);
  sparse_model_randomize (&m3, &r, 50, 30, 0);
  build_sparse (&m1, &o1, &f1);
  build_sparse (&m2, &o2, &f2);
  build_sparse (&m3, &o3, &f3);

  /* flat.bin: 7 sectors of junk, 300 sectors of data at sector 7,
   * junk, 200 sectors of data at sector 400, junk after.
   */
  bytes_fill_at (&flat, 0, 0, 700 * B_SECTOR);
  rng_fill (&r, flat.data, flat.len);
  bytes_fill_at (&vmfs, 0, 0, 129 * B_SECTOR);
  rng_fill (&r, vmfs.data, vmfs.len);

  desc_begin (&desc, "custom");
  desc_extent (&desc, "RW", m1.capacity, "SPARSE", "s1.vmdk", -1);
  desc_extent (&desc, "RW", 300, "FLAT", "flat.bin", 7);
  desc_extent (&desc, "RDONLY", 1000, "ZERO", NULL, -1);
  desc_extent (&desc, "RW", 129, "VMFS", "vmfs-flat.vmdk", -1);
  desc_extent (&desc, "RDONLY", 200, "FLAT", "flat.bin", 400);
  desc_extent (&desc, "RW", m2.capacity, "VMFSSPARSE", "s2.vmdk", -1);
  desc_extent (&desc, "RW", m3.capacity, "SPARSE", "s3.vmdk", -1);
  desc_end (&desc);

  image_model_init (&im);
  image_model_add_sparse (&im, &m1, true, true);
  image_model_add_flat (&im, flat.data + 7 * B_SECTOR, 300);
  image_model_add_zero (&im, 1000);
  image_model_add_flat (&im, vmfs.data, 129);
  image_model_add_flat (&im, flat.data + 400 * B_SECTOR, 200);
  image_model_add_sparse (&im, &m2, false, false);
  image_model_add_sparse (&im, &m3, false, true);

  src = vmdk_source_memory_new ();
  source_add (src, "multi.vmdk", desc.data, desc.len);
  source_add (src, "s1.vmdk", f1.file.data, f1.file.len);
  source_add (src, "s2.vmdk", f2.file.data, f2.file.len);
  source_add (src, "s3.vmdk", f3.file.data, f3.file.len);
  source_add (src, "flat.bin", flat.data, flat.len);
  source_add (src, "vmfs-flat.vmdk", vmfs.data, vmfs.len);
  img = open_mem (src, "multi.vmdk", 0);
  CHECK_MSG (img != NULL, "open: %s", vmdk_errmsg ());
  if (img) {
    CHECK_EQ (vmdk_get_extent_count (img), 7);
    CHECK_EQ (vmdk_get_grain_size (img), 128 * B_SECTOR);
    CHECK (strcmp (vmdk_get_create_type (img), "custom") == 0);
    check_reads (img, &im, 3000, 21, 64 * 1024, "multi");
    check_maps (img, &im, 500, 22, 64 * 1024, "multi");
    check_threads (img, &im, 64 * 1024, "multi");
    vmdk_close (img);
  }

  /* Flat only: the preferred block size is a default. */
  bytes_free (&desc);
  desc_begin (&desc, "monolithicFlat");
  desc_extent (&desc, "RW", 300, "FLAT", "flat.bin", 7);
  desc_end (&desc);
  src = vmdk_source_memory_new ();
  source_add (src, "f.vmdk", desc.data, desc.len);
  source_add (src, "flat.bin", flat.data, flat.len);
  img = open_mem (src, "f.vmdk", 0);
  CHECK (img != NULL);
  if (img) {
    unsigned char buf[B_SECTOR];

    CHECK_EQ (vmdk_get_size (img), 300 * B_SECTOR);
    CHECK (vmdk_get_grain_size (img) >= 512);
    CHECK (vmdk_pread (img, buf, sizeof buf, 299 * B_SECTOR) == 0);
    CHECK (memcmp (buf, flat.data + 306 * B_SECTOR, B_SECTOR) == 0);
    vmdk_close (img);
  }

  image_model_free (&im);
  sparse_file_free (&f1);
  sparse_file_free (&f2);
  sparse_file_free (&f3);
  sparse_model_free (&m1);
  sparse_model_free (&m2);
  sparse_model_free (&m3);
  bytes_free (&flat);
  bytes_free (&vmfs);
  bytes_free (&desc);
}

/* NOACCESS extents: reads touching them fail with EIO, the rest reads
 * fine; block status calls them data.
 */
static void
test_noaccess (void)
{
  struct sparse_model m;
  struct sparse_opts o = { .version = 1, .seed = 3 };
  struct sparse_file f;
  struct bytes flat = { 0 }, desc = { 0 };
  struct image_model im;
  struct vmdk_source *src;
  struct vmdk_image *img;
  struct rng r;
  unsigned char buf[1024];

  rng_init (&r, 5);
  sparse_model_init (&m, 512, 8, 16);
  sparse_model_randomize (&m, &r, 70, 0, 0);
  build_sparse (&m, &o, &f);
  bytes_fill_at (&flat, 0, 0, 256 * B_SECTOR);
  rng_fill (&r, flat.data, flat.len);

  desc_begin (&desc, "custom");
  desc_extent (&desc, "RW", 512, "SPARSE", "s.vmdk", -1);
  desc_extent (&desc, "NOACCESS", 100, "FLAT", "flat.bin", 0);
  desc_extent (&desc, "RDONLY", 156, "FLAT", "flat.bin", 100);
  desc_extent (&desc, "NOACCESS", 10, "ZERO", NULL, -1);
  desc_end (&desc);

  image_model_init (&im);
  image_model_add_sparse (&im, &m, false, false);
  image_model_add_noaccess (&im, 100);
  image_model_add_flat (&im, flat.data + 100 * B_SECTOR, 156);
  image_model_add_noaccess (&im, 10);

  src = vmdk_source_memory_new ();
  source_add (src, "na.vmdk", desc.data, desc.len);
  source_add (src, "s.vmdk", f.file.data, f.file.len);
  source_add (src, "flat.bin", flat.data, flat.len);
  img = open_mem (src, "na.vmdk", 0);
  CHECK_MSG (img != NULL, "open: %s", vmdk_errmsg ());
  if (img) {
    check_reads (img, &im, 1000, 8, 4096, "noaccess");
    check_maps (img, &im, 200, 9, 4096, "noaccess");
    /* The message names the extent. */
    errno = 0;
    CHECK (vmdk_pread (img, buf, 1024, 512 * B_SECTOR - 512) == -1);
    CHECK_ERROR (errno, EIO, "na.vmdk", "NOACCESS");
    vmdk_close (img);
  }
  image_model_free (&im);
  sparse_file_free (&f);
  sparse_model_free (&m);
  bytes_free (&flat);
  bytes_free (&desc);
}

/* Build a v1/v2 image of 4 tables x 16 grains x 4 KiB, with grains
 * 17, 18 and 19 allocated (in table 1), and open it after corrupt()
 * has patched the file.
 */
struct corrupt_img {
  struct sparse_model m;
  struct sparse_file f;
  struct image_model im;
  struct vmdk_image *img;
};

static void
corrupt_open (struct corrupt_img *c, uint32_t flags, bool scattered,
              void (*corrupt) (struct corrupt_img *c))
{
  struct sparse_opts o = { .version = 2, .flags = flags,
                           .scattered = scattered, .seed = 8 };
  struct vmdk_source *src;
  struct rng r;

  rng_init (&r, 31);
  sparse_model_init (&c->m, 4 * 16 * 8, 8, 16);
  sparse_model_randomize (&c->m, &r, 60, flags & B_FLAG_ZERO_GRAIN ? 20 : 0,
                          0);
  sparse_model_set (&c->m, 17, GS_DATA, &r);
  sparse_model_set (&c->m, 18, GS_DATA, &r);
  sparse_model_set (&c->m, 19, GS_DATA, &r);
  build_sparse (&c->m, &o, &c->f);
  image_model_init (&c->im);
  image_model_add_sparse (&c->im, &c->m, scattered,
                          flags & B_FLAG_ZERO_GRAIN);
  corrupt (c);
  src = vmdk_source_memory_new ();
  source_add (src, "bad.vmdk", c->f.file.data, c->f.file.len);
  c->img = open_mem (src, "bad.vmdk", 0);
  CHECK_MSG (c->img != NULL, "open: %s", vmdk_errmsg ());
}

static void
corrupt_close (struct corrupt_img *c)
{
  vmdk_close (c->img);
  image_model_free (&c->im);
  sparse_file_free (&c->f);
  sparse_model_free (&c->m);
}

static void
gte_past_eof (struct corrupt_img *c)
{
  sparse_file_set_gte (&c->f, 18, 0x7fffff00);
  image_model_mark_eio (&c->im, 18 * 4096, 4096);
}

static void
gte_at_eof (struct corrupt_img *c)
{
  sparse_file_set_gte (&c->f, 18, c->f.file.len / B_SECTOR);
  image_model_mark_eio (&c->im, 18 * 4096, 4096);
}

static void
gde_outside (struct corrupt_img *c)
{
  sparse_file_set_gde (&c->f, 2, 0x7fffff00);
  image_model_mark_eio (&c->im, 2 * 16 * 4096, 16 * 4096);
}

static void
gte_one_without_flag (struct corrupt_img *c)
{
  /* A zeroed-grain GTE in an image without the zeroed-grain flag. */
  sparse_file_set_gte (&c->f, 18, 1);
  image_model_mark_eio (&c->im, 18 * 4096, 4096);
}

static void
check_corrupt_grain (struct corrupt_img *c, const char *label)
{
  unsigned char buf[4096];

  if (c->img == NULL)
    return;
  /* The neighbours read fine, each whole. */
  CHECK_MSG (vmdk_pread (c->img, buf, 4096, 17 * 4096) == 0 &&
             memcmp (buf, c->im.bytes + 17 * 4096, 4096) == 0,
             "%s: grain 17", label);
  CHECK_MSG (vmdk_pread (c->img, buf, 4096, 19 * 4096) == 0 &&
             memcmp (buf, c->im.bytes + 19 * 4096, 4096) == 0,
             "%s: grain 19", label);
  /* The grain itself, any part of it, or a read crossing into it. */
  errno = 0;
  CHECK_MSG (vmdk_pread (c->img, buf, 4096, 18 * 4096) == -1 &&
             errno == EIO, "%s: grain 18 read", label);
  CHECK_MSG (strstr (vmdk_errmsg (), "bad.vmdk") != NULL, "%s: %s", label,
             vmdk_errmsg ());
  errno = 0;
  CHECK_MSG (vmdk_pread (c->img, buf, 1, 19 * 4096 - 1) == -1 &&
             errno == EIO, "%s: last byte of grain 18", label);
  errno = 0;
  CHECK_MSG (vmdk_pread (c->img, buf, 2, 18 * 4096 - 1) == -1 &&
             errno == EIO, "%s: read crossing into grain 18", label);
  check_reads (c->img, &c->im, 1000, 4, 4096, label);
  /* Block status of the neighbours works; of the bad grain it fails. */
  CHECK_MSG (check_map (c->img, &c->im, 17 * 4096, 4096, label) == 0 &&
             check_map (c->img, &c->im, 19 * 4096, 4096, label) == 0 &&
             check_map (c->img, &c->im, 0, 16 * 4096, label) == 0,
             "%s: map of the neighbours: %s", label, vmdk_errmsg ());
  errno = 0;
  CHECK_MSG (check_map (c->img, &c->im, 18 * 4096 + 5, 10, label) == -1 &&
             errno == EIO, "%s: map of grain 18", label);
}

static void
test_corrupt (void)
{
  struct corrupt_img c;
  unsigned char buf[4096];
  int scattered;

  for (scattered = 0; scattered <= 1; ++scattered) {
    corrupt_open (&c, B_FLAG_ZERO_GRAIN, scattered, gte_past_eof);
    if (c.img) {
      check_corrupt_grain (&c, "GTE past EOF");
      errno = 0;
      vmdk_pread (c.img, buf, 1, 18 * 4096);
      CHECK_ERROR (errno, EIO, "bad.vmdk", "outside the file");
    }
    corrupt_close (&c);

    corrupt_open (&c, B_FLAG_ZERO_GRAIN, scattered, gte_at_eof);
    check_corrupt_grain (&c, "GTE at EOF");
    corrupt_close (&c);

    corrupt_open (&c, 0, scattered, gte_one_without_flag);
    check_corrupt_grain (&c, "GTE 1 without the zeroed-grain flag");
    corrupt_close (&c);

    /* A table outside the file: its whole range fails, nothing else. */
    corrupt_open (&c, B_FLAG_ZERO_GRAIN, scattered, gde_outside);
    if (c.img) {
      check_reads (c.img, &c.im, 1000, 6, 4096, "GDE outside");
      CHECK (check_map (c.img, &c.im, 0, 2 * 16 * 4096, "GDE") == 0);
      CHECK (check_map (c.img, &c.im, 3 * 16 * 4096, 16 * 4096, "GDE") == 0);
      errno = 0;
      CHECK (check_map (c.img, &c.im, 2 * 16 * 4096, 1, "GDE") == -1);
      CHECK_EQ (errno, EIO);
      errno = 0;
      CHECK (vmdk_pread (c.img, buf, 1, 3 * 16 * 4096 - 1) == -1);
      CHECK_ERROR (errno, EIO, "bad.vmdk", "grain directory entry 2");
    }
    corrupt_close (&c);
  }
}

/* Open errors: a clear errno and a message naming the file. */
#define OPEN_FAILS(src, name, e, ...)                                   \
  do {                                                                  \
    struct vmdk_image *_img;                                            \
    int _e;                                                             \
    errno = 0;                                                          \
    _img = open_mem ((src), (name), 0);                                 \
    _e = errno;                                                         \
    CHECK_MSG (_img == NULL, "%s opened", (name));                      \
    if (_img == NULL)                                                   \
      CHECK_ERROR (_e, (e), __VA_ARGS__);                               \
    vmdk_close (_img);                                                  \
  } while (0)

static struct vmdk_source *
one_file (const char *name, const void *data, size_t len)
{
  struct vmdk_source *src = vmdk_source_memory_new ();

  source_add (src, name, data, len);
  return src;
}

static void
test_open_errors (void)
{
  struct sparse_model m;
  struct sparse_opts o = { .version = 1, .seed = 1 };
  struct sparse_file f;
  struct bytes desc = { 0 }, b = { 0 };
  struct vmdk_source *src;
  struct rng r;
  unsigned char junk[4096];

  rng_init (&r, 2);
  sparse_model_init (&m, 256, 8, 16);
  sparse_model_randomize (&m, &r, 50, 0, 0);
  build_sparse (&m, &o, &f);

  /* The main file does not exist. */
  OPEN_FAILS (vmdk_source_memory_new (), "absent.vmdk", ENOENT,
              "absent.vmdk");

  /* An extent file is missing. */
  desc_begin (&desc, "twoGbMaxExtentSparse");
  desc_extent (&desc, "RW", 256, "SPARSE", "disk-s001.vmdk", -1);
  desc_extent (&desc, "RW", 256, "SPARSE", "nothere-s002.vmdk", -1);
  desc_end (&desc);
  src = vmdk_source_memory_new ();
  source_add (src, "split.vmdk", desc.data, desc.len);
  source_add (src, "disk-s001.vmdk", f.file.data, f.file.len);
  OPEN_FAILS (src, "split.vmdk", ENOENT, "split.vmdk", "nothere-s002.vmdk");

  /* Binary junk, and an empty file. */
  rng_fill (&r, junk, sizeof junk);
  memcpy (junk, "\x7f" "ELF", 4);
  OPEN_FAILS (one_file ("junk.vmdk", junk, sizeof junk), "junk.vmdk",
              EINVAL, "junk.vmdk", "not a VMDK");
  OPEN_FAILS (one_file ("empty.vmdk", "", 0), "empty.vmdk", EINVAL,
              "empty.vmdk");
  /* Text that is not a descriptor. */
  OPEN_FAILS (one_file ("readme.vmdk", "hello\n", 6), "readme.vmdk",
              EINVAL, "readme.vmdk");

  /* Truncated sparse headers, as the main file or as an extent. */
  OPEN_FAILS (one_file ("trunc.vmdk", f.file.data, 100), "trunc.vmdk",
              EINVAL, "trunc.vmdk", "truncated");
  OPEN_FAILS (one_file ("tiny.vmdk", "KDMV", 4), "tiny.vmdk",
              EINVAL, "tiny.vmdk", "truncated");
  bytes_free (&desc);
  desc_begin (&desc, "monolithicSparse");
  desc_extent (&desc, "RW", 256, "SPARSE", "short.vmdk", -1);
  desc_end (&desc);
  src = vmdk_source_memory_new ();
  source_add (src, "d.vmdk", desc.data, desc.len);
  source_add (src, "short.vmdk", f.file.data, 300);
  OPEN_FAILS (src, "d.vmdk", EIO, "d.vmdk", "short.vmdk");

  /* An extent with neither magic. */
  src = vmdk_source_memory_new ();
  source_add (src, "d.vmdk", desc.data, desc.len);
  source_add (src, "short.vmdk", junk, sizeof junk);
  OPEN_FAILS (src, "d.vmdk", EINVAL, "d.vmdk", "short.vmdk", "magic");

  /* A bad header field in an extent: the message names the field. */
  bytes_put_at (&b, 0, f.file.data, f.file.len);
  b_put_le32 (b.data + 4, 4);
  src = vmdk_source_memory_new ();
  source_add (src, "d.vmdk", desc.data, desc.len);
  source_add (src, "short.vmdk", b.data, b.len);
  OPEN_FAILS (src, "d.vmdk", ENOTSUP, "short.vmdk", "version 4");
  OPEN_FAILS (one_file ("v4.vmdk", b.data, b.len), "v4.vmdk", ENOTSUP,
              "v4.vmdk", "version 4");
  bytes_free (&b);

  /* The grain directory beyond the end of the file. */
  bytes_put_at (&b, 0, f.file.data, f.file.len);
  b_put_le64 (b.data + 56, 0x7fffffff);
  OPEN_FAILS (one_file ("gd.vmdk", b.data, b.len), "gd.vmdk", EINVAL,
              "gd.vmdk", "grain directory");
  bytes_free (&b);

  /* An embedded descriptor with two extents. */
  bytes_free (&desc);
  desc_begin (&desc, "monolithicSparse");
  desc_extent (&desc, "RW", 128, "SPARSE", "a.vmdk", -1);
  desc_extent (&desc, "RW", 128, "SPARSE", "b.vmdk", -1);
  desc_end (&desc);
  o.descriptor = (const char *) desc.data;
  sparse_file_free (&f);
  build_sparse (&m, &o, &f);
  OPEN_FAILS (one_file ("two.vmdk", f.file.data, f.file.len), "two.vmdk",
              EINVAL, "two.vmdk", "embedded descriptor");

  /* A broken embedded descriptor. */
  o.descriptor = "createType=\"monolithicSparse\"\nRW 256 SPARSE\n";
  sparse_file_free (&f);
  build_sparse (&m, &o, &f);
  OPEN_FAILS (one_file ("bd.vmdk", f.file.data, f.file.len), "bd.vmdk",
              EINVAL, "bd.vmdk", "missing file name");

  /* A snapshot (delta) whose parent is missing. */
  bytes_free (&desc);
  bytes_printf (&desc, "# Disk DescriptorFile\nversion=1\nCID=12345678\n"
                "parentCID=87654321\ncreateType=\"monolithicSparse\"\n"
                "parentFileNameHint=\"base.vmdk\"\n"
                "RW 256 SPARSE \"delta-s.vmdk\"\n");
  src = vmdk_source_memory_new ();
  source_add (src, "delta.vmdk", desc.data, desc.len);
  source_add (src, "delta-s.vmdk", f.file.data, f.file.len);
  OPEN_FAILS (src, "delta.vmdk", ENOENT, "delta.vmdk", "base.vmdk");

  bytes_free (&desc);
  sparse_file_free (&f);
  sparse_model_free (&m);
}

int
main (void)
{
  test_sparse_cases ();
  test_merging ();
  test_multi_extent ();
  test_noaccess ();
  test_corrupt ();
  test_open_errors ();
  return test_exit ("test-image");
}
