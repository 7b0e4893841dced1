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

/* A disk database line: key (with its "ddb." prefix) = value. */
struct descriptor_key {
  char *key;
  char *value;                  /* unquoted */
};

struct descriptor {
  unsigned version;
  bool has_cid;
  uint32_t cid;
  uint32_t parent_cid;          /* CID_NONE if absent */
  char *create_type;            /* as written */
  char *parent_hint;            /* parentFileNameHint or NULL */
  struct descriptor_extent *extents;
  size_t nr_extents;
  /* The ddb.* keys, in order, each once (a repeated key keeps its
   * first place and its last value).
   */
  struct descriptor_key *ddb;
  size_t nr_ddb, ddb_alloc;
};

/* Parse len bytes of descriptor text (need not be NUL-terminated;
 * parsing stops at the first NUL, which is padding in embedded
 * descriptors).  name is used in messages.  Returns NULL on error.
 */
extern struct descriptor *descriptor_parse (const char *text, size_t len,
                                            const char *name);
extern void descriptor_free (struct descriptor *d);

/* The descriptor of a bare sparse or COWD file that has none: one RW
 * extent of capacity sectors (the file itself), named "(no descriptor)".
 * name is used in messages.  Returns NULL on error.
 */
extern struct descriptor *descriptor_new_bare (uint64_t capacity,
                                               enum extent_type type,
                                               const char *name);

/* A descriptor file ends at its first NUL, as in QEMU.  Warn if text
 * (not NUL padding) follows it.
 */
extern void descriptor_warn_text_after_nul (const char *text, size_t len,
                                            const char *name);

/* Find the value of the "CID=" line (not parentCID) in text: *start is
 * the offset of its first hex digit, *width the number of digits (at
 * most 16).  Returns 1 if found, 0 if there is no CID line, -1 with an
 * error if the line has no value.
 */
extern int descriptor_find_cid (const char *text, size_t len,
                                size_t *start, size_t *width,
                                const char *name);

/* A random CID that fits width hex digits (8 for a full one), differs
 * from avoid, and is never ffffffff or fffffffe.
 */
extern uint32_t descriptor_random_cid (unsigned width, uint32_t avoid);

/* Does this look like the start of a descriptor (not binary junk)? */
extern bool descriptor_probe (const char *text, size_t len);

extern const char *extent_type_name (enum extent_type t);
extern const char *extent_access_name (enum extent_access a);

/* Is the line (leading blanks skipped) an extent line? */
extern bool descriptor_is_extent_line (const char *s);

/* Writing descriptors (descriptor-write.c). */

/* A growing text buffer; errors (no memory) are sticky: check failed
 * at the end.
 */
struct text {
  char *s;
  size_t len, alloc;
  bool failed;
};
extern void text_append (struct text *t, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));

/* The geometry VMware's writer records for a disk of sectors: 63
 * sectors a track, 16 heads for IDE (at most 16383 cylinders) and 255
 * otherwise (at most 65535), cylinders rounded up.
 */
struct geometry {
  uint32_t cylinders, heads, sectors;
};
extern struct geometry descriptor_geometry (uint64_t sectors, bool ide);

/* The disk database keys VMware's writer emits. */
struct ddb_values {
  unsigned hw_version;
  const char *adapter;          /* "ide", "buslogic", "lsilogic" */
  struct geometry geo;
  bool thin;                    /* ddb.thinProvisioned */
};
/* Append the keys to t, but for those that existing (existing_len
 * bytes, or NULL) already sets.  Random longContentID and uuid.
 */
extern void descriptor_write_ddb (struct text *t, const struct ddb_values *v,
                                  const char *existing, size_t existing_len);
/* text (len bytes, NUL-terminated or not) with the keys it lacks
 * appended, for a disk of capacity sectors, and its CID written with 8
 * digits: other writers' stream images lack some keys importers
 * expect, and qemu-img drops a CID's leading zeroes.  A malloc'd
 * string of *out_len bytes, or NULL with the error recorded.
 */
extern char *descriptor_complete_ddb (const char *text, size_t len,
                                      uint64_t capacity, size_t *out_len);

/* text (len bytes, NUL-terminated or not) of a disk whose extents
 * changed: its extent lines replaced, where the first was, by lines
 * for the n extents exts, its CID by cid and its ddb.geometry.cylinders
 * by cylinders (where it has those lines); every other line as it was.
 * A malloc'd string of *out_len bytes, or NULL with the error recorded.
 */
extern char *descriptor_rewrite (const char *text, size_t len,
                                 const struct descriptor_extent *exts,
                                 size_t n, uint32_t cid, uint32_t cylinders,
                                 size_t *out_len);

#endif /* VMDK_DESCRIPTOR_H */
