/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The image: a descriptor, extents ordered by virtual offset, and the
 * read / block-status paths that split requests across extents.
 *
 * Everything is parsed and validated in vmdk_open; afterwards the image
 * is immutable except for the grain-table cache, which has its own
 * sharded locks.  So reads take no image-wide lock.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <ctype.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "checked.h"
#include "descriptor.h"
#include "error.h"
#include "extent.h"
#include "gtcache.h"
#include "header.h"
#include "io.h"
#include "le.h"
#include "vmdk.h"

/* Preferred I/O size advertised for images without grains (flat). */
#define FLAT_PREFERRED_BLOCK 65536

struct vmdk_image {
  struct vmdk_source *src;
  char *name;
  struct descriptor *desc;
  struct vmdk_io **ios;         /* every file opened, each once */
  size_t nr_ios;
  struct extent *extents;
  size_t nr_extents;
  uint64_t size;
  uint32_t grain_size;
  struct gtcache *cache;        /* shared by every link of a chain */
  bool owns_src, owns_cache;
  struct vmdk_image *parent;    /* NULL: no parent, or single-link */
  unsigned chain_length;

  /* Writing (top link only). */
  bool rw;                      /* files opened read-write */
  bool writable;                /* every RW extent can be written */
  const char *ro_reason;
  char ro_reason_buf[256];
  uint64_t desc_offset, desc_length;  /* descriptor bytes in ios[0] */
  pthread_mutex_t write_lock;   /* first-write setup */
  bool modified;
};

/* The files already in the chain being opened, to refuse loops. */
struct chain {
  uint64_t ids[VMDK_MAX_CHAIN_DEPTH][2];
  unsigned depth;
};

static void close_writes (struct vmdk_image *img);

void
vmdk_close (struct vmdk_image *img)
{
  size_t i;

  if (img == NULL)
    return;
  if (img->modified)
    close_writes (img);
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
  struct vmdk_io **ios = realloc (img->ios, (img->nr_ios + 1) * sizeof *ios);

  if (ios == NULL) {
    io_close (io);
    return vmdk_error (ENOMEM, "realloc: %m");
  }
  img->ios = ios;
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
read_embedded_descriptor (struct vmdk_image *img, struct vmdk_io *io,
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
  img->desc = descriptor_parse (text, len, io->name);
  free (text);
  if (img->desc == NULL)
    return -1;
  img->desc_offset = off;
  img->desc_length = len;
  /* The embedded descriptor describes this very file, whatever name it
   * gives (ovftool writes "generated-stream.vmdk"): never open that name.
   */
  if (img->desc->nr_extents != 1 ||
      img->desc->extents[0].type != EXTENT_SPARSE)
    return vmdk_error (EINVAL, "%s: the embedded descriptor must describe "
                       "exactly one SPARSE extent (this file), it has %zu "
                       "extent lines", io->name, img->desc->nr_extents);
  return 0;
}

/* A bare sparse extent with no descriptor: describe it as itself. */
static int
synthesize_descriptor (struct vmdk_image *img, struct vmdk_io *io,
                       uint64_t capacity, enum extent_type type)
{
  struct descriptor *d = calloc (1, sizeof *d);

  img->desc = d;
  if (d == NULL ||
      (d->extents = calloc (1, sizeof *d->extents)) == NULL ||
      (d->create_type = strdup ("monolithicSparse")) == NULL ||
      (d->extents[0].line = strdup ("(no descriptor)")) == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  d->nr_extents = 1;            /* so that descriptor_free frees the line */
  if (capacity == 0 || capacity > UINT64_MAX / SECTOR)
    return vmdk_error (EINVAL, "%s: header capacity %" PRIu64 " sectors is "
                       "invalid and there is no descriptor", io->name,
                       capacity);
  d->version = 1;
  d->parent_cid = CID_NONE;
  d->extents[0].access = ACCESS_RW;
  d->extents[0].sectors = capacity;
  d->extents[0].type = type;
  return 0;
}

/* Read the main file: a sparse file with (or without) an embedded
 * descriptor, or a text descriptor.  On return img->desc is set, and
 * *self is the main file's io if it is itself the (only) extent.
 */
/* The parser stops at the first NUL, like QEMU's.  In a descriptor
 * file anything after it is normally NUL padding, but QEMU rewriting
 * the CID leaves the old tail behind the NUL when the new text is
 * shorter (it prints the CID without leading zeroes): that must keep
 * working, so the rest is ignored, with a warning when it is not
 * padding.
 */
static void
warn_text_after_nul (const char *text, size_t len, const char *name)
{
  const char *nul = memchr (text, '\0', len);
  size_t i;

  if (nul == NULL)
    return;
  for (i = nul - text; i < len; ++i)
    if (text[i] != '\0') {
      vmdk_warning ("%s: descriptor file has text after the NUL byte at "
                    "offset %td (at offset %zu): ignored, as QEMU does",
                    name, nul - text, i);
      return;
    }
}

static int
read_main_file (struct vmdk_image *img, struct vmdk_io *io,
                struct vmdk_io **self)
{
  unsigned char first[SPARSE_HEADER_SIZE];
  uint64_t size;
  int64_t n;
  char *text;

  *self = NULL;
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
    *self = io;
    if (read_embedded_descriptor (img, io, &h) == -1)
      return -1;
    if (img->desc == NULL)
      return synthesize_descriptor (img, io, h.capacity, EXTENT_SPARSE);
    return 0;
  }
  if (n >= 4 && cowd_is_magic (first)) {
    uint64_t capacity;

    if (n < SPARSE_HEADER_SIZE)
      return vmdk_error (EINVAL, "%s: COWD header is truncated", io->name);
    if (cowd_capacity (first, &capacity, io->name) == -1)
      return -1;
    *self = io;
    return synthesize_descriptor (img, io, capacity, EXTENT_VMFSSPARSE);
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
  warn_text_after_nul (text, size, io->name);
  img->desc = descriptor_parse (text, size, io->name);
  free (text);
  img->desc_offset = 0;
  img->desc_length = size;
  return img->desc ? 0 : -1;
}

static int
init_extent (struct vmdk_image *img, struct extent *e,
             const struct descriptor_extent *de, struct vmdk_io *self)
{
  unsigned char magic[4];
  int64_t n;

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
    /* Both hosted sparse (KDMV) and COWD files appear under either
     * name; the magic decides.
     */
    n = e->io->ops->pread (e->io, magic, sizeof magic, 0);
    if (n == -1)
      return -1;
    if (n == 4 && sparse_header_is_magic (magic))
      return extent_sparse_init (e, img->cache);
    if (n == 4 && cowd_is_magic (magic))
      return extent_cowd_init (e, img->cache);
    return vmdk_error (EINVAL, "%s: sparse extent has neither \"KDMV\" nor "
                       "\"COWD\" magic", e->io->name);
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

static int prepare_writes (struct vmdk_image *img,
                           const struct vmdk_options *opts);
static struct vmdk_image *open_link (struct vmdk_source *src, bool owns_src,
                                     const char *name,
                                     const struct vmdk_options *opts,
                                     struct gtcache *cache,
                                     struct chain *chain);

/* Record the main file of a link in the chain, refusing loops (by
 * device and inode, so another name for the same file is caught too)
 * and chains deeper than the limit.
 */
static int
enter_chain (struct chain *chain, struct vmdk_io *io)
{
  uint64_t id[2];
  unsigned i;

  if (io->ops->get_id (io, id) == -1)
    return -1;
  for (i = 0; i < chain->depth; ++i)
    if (chain->ids[i][0] == id[0] && chain->ids[i][1] == id[1])
      return vmdk_error (ELOOP, "%s: the parent chain loops back to this "
                         "file (parentFileNameHint cycle)", io->name);
  if (chain->depth >= VMDK_MAX_CHAIN_DEPTH)
    return vmdk_error (ELOOP, "%s: the parent chain is deeper than %d links",
                       io->name, VMDK_MAX_CHAIN_DEPTH);
  chain->ids[chain->depth][0] = id[0];
  chain->ids[chain->depth][1] = id[1];
  chain->depth++;
  return 0;
}

/* Open the parent named by parentFileNameHint, relative to the
 * directory of this link's descriptor, and check its CID.  Parents are
 * always read-only.
 */
static int
open_parent (struct vmdk_image *img, const struct vmdk_options *opts,
             struct chain *chain)
{
  const char *hint = img->desc->parent_hint;
  struct vmdk_options parent_opts = *opts;
  struct vmdk_source *src = img->src;
  const char *slash, *base;
  bool owns_src = false;
  struct vmdk_image *parent;
  unsigned depth;

  if (hint == NULL || hint[0] == '\0')
    return vmdk_error (EINVAL, "%s: parentCID is %08" PRIx32 " (not "
                       "ffffffff) but there is no parentFileNameHint naming "
                       "the parent", img->name, img->desc->parent_cid);
  slash = strrchr (hint, '/');
  base = slash ? slash + 1 : hint;
  if (slash) {
    char *dir = strndup (hint, slash == hint ? 1 : (size_t) (slash - hint));

    if (dir == NULL)
      return vmdk_error (ENOMEM, "strndup: %m");
    src = img->src->ops->subdir (img->src, dir);
    free (dir);
    if (src == NULL)
      return vmdk_error_prefix ("%s: parentFileNameHint \"%s\"",
                                img->name, hint);
    owns_src = true;
  }

  parent_opts.readonly = true;
  depth = chain->depth;
  parent = open_link (src, owns_src, base, &parent_opts, img->cache, chain);
  if (parent == NULL) {
    /* Name the link whose parent failed, once: in a long chain the
     * innermost error matters, not every link on the way to it.
     */
    if (chain->depth <= depth + 1)
      vmdk_error_prefix ("%s: parent \"%s\"", img->name, hint);
    return -1;
  }
  img->parent = parent;
  img->chain_length = 1 + parent->chain_length;

  if (!parent->desc->has_cid || img->desc->parent_cid == CID_NONE)
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: no CIDs to check against parent %s",
                img->name, hint);
  else if (parent->desc->cid != img->desc->parent_cid) {
    if (!opts->ignore_parent_cid)
      return vmdk_error (EINVAL, "%s: parentCID=%08" PRIx32 " does not "
                         "match CID=%08" PRIx32 " of its parent %s: the "
                         "parent was modified after this snapshot was "
                         "taken (or is the wrong file)", img->name,
                         img->desc->parent_cid, parent->desc->cid, hint);
    vmdk_warning ("%s: parentCID=%08" PRIx32 " does not match CID=%08"
                  PRIx32 " of its parent %s: opening anyway because the "
                  "CID check is disabled; the data may be inconsistent",
                  img->name, img->desc->parent_cid, parent->desc->cid, hint);
  }
  return 0;
}

/* A bare COWD redo log names its parent in its header, not in a
 * descriptor: use that name as the hint.
 */
static int
take_cowd_parent_name (struct vmdk_image *img)
{
  char name[1025];
  struct extent *e = &img->extents[0];

  if (img->nr_extents != 1 || img->desc->parent_hint ||
      strcmp (e->ops->kind, "COWD") != 0)
    return 0;
  if (cowd_parent_name (e, name, sizeof name) == -1)
    return -1;
  if (name[0] == '\0')
    return 0;
  img->desc->parent_hint = strdup (name);
  if (img->desc->parent_hint == NULL)
    return vmdk_error (ENOMEM, "strdup: %m");
  return 0;
}

static bool
has_parent (const struct descriptor *d)
{
  return d->parent_hint != NULL || d->parent_cid != CID_NONE;
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

static struct vmdk_image *
open_link (struct vmdk_source *src, bool owns_src, const char *name,
           const struct vmdk_options *opts, struct gtcache *cache,
           struct chain *chain)
{
  struct vmdk_image *img;
  struct vmdk_io *main_io, *self;

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
  pthread_mutex_init (&img->write_lock, NULL);
  main_io = open_file (img, name);
  if (main_io == NULL || remember_io (img, main_io) == -1)
    goto err;
  if (enter_chain (chain, main_io) == -1 ||
      read_main_file (img, main_io, &self) == -1 ||
      check_create_type (img, opts) == -1 ||
      build_extents (img, self) == -1 ||
      (!opts->single_link && take_cowd_parent_name (img) == -1))
    goto err;
  if (has_parent (img->desc) && !opts->single_link &&
      open_parent (img, opts, chain) == -1)
    goto err;
  if (img->rw && prepare_writes (img, opts) == -1)
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

struct vmdk_image *
vmdk_open_source (struct vmdk_source *src, const char *name,
                  const struct vmdk_options *opts)
{
  static const struct vmdk_options defaults = { .readonly = true };
  struct chain *chain;
  struct gtcache *cache;
  struct vmdk_image *img;

  if (opts == NULL)
    opts = &defaults;
  chain = calloc (1, sizeof *chain);
  cache = gtcache_new (opts->gt_cache_bytes ? opts->gt_cache_bytes
                                            : VMDK_DEFAULT_GT_CACHE);
  if (chain == NULL || cache == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    free (chain);
    gtcache_free (cache);
    src->ops->close (src);
    return NULL;
  }
  img = open_link (src, true, name, opts, cache, chain);
  free (chain);
  if (img == NULL) {
    gtcache_free (cache);
    return NULL;
  }
  img->owns_cache = true;
  return img;
}

struct vmdk_image *
vmdk_open (const char *path, const struct vmdk_options *opts)
{
  char *real, *dir_copy, *base_copy;
  struct vmdk_source *src;
  struct vmdk_image *img = NULL;

  real = realpath (path, NULL);
  if (real == NULL) {
    vmdk_error (errno, "realpath: %s: %m", path);
    return NULL;
  }
  dir_copy = strdup (real);
  base_copy = strdup (real);
  if (dir_copy == NULL || base_copy == NULL) {
    vmdk_error (ENOMEM, "strdup: %m");
    goto out;
  }
  src = vmdk_source_posix_new (dirname (dir_copy), opts ? &opts->files : NULL);
  if (src)
    img = vmdk_open_source (src, basename (base_copy), opts);
 out:
  free (real);
  free (dir_copy);
  free (base_copy);
  return img;
}

/* The extent containing offset, which must be < img->size. */
static struct extent *
find_extent (struct vmdk_image *img, uint64_t offset)
{
  size_t lo = 0, hi = img->nr_extents;

  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (img->extents[mid].start <= offset)
      lo = mid;
    else
      hi = mid;
  }
  return &img->extents[lo];
}

/* Look up the run at image offset, bounded by max and by the extent. */
static int
lookup (struct vmdk_image *img, uint64_t offset, uint64_t max, bool for_map,
        struct extent **ep, struct run *run)
{
  struct extent *e = find_extent (img, offset);
  uint64_t rel = offset - e->start;

  max = MIN (max, e->length - rel);
  *ep = e;
  if (e->access == ACCESS_NOACCESS) {
    if (for_map) {              /* unknown contents: call it data */
      run->kind = RUN_DATA;
      run->length = max;
      return 0;
    }
    return vmdk_error (EIO, "%s: read at offset %" PRIu64 " falls in a "
                       "NOACCESS extent (\"%s\")", img->name, offset,
                       e->line);
  }
  if (e->ops->lookup (e, rel, max, for_map, run) == -1)
    return -1;
  if (run->length == 0 || run->length > max)
    run->length = max;            /* defensive: always make progress */
  return 0;
}

/* Read from the parent, which may be shorter than the child: past its
 * end reads zeroes.
 */
static int
read_parent (struct vmdk_image *parent, unsigned char *buf, size_t count,
             uint64_t offset)
{
  size_t n = 0;

  if (offset < parent->size) {
    n = MIN ((uint64_t) count, parent->size - offset);
    if (vmdk_pread (parent, buf, n, offset) == -1)
      return -1;
  }
  memset (buf + n, 0, count - n);
  return 0;
}

int
vmdk_pread (struct vmdk_image *img, void *buf, size_t count, uint64_t offset)
{
  unsigned char *b = buf;
  uint64_t end;

  if (ADD_OVERFLOW (offset, (uint64_t) count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: read of %zu bytes at offset %" PRIu64
                       " is beyond the end of the disk (%" PRIu64 ")",
                       img->name, count, offset, img->size);
  while (count > 0) {
    struct extent *e;
    struct run run;
    size_t n;

    if (lookup (img, offset, count, false, &e, &run) == -1)
      return -1;
    n = run.length;
    switch (run.kind) {
    case RUN_DATA:
      if (io_pread_zerofill (e->io, b, n, run.file_offset) == -1)
        return -1;
      break;
    case RUN_COMPRESSED:
      if (e->ops->read_compressed (e, &run, offset - e->start, b, n) == -1)
        return -1;
      break;
    case RUN_UNALLOC:
      if (img->parent) {
        if (read_parent (img->parent, b, n, offset) == -1)
          return -1;
        break;
      }
      /* fall through */
    case RUN_ZERO:
    case RUN_HOLE:
      memset (b, 0, n);
      break;
    }
    vmdk_debug (VMDK_DEBUG_GRAINS, "pread: offset %" PRIu64 " len %zu "
                "kind %d file offset %" PRIu64, offset, n, run.kind,
                run.kind == RUN_DATA ? run.file_offset : 0);
    b += n;
    offset += n;
    count -= n;
  }
  return 0;
}

static enum vmdk_map_type
map_type_of (enum run_kind k)
{
  switch (k) {
  case RUN_ZERO: return VMDK_MAP_ZERO;
  case RUN_HOLE:
  case RUN_UNALLOC: return VMDK_MAP_HOLE;
  case RUN_DATA:
  case RUN_COMPRESSED:
  default: return VMDK_MAP_DATA;
  }
}

static int map_range (struct vmdk_image *img, uint64_t offset, uint64_t end,
                      vmdk_map_fn fn, void *opaque);

/* Ranges that fall through are reported as the parent reports them;
 * past the parent's end they are holes.
 */
static int
map_parent (struct vmdk_image *parent, uint64_t offset, uint64_t end,
            vmdk_map_fn fn, void *opaque)
{
  uint64_t parent_end = MIN (end, parent->size);
  int r;

  if (offset < parent_end) {
    r = map_range (parent, offset, parent_end, fn, opaque);
    if (r != 0)
      return r;
    offset = parent_end;
  }
  if (offset < end)
    return fn (opaque, offset, end - offset, VMDK_MAP_HOLE);
  return 0;
}

/* Returns 0 when done, 1 if fn asked to stop, -1 on error. */
static int
map_range (struct vmdk_image *img, uint64_t offset, uint64_t end,
           vmdk_map_fn fn, void *opaque)
{
  while (offset < end) {
    struct extent *e;
    struct run run;
    int r;

    if (lookup (img, offset, end - offset, true, &e, &run) == -1)
      return -1;
    if (run.kind == RUN_UNALLOC && img->parent)
      r = map_parent (img->parent, offset, offset + run.length, fn, opaque);
    else
      r = fn (opaque, offset, run.length, map_type_of (run.kind));
    if (r != 0)
      return r;
    offset += run.length;
  }
  return 0;
}

int
vmdk_map (struct vmdk_image *img, uint64_t offset, uint64_t count,
          vmdk_map_fn fn, void *opaque)
{
  uint64_t end;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    end = img->size;
  return map_range (img, offset, end, fn, opaque) == -1 ? -1 : 0;
}

/* Writing. */

/* Decide whether the top link can be written; if not, the image stays
 * readable and vmdk_is_writable gives the reason.
 */
static int
prepare_writes (struct vmdk_image *img, const struct vmdk_options *opts)
{
  size_t i;

  if (img->ro_reason)           /* a file could not be opened RW */
    return 0;
  if (opts->single_link && has_parent (img->desc)) {
    img->ro_reason = "single-link: the parent is not open, so a partial "
      "write could not copy the rest of a grain from it";
    return 0;
  }
  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];
    const char *reason = NULL;
    int r;

    if (e->access != ACCESS_RW)   /* refused per request instead */
      continue;
    if (e->ops->open_rw == NULL) {
      snprintf (img->ro_reason_buf, sizeof img->ro_reason_buf,
                "%s extents are read-only (\"%s\")", e->ops->kind, e->line);
      img->ro_reason = img->ro_reason_buf;
      return 0;
    }
    r = e->ops->open_rw (e, &reason);
    if (r == -1)
      return -1;
    if (r == 1) {
      snprintf (img->ro_reason_buf, sizeof img->ro_reason_buf, "%s: %s",
                e->io ? e->io->name : img->name, reason);
      img->ro_reason = img->ro_reason_buf;
      return 0;
    }
  }
  img->writable = true;
  return 0;
}

bool
vmdk_is_writable (const struct vmdk_image *img, const char **reason)
{
  if (reason)
    *reason = img->writable ? NULL
      : img->ro_reason ? img->ro_reason : "opened read-only";
  return img->writable;
}

/* A new CID, written over the old value's digits in place (same width,
 * so only those bytes of the descriptor change: QEMU's rewrite of the
 * whole descriptor drops lines).
 */
static int
update_cid (struct vmdk_image *img)
{
  struct vmdk_io *io = img->ios[0];
  char *text, digits[17];
  size_t len = img->desc_length, pos = 0, start, width;
  uint32_t cid = 0, limit;
  int r = -1;

  text = malloc (len + 1);
  if (text == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  if (io_pread_full (io, text, len, img->desc_offset, "descriptor") == -1)
    goto out;
  text[len] = '\0';
  len = strlen (text);
  /* Find "CID" at the start of a line (not parentCID). */
  for (;;) {
    while (pos < len && (text[pos] == ' ' || text[pos] == '\t'))
      pos++;
    if (strncasecmp (text + pos, "CID", 3) == 0) {
      size_t p = pos + 3;
      while (text[p] == ' ' || text[p] == '\t') p++;
      if (text[p] == '=') {
        p++;
        while (text[p] == ' ' || text[p] == '\t' || text[p] == '"') p++;
        pos = p;
        break;
      }
    }
    while (pos < len && text[pos] != '\n')
      pos++;
    if (pos >= len) {
      vmdk_debug (VMDK_DEBUG_OPEN, "%s: no CID line to update", img->name);
      r = 0;
      goto out;
    }
    pos++;
  }
  start = pos;
  while (pos < len && isxdigit ((unsigned char) text[pos]))
    pos++;
  width = MIN (pos - start, (size_t) 16);
  if (width == 0) {
    r = vmdk_error (EINVAL, "%s: the CID line has no value", img->name);
    goto out;
  }
  limit = width >= 8 ? UINT32_MAX : (UINT32_C (1) << (4 * width)) - 1;
  do {
    if (getrandom (&cid, sizeof cid, 0) != sizeof cid)
      cid = (uint32_t) random ();
    cid &= limit;
  } while (cid == img->desc->cid || cid >= 0xfffffffe);
  snprintf (digits, sizeof digits, "%0*" PRIx32, (int) width, cid);
  r = io->ops->pwrite (io, digits, width, img->desc_offset + start);
  if (r == 0) {
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: CID %08" PRIx32 " -> %08" PRIx32,
                img->name, img->desc->cid, cid);
    img->desc->cid = cid;
  }
 out:
  free (text);
  return r;
}

/* Before the first change: a new CID (children of the old contents must
 * no longer match) and the unclean-shutdown flags.
 */
static int
begin_change (struct vmdk_image *img)
{
  int r = 0;
  size_t i;

  if (!img->writable) {
    const char *reason;

    vmdk_is_writable (img, &reason);
    return vmdk_error (EPERM, "%s: the image is read-only: %s", img->name,
                       reason);
  }
  if (__atomic_load_n (&img->modified, __ATOMIC_ACQUIRE))
    return 0;
  pthread_mutex_lock (&img->write_lock);
  if (!img->modified) {
    for (i = 0; r == 0 && i < img->nr_extents; ++i)
      if (img->extents[i].access == ACCESS_RW)
        r = img->extents[i].ops->begin_rw (&img->extents[i]);
    if (r == 0)
      r = update_cid (img);
    if (r == 0)
      __atomic_store_n (&img->modified, true, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock (&img->write_lock);
  return r;
}

static int
read_below (void *opaque, void *buf, size_t count, uint64_t offset)
{
  struct vmdk_image *img = opaque;

  if (img->parent)
    return read_parent (img->parent, buf, count, offset);
  memset (buf, 0, count);
  return 0;
}

enum change { CHANGE_WRITE, CHANGE_ZERO, CHANGE_CHECK_FAST_ZERO,
              CHANGE_TRIM };

/* Apply one kind of change over [offset, offset+count), extent by
 * extent.
 */
static int
change_range (struct vmdk_image *img, enum change what, const void *buf,
              uint64_t count, uint64_t offset, unsigned flags)
{
  const struct write_ctx ctx = {
    .read_below = read_below,
    .opaque = img,
    .has_parent = img->parent != NULL,
  };
  const unsigned char *b = buf;
  uint64_t end;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: request of %" PRIu64 " bytes at offset %"
                       PRIu64 " is beyond the end of the disk", img->name,
                       count, offset);
  while (count > 0) {
    struct extent *e = find_extent (img, offset);
    uint64_t rel = offset - e->start, n = MIN (count, e->length - rel);
    unsigned zflags = 0;
    int r = 0;

    if (flags & VMDK_MAY_TRIM) zflags |= EXTENT_ZERO_MAY_TRIM;
    if (flags & VMDK_FAST_ZERO) zflags |= EXTENT_ZERO_FAST;
    if (e->access != ACCESS_RW)
      r = 0;                    /* refused up front; trim is advisory */
    else switch (what) {
    case CHANGE_WRITE:
      r = e->ops->pwrite (e, b, n, rel, &ctx);
      b += n;
      break;
    case CHANGE_ZERO:
      r = e->ops->zero (e, rel, n, zflags, &ctx);
      break;
    case CHANGE_CHECK_FAST_ZERO:
      r = e->ops->zero (e, rel, n, zflags | EXTENT_ZERO_CHECK_ONLY, &ctx);
      break;
    case CHANGE_TRIM:
      r = e->ops->trim (e, rel, n, &ctx);
      break;
    }
    if (r == -1)
      return -1;
    offset += n;
    count -= n;
  }
  return 0;
}

/* Refuse a write or zero that touches a RDONLY or NOACCESS extent
 * before anything changes: a request is never half applied.
 */
static bool
all_zero (const unsigned char *b, uint64_t n)
{
  return n == 0 || (b[0] == 0 && memcmp (b, b + 1, n - 1) == 0);
}

static int
check_access (struct vmdk_image *img, const unsigned char *buf,
              uint64_t count, uint64_t offset)
{
  uint64_t end, start = offset;

  if (ADD_OVERFLOW (offset, count, &end) || end > img->size)
    return vmdk_error (EINVAL, "%s: request of %" PRIu64 " bytes at offset %"
                       PRIu64 " is beyond the end of the disk", img->name,
                       count, offset);
  while (offset < end) {
    struct extent *e = find_extent (img, offset);

    if (e->access == ACCESS_NOACCESS)
      return vmdk_error (EIO, "%s: offset %" PRIu64 " falls in a NOACCESS "
                         "extent (\"%s\")", img->name, offset, e->line);
    if (e->access == ACCESS_RDONLY)
      return vmdk_error (EPERM, "%s: offset %" PRIu64 " falls in a RDONLY "
                         "extent (\"%s\")", img->name, offset, e->line);
    /* A ZERO extent (the only kind without a file) takes only zeroes. */
    if (buf && e->io == NULL &&
        !all_zero (buf + (offset - start),
                   MIN (end, e->start + e->length) - offset))
      return vmdk_error (EPERM, "%s: write of non-zero data at offset %"
                         PRIu64 " into a ZERO extent (\"%s\")", img->name,
                         offset, e->line);
    offset = e->start + e->length;
  }
  return 0;
}

int
vmdk_pwrite (struct vmdk_image *img, const void *buf, size_t count,
             uint64_t offset, unsigned flags)
{
  if (check_access (img, buf, count, offset) == -1 ||
      begin_change (img) == -1 ||
      change_range (img, CHANGE_WRITE, buf, count, offset, 0) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_zero (struct vmdk_image *img, uint64_t count, uint64_t offset,
           unsigned flags)
{
  if (check_access (img, NULL, count, offset) == -1 ||
      begin_change (img) == -1)
    return -1;
  /* A fast zero that cannot be fast fails before anything changes. */
  if ((flags & VMDK_FAST_ZERO) &&
      change_range (img, CHANGE_CHECK_FAST_ZERO, NULL, count, offset,
                    flags) == -1)
    return -1;
  if (change_range (img, CHANGE_ZERO, NULL, count, offset, flags) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_trim (struct vmdk_image *img, uint64_t count, uint64_t offset,
           unsigned flags)
{
  if (begin_change (img) == -1 ||
      change_range (img, CHANGE_TRIM, NULL, count, offset, 0) == -1)
    return -1;
  return (flags & VMDK_FUA) ? vmdk_flush (img) : 0;
}

int
vmdk_flush (struct vmdk_image *img)
{
  size_t i;

  if (!img->writable)
    return 0;
  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];

    if (e->access == ACCESS_RW && e->ops->flush (e) == -1)
      return -1;
  }
  /* The descriptor (CID) may live in a file of its own. */
  return img->ios[0]->ops->flush (img->ios[0]);
}

static void
close_writes (struct vmdk_image *img)
{
  size_t i;

  for (i = 0; i < img->nr_extents; ++i) {
    struct extent *e = &img->extents[i];

    if (e->access == ACCESS_RW && e->ops->close_rw (e) == -1)
      vmdk_warning ("%s: closing: %s", img->name, vmdk_errmsg ());
  }
  if (img->ios[0]->ops->flush (img->ios[0]) == -1)
    vmdk_warning ("%s: closing: %s", img->name, vmdk_errmsg ());
}
