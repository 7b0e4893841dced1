/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The vmdk command: one file per subcommand (cmd-*.c), each a
 * function taking the subcommand's arguments (argv[0] is its name) and
 * returning the exit status.
 */

#ifndef VMDK_TOOL_H
#define VMDK_TOOL_H

#include <stdbool.h>

extern int cmd_info (int argc, char **argv);
extern int cmd_map (int argc, char **argv);
extern int cmd_check (int argc, char **argv);
extern int cmd_create (int argc, char **argv);
extern int cmd_convert (int argc, char **argv);
extern int cmd_resize (int argc, char **argv);
extern int cmd_commit (int argc, char **argv);

/* Exit statuses (as qemu-img check's where they overlap). */
#define EXIT_OK 0
#define EXIT_ERROR 1            /* could not open, bad usage, I/O */
#define EXIT_CORRUPT 2          /* check: corruption found */
#define EXIT_LEAKS 3            /* check: only leaked space */

/* Print "vmdk: " and the message (printf format) to stderr. */
extern void tool_error (const char *fs, ...)
  __attribute__ ((format (printf, 1, 2)));
/* Print "vmdk: " and the engine's last error to stderr. */
extern void tool_engine_error (void);

#endif /* VMDK_TOOL_H */
