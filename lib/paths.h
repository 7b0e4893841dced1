/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The path-containment policy of the POSIX byte source: which names a
 * file of an image may open (paths.c explains the rules).
 */

#ifndef VMDK_PATHS_H
#define VMDK_PATHS_H

#include <stdbool.h>

struct vmdk_file_policy;

/* What may be opened besides files beneath the naming file's own
 * directory: the user's allowed directories (opened now, so that a
 * typo is a startup error and later renames cannot redirect us) and
 * whether block devices may back extents.  Reference-counted.
 */
struct path_policy;
extern struct path_policy *path_policy_new (const struct vmdk_file_policy *want);
extern void path_policy_ref (struct path_policy *pol);
extern void path_policy_unref (struct path_policy *pol);

/* Open name (flags as for open(2)) beneath the directory dirfd, whose
 * path is dir, or beneath a directory pol allows.  *where is set to
 * the path opened (malloc'd).  what ("file", "directory") names the
 * kind in messages.  An escape fails with EPERM and a message saying
 * so.  Returns the fd, or -1 with the error recorded.
 */
extern int path_open (int dirfd, const char *dir,
                      const struct path_policy *pol, const char *name,
                      int flags, const char *what, char **where);

/* Refuse what an opened fd must not be: anything but a regular file,
 * or a block device when pol allows devices.
 */
extern int path_check_file_type (const struct path_policy *pol, int fd,
                                 const char *name, bool *is_device);

#endif /* VMDK_PATHS_H */
