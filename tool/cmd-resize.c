/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk resize IMAGE SIZE: grow the image (vmdk_resize says which kinds
 * and how); the new space reads as zeroes.
 */

#include <config.h>

#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include "tool.h"
#include "vmdk.h"

int
cmd_resize (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const struct vmdk_options opts = { .readonly = false };
  uint64_t size;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'h': tool_usage (stdout, "resize"); return EXIT_OK;
    default: tool_usage (stderr, "resize"); return EXIT_ERROR;
    }
  }
  if (argc - optind != 2)
    return tool_usage_error ("resize", "expected IMAGE and SIZE");
  if (vmdk_parse_size (argv[optind + 1], &size) == -1)
    return tool_usage_error ("resize", "%s", vmdk_errmsg ());
  if (access (argv[optind], F_OK) == -1) {
    tool_error ("%s: %m", argv[optind]);
    return EXIT_ERROR;
  }
  if (vmdk_resize (argv[optind], size, &opts) == -1) {
    tool_file_error (argv[optind]);
    return EXIT_ERROR;
  }
  return EXIT_OK;
}
