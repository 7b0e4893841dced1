/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Opening and closing a link: its main file (a descriptor, or a
 * sparse file with one embedded or none) and its extents, ordered by
 * virtual offset.
 *
 * Everything is parsed and validated in vmdk_open; afterwards the image
 * is immutable except for the grain-table cache, which has its own
 * sharded locks (so reads, in read.c, take no image-wide lock).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "checked.h"
#include "error.h"
#include "graindir.h"
#include "gtcache.h"
#include "header.h"
#include "deflate.h"
#include "image.h"

/* Preferred I/O size advertised for images without grains (flat). */
#define FLAT_PREFERRED_BLOCK 65536

void
vmdk_close (struct vmdk_image *img)
{
  size_t i;

  if (img == NULL)
    return;
  if (img->modified)
    image_end_writes (img);
  for (i = 0; i < img->nr_extents; ++i)
    if (img->extents[i].ops)
      img->extents[i].ops->free (&img->extents[i]);
  free (img->extents);
  for (i = 0; i < img->nr_ios; ++i)
    io_close (img->ios[i]);
  free (img->ios);
  descriptor_free (img->desc);
  vmdk_close (img->parent);
  pthread_mutex_destroy (&img->write_lock);
  if (img->owns_cache)
    gtcache_free (img->cache);
  if (img->src && img->owns_src)
    img->src->ops->close (img->src);
  free (img->name);
  free (img);
}

uint64_t
vmdk_get_size (const struct vmdk_image *img)
{
  return img->size;
}

uint32_t
vmdk_get_grain_size (const struct vmdk_image *img)
{
  return img->grain_size;
}

unsigned
vmdk_get_chain_length (const struct vmdk_image *img)
{
  return img->chain_length;
}

const char *
vmdk_get_create_type (const struct vmdk_image *img)
{
  return img->desc->create_type;
}

size_t
vmdk_get_extent_count (const struct vmdk_image *img)
{
  return img->nr_extents;
}

static int
remember_io (struct vmdk_image *img, struct vmdk_io *io)
{
  if (array_reserve ((void **) &img->ios, &img->ios_alloc, img->nr_ios + 1,
                     sizeof *img->ios) == -1) {
    io_close (io);
    return -1;
  }
  img->ios[img->nr_ios++] = io;
  return 0;
}

/* Open a file of this link: read-write if the link is writable, and if
 * that is refused (permissions, read-only file system) read-only, with
 * the reason kept for the log.
 */
static struct vmdk_io *
open_file (struct vmdk_image *img, const char *filename)
{
  struct vmdk_io *io;

  if (img->rw) {
    io = img->src->ops->open (img->src, filename, false);
    if (io || (errno != EACCES && errno != EROFS && errno != EPERM &&
               errno != ETXTBSY))
      return io;
    snprintf (img->ro_reason_buf, sizeof img->ro_reason_buf,
              "%s cannot be opened for writing: %s", filename, vmdk_errmsg ());
    img->ro_reason = img->ro_reason_buf;
  }
  return img->src->ops->open (img->src, filename, true);
}

/* Open an extent file, sharing the io if several lines name one file. */
static struct vmdk_io *
open_extent_file (struct vmdk_image *img, const char *filename)
{
  struct vmdk_io *io;
  size_t i;

  for (i = 0; i < img->nr_ios; ++i)
    if (strcmp (img->ios[i]->name, filename) == 0)
      return img->ios[i];
  io = open_file (img, filename);
  if (io == NULL || remember_io (img, io) == -1)
    return NULL;
  return io;
}

/* Read the descriptor embedded in a sparse file, if there is one. */
static int
read_embedded_descriptor (struct main_file *m, struct vmdk_io *io,
                          const struct sparse_header *h)
{
  uint64_t off, len, file_size;
  char *text;

  if (h->desc_offset == 0 || h->desc_size == 0)
    return 0;
  if (io->ops->get_size (io, &file_size) == -1)
    return -1;
  if (MUL_OVERFLOW (h->desc_offset, (uint64_t) SECTOR, &off) ||
      off >= file_size)
    return vmdk_error (EINVAL, "%s: descriptorOffset %" PRIu64 " sectors "
                       "lies beyond the end of the file", io->name,
                       h->desc_offset);
  /* Cap what we read: the parser rejects longer descriptors anyway. */
  len = MIN (h->desc_size, (uint64_t) DESCRIPTOR_MAX_BYTES / SECTOR + 1);
  len = MIN (len * SECTOR, file_size - off);
  text = malloc (len);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  if (io_pread_full (io, text, len, off, "embedded descriptor") == -1) {
    free (text);
    return -1;
  }
  m->desc = descriptor_parse (text, len, io->name);
  free (text);
  if (m->desc == NULL)
    return -1;
  m->desc_offset = off;
  m->desc_length = len;
  /* The embedded descriptor describes this very file, whatever name it
   * gives (ovftool writes "generated-stream.vmdk"): never open that name.
   */
  if (m->desc->nr_extents != 1 ||
      m->desc->extents[0].type != EXTENT_SPARSE)
    return vmdk_error (EINVAL, "%s: the embedded descriptor must describe "
                       "exactly one SPARSE extent (this file), it has %zu "
                       "extent lines", io->name, m->desc->nr_extents);
  return 0;
}

/* Read the main file into m: a sparse file with (or without) an
 * embedded descriptor, or a text descriptor.
 */
static int
read_main_file (struct vmdk_io *io, struct main_file *m)
{
  unsigned char first[SPARSE_HEADER_SIZE];
  uint64_t size;
  int64_t n;
  char *text;

  n = io->ops->pread (io, first, sizeof first, 0);
  if (n == -1)
    return -1;
  if (n >= 4 && sparse_header_is_magic (first)) {
    struct sparse_header h;

    if (n < SPARSE_HEADER_SIZE)
      return vmdk_error (EINVAL, "%s: sparse header is truncated (%" PRId64
                         " of %d bytes)", io->name, n, SPARSE_HEADER_SIZE);
    if (sparse_header_decode (first, &h, io->name) == -1)
      return -1;
    m->self = io;
    if (read_embedded_descriptor (m, io, &h) == -1)
      return -1;
    if (m->desc == NULL)
      m->desc = descriptor_new_bare (h.capacity, EXTENT_SPARSE, io->name);
    return m->desc ? 0 : -1;
  }
  if (n >= 4 && cowd_is_magic (first)) {
    uint64_t capacity;

    if (n < SPARSE_HEADER_SIZE)
      return vmdk_error (EINVAL, "%s: COWD header is truncated", io->name);
    if (cowd_capacity (first, &capacity, io->name) == -1)
      return -1;
    m->self = io;
    m->desc = descriptor_new_bare (capacity, EXTENT_VMFSSPARSE, io->name);
    return m->desc ? 0 : -1;
  }

  if (io->ops->get_size (io, &size) == -1)
    return -1;
  if (!descriptor_probe ((const char *) first, n))
    return vmdk_error (EINVAL, "%s: not a VMDK file: no sparse header magic "
                       "(\"KDMV\"/\"COWD\") and no text descriptor",
                       io->name);
  if (size > DESCRIPTOR_MAX_BYTES)
    return vmdk_error (EINVAL, "%s: descriptor file is %" PRIu64 " bytes, "
                       "larger than the limit of %d", io->name, size,
                       DESCRIPTOR_MAX_BYTES);
  text = malloc (size + 1);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  if (io_pread_full (io, text, size, 0, "descriptor") == -1) {
    free (text);
    return -1;
  }
  descriptor_warn_text_after_nul (text, size, io->name);
  m->desc = descriptor_parse (text, size, io->name);
  free (text);
  m->desc_offset = 0;
  m->desc_length = size;
  return m->desc ? 0 : -1;
}

int
image_read_main_file (struct vmdk_io *io, struct main_file *m)
{
  memset (m, 0, sizeof *m);
  if (read_main_file (io, m) == 0)
    return 0;
  descriptor_free (m->desc);
  m->desc = NULL;
  return -1;
}

int
image_sparse_magic (struct vmdk_io *io)
{
  unsigned char magic[4];
  int64_t n;

  n = io->ops->pread (io, magic, sizeof magic, 0);
  if (n == -1)
    return -1;
  if (n == 4 && sparse_header_is_magic (magic))
    return SPARSE_KDMV;
  if (n == 4 && cowd_is_magic (magic))
    return SPARSE_COWD;
  return SPARSE_NEITHER;
}

static int
init_extent (struct vmdk_image *img, struct extent *e,
             const struct descriptor_extent *de, struct vmdk_io *self)
{
  if (de->type != EXTENT_ZERO) {
    e->io = self ? self : open_extent_file (img, de->filename);
    if (e->io == NULL)
      return -1;
  }

  switch (de->type) {
  case EXTENT_ZERO:
    return extent_zero_init (e);
  case EXTENT_FLAT:
    return extent_flat_init (e, de->offset);
  case EXTENT_VMFS:
    return extent_flat_init (e, 0);
  case EXTENT_SPARSE:
  case EXTENT_VMFSSPARSE:
    switch (image_sparse_magic (e->io)) {
    case SPARSE_KDMV: return extent_sparse_init (e, img->cache);
    case SPARSE_COWD: return extent_cowd_init (e, img->cache);
    case SPARSE_NEITHER:
      return vmdk_error (EINVAL, "%s: sparse extent has neither \"KDMV\" "
                         "nor \"COWD\" magic", e->io->name);
    default: return -1;
    }
  case EXTENT_SESPARSE:
    return extent_sesparse_init (e, img->cache);
  }
  return vmdk_error (EINVAL, "%s: unknown extent type", e->io->name);
}

static int
build_extents (struct vmdk_image *img, struct vmdk_io *self)
{
  const struct descriptor *d = img->desc;
  uint64_t start = 0;
  size_t i;

  img->extents = calloc (d->nr_extents, sizeof *img->extents);
  if (img->extents == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  for (i = 0; i < d->nr_extents; ++i) {
    const struct descriptor_extent *de = &d->extents[i];
    struct extent *e = &img->extents[i];

    e->start = start;
    e->length = de->sectors * SECTOR;    /* bounded by the parser */
    e->access = de->access;
    e->line = de->line;
    img->nr_extents = i + 1;
    if (ADD_OVERFLOW (start, e->length, &start) || start > INT64_MAX)
      return vmdk_error (EINVAL, "%s: extents add up to more than 2^63 "
                         "bytes", img->name);
    if (init_extent (img, e, de, self) == -1)
      return vmdk_error_prefix ("%s: line %u: extent \"%s\"", img->name,
                                de->line_no, de->line);
    img->grain_size = MAX (img->grain_size, e->grain_size);
  }
  img->size = start;
  if (img->grain_size == 0)
    img->grain_size = FLAT_PREFERRED_BLOCK;
  return 0;
}


/* Raw-disk descriptors (VirtualBox's fullDevice and partitionedDevice)
 * exist to name host block devices: refuse them up front, with a clear
 * reason, unless the user allowed devices.
 */
static int
check_create_type (const struct vmdk_image *img,
                   const struct vmdk_options *opts)
{
  const char *t = img->desc->create_type;

  if ((strcmp (t, "fullDevice") == 0 || strcmp (t, "partitionedDevice") == 0)
      && !opts->files.allow_devices)
    return vmdk_error (EPERM, "%s: createType=\"%s\" is not supported "
                       "without allow-devices=true (it names host block "
                       "devices)", img->name, t);
  return 0;
}

struct vmdk_image *
image_open_link (struct vmdk_source *src, bool owns_src, const char *name,
                 const struct vmdk_options *opts, struct gtcache *cache,
                 struct chain *chain)
{
  struct vmdk_image *img;
  struct vmdk_io *main_io;
  struct main_file m;

  img = calloc (1, sizeof *img);
  if (img == NULL) {
    if (owns_src)
      src->ops->close (src);
    vmdk_error (ENOMEM, "calloc: %m");
    return NULL;
  }
  img->src = src;
  img->owns_src = owns_src;
  img->chain_length = 1;
  img->name = strdup (name);
  img->cache = cache;
  if (img->name == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    goto err;
  }

  img->rw = !opts->readonly;
  img->compression_level = opts->compression_level ?
    opts->compression_level : vmdk_deflate_default_level ();
  pthread_mutex_init (&img->write_lock, NULL);
  main_io = open_file (img, name);
  if (main_io == NULL || remember_io (img, main_io) == -1)
    goto err;
  if (chain_enter (chain, main_io) == -1 ||
      image_read_main_file (main_io, &m) == -1)
    goto err;
  img->desc = m.desc;
  img->desc_offset = m.desc_offset;
  img->desc_length = m.desc_length;
  if (check_create_type (img, opts) == -1 ||
      build_extents (img, m.self) == -1 ||
      (!opts->single_link && chain_take_cowd_parent_name (img) == -1))
    goto err;
  if (image_has_parent (img) && !opts->single_link &&
      chain_open_parent (img, opts, chain) == -1)
    goto err;
  if (img->rw && image_prepare_writes (img, opts) == -1)
    goto err;
  vmdk_debug (VMDK_DEBUG_OPEN, "%s: createType=%s, %zu extents, %" PRIu64
              " bytes, grain %" PRIu32 ", chain of %u", name,
              img->desc->create_type, img->nr_extents, img->size,
              img->grain_size, img->chain_length);
  return img;

 err:
  vmdk_close (img);
  return NULL;
}

/* Open the top of a chain, with a cache and a loop detector of its
 * own: name is a file of src, or (hint) a path relative to it.  If
 * owns_src, src goes with the image whether or not the open succeeds.
 */
static struct vmdk_image *
open_top (struct vmdk_source *src, bool owns_src, const char *name,
          bool hint, const struct vmdk_options *opts)
{
  static const struct vmdk_options defaults = { .readonly = true };
  struct chain *chain;
  struct gtcache *cache;
  struct vmdk_image *img;
  bool dir_failed;

  if (opts == NULL)
    opts = &defaults;
  if (opts->compression_level < 0 || opts->compression_level > 9) {
    vmdk_error (EINVAL, "compression level %d is not from 1 to 9",
                opts->compression_level);
    if (owns_src)
      src->ops->close (src);
    return NULL;
  }
  chain = calloc (1, sizeof *chain);
  cache = gtcache_new (opts->gt_cache_bytes ? opts->gt_cache_bytes
                                            : VMDK_DEFAULT_GT_CACHE);
  if (chain == NULL || cache == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    free (chain);
    gtcache_free (cache);
    if (owns_src)
      src->ops->close (src);
    return NULL;
  }
  if (hint)
    img = chain_open_hint (src, name, opts, cache, chain, &dir_failed);
  else
    img = image_open_link (src, owns_src, name, opts, cache, chain);
  free (chain);
  if (img == NULL) {
    gtcache_free (cache);
    return NULL;
  }
  img->owns_cache = true;
  return img;
}

struct vmdk_image *
vmdk_open_source (struct vmdk_source *src, const char *name,
                  const struct vmdk_options *opts)
{
  return open_top (src, true, name, false, opts);
}

struct vmdk_image *
image_open_hint (struct vmdk_source *src, const char *hint,
                 const struct vmdk_options *opts)
{
  return open_top (src, false, hint, true, opts);
}

struct vmdk_source *
image_path_source (const char *path, const struct vmdk_file_policy *policy,
                   char **name)
{
  char *real, *dir_copy = NULL;
  struct vmdk_source *src = NULL;

  *name = NULL;
  real = realpath (path, NULL);
  if (real == NULL) {
    vmdk_error (errno, "realpath: %s: %m", path);
    return NULL;
  }
  dir_copy = strdup (real);
  *name = strdup (basename (real));
  if (dir_copy == NULL || *name == NULL)
    vmdk_error (ENOMEM, "strdup: %m");
  else
    src = vmdk_source_posix_new (dirname (dir_copy), policy);
  if (src == NULL) {
    free (*name);
    *name = NULL;
  }
  free (real);
  free (dir_copy);
  return src;
}

struct vmdk_image *
vmdk_open (const char *path, const struct vmdk_options *opts)
{
  struct vmdk_source *src;
  struct vmdk_image *img = NULL;
  char *name;

  src = image_path_source (path, opts ? &opts->files : NULL, &name);
  if (src)
    img = vmdk_open_source (src, name, opts);
  free (name);
  return img;
}
