/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* What the fuzz targets that take whole images share: the input
 * format (a main file, then more files behind marker lines, see
 * fuzz-image.c) and a byte source lending those files with writes
 * bounded.
 */

#ifndef VMDK_FUZZ_FILES_H
#define VMDK_FUZZ_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz.h"
#include "io.h"

#define MAIN_NAME "disk.vmdk"
#define FILE_MARKER "\n#%FILE "
#define MAX_NAME 256
#define MAX_FILES 16
#define MAX_FILE_BYTES (64 * 1024 * 1024)

/* Add the input's files to the memory source src; fn (if not NULL) is
 * called with each file's name and bytes (main: the main file).
 */
typedef void (*fuzz_file_fn) (void *opaque, const char *name, bool main,
                              const uint8_t *data, size_t len);
extern int fuzz_add_files (struct vmdk_source *src, const uint8_t *data,
                           size_t size, fuzz_file_fn fn, void *opaque);

/* A source lending the files of files (closing it leaves them alone,
 * so that they can be opened again), whose files may not grow past
 * MAX_FILE_BYTES.  NULL if out of memory.
 */
extern struct vmdk_source *fuzz_borrow_files (struct vmdk_source *files);

#endif /* VMDK_FUZZ_FILES_H */
