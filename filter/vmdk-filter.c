/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The nbdkit filter: the VMDK engine in lib/ over the bytes of the
 * layer below (next-source.c), for single-file images served by curl,
 * ssh, nbd, file or tar.  Nothing format-specific lives here.
 *
 * The layer below is reachable only once a client connects, so the
 * image is opened by the first connection (under open_lock), through a
 * context into the layer below that this filter opens itself, shared
 * by every connection and kept until nbdkit shuts down.  One image
 * object, one grain-table cache and one path below serve everyone:
 * that is what makes multi-conn safe, and a grain table is read once
 * whichever connection needs it.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "nbdkit-glue.h"
#include "next-source.h"
#include "vmdk.h"

/* What the engine calls the one file in its messages. */
#define IMAGE_NAME "image below"

/* Configuration. */
static uint64_t gt_cache_bytes = VMDK_DEFAULT_GT_CACHE;
static bool gt_cache_set;
static int thread_model;

/* Opened by the first connection that needs them, closed at cleanup. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static nbdkit_next *below;
static struct vmdk_image *img;

/* Debug flags: -D vmdk.open=1, -D vmdk.grains=1, -D vmdk.cache=1. */
NBDKIT_DLL_PUBLIC int vmdk_debug_open;
NBDKIT_DLL_PUBLIC int vmdk_debug_grains;
NBDKIT_DLL_PUBLIC int vmdk_debug_cache;

/* Per connection: where to attach the shared context. */
struct handle {
  nbdkit_context *context;
};

/* Report the engine's last error and pass its errno to nbdkit. */
static int
report_error (int *err)
{
  *err = errno;
  glue_report_error ();
  return -1;
}

/* --help lists the features, as the plugin's --dump-plugin does (a
 * filter has no --dump-plugin in nbdkit 1.32).
 */
#define filter_config_help \
  "vmdk-gt-cache=<SIZE>  Grain-table and inflated-grain cache (default 32M).\n" \
  "vmdk_subformats=monolithicSparse,streamOptimized,hostedSparse,COWD\n" \
  "vmdk_write=monolithicSparse,hostedSparse,COWD (no new grains)"

static int
filter_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
               const char *key, const char *value)
{
  int64_t r;

  if (strcmp (key, "vmdk-gt-cache") != 0)
    return next (nxdata, key, value);
  if (gt_cache_set) {
    nbdkit_error ("vmdk-gt-cache parameter given more than once");
    return -1;
  }
  r = nbdkit_parse_size (value);
  if (r == -1)
    return -1;
  if (r < 65536) {
    nbdkit_error ("vmdk-gt-cache: %s is too small (at least 64K)", value);
    return -1;
  }
  gt_cache_bytes = r;
  gt_cache_set = true;
  return 0;
}

static int
filter_get_ready (int model)
{
  thread_model = model;
  glue_set_debug (vmdk_debug_open, vmdk_debug_grains, vmdk_debug_cache);
  return 0;
}

static void
filter_cleanup (nbdkit_backend *backend)
{
  vmdk_close (img);             /* flushes, and clears the unclean flag */
  img = NULL;
  if (below) {
    below->finalize (below);
    nbdkit_next_context_close (below);
    below = NULL;
  }
}

/* The image is the same whatever export name the client asks for. */
static int
filter_list_exports (nbdkit_next_list_exports *next, nbdkit_backend *nxdata,
                     int readonly, int is_tls, struct nbdkit_exports *exports)
{
  return nbdkit_use_default_export (exports);
}

static const char *
filter_default_export (nbdkit_next_default_export *next,
                       nbdkit_backend *nxdata, int readonly, int is_tls)
{
  return "";
}

/* No context below is opened per connection: prepare attaches the
 * shared one.
 */
static void *
filter_open (nbdkit_next_open *next, nbdkit_context *context,
             int readonly, const char *exportname, int is_tls)
{
  struct handle *h = malloc (sizeof *h);

  if (h == NULL) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  h->context = context;
  return h;
}

static void
filter_close (void *handle)
{
  free (handle);
}

/* Open a context into the layer below and the image on it.  readonly
 * is the first connection's (nbdkit -r makes every connection's so).
 * A failure fails this connection only; the next one tries again.
 */
static int
open_image (nbdkit_context *context, int readonly)
{
  struct vmdk_options opts = {
    .readonly = readonly,
    .gt_cache_bytes = gt_cache_bytes,
  };
  struct vmdk_source *src;
  nbdkit_next *n;
  const char *reason;

  n = nbdkit_next_context_open (nbdkit_context_get_backend (context),
                                readonly, "", true);
  if (n == NULL) {
    nbdkit_error ("cannot open the layer below the vmdk filter");
    return -1;
  }
  if (n->prepare (n) == -1)
    goto err;
  src = next_source_new (n, IMAGE_NAME,
                         thread_model != NBDKIT_THREAD_MODEL_PARALLEL);
  if (src == NULL)
    goto err_report;
  img = vmdk_open_source (src, IMAGE_NAME, &opts);
  if (img == NULL)
    goto err_report;
  if (!readonly && !vmdk_is_writable (img, &reason))
    nbdkit_error ("warning: serving read-only: %s", reason);
  nbdkit_debug ("%s: %s, %" PRIu64 " bytes, grain %" PRIu32 ", inflating "
                "with %s", IMAGE_NAME, vmdk_get_create_type (img),
                vmdk_get_size (img), vmdk_get_grain_size (img),
                vmdk_inflate_backend ());
  below = n;
  return 0;

 err_report:
  glue_report_error ();
 err:
  n->finalize (n);
  nbdkit_next_context_close (n);
  return -1;
}

static int
filter_prepare (nbdkit_next *next, void *handle, int readonly)
{
  struct handle *h = handle;
  int r = 0;

  pthread_mutex_lock (&open_lock);
  if (img == NULL)
    r = open_image (h->context, readonly);
  pthread_mutex_unlock (&open_lock);
  if (r == -1)
    return -1;
  /* Calls this filter does not handle go to the shared context. */
  nbdkit_context_set_next (h->context, below);
  return 0;
}

/* Detach the shared context, so that nbdkit does not close it with
 * the connection.
 */
static int
filter_finalize (nbdkit_next *next, void *handle)
{
  struct handle *h = handle;

  nbdkit_context_set_next (h->context, NULL);
  return 0;
}

static int64_t
filter_get_size (nbdkit_next *next, void *handle)
{
  return vmdk_get_size (img);
}

/* Any byte offset and length works; the grain is the natural unit. */
static int
filter_block_size (nbdkit_next *next, void *handle,
                   uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
  *minimum = 1;
  *preferred = vmdk_get_grain_size (img);
  *maximum = 0xffffffff;
  return 0;
}

static int
filter_can_write (nbdkit_next *next, void *handle)
{
  return vmdk_is_writable (img, NULL);
}

static int
filter_can_flush (nbdkit_next *next, void *handle)
{
  return 1;
}

/* FUA is honoured by flushing before the reply. */
static int
filter_can_fua (nbdkit_next *next, void *handle)
{
  return NBDKIT_FUA_NATIVE;
}

static int
filter_can_zero (nbdkit_next *next, void *handle)
{
  return NBDKIT_ZERO_NATIVE;
}

static int
filter_can_fast_zero (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
filter_can_trim (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
filter_can_extents (nbdkit_next *next, void *handle)
{
  return 1;
}

/* One image object and one context below serve every connection, and
 * a flush makes every completed write durable.
 */
static int
filter_can_multi_conn (nbdkit_next *next, void *handle)
{
  return 1;
}

static int
filter_can_cache (nbdkit_next *next, void *handle)
{
  return NBDKIT_CACHE_EMULATE;
}

static int
filter_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
              uint64_t offset, uint32_t flags, int *err)
{
  if (vmdk_pread (img, buf, count, offset) == -1)
    return report_error (err);
  return 0;
}

static int
filter_pwrite (nbdkit_next *next, void *handle, const void *buf,
               uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (vmdk_pwrite (img, buf, count, offset,
                   glue_write_flags (flags)) == -1)
    return report_error (err);
  return 0;
}

static int
filter_flush (nbdkit_next *next, void *handle, uint32_t flags, int *err)
{
  if (vmdk_flush (img) == -1)
    return report_error (err);
  return 0;
}

static int
filter_trim (nbdkit_next *next, void *handle, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  if (vmdk_trim (img, count, offset,
                 glue_write_flags (flags)) == -1)
    return report_error (err);
  return 0;
}

static int
filter_zero (nbdkit_next *next, void *handle, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  if (vmdk_zero (img, count, offset, glue_write_flags (flags)) == -1) {
    /* A refused fast zero is not an error worth logging. */
    if (errno == ENOTSUP && (flags & NBDKIT_FLAG_FAST_ZERO)) {
      *err = errno;
      return -1;
    }
    return report_error (err);
  }
  return 0;
}

static int
filter_extents (nbdkit_next *next, void *handle, uint32_t count,
                uint64_t offset, uint32_t flags,
                struct nbdkit_extents *extents, int *err)
{
  if (glue_extents (img, count, offset, flags, extents) == -1) {
    *err = errno;
    return -1;
  }
  return 0;
}

static struct nbdkit_filter filter = {
  .name               = "vmdk",
  .longname           = "nbdkit VMDK filter",
  .description        = "Serve the VMware VMDK disk image in the layer below",
  .config             = filter_config,
  .config_help        = filter_config_help,
  .get_ready          = filter_get_ready,
  .cleanup            = filter_cleanup,
  .list_exports       = filter_list_exports,
  .default_export     = filter_default_export,
  .open               = filter_open,
  .close              = filter_close,
  .prepare            = filter_prepare,
  .finalize           = filter_finalize,
  .get_size           = filter_get_size,
  .block_size         = filter_block_size,
  .can_write          = filter_can_write,
  .can_flush          = filter_can_flush,
  .can_fua            = filter_can_fua,
  .can_zero           = filter_can_zero,
  .can_fast_zero      = filter_can_fast_zero,
  .can_trim           = filter_can_trim,
  .can_extents        = filter_can_extents,
  .can_multi_conn     = filter_can_multi_conn,
  .can_cache          = filter_can_cache,
  .pread              = filter_pread,
  .pwrite             = filter_pwrite,
  .flush              = filter_flush,
  .trim               = filter_trim,
  .zero               = filter_zero,
  .extents            = filter_extents,
};

NBDKIT_REGISTER_FILTER (filter)
