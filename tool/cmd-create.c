/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk create [-t TYPE] [--adapter-type A] [--hwversion H] [--parent P]
 *             [-c LEVEL] IMAGE [SIZE]
 *
 * The plugin's create-* parameters, parsed and applied by the same
 * engine functions.
 */

#include <config.h>

#include <getopt.h>
#include <stdio.h>

#include "tool.h"
#include "vmdk.h"

enum { OPT_ADAPTER = 256, OPT_HWVERSION, OPT_PARENT };

int
cmd_create (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "type", required_argument, NULL, 't' },
    { "adapter-type", required_argument, NULL, OPT_ADAPTER },
    { "hwversion", required_argument, NULL, OPT_HWVERSION },
    { "parent", required_argument, NULL, OPT_PARENT },
    { "compression-level", required_argument, NULL, 'c' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct vmdk_create_options o;
  const char *image;
  int c, r = 0, level;

  vmdk_create_defaults (&o);
  optind = 1;
  while ((c = getopt_long (argc, argv, "t:c:h", long_options, NULL)) != -1) {
    switch (c) {
    case 't': r = vmdk_create_type_parse (optarg, &o.type); break;
    case OPT_ADAPTER: r = vmdk_adapter_type_parse (optarg, &o.adapter); break;
    case OPT_HWVERSION: r = vmdk_hw_version_parse (optarg, &o.hw_version);
      break;
    case OPT_PARENT: o.parent = optarg; break;
    /* Nothing is compressed when an image is created: -c is accepted
     * (and checked) so that create and convert take the same options.
     */
    case 'c': r = vmdk_compression_level_parse (optarg, &level); break;
    case 'h': tool_usage (stdout, "create"); return EXIT_OK;
    default: tool_usage (stderr, "create"); return EXIT_ERROR;
    }
    if (r == -1)
      return tool_usage_error ("create", "%s", vmdk_errmsg ());
  }
  if (argc - optind < 1 || argc - optind > 2)
    return tool_usage_error ("create", "expected IMAGE and SIZE");
  image = argv[optind];
  if (argc - optind == 2) {
    if (vmdk_parse_size (argv[optind + 1], &o.size) == -1)
      return tool_usage_error ("create", "%s", vmdk_errmsg ());
    if (o.size == 0)
      return tool_usage_error ("create", "the size must be larger than 0");
  }
  else if (o.parent == NULL)
    return tool_usage_error ("create", "expected a SIZE (it may be left out "
                             "only with --parent)");

  if (vmdk_create (image, &o) == -1) {
    tool_file_error (image);
    return EXIT_ERROR;
  }
  return EXIT_OK;
}
