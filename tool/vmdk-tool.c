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

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    "[--hwversion H] [--parent P] [-c LEVEL] IMAGE [SIZE]" },
  { "convert", cmd_convert, "convert [-p] [-f FORMAT] [-t TYPE] [-c LEVEL] "
    "SRC DST" },
  { "resize", cmd_resize, "resize IMAGE SIZE" },
  { "commit", cmd_commit, "commit [-p] CHILD" },
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

/* Does msg start with "name:"? */
static bool
names (const char *msg, const char *name)
{
  size_t n = strlen (name);

  return n > 0 && strncmp (msg, name, n) == 0 && msg[n] == ':';
}

void
tool_file_message (const char *file, const char *msg)
{
  const char *base = strrchr (file, '/');

  if (names (msg, file) || names (msg, base ? base + 1 : file))
    tool_error ("%s", msg);
  else
    tool_error ("%s: %s", file, msg);
}

void
tool_file_error (const char *file)
{
  tool_file_message (file, vmdk_errmsg ());
}

void
tool_usage (FILE *f, const char *command)
{
  size_t i;

  for (i = 0; i < NR_COMMANDS; ++i)
    if (strcmp (commands[i].name, command) == 0)
      fprintf (f, "usage: vmdk %s\n", commands[i].synopsis);
}

int
tool_usage_error (const char *command, const char *fs, ...)
{
  va_list args;

  fprintf (stderr, "vmdk: %s: ", command);
  va_start (args, fs);
  vfprintf (stderr, fs, args);
  va_end (args);
  fputc ('\n', stderr);
  tool_usage (stderr, command);
  return EXIT_ERROR;
}

struct vmdk_image *
tool_open (const char *path, const struct vmdk_options *opts)
{
  struct vmdk_image *img;

  /* The engine's message for this would name realpath(3). */
  if (access (path, F_OK) == -1) {
    tool_error ("%s: %m", path);
    return NULL;
  }
  img = vmdk_open (path, opts);
  if (img == NULL)
    tool_file_error (path);
  return img;
}

const char *
tool_human_size (uint64_t bytes, char *buf)
{
  static const char units[][4] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  unsigned shift = 0, u = 0, tenths;

  if (bytes < 1024) {
    snprintf (buf, HUMAN_SIZE_LEN, "%" PRIu64 " bytes", bytes);
    return buf;
  }
  while (u + 1 < 6 && bytes >> (shift + 20) != 0)
    shift += 10, u++;
  shift += 10;
  /* One decimal, rounded down, unless the unit divides it. */
  tenths = ((bytes & ((UINT64_C (1) << shift) - 1)) * 10) >> shift;
  if ((bytes & ((UINT64_C (1) << shift) - 1)) == 0)
    snprintf (buf, HUMAN_SIZE_LEN, "%" PRIu64 " %s", bytes >> shift, units[u]);
  else
    snprintf (buf, HUMAN_SIZE_LEN, "%" PRIu64 ".%u %s", bytes >> shift, tenths, units[u]);
  return buf;
}

/* Warnings of the engine (a parentCID mismatch let through, text after
 * a descriptor's NUL, ...) go to stderr.
 */
static void
log_warning (unsigned category, const char *msg)
{
  if (category == VMDK_LOG_WARNING)
    tool_error ("warning: %s", msg);
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
  vmdk_set_debug (log_warning, 0);
  for (i = 0; i < NR_COMMANDS; ++i)
    if (strcmp (argv[1], commands[i].name) == 0)
      return commands[i].run (argc - 1, argv + 1);
  tool_error ("unknown subcommand '%s'", argv[1]);
  usage (stderr);
  return EXIT_ERROR;
}
