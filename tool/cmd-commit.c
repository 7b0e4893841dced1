/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk commit [-p] CHILD: write what the delta link CHILD allocates
 * into its parent, so that the parent alone reads as the chain did.
 *
 * CHILD is opened alone (single_link: what it allocates itself), its
 * parent for writing through vmdk_open_parent, which checks CHILD's
 * parentCID first.  Data is copied, ranges CHILD allocates as zeroes
 * (zeroed grains, a flat extent's holes) are zeroed, the rest is left.
 * CHILD is not changed; the parent's first write gives it a new CID,
 * so CHILD's parentCID no longer matches it (as for any change of a
 * parent under its snapshot).
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "copy.h"
#include "tool.h"
#include "vmdk.h"

struct child_ranges {
  struct range_list data, zero;
  bool failed;                  /* range_add failed (and said why) */
};

/* Sort what the child allocates itself into data and zeroes. */
static int
child_entry (void *opaque, const struct vmdk_map_entry *m)
{
  struct child_ranges *c = opaque;
  struct range_list *l;

  if (!m->present)
    return 0;
  l = m->type == VMDK_MAP_DATA ? &c->data : &c->zero;
  if (range_add (l, m->offset, m->length) == -1) {
    c->failed = true;
    return -1;
  }
  return 0;
}

static int
zero_ranges (struct vmdk_image *parent, const char *name,
             const struct range_list *l)
{
  size_t i;

  for (i = 0; i < l->nr; ++i)
    if (vmdk_zero (parent, l->r[i].length, l->r[i].offset,
                   VMDK_MAY_TRIM) == -1) {
      tool_file_error (name);
      return -1;
    }
  return 0;
}

static int
commit (const char *child_name, bool progress)
{
  const struct vmdk_options child_opts = {
    .readonly = true, .single_link = true,
  };
  const struct vmdk_options parent_opts = { .readonly = false };
  struct child_ranges c = { 0 };
  struct vmdk_link_info li;
  struct disk src = { .name = child_name, .fd = -1, .direct_fd = -1 };
  struct disk dst = { .fd = -1, .direct_fd = -1 };
  const char *reason;
  int r = -1;

  src.img = tool_open (child_name, &child_opts);
  if (src.img == NULL)
    return -1;
  dst.img = vmdk_open_parent (src.img, &parent_opts);
  if (dst.img == NULL) {
    tool_file_error (child_name);
    goto out;
  }
  if (vmdk_get_link_info (dst.img, &li) == -1) {
    tool_file_error (child_name);
    goto out;
  }
  dst.name = li.file;
  if (!vmdk_is_writable (dst.img, &reason)) {
    tool_error ("%s: the parent %s cannot be written: %s", child_name,
                li.file, reason);
    goto out;
  }
  if (vmdk_get_size (src.img) > vmdk_get_size (dst.img)) {
    tool_error ("%s: the image (%" PRIu64 " bytes) is larger than its "
                "parent %s (%" PRIu64 " bytes): resize the parent first",
                child_name, vmdk_get_size (src.img), li.file,
                vmdk_get_size (dst.img));
    goto out;
  }
  if (vmdk_map_entries (src.img, 0, vmdk_get_size (src.img), child_entry,
                        &c) == -1) {
    if (!c.failed)
      tool_file_error (child_name);
    goto out;
  }
  if (copy_ranges (&src, &dst, &c.data, progress) == -1 ||
      zero_ranges (dst.img, li.file, &c.zero) == -1)
    goto out;
  if (vmdk_flush (dst.img) == -1) {
    tool_file_error (li.file);
    goto out;
  }
  r = 0;
 out:
  range_list_free (&c.data);
  range_list_free (&c.zero);
  vmdk_close (dst.img);       /* before the child, whose source it uses */
  vmdk_close (src.img);
  return r;
}

int
cmd_commit (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "progress", no_argument, NULL, 'p' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool progress = false;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "ph", long_options, NULL)) != -1) {
    switch (c) {
    case 'p': progress = true; break;
    case 'h': tool_usage (stdout, "commit"); return EXIT_OK;
    default: tool_usage (stderr, "commit"); return EXIT_ERROR;
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("commit", "expected one CHILD");
  return commit (argv[optind], progress) == 0 ? EXIT_OK : EXIT_ERROR;
}
