/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Files on a POSIX filesystem: a byte source rooted at a directory.
 * Which names it may open is the policy of paths.c.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/syscall.h>
#include <linux/openat2.h>

#include "error.h"
#include "io.h"
#include "paths.h"
#include "vmdk.h"

struct posix_io {
  struct vmdk_io io;
  int fd;
  bool is_device;               /* a block device (allow_devices) */
};

struct posix_source {
  struct vmdk_source src;
  int dirfd;                    /* the directory names are relative to */
  char *dir;                    /* its path, for messages */
  struct path_policy *policy;
};

static int64_t
posix_pread (struct vmdk_io *io, void *buf, size_t count, uint64_t offset)
{
  struct posix_io *p = (struct posix_io *) io;
  char *b = buf;
  size_t done = 0;

  while (done < count) {
    ssize_t r = pread (p->fd, b + done, count - done, offset + done);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return vmdk_error (errno, "pread: %s: offset %" PRIu64 ": %m",
                         io->name, offset + done);
    }
    if (r == 0)
      break;
    done += r;
  }
  return done;
}

static int
posix_pwrite (struct vmdk_io *io, const void *buf, size_t count,
              uint64_t offset)
{
  struct posix_io *p = (struct posix_io *) io;
  const char *b = buf;

  while (count > 0) {
    ssize_t r = pwrite (p->fd, b, count, offset);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return vmdk_error (errno, "pwrite: %s: offset %" PRIu64 ": %m",
                         io->name, offset);
    }
    b += r;
    count -= r;
    offset += r;
  }
  return 0;
}

static int
posix_flush (struct vmdk_io *io)
{
  struct posix_io *p = (struct posix_io *) io;

  if (fdatasync (p->fd) == -1)
    return vmdk_error (errno, "fdatasync: %s: %m", io->name);
  return 0;
}

static void
posix_start_writeback (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  struct posix_io *p = (struct posix_io *) io;

  /* Errors, if any, are the next flush's to report. */
  (void) sync_file_range (p->fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

static int
posix_get_size (struct vmdk_io *io, uint64_t *size)
{
  struct posix_io *p = (struct posix_io *) io;
  struct stat st;

  if (p->is_device) {
    if (ioctl (p->fd, BLKGETSIZE64, size) == -1)
      return vmdk_error (errno, "ioctl: BLKGETSIZE64: %s: %m", io->name);
    return 0;
  }
  if (fstat (p->fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", io->name);
  *size = st.st_size;
  return 0;
}

static int
posix_get_allocated (struct vmdk_io *io, uint64_t *bytes)
{
  struct posix_io *p = (struct posix_io *) io;
  struct stat st;

  if (p->is_device)
    return posix_get_size (io, bytes);
  if (fstat (p->fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", io->name);
  *bytes = (uint64_t) st.st_blocks * 512;   /* POSIX: 512-byte units */
  return 0;
}

/* lseek(SEEK_DATA/SEEK_HOLE) compute from the offset given, not from
 * the file position, so no lock is needed even though the position of
 * the shared fd changes: we only ever use pread/pwrite.
 */
static int
posix_region (struct vmdk_io *io, uint64_t offset, bool *is_data,
              uint64_t *end)
{
  struct posix_io *p = (struct posix_io *) io;
  off_t r;

  if (p->is_device) {           /* no holes to know of */
    *is_data = true;
    *end = UINT64_MAX;
    return 0;
  }
  r = lseek (p->fd, offset, SEEK_DATA);
  if (r == -1) {
    if (errno == ENXIO) {       /* hole up to end of file */
      *is_data = false;
      *end = UINT64_MAX;
      return 0;
    }
    if (errno == EINVAL || errno == ENOTSUP) { /* no support: all data */
      *is_data = true;
      *end = UINT64_MAX;
      return 0;
    }
    return vmdk_error (errno, "lseek: SEEK_DATA: %s: %" PRIu64 ": %m",
                       io->name, offset);
  }
  if ((uint64_t) r > offset) {
    *is_data = false;
    *end = r;
    return 0;
  }
  r = lseek (p->fd, offset, SEEK_HOLE);
  if (r == -1)
    return vmdk_error (errno, "lseek: SEEK_HOLE: %s: %" PRIu64 ": %m",
                       io->name, offset);
  *is_data = true;
  *end = r;
  return 0;
}

static int
posix_get_id (struct vmdk_io *io, uint64_t id[2])
{
  struct posix_io *p = (struct posix_io *) io;
  struct stat st;

  if (fstat (p->fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", io->name);
  id[0] = st.st_dev;
  id[1] = st.st_ino;
  return 0;
}

/* file.c's do_fallocate maps ENODEV and friends to EOPNOTSUPP. */
static int
do_fallocate (struct vmdk_io *io, int mode, uint64_t offset, uint64_t count)
{
  struct posix_io *p = (struct posix_io *) io;

  if (fallocate (p->fd, mode, offset, count) == -1) {
    int e = errno;
    if (e == ENODEV || e == ENOSYS || e == ENOTSUP)
      e = EOPNOTSUPP;
    return vmdk_error (e, "fallocate: %s: offset %" PRIu64 " count %" PRIu64
                       ": %m", io->name, offset, count);
  }
  return 0;
}

static int
posix_punch (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  return do_fallocate (io, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       offset, count);
}

static int
posix_zero_range (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  return do_fallocate (io, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                       offset, count);
}

static int
posix_extend (struct vmdk_io *io, uint64_t size)
{
  struct posix_io *p = (struct posix_io *) io;
  struct stat st;
  uint64_t device_size;

  if (p->is_device) {
    if (posix_get_size (io, &device_size) == -1)
      return -1;
    if (device_size < size)
      return vmdk_error (ENOSPC, "extend: %s: a block device of %" PRIu64
                         " bytes cannot grow to %" PRIu64, io->name,
                         device_size, size);
    return 0;
  }
  if (fstat (p->fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", io->name);
  if ((uint64_t) st.st_size < size && ftruncate (p->fd, size) == -1)
    return vmdk_error (errno, "ftruncate: %s: %m", io->name);
  return 0;
}

static int
posix_truncate (struct vmdk_io *io, uint64_t size)
{
  struct posix_io *p = (struct posix_io *) io;

  if (p->is_device)
    return vmdk_error (EINVAL, "truncate: %s: a block device cannot be "
                       "resized", io->name);
  if (ftruncate (p->fd, size) == -1)
    return vmdk_error (errno, "ftruncate: %s: %m", io->name);
  return 0;
}

static void
posix_close (struct vmdk_io *io)
{
  struct posix_io *p = (struct posix_io *) io;

  close (p->fd);
  free (io->name);
  free (p);
}

static const struct vmdk_io_ops posix_io_ops = {
  .pread = posix_pread,
  .pwrite = posix_pwrite,
  .flush = posix_flush,
  .start_writeback = posix_start_writeback,
  .get_size = posix_get_size,
  .get_allocated = posix_get_allocated,
  .region = posix_region,
  .get_id = posix_get_id,
  .punch = posix_punch,
  .zero_range = posix_zero_range,
  .extend = posix_extend,
  .truncate = posix_truncate,
  .close = posix_close,
};

/* fd, opened as name, as an I/O object; NULL on error (fd stays the
 * caller's).
 */
static struct vmdk_io *
posix_io_new (int fd, const char *name, bool is_device)
{
  struct posix_io *p = calloc (1, sizeof *p);

  if (p == NULL || (p->io.name = strdup (name)) == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    free (p);
    return NULL;
  }
  p->io.ops = &posix_io_ops;
  p->fd = fd;
  p->is_device = is_device;
  return &p->io;
}

static struct vmdk_io *
posix_source_open (struct vmdk_source *src, const char *name, bool readonly)
{
  struct posix_source *s = (struct posix_source *) src;
  struct vmdk_io *io;
  char *where = NULL;
  bool is_device = false;
  int fd;

  if (name[0] == '\0') {
    vmdk_error (EINVAL, "empty file name");
    return NULL;
  }
  /* O_NONBLOCK: opening a FIFO read-only would otherwise wait for a
   * writer forever.  It is cleared once the file is known to be safe.
   */
  fd = path_open (s->dirfd, s->dir, s->policy, name,
                  (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY |
                  O_NONBLOCK, "file", &where);
  free (where);
  if (fd == -1)
    return NULL;
  if (path_check_file_type (s->policy, fd, name, &is_device) == -1) {
    close (fd);
    return NULL;
  }
  if (fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK) == -1) {
    vmdk_error (errno, "fcntl: %s: %m", name);
    close (fd);
    return NULL;
  }

  io = posix_io_new (fd, name, is_device);
  if (io == NULL)
    close (fd);
  return io;
}

/* A new file is a plain name in our own directory: no walk, and
 * O_EXCL | O_NOFOLLOW refuse anything already there, a symlink
 * included.
 */
static struct vmdk_io *
posix_source_create (struct vmdk_source *src, const char *name)
{
  struct posix_source *s = (struct posix_source *) src;
  struct vmdk_io *io;
  int fd;

  if (name[0] == '\0' || strchr (name, '/') || strcmp (name, ".") == 0 ||
      strcmp (name, "..") == 0) {
    vmdk_error (EINVAL, "create: %s: not a plain file name", name);
    return NULL;
  }
  fd = openat (s->dirfd, name,
               O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
               0666);
  if (fd == -1) {
    if (errno == EEXIST)
      vmdk_error (EEXIST, "create: %s/%s: the file exists already", s->dir,
                  name);
    else
      vmdk_error (errno, "create: %s/%s: %m", s->dir, name);
    return NULL;
  }
  io = posix_io_new (fd, name, false);
  if (io == NULL) {
    close (fd);
    unlinkat (s->dirfd, name, 0);
  }
  return io;
}

static int
posix_source_remove (struct vmdk_source *src, const char *name)
{
  struct posix_source *s = (struct posix_source *) src;

  if (unlinkat (s->dirfd, name, 0) == -1)
    return vmdk_error (errno, "unlink: %s/%s: %m", s->dir, name);
  return 0;
}

static int
posix_source_rename (struct vmdk_source *src, const char *from,
                     const char *to)
{
  struct posix_source *s = (struct posix_source *) src;

  if (renameat (s->dirfd, from, s->dirfd, to) == -1)
    return vmdk_error (errno, "rename: %s/%s to %s: %m", s->dir, from, to);
  return 0;
}

static int
posix_source_sync_names (struct vmdk_source *src)
{
  struct posix_source *s = (struct posix_source *) src;
  int fd = openat (s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  if (fd == -1)
    return vmdk_error (errno, "open: %s: %m", s->dir);
  if (fsync (fd) == -1) {
    close (fd);
    return vmdk_error (errno, "fsync: %s: %m", s->dir);
  }
  close (fd);
  return 0;
}

static struct vmdk_source *posix_source_at (int dirfd, const char *dir,
                                            struct path_policy *policy);

static struct vmdk_source *
posix_source_subdir (struct vmdk_source *src, const char *dir)
{
  struct posix_source *s = (struct posix_source *) src;
  struct vmdk_source *sub;
  char *path = NULL;
  int fd;

  fd = path_open (s->dirfd, s->dir, s->policy, dir,
                  O_PATH | O_DIRECTORY | O_CLOEXEC, "directory", &path);
  if (fd == -1)
    return NULL;
  sub = posix_source_at (fd, path, s->policy);
  free (path);
  return sub;
}

static void
posix_source_close (struct vmdk_source *src)
{
  struct posix_source *s = (struct posix_source *) src;

  close (s->dirfd);
  free (s->dir);
  path_policy_unref (s->policy);
  free (s);
}

static const struct vmdk_source_ops posix_source_ops = {
  .open = posix_source_open,
  .subdir = posix_source_subdir,
  .create = posix_source_create,
  .remove = posix_source_remove,
  .rename = posix_source_rename,
  .sync_names = posix_source_sync_names,
  .close = posix_source_close,
};

/* Takes ownership of dirfd; takes a reference to policy. */
static struct vmdk_source *
posix_source_at (int dirfd, const char *dir, struct path_policy *policy)
{
  struct posix_source *s;

  s = calloc (1, sizeof *s);
  if (s == NULL || (s->dir = strdup (dir)) == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    free (s);
    close (dirfd);
    return NULL;
  }
  s->dirfd = dirfd;
  s->policy = policy;
  path_policy_ref (policy);
  s->src.ops = &posix_source_ops;
  return &s->src;
}

struct vmdk_source *
vmdk_source_posix_new (const char *dir, const struct vmdk_file_policy *want)
{
  struct path_policy *pol;
  struct vmdk_source *src;
  int dirfd;

  pol = path_policy_new (want);
  if (pol == NULL)
    return NULL;
  dirfd = open (dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd == -1) {
    vmdk_error (errno, "open: %s: %m", dir);
    path_policy_unref (pol);
    return NULL;
  }
  src = posix_source_at (dirfd, dir, pol);
  path_policy_unref (pol);      /* the source holds it now */
  return src;
}
