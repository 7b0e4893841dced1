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
#include <stdint.h>
#include <stdio.h>

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

struct vmdk_options;

/* Print "vmdk: " and the message (printf format) to stderr. */
extern void tool_error (const char *fs, ...)
  __attribute__ ((format (printf, 1, 2)));
/* Print "vmdk: " and the engine's last error to stderr. */
extern void tool_engine_error (void);
/* The same, as "vmdk: FILE: error" unless the error names FILE. */
extern void tool_file_error (const char *file);
/* "vmdk: FILE: msg" unless msg starts with FILE's name. */
extern void tool_file_message (const char *file, const char *msg);

#define MIN(a, b) ((a) < (b) ? (a) : (b))
/* "vmdk: COMMAND: message" and the command's usage line, to stderr;
 * returns EXIT_ERROR.
 */
extern int tool_usage_error (const char *command, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));
/* The usage line of a command, to f. */
extern void tool_usage (FILE *f, const char *command);

/* Open an image for a command (errors reported): NULL on failure. */
extern struct vmdk_image *tool_open (const char *path,
                                     const struct vmdk_options *opts);

/* "1.5 GiB": a byte count for people, in buf (HUMAN_SIZE_LEN bytes). */
#define HUMAN_SIZE_LEN 48
extern const char *tool_human_size (uint64_t bytes, char *buf);

#endif /* VMDK_TOOL_H */
