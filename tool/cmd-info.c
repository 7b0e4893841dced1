/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk info [--json] IMAGE: what the image is made of. */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "json.h"
#include "tool.h"
#include "vmdk.h"

/* Everything shown, gathered first so that an error prints nothing. */
struct info {
  struct vmdk_image *img;
  struct vmdk_link_info top;
  struct vmdk_extent_info *extents;
  struct vmdk_link_info *chain;
  unsigned chain_length;
};

static int
gather (struct info *in)
{
  const struct vmdk_image *img = in->img;
  size_t i;

  if (vmdk_get_link_info (img, &in->top) == -1)
    return -1;
  in->extents = calloc (in->top.nr_extents, sizeof *in->extents);
  in->chain_length = vmdk_get_chain_length (img);
  in->chain = calloc (in->chain_length, sizeof *in->chain);
  if (in->extents == NULL || in->chain == NULL) {
    tool_error ("calloc: %m");
    return -1;
  }
  for (i = 0; i < in->top.nr_extents; ++i)
    if (vmdk_get_extent_info (img, i, &in->extents[i]) == -1)
      return -1;
  for (i = 0; i < in->chain_length; ++i)
    if (vmdk_get_link_info (vmdk_get_link (img, i), &in->chain[i]) == -1)
      return -1;
  return 0;
}

/* Human output. */

static void
print_cid (const char *what, bool has, uint32_t cid)
{
  if (!has)
    printf ("%s: none\n", what);
  else if (cid == 0xffffffff)
    printf ("%s: ffffffff (none)\n", what);
  else
    printf ("%s: %08" PRIx32 "\n", what, cid);
}

static void
print_extent (size_t i, const struct vmdk_extent_info *e)
{
  char a[HUMAN_SIZE_LEN], b[HUMAN_SIZE_LEN];

  printf ("  %zu: %s %" PRIu64 " %s", i, e->access, e->sectors, e->type);
  if (e->file)
    printf (" \"%s\"", e->file);
  if (e->offset)
    printf (" %" PRIu64, e->offset);
  printf ("\n     %s", e->format);
  if (e->has_header)
    printf (" version %" PRIu64 ", flags 0x%" PRIx64 "%s%s", e->version,
            e->flags, e->compressed ? ", compressed" : "",
            e->unclean_shutdown ? ", uncleanShutdown set" : "");
  if (e->grain_size)
    printf (", grain %" PRIu32 " bytes", e->grain_size);
  if (e->file)
    printf (", file %s, allocated %s", tool_human_size (e->file_size, a),
            tool_human_size (e->allocated_size, b));
  printf ("\n");
}

static void
print_human (const struct info *in)
{
  const struct vmdk_link_info *t = &in->top;
  char a[HUMAN_SIZE_LEN];
  size_t i;

  printf ("image: %s\n", t->file);
  printf ("create type: %s\n", t->create_type);
  printf ("virtual size: %s (%" PRIu64 " bytes)\n",
          tool_human_size (t->size, a), t->size);
  printf ("grain size: %" PRIu32 " bytes\n",
          vmdk_get_grain_size (in->img));
  printf ("file size: %s (%" PRIu64 " bytes)\n",
          tool_human_size (t->file_size, a), t->file_size);
  printf ("allocated size: %s (%" PRIu64 " bytes)\n",
          tool_human_size (t->allocated_size, a), t->allocated_size);
  print_cid ("CID", t->has_cid, t->cid);
  print_cid ("parent CID", true, t->parent_cid);
  printf ("parent: %s\n", t->parent ? t->parent : "none");
  printf ("unclean shutdown: %s\n", t->unclean_shutdown ? "yes" : "no");
  printf ("extents:\n");
  for (i = 0; i < t->nr_extents; ++i)
    print_extent (i, &in->extents[i]);
  printf ("chain:\n");
  for (i = 0; i < in->chain_length; ++i) {
    const struct vmdk_link_info *l = &in->chain[i];

    printf ("  %zu: %s (%s, %" PRIu64 " bytes", i, l->file, l->create_type,
            l->size);
    if (l->has_cid)
      printf (", CID %08" PRIx32, l->cid);
    if (l->parent_cid != 0xffffffff)
      printf (", parentCID %08" PRIx32, l->parent_cid);
    printf (")\n");
  }
  if (t->nr_ddb > 0) {
    printf ("disk database:\n");
    for (i = 0; i < t->nr_ddb; ++i) {
      const char *key, *value;

      if (vmdk_get_ddb (in->img, i, &key, &value) == 0)
        printf ("  %s = \"%s\"\n", key, value);
    }
  }
}

/* JSON output. */

static void
json_cids (struct json *j, const struct vmdk_link_info *l)
{
  json_key (j, "cid");
  if (l->has_cid)
    json_uint (j, l->cid);
  else
    json_null (j);
  json_key (j, "parent-cid");
  json_uint (j, l->parent_cid);
  json_key (j, "parent");
  json_string_or_null (j, l->parent);
}

static void
json_extent (struct json *j, const struct vmdk_extent_info *e)
{
  json_begin_object (j);
  json_key (j, "access");
  json_string (j, e->access);
  json_key (j, "type");
  json_string (j, e->type);
  json_key (j, "sectors");
  json_uint (j, e->sectors);
  json_key (j, "file");
  json_string_or_null (j, e->file);
  if (e->offset) {
    json_key (j, "offset");
    json_uint (j, e->offset);
  }
  json_key (j, "format");
  json_string (j, e->format);
  if (e->grain_size) {
    json_key (j, "grain-size");
    json_uint (j, e->grain_size);
  }
  if (e->has_header) {
    json_key (j, "version");
    json_uint (j, e->version);
    json_key (j, "flags");
    json_uint (j, e->flags);
    json_key (j, "compressed");
    json_bool (j, e->compressed);
    json_key (j, "unclean-shutdown");
    json_bool (j, e->unclean_shutdown);
  }
  if (e->file) {
    json_key (j, "file-size");
    json_uint (j, e->file_size);
    json_key (j, "allocated-size");
    json_uint (j, e->allocated_size);
  }
  json_end_object (j);
}

static void
print_json (const struct info *in)
{
  const struct vmdk_link_info *t = &in->top;
  struct json j;
  size_t i;

  json_init (&j, stdout);
  json_begin_object (&j);
  json_key (&j, "file");
  json_string (&j, t->file);
  json_key (&j, "create-type");
  json_string (&j, t->create_type);
  json_key (&j, "virtual-size");
  json_uint (&j, t->size);
  json_key (&j, "grain-size");
  json_uint (&j, vmdk_get_grain_size (in->img));
  json_key (&j, "file-size");
  json_uint (&j, t->file_size);
  json_key (&j, "allocated-size");
  json_uint (&j, t->allocated_size);
  json_cids (&j, t);
  json_key (&j, "unclean-shutdown");
  json_bool (&j, t->unclean_shutdown);
  json_key (&j, "extents");
  json_begin_array (&j);
  for (i = 0; i < t->nr_extents; ++i)
    json_extent (&j, &in->extents[i]);
  json_end_array (&j);
  json_key (&j, "chain");
  json_begin_array (&j);
  for (i = 0; i < in->chain_length; ++i) {
    const struct vmdk_link_info *l = &in->chain[i];

    json_begin_object (&j);
    json_key (&j, "file");
    json_string (&j, l->file);
    json_key (&j, "create-type");
    json_string (&j, l->create_type);
    json_key (&j, "virtual-size");
    json_uint (&j, l->size);
    json_cids (&j, l);
    json_end_object (&j);
  }
  json_end_array (&j);
  json_key (&j, "ddb");
  json_begin_object (&j);
  for (i = 0; i < t->nr_ddb; ++i) {
    const char *key, *value;

    if (vmdk_get_ddb (in->img, i, &key, &value) == 0) {
      json_key (&j, key);
      json_string (&j, value);
    }
  }
  json_end_object (&j);
  json_end_object (&j);
}

int
cmd_info (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const struct vmdk_options opts = { .readonly = true };
  struct info in = { 0 };
  bool json = false;
  int c, r = EXIT_ERROR;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'j': json = true; break;
    case 'h': tool_usage (stdout, "info"); return EXIT_OK;
    default: tool_usage (stderr, "info"); return EXIT_ERROR;
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("info", "expected one IMAGE");

  in.img = tool_open (argv[optind], &opts);
  if (in.img == NULL)
    return EXIT_ERROR;
  if (gather (&in) == -1)
    tool_file_error (argv[optind]);
  else {
    if (json)
      print_json (&in);
    else
      print_human (&in);
    r = EXIT_OK;
  }
  free (in.extents);
  free (in.chain);
  vmdk_close (in.img);
  return r;
}
