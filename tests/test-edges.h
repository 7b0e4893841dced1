/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Shared declarations of the libnbd edge test (test-edges*.c). */

#ifndef TEST_EDGES_H
#define TEST_EDGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#define KiB ((uint64_t) 1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

/* qemu-img's sparse VMDKs: 64 KiB grains, 512 entries per grain table
 * (so one table maps 32 MiB), and 2 GiB extent files for twoGb*.
 */
#define GRAIN (64 * KiB)
#define GT_SPAN (32 * MiB)
#define EXTENT_SPAN (2 * GiB)

/* Largest single read issued by the test. */
#define MAX_READ (64 * MiB)

/* The raw reference disk the VMDKs were converted from. */
struct reference {
  const char *path;
  int fd;
  uint64_t size;
};

/* Offsets where something changes (grain, table, extent boundaries and
 * the edges of the data written into the reference), ascending.
 */
struct points {
  uint64_t *v;
  size_t n;
};

/* test-edges.c */
extern unsigned failures;
extern const char *plugin;
extern void fail (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
extern void *xmalloc (size_t n);
extern void *xrealloc (void *p, size_t n);
extern uint64_t rnd (void);          /* main thread only */
extern uint64_t rnd_r (uint64_t *state);
extern int run (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
extern struct nbd_handle *connect_image (const char *vmdk, bool meta,
                                         const char *opt);

/* test-edges-check.c */
extern bool ref_read (const struct reference *ref, void *buf, size_t len,
                      uint64_t offset);
extern int64_t first_nonzero (const void *buf, size_t len);
extern bool compare_buffers (const char *name, const char *what,
                             const unsigned char *got,
                             const unsigned char *expected,
                             uint64_t offset, size_t len);
extern void check_size_and_readonly (struct nbd_handle *nbd,
                                     const char *name,
                                     const struct reference *ref,
                                     const char *how);
extern void check_reads (struct nbd_handle *nbd, const char *name,
                         const struct reference *ref,
                         const struct points *pts);
extern void check_block_status (struct nbd_handle *nbd, const char *name,
                                const struct reference *ref,
                                const struct points *pts);
extern void check_full_map (struct nbd_handle *nbd, const char *name,
                            const struct reference *ref);

/* test-edges-corrupt.c */
extern void check_corrupt (const char *scratch);

/* test-edges-parallel.c */
extern void check_parallel (const char *vmdk, const char *name,
                            const struct reference *ref,
                            const struct points *pts,
                            const char *scratch);

#endif /* TEST_EDGES_H */
