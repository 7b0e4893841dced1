/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include "tool.h"

/* Placeholder until the subcommand lands: refuse clearly. */
int
cmd_convert (int argc, char **argv)
{
  tool_error ("convert: not implemented yet");
  return EXIT_ERROR;
}
