/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#ifndef VMDK_ERROR_H
#define VMDK_ERROR_H

#include "vmdk.h"

/* Record an error for the calling thread, set errno to errnum and
 * return -1, so that callers can write "return vmdk_error (EIO, ...)".
 */
extern int vmdk_error (int errnum, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Prefix the calling thread's current message with "prefix: ", keeping
 * errno.  Used to add the file name at a higher level.  Returns -1.
 */
extern int vmdk_error_prefix (const char *fs, ...)
  __attribute__ ((format (printf, 1, 2)));

/* Debug output, only formatted when the category is enabled. */
extern unsigned vmdk_log_categories;
extern void vmdk_log_print (unsigned category, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));
#define vmdk_debug(cat, ...) \
  do { if (vmdk_log_categories & (cat)) vmdk_log_print ((cat), __VA_ARGS__); } \
  while (0)
#define vmdk_warning(...) vmdk_log_print (VMDK_LOG_WARNING, __VA_ARGS__)

#endif /* VMDK_ERROR_H */
