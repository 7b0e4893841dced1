/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* An in-memory VMDK builder for the unit tests, written from the format
 * description (shared/VMDK-FORMAT.md b.1-b.3, b.7), independently of
 * lib/: it never calls the engine's encoders, so a test never computes
 * its expectation with the code under test.
 *
 * A test describes what the disk should contain (a "model": the virtual
 * bytes and, per grain, whether it is allocated, a zeroed grain or
 * unallocated), builds files from it, adds them to a memory source and
 * checks what the engine reads against the model.
 */

#ifndef VMDK_TEST_BUILDER_H
#define VMDK_TEST_BUILDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

/* On-disk constants, from the format description. */
#define B_SECTOR 512
#define B_FLAG_NL_DETECT    0x00001
#define B_FLAG_RGD          0x00002
#define B_FLAG_ZERO_GRAIN   0x00004
#define B_FLAG_COMPRESSED   0x10000
#define B_FLAG_MARKERS      0x20000

/* Allocation that never fails (aborts instead). */
extern void *xmalloc (size_t n);
extern void *xcalloc (size_t n, size_t size);
extern char *xstrdup (const char *s);

/* Little-endian stores, byte by byte. */
extern void b_put_le16 (unsigned char *p, uint16_t v);
extern void b_put_le32 (unsigned char *p, uint32_t v);
extern void b_put_le64 (unsigned char *p, uint64_t v);

/* A small deterministic PRNG (splitmix64). */
struct rng {
  uint64_t s;
};
extern void rng_init (struct rng *r, uint64_t seed);
extern uint64_t rng_next (struct rng *r);
extern uint64_t rng_below (struct rng *r, uint64_t n);  /* n > 0 */
extern void rng_fill (struct rng *r, void *buf, size_t len);

/* A growable byte buffer (also used for text). */
struct bytes {
  unsigned char *data;
  size_t len, cap;
};
extern void bytes_put_at (struct bytes *b, size_t offset, const void *data,
                          size_t len);
extern void bytes_fill_at (struct bytes *b, size_t offset, int c, size_t len);
extern void bytes_append (struct bytes *b, const void *data, size_t len);
extern void bytes_printf (struct bytes *b, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));
extern void bytes_free (struct bytes *b);

/* The model of one hosted sparse extent. */
enum grain_state { GS_UNALLOC, GS_ZERO, GS_DATA };

struct sparse_model {
  uint64_t capacity;            /* sectors */
  uint64_t grain_sectors;
  uint32_t gtes_per_gt;
  uint64_t nr_grains;           /* ceil (capacity / grain_sectors) */
  uint64_t nr_gts;              /* ceil (capacity / (grain x gtes)) */
  uint8_t *state;               /* per grain: enum grain_state */
  bool *gd_hole;                /* per table: GDE 0, no table written */
  /* nr_grains whole grains: the expected contents of the first
   * capacity sectors, then junk (the tail of a partial last grain,
   * which must never be read).
   */
  unsigned char *bytes;
};

/* All grains unallocated. */
extern void sparse_model_init (struct sparse_model *m, uint64_t capacity,
                               uint64_t grain_sectors, uint32_t gtes_per_gt);
/* Set one grain; DATA grains get random contents from r. */
extern void sparse_model_set (struct sparse_model *m, uint64_t grain,
                              enum grain_state st, struct rng *r);
/* Make a table a GD hole (its grains become unallocated). */
extern void sparse_model_set_hole (struct sparse_model *m, uint64_t table);
/* Random states: pct_data % data grains, pct_zero % zeroed grains,
 * pct_holes % of the tables GD holes; and, so runs exist, stretches of
 * like grains.
 */
extern void sparse_model_randomize (struct sparse_model *m, struct rng *r,
                                    unsigned pct_data, unsigned pct_zero,
                                    unsigned pct_holes);
extern void sparse_model_free (struct sparse_model *m);

struct sparse_opts {
  uint32_t version;             /* 1, 2 or 3 */
  uint32_t flags;               /* B_FLAG_* */
  /* false: QEMU's layout, grains in virtual order, physically
   * contiguous.  true: grains in random order with junk between every
   * two of them, tables after the grains, GD last.
   */
  bool scattered;
  bool rgd_garbage;             /* redundant tables hold random junk */
  const char *descriptor;       /* embedded descriptor text, or NULL */
  uint64_t desc_sectors;        /* 0: just enough (plus NUL padding) */
  uint8_t unclean_shutdown;
  uint64_t seed;                /* for junk and placement */
};

struct sparse_file {
  struct bytes file;
  uint64_t gd_sector, rgd_sector, overhead;
  uint64_t nr_gts, nr_grains;
  uint32_t gtes_per_gt;
  uint64_t *gt_sector;          /* per table, 0 for a GD hole */
  uint64_t *gte;                /* per grain, the GTE written */
};

extern void build_sparse (const struct sparse_model *m,
                          const struct sparse_opts *o, struct sparse_file *f);
/* Corrupt (or set) one grain-table / grain-directory entry. */
extern void sparse_file_set_gte (struct sparse_file *f, uint64_t grain,
                                 uint32_t v);
extern void sparse_file_set_gde (struct sparse_file *f, uint64_t table,
                                 uint32_t v);
extern void sparse_file_free (struct sparse_file *f);

/* Descriptor text. */
extern void desc_begin (struct bytes *t, const char *create_type);
/* offset < 0: none written. */
extern void desc_extent (struct bytes *t, const char *access,
                         uint64_t sectors, const char *type,
                         const char *file, int64_t offset);
extern void desc_end (struct bytes *t);   /* adds the DDB and a NUL */

/* Add a file to a memory source; aborts on failure. */
extern void source_add (struct vmdk_source *src, const char *name,
                        const void *data, size_t len);

/* The model of a whole image, extent after extent. */
enum { SPLIT_ANY = 1, SPLIT_DATA = 2 };

struct image_model {
  uint64_t size;                /* bytes */
  unsigned char *bytes;
  uint8_t *type;                /* per sector: enum vmdk_map_type */
  /* per sector: where a run may end and the next of the same type
   * begin.  SPLIT_ANY: at a grain-table or extent boundary.
   * SPLIT_DATA: at a boundary between physically non-contiguous
   * grains, where DATA runs must split.
   */
  uint8_t *split;
  uint8_t *eio;                 /* per sector: reads must fail with EIO */
  uint64_t *points;             /* interesting offsets (boundaries) */
  size_t nr_points, cap_points;
  size_t cap_sectors;
};

extern void image_model_init (struct image_model *im);
extern void image_model_add_sparse (struct image_model *im,
                                    const struct sparse_model *m,
                                    bool scattered, bool zero_flag);
extern void image_model_add_flat (struct image_model *im,
                                  const unsigned char *data,
                                  uint64_t sectors);
extern void image_model_add_zero (struct image_model *im, uint64_t sectors);
extern void image_model_add_noaccess (struct image_model *im,
                                      uint64_t sectors);
/* Mark [offset, offset+len) (bytes, sector-aligned) as failing. */
extern void image_model_mark_eio (struct image_model *im, uint64_t offset,
                                  uint64_t len);
extern void image_model_free (struct image_model *im);

#endif /* VMDK_TEST_BUILDER_H */
