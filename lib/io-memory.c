/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* In-memory files, for unit tests and fuzzers.  Each open returns a
 * view of the shared file, so writes through one io are seen by others.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "error.h"
#include "io.h"

struct mem_file {
  char *name;
  unsigned char *data;
  size_t len;
  pthread_rwlock_t lock;        /* pwrite may grow data */
  struct mem_file *next;
};

struct mem_source {
  struct vmdk_source src;
  struct mem_file *files;
};

struct mem_io {
  struct vmdk_io io;
  struct mem_file *f;
};

static int64_t
mem_pread (struct vmdk_io *io, void *buf, size_t count, uint64_t offset)
{
  struct mem_file *f = ((struct mem_io *) io)->f;
  size_t n = 0;

  pthread_rwlock_rdlock (&f->lock);
  if (offset < f->len) {
    n = f->len - offset;
    if (n > count)
      n = count;
    memcpy (buf, f->data + offset, n);
  }
  pthread_rwlock_unlock (&f->lock);
  return n;
}

static int
mem_pwrite (struct vmdk_io *io, const void *buf, size_t count,
            uint64_t offset)
{
  struct mem_file *f = ((struct mem_io *) io)->f;
  uint64_t end;
  int r = 0;

  if (ADD_OVERFLOW (offset, (uint64_t) count, &end) || end > SIZE_MAX / 2)
    return vmdk_error (EFBIG, "pwrite: %s: offset too large", io->name);
  pthread_rwlock_wrlock (&f->lock);
  if (end > f->len) {
    unsigned char *d = realloc (f->data, end);
    if (d == NULL)
      r = vmdk_error (ENOMEM, "realloc: %m");
    else {
      memset (d + f->len, 0, end - f->len);
      f->data = d;
      f->len = end;
    }
  }
  if (r == 0)
    memcpy (f->data + offset, buf, count);
  pthread_rwlock_unlock (&f->lock);
  return r;
}

static int
mem_flush (struct vmdk_io *io)
{
  return 0;
}

static int
mem_get_size (struct vmdk_io *io, uint64_t *size)
{
  struct mem_file *f = ((struct mem_io *) io)->f;

  pthread_rwlock_rdlock (&f->lock);
  *size = f->len;
  pthread_rwlock_unlock (&f->lock);
  return 0;
}

static int
mem_get_id (struct vmdk_io *io, uint64_t id[2])
{
  id[0] = 0;
  id[1] = (uintptr_t) ((struct mem_io *) io)->f;
  return 0;
}

static int
mem_zero (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  struct mem_file *f = ((struct mem_io *) io)->f;

  pthread_rwlock_wrlock (&f->lock);
  if (offset < f->len)
    memset (f->data + offset, 0, MIN (count, f->len - offset));
  pthread_rwlock_unlock (&f->lock);
  return 0;
}

static int
mem_extend (struct vmdk_io *io, uint64_t size)
{
  uint64_t len;
  unsigned char zero = 0;

  mem_get_size (io, &len);
  if (size > len)
    return mem_pwrite (io, &zero, 1, size - 1);
  return 0;
}

static int
mem_truncate (struct vmdk_io *io, uint64_t size)
{
  struct mem_file *f = ((struct mem_io *) io)->f;
  unsigned char zero = 0;

  pthread_rwlock_wrlock (&f->lock);
  if (size < f->len)
    f->len = size;
  pthread_rwlock_unlock (&f->lock);
  if (size > f->len)
    return mem_pwrite (io, &zero, 1, size - 1);
  return 0;
}

static void
mem_close (struct vmdk_io *io)
{
  free (io->name);
  free (io);
}

static const struct vmdk_io_ops mem_io_ops = {
  .pread = mem_pread,
  .pwrite = mem_pwrite,
  .flush = mem_flush,
  .get_size = mem_get_size,
  .region = NULL,
  .get_id = mem_get_id,
  .punch = mem_zero,
  .zero_range = mem_zero,
  .extend = mem_extend,
  .truncate = mem_truncate,
  .close = mem_close,
};

static struct mem_file *
find_file (struct mem_source *s, const char *name)
{
  struct mem_file *f;

  for (f = s->files; f; f = f->next)
    if (strcmp (f->name, name) == 0)
      return f;
  return NULL;
}

static struct vmdk_io *
open_file (struct mem_file *f, const char *name)
{
  struct mem_io *m;

  m = calloc (1, sizeof *m);
  if (m == NULL || (m->io.name = strdup (name)) == NULL) {
    free (m);
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  m->io.ops = &mem_io_ops;
  m->f = f;
  return &m->io;
}

static struct vmdk_io *
mem_source_open (struct vmdk_source *src, const char *name, bool readonly)
{
  struct mem_file *f = find_file ((struct mem_source *) src, name);

  if (f == NULL) {
    vmdk_error (ENOENT, "open: %s: No such file or directory", name);
    return NULL;
  }
  return open_file (f, name);
}

static struct vmdk_io *
mem_source_create (struct vmdk_source *src, const char *name)
{
  struct mem_source *s = (struct mem_source *) src;

  if (find_file (s, name)) {
    vmdk_error (EEXIST, "create: %s: the file exists already", name);
    return NULL;
  }
  if (vmdk_source_memory_add (src, name, "", 0) == -1)
    return NULL;
  return open_file (s->files, name);
}

static void
free_file (struct mem_file *f)
{
  pthread_rwlock_destroy (&f->lock);
  free (f->name);
  free (f->data);
  free (f);
}

static int
mem_source_remove (struct vmdk_source *src, const char *name)
{
  struct mem_source *s = (struct mem_source *) src;
  struct mem_file **p, *f;

  for (p = &s->files; (f = *p) != NULL; p = &f->next)
    if (strcmp (f->name, name) == 0) {
      *p = f->next;
      free_file (f);
      return 0;
    }
  return vmdk_error (ENOENT, "remove: %s: No such file or directory", name);
}

/* The memory source is flat: names may contain '/', but there is no
 * directory to root a new source at.
 */
static struct vmdk_source *
mem_source_subdir (struct vmdk_source *src, const char *dir)
{
  vmdk_error (ENOTSUP, "%s: subdirectories are not supported by the "
              "memory source", dir);
  return NULL;
}

static void
mem_source_close (struct vmdk_source *src)
{
  struct mem_source *s = (struct mem_source *) src;
  struct mem_file *f, *next;

  for (f = s->files; f; f = next) {
    next = f->next;
    free_file (f);
  }
  free (s);
}

static const struct vmdk_source_ops mem_source_ops = {
  .open = mem_source_open,
  .subdir = mem_source_subdir,
  .create = mem_source_create,
  .remove = mem_source_remove,
  .close = mem_source_close,
};

struct vmdk_source *
vmdk_source_memory_new (void)
{
  struct mem_source *s = calloc (1, sizeof *s);

  if (s == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  s->src.ops = &mem_source_ops;
  return &s->src;
}

int
vmdk_source_memory_add (struct vmdk_source *src, const char *name,
                        const void *data, size_t len)
{
  struct mem_source *s = (struct mem_source *) src;
  struct mem_file *f = calloc (1, sizeof *f);

  if (f == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  f->name = strdup (name);
  f->data = malloc (len ? len : 1);
  if (f->name == NULL || f->data == NULL) {
    free (f->name);
    free (f->data);
    free (f);
    return vmdk_error (ENOMEM, "malloc: %m");
  }
  memcpy (f->data, data, len);
  f->len = len;
  pthread_rwlock_init (&f->lock, NULL);
  f->next = s->files;
  s->files = f;
  return 0;
}
