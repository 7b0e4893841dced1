/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk map [--json] IMAGE: allocation through the chain, in the shape
 * of "qemu-img map --output=json": entries with start, length, depth,
 * present, zero, data and offset, neighbours merged when all of these
 * continue, as qemu-img merges.  As in qemu-img, "data" means mapped
 * to a place in a file (with its offset, unless compressed), so a flat
 * extent's host-file hole is data and zero.
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"
#include "vmdk.h"

struct map_state {
  bool json;
  bool have;                    /* cur holds an entry not yet printed */
  bool printed_any;
  struct vmdk_map_entry cur;
};

/* Can next extend cur (which it follows)? */
static bool
mergeable (const struct vmdk_map_entry *cur, const struct vmdk_map_entry *next)
{
  if (cur->type != next->type || cur->present != next->present ||
      cur->depth != next->depth || !cur->file != !next->file)
    return false;
  if (cur->file == NULL)
    return true;
  return strcmp (cur->file, next->file) == 0 &&
    cur->file_offset + cur->length == next->file_offset;
}

static const char *
kind_name (const struct vmdk_map_entry *m)
{
  if (m->type == VMDK_MAP_DATA)
    return "data";
  if (!m->present)
    return "unallocated";
  return m->type == VMDK_MAP_ZERO ? "zero" : "hole";
}

static void
print_entry (struct map_state *s, const struct vmdk_map_entry *m)
{
  if (s->json) {
    printf ("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
            ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
            s->printed_any ? ",\n" : "[", m->offset, m->length, m->depth,
            m->present ? "true" : "false",
            m->type != VMDK_MAP_DATA ? "true" : "false",
            m->type == VMDK_MAP_DATA || m->file ? "true" : "false");
    if (m->file)
      printf (", \"offset\": %" PRIu64, m->file_offset);
    printf ("}");
  }
  else {
    if (!s->printed_any)
      printf ("%-19s %-19s %5s  %-11s  %-19s %s\n", "Offset", "Length",
              "Depth", "Allocation", "Mapped to", "File");
    printf ("%#-19" PRIx64 " %#-19" PRIx64 " %5u  ", m->offset, m->length,
            m->depth);
    if (m->file)
      printf ("%-11s  %#-19" PRIx64 " %s\n", kind_name (m), m->file_offset,
              m->file);
    else
      printf ("%s\n", kind_name (m));
  }
  s->printed_any = true;
}

static int
map_entry (void *opaque, const struct vmdk_map_entry *m)
{
  struct map_state *s = opaque;

  if (s->have && mergeable (&s->cur, m)) {
    s->cur.length += m->length;
    return 0;
  }
  if (s->have)
    print_entry (s, &s->cur);
  s->cur = *m;
  s->have = true;
  return 0;
}

int
cmd_map (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const struct vmdk_options opts = { .readonly = true };
  struct map_state s = { 0 };
  struct vmdk_image *img;
  int c, r;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'j': s.json = true; break;
    case 'h': tool_usage (stdout, "map"); return EXIT_OK;
    default: tool_usage (stderr, "map"); return EXIT_ERROR;
    }
  }
  if (argc - optind != 1)
    return tool_usage_error ("map", "expected one IMAGE");

  img = tool_open (argv[optind], &opts);
  if (img == NULL)
    return EXIT_ERROR;
  r = vmdk_map_entries (img, 0, vmdk_get_size (img), map_entry, &s);
  if (r == 0 && s.have)
    print_entry (&s, &s.cur);
  if (s.json)
    printf ("%s\n", s.printed_any ? "]" : "[]");
  if (r == -1)
    tool_file_error (argv[optind]);
  vmdk_close (img);
  return r == 0 ? EXIT_OK : EXIT_ERROR;
}
