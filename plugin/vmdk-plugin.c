/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The nbdkit plugin: a thin mapping of nbdkit callbacks onto the VMDK
 * engine in lib/.  Nothing format-specific lives here.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "nbdkit-glue.h"
#include "vmdk.h"

/* Configuration. */
static char *file_arg;                  /* file= as given */
static char *filename;                  /* resolved in config_complete */
static uint64_t gt_cache_bytes = VMDK_DEFAULT_GT_CACHE;
static bool gt_cache_set;
static int single_link = -1;            /* -1: not given */
static int ignore_parent_cid = -1;
static int readonly_param = -1;
static int allow_devices = -1;
/* allow-dir=DIR, any number of times: a NULL-terminated list. */
static char **allowed_dirs;
static size_t nr_allowed_dirs;

/* create=true and the create-* parameters (nbdkit-vddk's names). */
static int create = -1;
static struct vmdk_create_options create_opts = {
  .type = VMDK_CREATE_MONOLITHIC_SPARSE,
  .adapter = VMDK_ADAPTER_BUSLOGIC,
  .hw_version = 4,
};
static char *create_parent;
/* The first create-* parameter seen (it needs create=true). */
static const char *create_key;

/* The image, opened in get_ready and shared by every connection. */
static struct vmdk_image *img;

/* Debug flags: -D vmdk.open=1, -D vmdk.grains=1, -D vmdk.cache=1. */
NBDKIT_DLL_PUBLIC int vmdk_debug_open;
NBDKIT_DLL_PUBLIC int vmdk_debug_grains;
NBDKIT_DLL_PUBLIC int vmdk_debug_cache;

static void
plugin_unload (void)
{
  size_t i;

  vmdk_close (img);
  free (file_arg);
  free (filename);
  free (create_parent);
  for (i = 0; i < nr_allowed_dirs; ++i)
    free (allowed_dirs[i]);
  free (allowed_dirs);
}

/* Resolved now, like file=: after get_ready nbdkit may chdir("/"). */
static int
add_allowed_dir (const char *value)
{
  char **list;
  char *dir;

  dir = nbdkit_realpath (value);
  if (dir == NULL)
    return -1;
  list = realloc (allowed_dirs, (nr_allowed_dirs + 2) * sizeof *list);
  if (list == NULL) {
    nbdkit_error ("realloc: %m");
    free (dir);
    return -1;
  }
  allowed_dirs = list;
  allowed_dirs[nr_allowed_dirs++] = dir;
  allowed_dirs[nr_allowed_dirs] = NULL;
  return 0;
}

static int
parse_bool_once (const char *key, const char *value, int *field)
{
  int r;

  if (*field != -1) {
    nbdkit_error ("%s parameter given more than once", key);
    return -1;
  }
  r = nbdkit_parse_bool (value);
  if (r == -1)
    return -1;
  *field = r;
  return 0;
}

static int
config_gt_cache (const char *value)
{
  int64_t r;

  if (gt_cache_set) {
    nbdkit_error ("gt-cache parameter given more than once");
    return -1;
  }
  r = nbdkit_parse_size (value);
  if (r == -1)
    return -1;
  if (r < 65536) {
    nbdkit_error ("gt-cache: %s is too small (at least 64K)", value);
    return -1;
  }
  gt_cache_bytes = r;
  gt_cache_set = true;
  return 0;
}

/* Each create-* parameter may be given once. */
static bool
create_key_once (const char *key)
{
  static const char *seen[8];
  size_t i;

  for (i = 0; i < sizeof seen / sizeof seen[0] && seen[i]; ++i)
    if (strcmp (seen[i], key) == 0) {
      nbdkit_error ("%s parameter given more than once", key);
      return false;
    }
  if (i < sizeof seen / sizeof seen[0])
    seen[i] = key;
  if (create_key == NULL)
    create_key = key;
  return true;
}

static int
config_create_size (const char *value)
{
  int64_t r = nbdkit_parse_size (value);

  if (r == -1)
    return -1;
  if (r == 0 || r % 512 != 0) {
    nbdkit_error ("create-size: %s is not a positive multiple of 512 bytes",
                  value);
    return -1;
  }
  create_opts.size = r;
  return 0;
}

static int compression_level;

static int
config_compression_level (const char *value)
{
  if (vmdk_compression_level_parse (value, &compression_level) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}

/* The create-* parameters; 1 if key is none of them. */
static int
config_create (const char *key, const char *value)
{
  int r;

  if (strncmp (key, "create-", 7) != 0)
    return 1;
  if (!create_key_once (key))
    return -1;
  if (strcmp (key, "create-size") == 0)
    return config_create_size (value);
  if (strcmp (key, "create-type") == 0)
    r = vmdk_create_type_parse (value, &create_opts.type);
  else if (strcmp (key, "create-adapter-type") == 0)
    r = vmdk_adapter_type_parse (value, &create_opts.adapter);
  else if (strcmp (key, "create-hwversion") == 0)
    r = vmdk_hw_version_parse (value, &create_opts.hw_version);
  else if (strcmp (key, "create-compression-level") == 0)
    return config_compression_level (value);
  else if (strcmp (key, "create-parent") == 0) {
    create_parent = strdup (value);
    if (create_parent == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
    r = 0;
  }
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  if (r == -1)
    glue_report_error ();
  return r;
}

static int
plugin_config (const char *key, const char *value)
{
  int r;

  if (strcmp (key, "file") == 0) {
    if (file_arg) {
      nbdkit_error ("file parameter given more than once");
      return -1;
    }
    /* Resolved in config_complete, once create= is known. */
    file_arg = strdup (value);
    if (file_arg == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  else if (strcmp (key, "create") == 0)
    return parse_bool_once (key, value, &create);
  else if ((r = config_create (key, value)) != 1)
    return r;
  else if (strcmp (key, "gt-cache") == 0)
    return config_gt_cache (value);
  else if (strcmp (key, "single-link") == 0)
    return parse_bool_once (key, value, &single_link);
  else if (strcmp (key, "ignore-parent-cid") == 0)
    return parse_bool_once (key, value, &ignore_parent_cid);
  else if (strcmp (key, "readonly") == 0)
    return parse_bool_once (key, value, &readonly_param);
  else if (strcmp (key, "allow-dir") == 0)
    return add_allowed_dir (value);
  else if (strcmp (key, "allow-devices") == 0)
    return parse_bool_once (key, value, &allow_devices);
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* With create=true the file must not exist yet (get_ready creates it),
 * so only its directory is resolved.
 */
static int
config_complete_create (void)
{
  if (create_key && create != 1) {
    nbdkit_error ("%s needs create=true", create_key);
    return -1;
  }
  if (create != 1)
    return 0;
  if (readonly_param == 1) {
    nbdkit_error ("create=true and readonly=true contradict each other: a "
                  "new image is served read-write");
    return -1;
  }
  if (create_opts.size == 0 && create_parent == NULL) {
    nbdkit_error ("create=true needs create-size=SIZE (or create-parent)");
    return -1;
  }
  filename = nbdkit_absolute_path (file_arg);
  return filename ? 0 : -1;
}

static int
plugin_config_complete (void)
{
  struct stat st;

  if (file_arg == NULL) {
    nbdkit_error ("you must supply the file=<FILENAME> parameter "
                  "after the plugin name on the command line");
    return -1;
  }
  if (config_complete_create () == -1)
    return -1;
  if (create == 1)
    return 0;
  /* Resolve now: after get_ready nbdkit may chdir("/"). */
  filename = nbdkit_realpath (file_arg);
  if (filename == NULL)
    return -1;
  if (stat (filename, &st) == -1) {
    nbdkit_error ("stat: %s: %m", filename);
    return -1;
  }
  if (!S_ISREG (st.st_mode)) {
    nbdkit_error ("%s: not a regular file", filename);
    return -1;
  }
  return 0;
}

#define plugin_config_help \
  "[file=]<FILENAME>     (required) The VMDK descriptor or monolithic file.\n" \
  "gt-cache=<SIZE>       Grain-table cache budget (default 32M).\n" \
  "single-link=true      Serve one link of a snapshot chain alone.\n" \
  "ignore-parent-cid=true  Open a chain despite a parentCID mismatch.\n" \
  "readonly=true         Open the image files read-only.\n" \
  "allow-dir=<DIR>       Extents and parents may also lie beneath DIR\n" \
  "                      (may be given several times).\n" \
  "allow-devices=true    Block devices may back extents.\n" \
  "create=true           Create file= (which must not exist) first.\n" \
  "create-size=<SIZE>    Virtual size of the new image.\n" \
  "create-type=<TYPE>    monolithic-sparse (default), monolithic-flat,\n" \
  "                      split-sparse, split-flat, vmfs-flat, vmfs-thin,\n" \
  "                      vmfs-sparse or stream-optimized.\n" \
  "create-adapter-type=<TYPE>  ide, scsi-buslogic (default), scsi-lsilogic.\n" \
  "create-hwversion=<VER>  workstation4, workstation5 (default), ..., esx65,\n" \
  "                      or a number.\n" \
  "create-parent=<FILE>  The new image is a snapshot (delta) of FILE.\n" \
  "create-compression-level=<N>  Deflate level 1-9 of stream-optimized\n" \
  "                      images (default: 4 with libdeflate)."

static void
plugin_dump_plugin (void)
{
  printf ("vmdk_subformats=monolithicSparse,monolithicFlat,"
          "twoGbMaxExtentSparse,twoGbMaxExtentFlat,streamOptimized,vmfs,"
          "vmfsSparse,seSparse,custom\n");
  printf ("vmdk_extent_types=SPARSE,FLAT,VMFS,ZERO,VMFSSPARSE,SESPARSE\n");
  printf ("vmdk_write=yes\n");
  printf ("vmdk_chains=yes\n");
  /* Raw-disk subformats, with allow-devices=true. */
  printf ("vmdk_devices=fullDevice,partitionedDevice\n");
  printf ("vmdk_allow_dir=yes\n");
  printf ("vmdk_inflate=%s\n", vmdk_inflate_backend ());
  printf ("vmdk_create=yes\n");
  printf ("vmdk_create_types=%s\n", vmdk_create_type_list ());
}

/* A twoGbMaxExtentSparse image of 2 TiB has 1024 extent files, each
 * kept open: raise the soft descriptor limit to the hard one.
 */
static void
raise_fd_limit (void)
{
  struct rlimit rl;

  if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit (RLIMIT_NOFILE, &rl) == -1)
      nbdkit_debug ("setrlimit: RLIMIT_NOFILE: %m (ignored)");
  }
}

/* Parse and validate the whole image before nbdkit forks, so that bad
 * input stops startup with a clear message.
 */
static int
plugin_get_ready (void)
{
  struct vmdk_options opts = {
    .readonly = readonly_param == 1,
    .gt_cache_bytes = gt_cache_bytes,
    .single_link = single_link == 1,
    .ignore_parent_cid = ignore_parent_cid == 1,
    .compression_level = compression_level,
    .files = {
      .allowed_dirs = (const char *const *) allowed_dirs,
      .allow_devices = allow_devices == 1,
    },
  };

  glue_set_debug (vmdk_debug_open, vmdk_debug_grains, vmdk_debug_cache);
  raise_fd_limit ();
  if (create == 1) {
    create_opts.parent = create_parent;
    create_opts.files = opts.files;
    if (vmdk_create (filename, &create_opts) == -1) {
      glue_report_error ();
      return -1;
    }
  }
  img = vmdk_open (filename, &opts);
  if (img == NULL) {
    glue_report_error ();
    return -1;
  }
  if (!opts.readonly) {
    const char *reason;

    if (!vmdk_is_writable (img, &reason))
      nbdkit_error ("warning: %s: serving read-only: %s", filename, reason);
  }
  nbdkit_debug ("%s: %s, %" PRIu64 " bytes, %zu extent(s), grain %" PRIu32
                ", chain of %u link(s)%s",
                filename, vmdk_get_create_type (img), vmdk_get_size (img),
                vmdk_get_extent_count (img), vmdk_get_grain_size (img),
                vmdk_get_chain_length (img),
                single_link == 1 ? " (single-link)" : "");
  return 0;
}

static void *
plugin_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

/* All metadata is immutable after get_ready; the grain-table cache has
 * its own sharded locks.  So requests run fully in parallel.
 */
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static int64_t
plugin_get_size (void *handle)
{
  return vmdk_get_size (img);
}

/* Any byte offset and length works; the grain is the natural unit. */
static int
plugin_block_size (void *handle,
                 uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  *preferred = vmdk_get_grain_size (img);
  *maximum = 0xffffffff;
  return 0;
}

static int
plugin_can_write (void *handle)
{
  return vmdk_is_writable (img, NULL);
}

/* One image object (metadata and grain-table cache) is shared by every
 * connection, and a flush makes every completed write durable, so
 * clients may spread I/O over connections.
 */
static int
plugin_can_multi_conn (void *handle)
{
  return 1;
}

static int
plugin_can_flush (void *handle)
{
  return 1;
}

/* FUA is honoured by flushing before the reply. */
static int
plugin_can_fua (void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
plugin_can_zero (void *handle)
{
  return 1;
}

static int
plugin_can_fast_zero (void *handle)
{
  return 1;
}

static int
plugin_can_trim (void *handle)
{
  return 1;
}

static int
plugin_can_cache (void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

static int
plugin_pread (void *handle, void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  if (vmdk_pread (img, buf, count, offset) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}

static int
plugin_pwrite (void *handle, const void *buf, uint32_t count,
                uint64_t offset, uint32_t flags)
{
  if (vmdk_pwrite (img, buf, count, offset,
                   glue_write_flags (flags)) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}

static int
plugin_flush (void *handle, uint32_t flags)
{
  if (vmdk_flush (img) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}

static int
plugin_trim (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (vmdk_trim (img, count, offset,
                 glue_write_flags (flags)) == -1) {
    glue_report_error ();
    return -1;
  }
  return 0;
}

static int
plugin_zero (void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
  if (vmdk_zero (img, count, offset, glue_write_flags (flags)) == -1) {
    /* A refused fast zero is not an error worth logging. */
    if (errno != ENOTSUP || !(flags & NBDKIT_FLAG_FAST_ZERO))
      glue_report_error ();
    return -1;
  }
  return 0;
}

static int
plugin_extents (void *handle, uint32_t count, uint64_t offset,
                 uint32_t flags, struct nbdkit_extents *extents)
{
  return glue_extents (img, count, offset, flags, extents);
}

static struct nbdkit_plugin plugin = {
  .name               = "vmdk",
  .longname           = "nbdkit VMDK plugin",
  .version            = PACKAGE_VERSION,
  .description        = "Serve VMware VMDK disk images",
  .magic_config_key   = "file",
  .unload             = plugin_unload,
  .config             = plugin_config,
  .config_complete    = plugin_config_complete,
  .config_help        = plugin_config_help,
  .dump_plugin        = plugin_dump_plugin,
  .get_ready          = plugin_get_ready,
  .open               = plugin_open,
  .get_size           = plugin_get_size,
  .block_size         = plugin_block_size,
  .can_write          = plugin_can_write,
  .can_flush          = plugin_can_flush,
  .can_multi_conn     = plugin_can_multi_conn,
  .can_trim           = plugin_can_trim,
  .can_zero           = plugin_can_zero,
  .can_fast_zero      = plugin_can_fast_zero,
  .can_fua            = plugin_can_fua,
  .can_cache          = plugin_can_cache,
  .pread              = plugin_pread,
  .pwrite             = plugin_pwrite,
  .flush              = plugin_flush,
  .trim               = plugin_trim,
  .zero               = plugin_zero,
  .extents            = plugin_extents,
  .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN (plugin)
