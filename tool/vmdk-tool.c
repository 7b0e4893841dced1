/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk: look inside, check, repair, make and convert VMDK images with
 * the engine of the nbdkit plugin (lib/), without nbdkit.
 *
 *   vmdk SUBCOMMAND [OPTIONS] ARGS...
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"
#include "vmdk.h"

static const struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *synopsis;
} commands[] = {
  { "info", cmd_info, "info [--json] IMAGE" },
  { "map", cmd_map, "map [--json] IMAGE" },
  { "check", cmd_check, "check [--json] [--repair] IMAGE" },
  { "create", cmd_create, "create [-t TYPE] [--adapter-type A] "
    "[--hwversion H] [--parent P] [-c LEVEL] IMAGE SIZE" },
  { "convert", cmd_convert, "convert [-p] [-t TYPE] [-c LEVEL] SRC DST" },
  { "resize", cmd_resize, "resize IMAGE SIZE" },
  { "commit", cmd_commit, "commit CHILD" },
};
#define NR_COMMANDS (sizeof commands / sizeof commands[0])

void
tool_error (const char *fs, ...)
{
  va_list args;

  fputs ("vmdk: ", stderr);
  va_start (args, fs);
  vfprintf (stderr, fs, args);
  va_end (args);
  fputc ('\n', stderr);
}

void
tool_engine_error (void)
{
  tool_error ("%s", vmdk_errmsg ());
}

static void
usage (FILE *f)
{
  size_t i;

  fprintf (f, "usage:\n");
  for (i = 0; i < NR_COMMANDS; ++i)
    fprintf (f, "  vmdk %s\n", commands[i].synopsis);
  fprintf (f, "See vmdk(1).\n");
}

int
main (int argc, char **argv)
{
  size_t i;

  if (argc < 2) {
    usage (stderr);
    return EXIT_ERROR;
  }
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0) {
    usage (stdout);
    return EXIT_OK;
  }
  if (strcmp (argv[1], "--version") == 0) {
    printf ("vmdk (nbdkit-vmdk) %s\n", PACKAGE_VERSION);
    return EXIT_OK;
  }
  for (i = 0; i < NR_COMMANDS; ++i)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].run (argc - 1, argv + 1);
  tool_error ("unknown subcommand '%s'", argv[1]);
  usage (stderr);
  return EXIT_ERROR;
}
