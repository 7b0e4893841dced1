/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The text descriptor: pure parsing, text in, structs out. */

#ifndef VMDK_DESCRIPTOR_H
#define VMDK_DESCRIPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits on hostile descriptors (see shared/VMDK-FORMAT.md). */
#define DESCRIPTOR_MAX_BYTES (1024 * 1024)
#define DESCRIPTOR_MAX_LINES 20000
#define DESCRIPTOR_MAX_EXTENTS 65536
#define DESCRIPTOR_MAX_NAME 4096

enum extent_access { ACCESS_RW, ACCESS_RDONLY, ACCESS_NOACCESS };

enum extent_type {
  EXTENT_FLAT,
  EXTENT_SPARSE,
  EXTENT_ZERO,
  EXTENT_VMFS,
  EXTENT_VMFSSPARSE,
  EXTENT_SESPARSE,
};

struct descriptor_extent {
  enum extent_access access;
  uint64_t sectors;
  enum extent_type type;
  char *filename;               /* NULL for ZERO */
  uint64_t offset;              /* sectors, FLAT only */
  unsigned line_no;
  char *line;                   /* the line as written, for messages */
};

#define CID_NONE 0xffffffffU

struct descriptor {
  unsigned version;
  bool has_cid;
  uint32_t cid;
  uint32_t parent_cid;          /* CID_NONE if absent */
  char *create_type;            /* as written */
  char *parent_hint;            /* parentFileNameHint or NULL */
  struct descriptor_extent *extents;
  size_t nr_extents;
};

/* Parse len bytes of descriptor text (need not be NUL-terminated;
 * parsing stops at the first NUL, which is padding in embedded
 * descriptors).  name is used in messages.  Returns NULL on error.
 */
extern struct descriptor *descriptor_parse (const char *text, size_t len,
                                            const char *name);
extern void descriptor_free (struct descriptor *d);

/* Does this look like the start of a descriptor (not binary junk)? */
extern bool descriptor_probe (const char *text, size_t len);

extern const char *extent_type_name (enum extent_type t);

#endif /* VMDK_DESCRIPTOR_H */
