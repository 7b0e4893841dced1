/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Files on a POSIX filesystem.  Extent files are opened beneath the
 * directory of the descriptor with openat2 (RESOLVE_BENEATH), so that a
 * hostile descriptor cannot name /etc/shadow or escape with ".." or a
 * symlink (CVE-2022-47951 was exactly that).  Only regular files are
 * accepted.  The user may widen this (struct vmdk_file_policy): names
 * that leave the directory may then resolve beneath one of the allowed
 * directories, and block devices may back extents.
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
#include "vmdk.h"

struct posix_io {
  struct vmdk_io io;
  int fd;
  bool is_device;               /* a block device (allow_devices) */
};

/* A directory the user allowed, opened once. */
struct allowed_dir {
  char *path;                   /* canonical (realpath) */
  int dirfd;
};

/* What the sources of one image may open besides the files beneath
 * their own directory.  Shared by a source and the sources made from it
 * (subdir); freed with the last of them.  Sources are only used while
 * an image is opened, by one thread, so the count needs no lock.
 */
struct posix_policy {
  unsigned refs;
  bool allow_devices;
  size_t nr_dirs;
  struct allowed_dir *dirs;
};

struct posix_source {
  struct vmdk_source src;
  int dirfd;
  char *dir;
  struct posix_policy *policy;
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
  .get_size = posix_get_size,
  .region = posix_region,
  .get_id = posix_get_id,
  .punch = posix_punch,
  .zero_range = posix_zero_range,
  .extend = posix_extend,
  .close = posix_close,
};

/* Without openat2 (kernels before 5.6, valgrind): walk the name one
 * component at a time with O_NOFOLLOW, refusing absolute names, ".."
 * and every symlink (stricter than RESOLVE_BENEATH, never weaker).
 * Fails with EXDEV like openat2 for an escape.
 */
static int
open_walk (int dirfd, const char *name, int flags)
{
  char *copy, *component, *next;
  int fd = dirfd, nfd = -1;

  if (name[0] == '/') {
    errno = EXDEV;
    return -1;
  }
  copy = strdup (name);
  if (copy == NULL)
    return -1;
  for (component = copy; component; component = next) {
    next = strchr (component, '/');
    if (next) {
      *next++ = '\0';
      while (*next == '/')
        next++;
      if (*next == '\0')
        next = NULL;
    }
    if (strcmp (component, "..") == 0) {
      errno = EXDEV;
      nfd = -1;
      break;
    }
    nfd = openat (fd, component,
                  next ? O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
                       : flags | O_NOFOLLOW);
    if (fd != dirfd) {
      int saved = errno;
      close (fd);
      errno = saved;
    }
    if (nfd == -1) {
      if (errno == ELOOP || errno == ENOTDIR)
        errno = EXDEV;          /* a symlink: refused */
      break;
    }
    fd = nfd;
  }
  free (copy);
  return nfd;
}

/* Open name beneath dirfd.  openat2 with RESOLVE_BENEATH refuses
 * absolute names, ".." escapes and symlinks that leave the directory;
 * RESOLVE_NO_MAGICLINKS refuses /proc-style magic links.
 */
static int
open_beneath (int dirfd, const char *name, int flags)
{
  struct open_how how = {
    .flags = flags,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  static int have_openat2 = 1;  /* benign race: all writers store 0 */
  int fd;

  if (__atomic_load_n (&have_openat2, __ATOMIC_RELAXED)) {
    fd = syscall (SYS_openat2, dirfd, name, &how, sizeof how);
    if (fd != -1 || errno != ENOSYS)
      return fd;
    __atomic_store_n (&have_openat2, 0, __ATOMIC_RELAXED);
  }
  return open_walk (dirfd, name, flags);
}

/* QEMU writes absolute parent and extent names.  An absolute name that
 * points inside our directory is accepted as the relative name it is;
 * any other absolute name is refused by RESOLVE_BENEATH below.
 */
static const char *
strip_own_directory (const struct posix_source *s, const char *name)
{
  size_t n = strlen (s->dir);

  if (name[0] != '/' || strncmp (name, s->dir, n) != 0)
    return name;
  if (name[n] == '\0')
    return ".";
  if (name[n] == '/' && name[n + 1] != '\0')
    return name + n + 1;
  return name;
}

/* Make path (absolute) canonical without touching the filesystem:
 * collapse "//", "." and "..".  ".." at the root stays at the root.
 * Symlinks are not followed here: whatever this yields is only ever
 * opened beneath an allowed directory, where the kernel confines them.
 */
static void
normalize_lexically (char *path)
{
  char *out = path, *in = path;

  while (*in) {
    while (*in == '/')
      in++;
    if (*in == '\0')
      break;
    if (in[0] == '.' && (in[1] == '/' || in[1] == '\0'))
      in++;
    else if (in[0] == '.' && in[1] == '.' && (in[2] == '/' || in[2] == '\0')) {
      in += 2;
      while (out > path && *--out != '/')
        ;
    }
    else {
      *out++ = '/';
      while (*in && *in != '/')
        *out++ = *in++;
    }
  }
  if (out == path)
    *out++ = '/';
  *out = '\0';
}

/* The part of canonical path beneath allowed directory dir, or NULL. */
static const char *
beneath (const char *path, const char *dir)
{
  size_t n = strlen (dir);

  if (strcmp (dir, "/") == 0)
    return path[1] ? path + 1 : ".";
  if (strncmp (path, dir, n) != 0)
    return NULL;
  if (path[n] == '\0')
    return ".";
  if (path[n] == '/')
    return path + n + 1;
  return NULL;
}

/* Open name, which left our directory, beneath the first allowed
 * directory that contains it.  Sets *where to the path opened (for
 * messages and for subdir).  Fails with EXDEV when no directory allows
 * the name.
 */
static int
open_allowed (const struct posix_source *s, const char *name, int flags,
              char **where)
{
  const struct posix_policy *pol = s->policy;
  char *path;
  size_t i;

  if (name[0] == '/')
    path = strdup (name);
  else if (asprintf (&path, "%s/%s", s->dir, name) == -1)
    path = NULL;
  if (path == NULL)
    return -1;
  normalize_lexically (path);
  for (i = 0; i < pol->nr_dirs; ++i) {
    const char *rel = beneath (path, pol->dirs[i].path);
    int fd;

    if (rel == NULL)
      continue;
    fd = open_beneath (pol->dirs[i].dirfd, rel, flags);
    if (fd >= 0)
      *where = path;
    else
      free (path);
    return fd;
  }
  free (path);
  errno = EXDEV;
  return -1;
}

/* Open name beneath our directory or, if the user allowed it, beneath
 * an allowed directory.  *where is set to the path opened, for
 * messages.  On an escape the error is recorded here.
 */
static int
open_contained (const struct posix_source *s, const char *name, int flags,
                const char *what, char **where)
{
  const char *rel = strip_own_directory (s, name);
  int fd;

  fd = open_beneath (s->dirfd, rel, flags);
  if (fd >= 0) {
    if (asprintf (where, "%s/%s", s->dir, rel) == -1) {
      close (fd);
      return vmdk_error (ENOMEM, "asprintf: %m");
    }
    normalize_lexically (*where);
    return fd;
  }
  if ((errno == EXDEV || errno == ELOOP) && s->policy->nr_dirs > 0)
    fd = open_allowed (s, name, flags, where);
  if (fd >= 0)
    return fd;
  if (errno == EXDEV || errno == ELOOP) {
    if (s->policy->nr_dirs > 0)
      vmdk_error (EPERM, "open: %s: refusing a %s outside %s and the "
                  "allowed directories (allow-dir)", name, what, s->dir);
    else
      vmdk_error (EPERM, "open: %s: refusing a %s outside %s (absolute "
                  "path, \"..\" or symlink escaping the directory; "
                  "allow-dir permits more)", name, what, s->dir);
  }
  else if (rel[0] == '/')
    vmdk_error (errno, "open: %s: %m", rel);
  else
    vmdk_error (errno, "open: %s/%s: %m", s->dir, rel);
  return -1;
}

/* Regular files always; block devices if the user allowed them.
 * Anything else (FIFOs, sockets, character devices, directories) could
 * block, never end or change under us.
 */
static int
check_file_type (const struct posix_source *s, int fd, const char *name,
                 bool *is_device)
{
  struct stat st;

  if (fstat (fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", name);
  *is_device = S_ISBLK (st.st_mode);
  if (S_ISREG (st.st_mode) || (*is_device && s->policy->allow_devices))
    return 0;
  if (*is_device)
    return vmdk_error (EPERM, "open: %s: is a block device (refused unless "
                       "devices are allowed: allow-devices=true)", name);
  return vmdk_error (EPERM, "open: %s: not a regular file%s", name,
                     S_ISDIR (st.st_mode) ? " (a directory)" : "");
}

static struct vmdk_io *
posix_source_open (struct vmdk_source *src, const char *name, bool readonly)
{
  struct posix_source *s = (struct posix_source *) src;
  struct posix_io *p;
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
  fd = open_contained (s, name, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
                       O_NOCTTY | O_NONBLOCK, "file", &where);
  free (where);
  if (fd == -1)
    return NULL;
  if (check_file_type (s, fd, name, &is_device) == -1) {
    close (fd);
    return NULL;
  }
  if (fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) & ~O_NONBLOCK) == -1) {
    vmdk_error (errno, "fcntl: %s: %m", name);
    close (fd);
    return NULL;
  }

  p = calloc (1, sizeof *p);
  if (p == NULL || (p->io.name = strdup (name)) == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    free (p);
    close (fd);
    return NULL;
  }
  p->io.ops = &posix_io_ops;
  p->fd = fd;
  p->is_device = is_device;
  return &p->io;
}

static struct vmdk_source *posix_source_at (int dirfd, const char *dir,
                                            struct posix_policy *policy);

static struct vmdk_source *
posix_source_subdir (struct vmdk_source *src, const char *dir)
{
  struct posix_source *s = (struct posix_source *) src;
  struct vmdk_source *sub;
  char *path = NULL;
  int fd;

  fd = open_contained (s, dir, O_PATH | O_DIRECTORY | O_CLOEXEC, "directory",
                       &path);
  if (fd == -1)
    return NULL;
  sub = posix_source_at (fd, path, s->policy);
  free (path);
  return sub;
}

static void
policy_unref (struct posix_policy *pol)
{
  size_t i;

  if (--pol->refs > 0)
    return;
  for (i = 0; i < pol->nr_dirs; ++i) {
    close (pol->dirs[i].dirfd);
    free (pol->dirs[i].path);
  }
  free (pol->dirs);
  free (pol);
}

static void
posix_source_close (struct vmdk_source *src)
{
  struct posix_source *s = (struct posix_source *) src;

  close (s->dirfd);
  free (s->dir);
  policy_unref (s->policy);
  free (s);
}

static const struct vmdk_source_ops posix_source_ops = {
  .open = posix_source_open,
  .subdir = posix_source_subdir,
  .close = posix_source_close,
};

/* Takes ownership of dirfd; takes a reference to policy. */
static struct vmdk_source *
posix_source_at (int dirfd, const char *dir, struct posix_policy *policy)
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
  policy->refs++;
  s->src.ops = &posix_source_ops;
  return &s->src;
}

/* Open each allowed directory now: a typo is a startup error, and
 * later renames cannot redirect us.
 */
static struct posix_policy *
policy_new (const struct vmdk_file_policy *want)
{
  struct posix_policy *pol = calloc (1, sizeof *pol);
  size_t n = 0;

  if (pol == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  pol->refs = 1;
  pol->allow_devices = want && want->allow_devices;
  while (want && want->allowed_dirs && want->allowed_dirs[n])
    n++;
  if (n > 0 && (pol->dirs = calloc (n, sizeof *pol->dirs)) == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    policy_unref (pol);
    return NULL;
  }
  for (; pol->nr_dirs < n; pol->nr_dirs++) {
    const char *dir = want->allowed_dirs[pol->nr_dirs];
    struct allowed_dir *a = &pol->dirs[pol->nr_dirs];

    a->path = realpath (dir, NULL);
    if (a->path == NULL) {
      vmdk_error (errno, "allowed directory %s: %m", dir);
      policy_unref (pol);
      return NULL;
    }
    a->dirfd = open (a->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (a->dirfd == -1) {
      vmdk_error (errno, "allowed directory %s: %m", dir);
      free (a->path);
      policy_unref (pol);
      return NULL;
    }
  }
  return pol;
}

struct vmdk_source *
vmdk_source_posix_new (const char *dir, const struct vmdk_file_policy *want)
{
  struct posix_policy *pol;
  struct vmdk_source *src;
  int dirfd;

  pol = policy_new (want);
  if (pol == NULL)
    return NULL;
  dirfd = open (dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd == -1) {
    vmdk_error (errno, "open: %s: %m", dir);
    policy_unref (pol);
    return NULL;
  }
  src = posix_source_at (dirfd, dir, pol);
  policy_unref (pol);           /* the source holds it now */
  return src;
}
