/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* What the parts of the streamOptimized writer share: the grain
 * buffers and their states (stream-write.c explains them), kept by
 * stream-write-buffers.c and stored by stream-write-store.c.
 */

#ifndef VMDK_STREAM_WRITE_INTERNAL_H
#define VMDK_STREAM_WRITE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checked.h"
#include "header.h"
#include "stream-map.h"
#include "stream-write.h"

/* Raw grain buffers (FILLING and SEALED). */
#define MAX_RAW_BYTES (32 * 1024 * 1024)
/* Compressed grains waiting for their turn; twice this stops writers
 * while a flush writes the tail.
 */
#define REORDER_BYTES (64 * 1024 * 1024)
/* Stored grains are handed to writeback in runs of this many bytes,
 * so that a flush finds little left to write (the final flush of a 2 GiB
 * nbdcopy waited 0.7 s for it otherwise).
 */
#define WRITEBACK_BYTES (8 * 1024 * 1024)
/* Sparse extent files address sectors with 32-bit entries. */
#define MAX_STREAM_BYTES ((UINT64_C (1) << 32) * SECTOR)
/* Buffers kept for reuse: allocating and freeing one per grain costs
 * page faults as the heap grows and shrinks.
 */
#define POOL_SIZE 64

enum gbuf_state { FILLING, SEALED, READY, WRITING };

struct pool {
  void *free[POOL_SIZE];
  unsigned n;
  size_t bytes;                 /* of each buffer */
};

struct gbuf {
  uint64_t g;                   /* grain index in the extent */
  enum gbuf_state state;
  uint64_t stamp;               /* creation order (flushes cover older) */
  unsigned char *raw;           /* FILLING, SEALED */
  const unsigned char *borrowed; /* SEALED: a whole-grain write's bytes */
  uint8_t *covered;             /* FILLING: a bit per sector written */
  uint32_t nr_covered;
  unsigned char *blob;          /* READY, WRITING: marker + data, padded */
  size_t blob_len;              /* a multiple of the sector size */
  struct gbuf *hnext;           /* hash chain */
  struct gbuf *fprev, *fnext;   /* FILLING list, oldest first */
  size_t heap_pos;              /* READY: index in the heap */
};

struct stream_writer {
  struct vmdk_io *io;
  struct stream *reader;
  struct sparse_header header;  /* as it must be on disk */
  struct stream_map map;
  uint64_t grain_bytes, extent_length, extent_start;
  int level;
  size_t blob_cap;              /* room for a marker and any compressed grain */
  bool has_parent;

  pthread_mutex_t lock;         /* everything below */
  pthread_cond_t cond;          /* any buffer or flush state changed */
  struct gbuf **hash;
  size_t hash_size;
  struct gbuf *filling_head, *filling_tail;
  struct gbuf **heap;
  size_t heap_len, heap_alloc;
  uint64_t next_stamp;
  size_t raw_bytes, ready_bytes;
  unsigned raw_waiters;
  uint64_t next_expected;       /* the grain that would keep order */
  uint64_t data_end;            /* where the next grain goes */
  uint64_t writeback_from;      /* stored data not yet handed to writeback */
  uint64_t file_end;
  bool tail_valid;              /* the file ends with a valid tail */
  bool changed;                 /* the map changed since the last tail */
  unsigned inflight;            /* WRITING */
  bool pumping;                 /* a thread is storing READY grains */
  bool flushing;
  int error;                    /* sticky: a stored grain was lost */
  char errmsg[256];
  struct pool raws, blobs;      /* of grain_bytes and blob_cap bytes */
};

/* The number of bytes of grain g (the last may be cut by the extent). */
static inline uint64_t
grain_len (const struct stream_writer *w, uint64_t g)
{
  return MIN (w->grain_bytes, w->extent_length - g * w->grain_bytes);
}

/* Buffers (stream-write-buffers.c); all with the lock held. */

/* The FILLING buffer of grain g (filling = true), or the one past it. */
extern struct gbuf *gbuf_find (const struct stream_writer *w, uint64_t g,
                               bool filling);
/* A new buffer for grain g, in the hash. */
extern struct gbuf *gbuf_new (struct stream_writer *w, uint64_t g,
                              enum gbuf_state state);
/* A new FILLING buffer for grain g, with its raw buffer, the newest. */
extern struct gbuf *gbuf_new_filling (struct stream_writer *w, uint64_t g);
extern void gbuf_unlink_filling (struct stream_writer *w, struct gbuf *b);
/* Give back a buffer's raw bytes and sector bits. */
extern void gbuf_free_raw (struct stream_writer *w, struct gbuf *b);
/* The buffer's grain is stored (or dropped): forget it. */
extern void gbuf_finish (struct stream_writer *w, struct gbuf *b);

/* The READY heap, lowest grain first. */
extern bool ready_heap_less (const struct gbuf *a, const struct gbuf *b);
extern int ready_heap_push (struct stream_writer *w, struct gbuf *b);
extern void ready_heap_remove (struct stream_writer *w, struct gbuf *b);

/* Buffers of the pool's size, kept for reuse. */
extern void *buf_pool_get (struct pool *p);
extern void buf_pool_put (struct pool *p, void *buf);
extern void buf_pool_free (struct pool *p);

/* The first error of storing a grain is sticky: every later request
 * (reads and block status too) and flush fails with it.
 */
extern void writer_set_error (struct stream_writer *w);
extern int writer_check_error (const struct stream_writer *w);
extern int writer_check_readable (const struct stream_writer *w);

/* Storing (stream-write-store.c); all with the lock held, which they
 * drop while compressing or writing.
 */

/* Store the READY grains that may be stored now, unless another
 * thread is storing them; returns how many it stored.
 */
extern unsigned writer_pump (struct stream_writer *w);
/* Seal a FILLING buffer whose grain has nothing in the pipeline. */
extern void writer_seal (struct stream_writer *w, struct gbuf *b);
/* Compress a SEALED buffer into the READY heap (or drop it if zero). */
extern void writer_compress (struct stream_writer *w, struct gbuf *b);
/* Grain g reads as zeroes without being stored. */
extern void writer_skip_expected (struct stream_writer *w, uint64_t g);

#endif /* VMDK_STREAM_WRITE_INTERNAL_H */
