/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Which files an image may open.  By default a name must resolve to a
 * regular file beneath the directory of the file that names it: openat2
 * with RESOLVE_BENEATH refuses absolute names, ".." escapes and
 * symlinks that leave the directory, so a hostile descriptor cannot
 * name /etc/shadow (CVE-2022-47951 was exactly that).  The user may
 * widen this (struct vmdk_file_policy): names that leave the directory
 * may then resolve beneath an allowed directory, and block devices may
 * back extents.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h>

#include "error.h"
#include "paths.h"
#include "vmdk.h"

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
struct path_policy {
  unsigned refs;
  bool allow_devices;
  size_t nr_dirs;
  struct allowed_dir *dirs;
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
strip_own_directory (const char *dir, const char *name)
{
  size_t n = strlen (dir);

  if (name[0] != '/' || strncmp (name, dir, n) != 0)
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
open_allowed (const char *dir, const struct path_policy *pol,
              const char *name, int flags, char **where)
{
  char *path;
  size_t i;

  if (name[0] == '/')
    path = strdup (name);
  else if (asprintf (&path, "%s/%s", dir, name) == -1)
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
int
path_open (int dirfd, const char *dir, const struct path_policy *pol,
           const char *name, int flags, const char *what, char **where)
{
  const char *rel = strip_own_directory (dir, name);
  int fd;

  fd = open_beneath (dirfd, rel, flags);
  if (fd >= 0) {
    if (asprintf (where, "%s/%s", dir, rel) == -1) {
      close (fd);
      return vmdk_error (ENOMEM, "asprintf: %m");
    }
    normalize_lexically (*where);
    return fd;
  }
  if ((errno == EXDEV || errno == ELOOP) && pol->nr_dirs > 0)
    fd = open_allowed (dir, pol, name, flags, where);
  if (fd >= 0)
    return fd;
  if (errno == EXDEV || errno == ELOOP) {
    if (pol->nr_dirs > 0)
      vmdk_error (EPERM, "open: %s: refusing a %s outside %s and the "
                  "allowed directories (allow-dir)", name, what, dir);
    else
      vmdk_error (EPERM, "open: %s: refusing a %s outside %s (absolute "
                  "path, \"..\" or symlink escaping the directory; "
                  "allow-dir permits more)", name, what, dir);
  }
  else if (rel[0] == '/')
    vmdk_error (errno, "open: %s: %m", rel);
  else
    vmdk_error (errno, "open: %s/%s: %m", dir, rel);
  return -1;
}

/* Regular files always; block devices if the user allowed them.
 * Anything else (FIFOs, sockets, character devices, directories) could
 * block, never end or change under us.
 */
int
path_check_file_type (const struct path_policy *pol, int fd,
                      const char *name, bool *is_device)
{
  struct stat st;

  if (fstat (fd, &st) == -1)
    return vmdk_error (errno, "fstat: %s: %m", name);
  *is_device = S_ISBLK (st.st_mode);
  if (S_ISREG (st.st_mode) || (*is_device && pol->allow_devices))
    return 0;
  if (*is_device)
    return vmdk_error (EPERM, "open: %s: is a block device (refused unless "
                       "devices are allowed: allow-devices=true)", name);
  return vmdk_error (EPERM, "open: %s: not a regular file%s", name,
                     S_ISDIR (st.st_mode) ? " (a directory)" : "");
}

void
path_policy_ref (struct path_policy *pol)
{
  pol->refs++;
}

void
path_policy_unref (struct path_policy *pol)
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

/* Open each allowed directory now: a typo is a startup error, and
 * later renames cannot redirect us.
 */
struct path_policy *
path_policy_new (const struct vmdk_file_policy *want)
{
  struct path_policy *pol = calloc (1, sizeof *pol);
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
    path_policy_unref (pol);
    return NULL;
  }
  for (; pol->nr_dirs < n; pol->nr_dirs++) {
    const char *dir = want->allowed_dirs[pol->nr_dirs];
    struct allowed_dir *a = &pol->dirs[pol->nr_dirs];

    a->path = realpath (dir, NULL);
    if (a->path == NULL) {
      vmdk_error (errno, "allowed directory %s: %m", dir);
      path_policy_unref (pol);
      return NULL;
    }
    a->dirfd = open (a->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (a->dirfd == -1) {
      vmdk_error (errno, "allowed directory %s: %m", dir);
      free (a->path);
      path_policy_unref (pol);
      return NULL;
    }
  }
  return pol;
}

