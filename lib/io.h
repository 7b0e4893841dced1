/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Byte sources.  The engine never calls open(2) or pread(2) itself:
 * a source opens named files (relative to the file that names them),
 * and each opened file is a vmdk_io.  The POSIX source serves the
 * plugin; the memory source serves unit tests and fuzzers.
 */

#ifndef VMDK_IO_H
#define VMDK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmdk_io;

struct vmdk_io_ops {
  /* Read up to count bytes; returns the number read, which is short
   * only at end of file, or -1 with the error recorded.
   */
  int64_t (*pread) (struct vmdk_io *io, void *buf, size_t count,
                    uint64_t offset);
  /* Write exactly count bytes, or fail. */
  int (*pwrite) (struct vmdk_io *io, const void *buf, size_t count,
                 uint64_t offset);
  int (*flush) (struct vmdk_io *io);
  /* Optional: start writing [offset, offset+count) back to storage
   * without waiting for it.  A hint: flush still decides durability
   * (and reports any error).
   */
  void (*start_writeback) (struct vmdk_io *io, uint64_t offset,
                           uint64_t count);
  int (*get_size) (struct vmdk_io *io, uint64_t *size);
  /* Optional: the bytes the file takes on its host (its allocated
   * blocks; less than its size when it has holes).
   */
  int (*get_allocated) (struct vmdk_io *io, uint64_t *bytes);
  /* Optional: describe the host-file region at offset: *is_data says
   * whether it holds data or is a hole, *end where that region ends
   * (SEEK_DATA / SEEK_HOLE).  NULL means "all data".
   */
  int (*region) (struct vmdk_io *io, uint64_t offset, bool *is_data,
                 uint64_t *end);
  /* Identity of the underlying file (device and inode for POSIX), to
   * detect parent chains that loop.
   */
  int (*get_id) (struct vmdk_io *io, uint64_t id[2]);
  /* Optional: deallocate (punch) or zero a byte range so it reads as
   * zeroes, keeping the size.  Fails with EOPNOTSUPP if the host cannot.
   */
  int (*punch) (struct vmdk_io *io, uint64_t offset, uint64_t count);
  int (*zero_range) (struct vmdk_io *io, uint64_t offset, uint64_t count);
  /* Extend (never shrink) the file to size. */
  int (*extend) (struct vmdk_io *io, uint64_t size);
  /* Optional: set the file's size, shrinking it. */
  int (*truncate) (struct vmdk_io *io, uint64_t size);
  void (*close) (struct vmdk_io *io);
};

struct vmdk_io {
  const struct vmdk_io_ops *ops;
  char *name;                   /* for messages: the name as given */
  /* NULL, or the file cannot grow (a source of fixed size) and this
   * says why: a write that needs new space then fails with ENOSPC up
   * front, and the message ends with this.
   */
  const char *cannot_grow;
};

struct vmdk_source;

struct vmdk_source_ops {
  /* Open name, which is relative to the source's directory.  The
   * source enforces containment: no absolute names, no escape.
   */
  struct vmdk_io *(*open) (struct vmdk_source *src, const char *name,
                           bool readonly);
  /* A new source rooted at subdirectory dir (relative, contained),
   * for files named by a file in that subdirectory.
   */
  struct vmdk_source *(*subdir) (struct vmdk_source *src, const char *dir);
  /* Optional: create name (a plain name, no '/') in the source's own
   * directory and open it read-write; it must not exist yet (EEXIST,
   * naming the file).  remove deletes a file created so, to undo a
   * creation that failed.
   */
  struct vmdk_io *(*create) (struct vmdk_source *src, const char *name);
  int (*remove) (struct vmdk_source *src, const char *name);
  /* Optional: rename from to to (plain names in the source's own
   * directory), replacing to atomically.
   */
  int (*rename) (struct vmdk_source *src, const char *from, const char *to);
  /* Optional: make the names created so far durable (fsync the
   * directory).
   */
  int (*sync_names) (struct vmdk_source *src);
  void (*close) (struct vmdk_source *src);
};

struct vmdk_source {
  const struct vmdk_source_ops *ops;
};

/* A POSIX source rooted at directory dir (opened now), which may also
 * open what policy allows (NULL: nothing more).
 */
struct vmdk_file_policy;
extern struct vmdk_source *
vmdk_source_posix_new (const char *dir, const struct vmdk_file_policy *policy);

/* A memory source: files are added by name (copied). */
extern struct vmdk_source *vmdk_source_memory_new (void);
extern int vmdk_source_memory_add (struct vmdk_source *src, const char *name,
                                   const void *data, size_t len);

/* Helpers over vmdk_io with uniform error messages. */

/* Read exactly count bytes; a short read is an error naming what. */
extern int io_pread_full (struct vmdk_io *io, void *buf, size_t count,
                          uint64_t offset, const char *what);
/* Read count bytes; bytes past end of file read as zeroes. */
extern int io_pread_zerofill (struct vmdk_io *io, void *buf, size_t count,
                              uint64_t offset);
/* Write count zero bytes at offset (allocating them). */
extern int io_write_zeroes (struct vmdk_io *io, uint64_t offset,
                            uint64_t count);
extern void io_close (struct vmdk_io *io);

#endif /* VMDK_IO_H */
