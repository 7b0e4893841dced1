/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Creating images: the create-* parameters (names and values as
 * nbdkit-vddk's), the plan of files a type needs, the descriptor as
 * VMware writes it, and creating the files all or nothing.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checked.h"
#include "create.h"
#include "error.h"
#include "header.h"
#include "image.h"

/* In the order of enum vmdk_create_type. */
static const struct {
  const char *name;             /* the parameter value */
  enum vmdk_create_type type;
  const char *create_type;      /* the descriptor's createType */
} create_types[] = {
  { "monolithic-sparse", VMDK_CREATE_MONOLITHIC_SPARSE, "monolithicSparse" },
  { "monolithic-flat", VMDK_CREATE_MONOLITHIC_FLAT, "monolithicFlat" },
  { "split-sparse", VMDK_CREATE_SPLIT_SPARSE, "twoGbMaxExtentSparse" },
  { "split-flat", VMDK_CREATE_SPLIT_FLAT, "twoGbMaxExtentFlat" },
  { "vmfs-flat", VMDK_CREATE_VMFS_FLAT, "vmfs" },
  /* ESXi's thin disks say "vmfs" with ddb.thinProvisioned; qemu-img
   * refuses createType "vmfsThin" (VMDK-FORMAT.md (c)).
   */
  { "vmfs-thin", VMDK_CREATE_VMFS_THIN, "vmfs" },
  { "vmfs-sparse", VMDK_CREATE_VMFS_SPARSE, "vmfsSparse" },
  { "stream-optimized", VMDK_CREATE_STREAM_OPTIMIZED, "streamOptimized" },
};
#define NR_CREATE_TYPES (sizeof create_types / sizeof create_types[0])

/* In the order of enum vmdk_adapter_type. */
static const struct {
  const char *name;
  enum vmdk_adapter_type adapter;
  const char *ddb;              /* ddb.adapterType */
} adapters[] = {
  { "ide", VMDK_ADAPTER_IDE, "ide" },
  { "scsi-buslogic", VMDK_ADAPTER_BUSLOGIC, "buslogic" },
  { "scsi-lsilogic", VMDK_ADAPTER_LSILOGIC, "lsilogic" },
};
#define NR_ADAPTERS (sizeof adapters / sizeof adapters[0])

static const struct {
  const char *name;
  unsigned version;
} hw_versions[] = {
  { "workstation4", 3 }, { "workstation5", 4 }, { "workstation6", 6 },
  { "esx30", 4 }, { "esx4x", 7 }, { "esx50", 8 }, { "esx51", 9 },
  { "esx55", 10 }, { "esx60", 11 }, { "esx65", 13 },
};
#define NR_HW_VERSIONS (sizeof hw_versions / sizeof hw_versions[0])

#define MAX_HW_VERSION 255
/* The reader refuses descriptors of more lines than this; keep well
 * below (a split image of 16384 extents is 32 TiB).
 */
#define MAX_SPLIT_EXTENTS 16384

int
vmdk_create_type_parse (const char *value, enum vmdk_create_type *type)
{
  size_t i;

  for (i = 0; i < NR_CREATE_TYPES; ++i)
    if (strcmp (value, create_types[i].name) == 0) {
      *type = create_types[i].type;
      return 0;
    }
  return vmdk_error (EINVAL, "create-type: unknown type \"%s\" (expected "
                     "one of %s)", value, vmdk_create_type_list ());
}

const char *
vmdk_create_type_name (enum vmdk_create_type type)
{
  size_t i;

  for (i = 0; i < NR_CREATE_TYPES; ++i)
    if (create_types[i].type == type)
      return create_types[i].name;
  return "?";
}

const char *
vmdk_create_type_list (void)
{
  return "monolithic-sparse,monolithic-flat,split-sparse,split-flat,"
    "vmfs-flat,vmfs-thin,vmfs-sparse,stream-optimized";
}

int
vmdk_adapter_type_parse (const char *value, enum vmdk_adapter_type *adapter)
{
  size_t i;

  for (i = 0; i < NR_ADAPTERS; ++i)
    if (strcmp (value, adapters[i].name) == 0) {
      *adapter = adapters[i].adapter;
      return 0;
    }
  return vmdk_error (EINVAL, "create-adapter-type: unknown adapter type "
                     "\"%s\" (expected ide, scsi-buslogic or scsi-lsilogic)",
                     value);
}

int
vmdk_hw_version_parse (const char *value, unsigned *version)
{
  unsigned long v;
  char *end;
  size_t i;

  for (i = 0; i < NR_HW_VERSIONS; ++i)
    if (strcmp (value, hw_versions[i].name) == 0) {
      *version = hw_versions[i].version;
      return 0;
    }
  errno = 0;
  v = strtoul (value, &end, 10);
  if (value[0] >= '0' && value[0] <= '9' && *end == '\0' && errno == 0 &&
      v >= 1 && v <= MAX_HW_VERSION) {
    *version = v;
    return 0;
  }
  return vmdk_error (EINVAL, "create-hwversion: \"%s\" is neither a "
                     "hardware version name (workstation4, workstation5, "
                     "workstation6, esx30, esx4x, esx50, esx51, esx55, "
                     "esx60, esx65) nor a number from 1 to %d", value,
                     MAX_HW_VERSION);
}

void
vmdk_create_defaults (struct vmdk_create_options *opts)
{
  memset (opts, 0, sizeof *opts);
  opts->type = VMDK_CREATE_MONOLITHIC_SPARSE;
  opts->adapter = VMDK_ADAPTER_BUSLOGIC;
  opts->hw_version = 4;
}

/* What a type is made of. */
enum extent_kind { KIND_SPARSE, KIND_FLAT, KIND_VMFS, KIND_COWD, KIND_STREAM };

struct type_info {
  enum extent_kind kind;
  bool split;                   /* extents of at most 2047 MiB */
  bool embedded;                /* descriptor inside the one extent */
  bool parent_ok;               /* may be a delta link */
  const char *suffix;           /* extent file names: NAME<suffix> */
  uint64_t max_sectors;         /* largest capacity, 0: no limit */
};

static const struct type_info *
type_info (enum vmdk_create_type type)
{
  /* 32-bit grain-table entries and COWD header fields: 2^32 sectors. */
  static const struct type_info mono_sparse = {
    KIND_SPARSE, false, true, true, "", UINT64_C (1) << 32 };
  static const struct type_info mono_flat = {
    KIND_FLAT, false, false, false, "-flat.vmdk", 0 };
  static const struct type_info split_sparse = {
    KIND_SPARSE, true, false, true, "-s%03u.vmdk", 0 };
  static const struct type_info split_flat = {
    KIND_FLAT, true, false, false, "-f%03u.vmdk", 0 };
  static const struct type_info vmfs_flat = {
    KIND_VMFS, false, false, false, "-flat.vmdk", 0 };
  static const struct type_info vmfs_sparse = {
    KIND_COWD, false, false, true, "-delta.vmdk", UINT32_MAX };
  /* The reader holds a directory of at most 4 Mi tables: 128 TiB. */
  static const struct type_info stream = {
    KIND_STREAM, false, true, false, "", UINT64_C (1) << 38 };

  switch (type) {
  case VMDK_CREATE_MONOLITHIC_SPARSE: return &mono_sparse;
  case VMDK_CREATE_MONOLITHIC_FLAT: return &mono_flat;
  case VMDK_CREATE_SPLIT_SPARSE: return &split_sparse;
  case VMDK_CREATE_SPLIT_FLAT: return &split_flat;
  case VMDK_CREATE_VMFS_FLAT:
  case VMDK_CREATE_VMFS_THIN: return &vmfs_flat;
  case VMDK_CREATE_VMFS_SPARSE: return &vmfs_sparse;
  case VMDK_CREATE_STREAM_OPTIMIZED: return &stream;
  }
  return NULL;
}

/* One extent file to create. */
struct new_extent {
  char *file;                   /* NULL: the main file itself */
  uint64_t sectors;
};

/* Everything decided before the first file is created. */
struct plan {
  const struct vmdk_create_options *opts;
  const struct type_info *info;
  const char *name;             /* the main file */
  uint64_t sectors;             /* capacity */
  struct geometry geo;
  uint32_t cid, parent_cid;
  struct new_extent *extents;
  size_t nr_extents;
  char *desc;                   /* descriptor text */
  size_t desc_len;
};

static void
free_plan (struct plan *p)
{
  size_t i;

  for (i = 0; i < p->nr_extents; ++i)
    free (p->extents[i].file);
  free (p->extents);
  free (p->desc);
}

/* The extent files, named after the main file without ".vmdk". */
static int
plan_extents (struct plan *p)
{
  const struct type_info *info = p->info;
  const char *dot = strrchr (p->name, '.');
  size_t stem = dot && strcmp (dot, ".vmdk") == 0 ? (size_t) (dot - p->name)
                                                   : strlen (p->name);
  uint64_t per = info->split ? CREATE_SPLIT_SECTORS : p->sectors;
  uint64_t n = div_round_up (p->sectors, per), i;

  if (n > MAX_SPLIT_EXTENTS)
    return vmdk_error (EFBIG, "%s: %" PRIu64 " bytes would take %" PRIu64
                       " extent files, more than the limit of %d", p->name,
                       p->sectors * SECTOR, n, MAX_SPLIT_EXTENTS);
  p->extents = calloc (n, sizeof *p->extents);
  if (p->extents == NULL)
    return vmdk_error (ENOMEM, "calloc: %m");
  for (i = 0; i < n; ++i) {
    struct new_extent *e = &p->extents[i];
    char suffix[32];

    p->nr_extents = i + 1;
    e->sectors = MIN (per, p->sectors - i * per);
    if (info->embedded)
      continue;
    snprintf (suffix, sizeof suffix, info->suffix, (unsigned) i + 1);
    if (asprintf (&e->file, "%.*s%s", (int) stem, p->name, suffix) == -1) {
      e->file = NULL;
      return vmdk_error (ENOMEM, "asprintf: %m");
    }
  }
  return 0;
}

static const char *
extent_line_type (enum extent_kind kind)
{
  switch (kind) {
  case KIND_SPARSE:
  case KIND_STREAM: return "SPARSE";
  case KIND_FLAT: return "FLAT";
  case KIND_VMFS: return "VMFS";
  case KIND_COWD: return "VMFSSPARSE";
  }
  return "?";
}

/* The descriptor, as VMware's own writer emits it (VMDK-FORMAT.md (c)):
 * the keys below, each once, in this form.
 */
static int
plan_descriptor (struct plan *p)
{
  const struct vmdk_create_options *o = p->opts;
  const struct ddb_values v = {
    .hw_version = o->hw_version,
    .adapter = adapters[o->adapter].ddb,
    .geo = p->geo,
    .thin = o->type == VMDK_CREATE_VMFS_THIN,
  };
  struct text t = { 0 };
  size_t i;

  text_append (&t, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n");
  text_append (&t, "CID=%08" PRIx32 "\nparentCID=%08" PRIx32 "\n", p->cid,
               p->parent_cid);
  text_append (&t, "createType=\"%s\"\n", create_types[o->type].create_type);
  if (o->parent)
    text_append (&t, "parentFileNameHint=\"%s\"\n", o->parent);
  text_append (&t, "\n# Extent description\n");
  for (i = 0; i < p->nr_extents; ++i) {
    const struct new_extent *e = &p->extents[i];

    text_append (&t, "RW %" PRIu64 " %s \"%s\"", e->sectors,
                 extent_line_type (p->info->kind),
                 e->file ? e->file : p->name);
    text_append (&t, p->info->kind == KIND_FLAT ? " 0\n" : "\n");
  }
  text_append (&t, "\n# The Disk Data Base\n#DDB\n\n");
  descriptor_write_ddb (&t, &v, NULL, 0);
  if (t.failed) {
    free (t.s);
    return vmdk_error (ENOMEM, "descriptor: %m");
  }
  p->desc = t.s;
  p->desc_len = t.len;
  return 0;
}

/* A delta link: the parent's CID and (by default) its size. */
static int
plan_parent (struct plan *p, struct vmdk_source *src)
{
  const struct vmdk_create_options *o = p->opts;
  struct vmdk_options popts = { .readonly = true, .files = o->files };
  struct vmdk_image *parent;
  uint64_t size;

  if (!p->info->parent_ok)
    return vmdk_error (EINVAL, "create-parent: a %s image cannot be a delta "
                       "link (use monolithic-sparse, split-sparse or "
                       "vmfs-sparse)", vmdk_create_type_name (o->type));
  parent = image_open_hint (src, o->parent, &popts);
  if (parent == NULL)
    return vmdk_error_prefix ("create-parent: %s", o->parent);
  p->parent_cid = parent->desc->cid;
  size = parent->size;
  if (!parent->desc->has_cid) {
    vmdk_close (parent);
    return vmdk_error (EINVAL, "create-parent: %s has no CID to record as "
                       "the new link's parentCID", o->parent);
  }
  vmdk_close (parent);
  if (o->size == 0)
    p->sectors = size / SECTOR;
  else if (o->size < size)
    return vmdk_error (EINVAL, "create-size: %" PRIu64 " bytes is smaller "
                       "than the parent %s (%" PRIu64 " bytes)", o->size,
                       o->parent, size);
  return 0;
}

static int
make_plan (struct plan *p, struct vmdk_source *src, const char *name,
           const struct vmdk_create_options *o)
{
  p->opts = o;
  p->name = name;
  p->info = type_info (o->type);
  if (p->info == NULL)
    return vmdk_error (EINVAL, "create-type: unknown type");
  if ((unsigned) o->adapter >= NR_ADAPTERS)
    return vmdk_error (EINVAL, "create-adapter-type: unknown adapter");
  if (o->hw_version < 1 || o->hw_version > MAX_HW_VERSION)
    return vmdk_error (EINVAL, "create-hwversion: %u is out of range",
                       o->hw_version);
  if (o->size % SECTOR != 0)
    return vmdk_error (EINVAL, "create-size: %" PRIu64 " bytes is not a "
                       "multiple of 512", o->size);
  p->sectors = o->size / SECTOR;
  p->parent_cid = CID_NONE;
  if (o->parent && plan_parent (p, src) == -1)
    return -1;
  if (p->sectors == 0)
    return vmdk_error (EINVAL, "create-size: the size must be given and "
                       "larger than 0");
  if (p->sectors > INT64_MAX / SECTOR ||
      (p->info->max_sectors && p->sectors > p->info->max_sectors))
    return vmdk_error (EFBIG, "create-size: %" PRIu64 " bytes is too large "
                       "for a %s image (at most %" PRIu64 " bytes)",
                       o->size, vmdk_create_type_name (o->type),
                       p->info->max_sectors ? p->info->max_sectors * SECTOR
                                            : (uint64_t) INT64_MAX);
  p->geo = descriptor_geometry (p->sectors, o->adapter == VMDK_ADAPTER_IDE);
  p->cid = descriptor_random_cid (8, CID_NONE);
  if (plan_extents (p) == -1 || plan_descriptor (p) == -1)
    return -1;
  if (p->info->embedded &&
      p->desc_len > CREATE_EMBEDDED_DESC_SECTORS * SECTOR)
    return vmdk_error (ENAMETOOLONG, "%s: the descriptor is too long to "
                       "embed (a parent name of %zu bytes?)", name,
                       o->parent ? strlen (o->parent) : 0);
  return 0;
}

/* The files created so far, removed again if creation fails. */
struct created {
  struct vmdk_source *src;
  const char **names;
  size_t nr;
};

static struct vmdk_io *
create_file (struct created *c, const char *name)
{
  struct vmdk_io *io = c->src->ops->create (c->src, name);

  if (io)
    c->names[c->nr++] = name;
  return io;
}

static void
undo (struct created *c)
{
  while (c->nr > 0)
    if (c->src->ops->remove (c->src, c->names[--c->nr]) == -1)
      vmdk_warning ("creation failed, and so did removing its file: %s",
                    vmdk_errmsg ());
}

/* Refuse up front, changing nothing, if any file of the plan exists. */
static int
check_absent (struct vmdk_source *src, const char *name)
{
  struct vmdk_io *io = src->ops->open (src, name, true);

  if (io) {
    io_close (io);
    return vmdk_error (EEXIST, "%s: the file exists already: refusing to "
                       "create over it", name);
  }
  if (errno != ENOENT)
    return vmdk_error_prefix ("%s", name);
  return 0;
}

static int
write_extent (const struct plan *p, const struct new_extent *e,
              struct vmdk_io *io)
{
  switch (p->info->kind) {
  case KIND_SPARSE:
    return create_sparse_extent (io, e->sectors,
                                 e->file ? NULL : p->desc,
                                 e->file ? 0 : p->desc_len);
  case KIND_COWD:
    return create_cowd_extent (io, e->sectors, &p->geo, p->opts->parent);
  case KIND_STREAM:
    return create_stream_extent (io, e->sectors, p->desc, p->desc_len);
  case KIND_FLAT:
  case KIND_VMFS:
    return create_flat_extent (io, e->sectors);
  }
  return vmdk_error (EINVAL, "unknown extent kind");
}

/* Create and write one file: an extent, or (e NULL) the descriptor. */
static int
make_file (struct created *c, const struct plan *p, const char *name,
           const struct new_extent *e)
{
  struct vmdk_io *io = create_file (c, name);
  int r;

  if (io == NULL)
    return -1;
  if (e)
    r = write_extent (p, e, io);
  else
    r = io->ops->pwrite (io, p->desc, p->desc_len, 0);
  if (r == 0)
    r = io->ops->flush (io);
  io_close (io);
  return r;
}

static int
make_files (struct created *c, const struct plan *p)
{
  size_t i;

  for (i = 0; i < p->nr_extents; ++i)
    if (check_absent (c->src, p->extents[i].file ? p->extents[i].file
                                                 : p->name) == -1)
      return -1;
  if (!p->info->embedded &&
      (check_absent (c->src, p->name) == -1 ||
       make_file (c, p, p->name, NULL) == -1))
    return -1;
  for (i = 0; i < p->nr_extents; ++i) {
    const struct new_extent *e = &p->extents[i];

    if (make_file (c, p, e->file ? e->file : p->name, e) == -1)
      return -1;
  }
  if (c->src->ops->sync_names && c->src->ops->sync_names (c->src) == -1)
    return -1;
  return 0;
}

int
vmdk_create_source (struct vmdk_source *src, const char *name,
                    const struct vmdk_create_options *opts)
{
  struct plan p = { 0 };
  struct created c = { .src = src };
  int r = -1;

  if (src->ops->create == NULL || src->ops->remove == NULL) {
    vmdk_error (ENOTSUP, "%s: this byte source cannot create files", name);
    goto out;
  }
  if (make_plan (&p, src, name, opts) == -1)
    goto out;
  c.names = calloc (p.nr_extents + 1, sizeof *c.names);
  if (c.names == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    goto out;
  }
  r = make_files (&c, &p);
  if (r == -1)
    undo (&c);
  else
    vmdk_debug (VMDK_DEBUG_OPEN, "%s: created %s, %" PRIu64 " bytes, %zu "
                "extent file(s)", name, vmdk_create_type_name (opts->type),
                p.sectors * SECTOR, p.nr_extents);
 out:
  free (c.names);
  free_plan (&p);
  return r;
}

int
vmdk_create (const char *path, const struct vmdk_create_options *opts)
{
  char *dir_copy = strdup (path), *base_copy = strdup (path), *dir;
  struct vmdk_source *src = NULL;
  int r = -1;

  if (dir_copy == NULL || base_copy == NULL) {
    vmdk_error (ENOMEM, "strdup: %m");
    goto out;
  }
  dir = realpath (dirname (dir_copy), NULL);
  if (dir == NULL) {
    vmdk_error (errno, "realpath: %s: %m", path);
    goto out;
  }
  src = vmdk_source_posix_new (dir, &opts->files);
  free (dir);
  if (src)
    r = vmdk_create_source (src, basename (base_copy), opts);
 out:
  if (src)
    src->ops->close (src);
  free (dir_copy);
  free (base_copy);
  return r;
}
