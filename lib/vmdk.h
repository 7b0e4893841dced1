/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The public face of the VMDK engine.  Nothing here depends on nbdkit.
 *
 * Errors: every function that can fail returns -1 (or NULL), sets errno
 * and records a message naming the file and the offending field, which
 * vmdk_errmsg () returns.  The message is per thread, so concurrent
 * requests never see each other's errors.
 */

#ifndef VMDK_H
#define VMDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vmdk_image;
struct vmdk_source;

#define VMDK_DEFAULT_GT_CACHE (32 * 1024 * 1024)

/* Snapshot chains deeper than this are refused (ESXi allows 32). */
#define VMDK_MAX_CHAIN_DEPTH 128

/* Which files an image may name (extents, parents) besides regular
 * files beneath the directory of the file that names them.
 */
struct vmdk_file_policy {
  /* Directories (NULL-terminated list, or NULL) beneath which names
   * that leave the image's directory may resolve: absolute names, or
   * relative ones with "..", compared after lexical normalization.
   * Symlinks inside an allowed directory may not leave it either.
   */
  const char *const *allowed_dirs;
  bool allow_devices;          /* block devices may back extents */
};

struct vmdk_options {
  bool readonly;               /* open the top link read-only */
  uint64_t gt_cache_bytes;     /* Budget for cached grain tables (0: default). */
  /* Open only this link of a snapshot chain: unallocated ranges read as
   * zeroes and map as holes; the parent is not opened.
   */
  bool single_link;
  /* Open a chain even if a child's parentCID differs from its parent's
   * CID (a warning is logged).  For experts repairing broken chains.
   */
  bool ignore_parent_cid;
  /* Deflate level (1 to 9) of grains written to streamOptimized
   * images; 0: the default (vmdk_compression_level_default).
   */
  int compression_level;
  struct vmdk_file_policy files;  /* vmdk_open only */
};

/* The default compression level of streamOptimized writes. */
extern int vmdk_compression_level_default (void);

/* Open the VMDK at path: a descriptor file, or a monolithic file with an
 * embedded descriptor.  Extent files are opened relative to the directory
 * of path and must stay beneath it, unless opts->files allows more.
 */
extern struct vmdk_image *vmdk_open (const char *path,
                                     const struct vmdk_options *opts);

/* The same, with files supplied by an arbitrary byte source (io.h).
 * The image takes ownership of src whether or not the open succeeds.
 */
extern struct vmdk_image *vmdk_open_source (struct vmdk_source *src,
                                            const char *name,
                                            const struct vmdk_options *opts);

extern void vmdk_close (struct vmdk_image *img);

/* Open the parent of the link img (which may have been opened with
 * single_link) as an image of its own, with opts (so it may be opened
 * for writing: vmdk commit), after checking img's parentCID against
 * it.  Close it before img.
 */
extern struct vmdk_image *vmdk_open_parent (struct vmdk_image *img,
                                            const struct vmdk_options *opts);

/* Virtual size in bytes. */
extern uint64_t vmdk_get_size (const struct vmdk_image *img);

/* The largest grain size of any extent, in bytes (at least 512): the
 * natural I/O unit to advertise as the preferred block size.
 */
extern uint32_t vmdk_get_grain_size (const struct vmdk_image *img);

/* Number of links in the opened chain (1: no parent). */
extern unsigned vmdk_get_chain_length (const struct vmdk_image *img);

/* A short human-readable name of the subformat (the createType). */
extern const char *vmdk_get_create_type (const struct vmdk_image *img);
extern size_t vmdk_get_extent_count (const struct vmdk_image *img);

/* What an image is made of (info.c), for showing it. */

/* Does a file starting with these bytes (len: up to its first 4 KiB)
 * claim to be a VMDK: a hosted sparse or COWD magic number, or the
 * start of a text descriptor?  Such a file that fails to open is a
 * broken VMDK, not some other format.
 */
extern bool vmdk_probe (const void *buf, size_t len);

/* The link of the chain at depth (0: img itself), or NULL. */
extern const struct vmdk_image *vmdk_get_link (const struct vmdk_image *img,
                                               unsigned depth);

/* Strings point into the image: valid while it is open. */
struct vmdk_link_info {
  const char *file;             /* main file, as named (by its child) */
  const char *create_type;
  uint64_t size;                /* virtual bytes */
  bool has_cid;
  uint32_t cid;
  uint32_t parent_cid;          /* 0xffffffff: none */
  const char *parent;           /* parentFileNameHint (or COWD header) */
  size_t nr_extents;
  size_t nr_ddb;                /* ddb.* keys (vmdk_get_ddb) */
  uint64_t file_size;           /* every file of the link, each once */
  uint64_t allocated_size;      /* what those take on the host */
  bool unclean_shutdown;        /* some extent's header has it set */
};
extern int vmdk_get_link_info (const struct vmdk_image *img,
                               struct vmdk_link_info *li);

struct vmdk_extent_info {
  const char *access;           /* "RW", "RDONLY", "NOACCESS" */
  const char *type;             /* the descriptor's: "SPARSE", "FLAT", ... */
  /* What the file holds: "KDMV" (hosted sparse), "COWD", "seSparse",
   * "flat", or "zero" (ZERO extents, no file).
   */
  const char *format;
  uint64_t sectors;
  const char *file;             /* NULL: no file */
  uint64_t offset;              /* FLAT: sectors into the file */
  uint32_t grain_size;          /* bytes; 0: not grain-structured */
  bool has_header;              /* the next four are the header's */
  uint64_t version, flags;
  bool compressed;
  bool unclean_shutdown;
  uint64_t file_size, allocated_size;
};
extern int vmdk_get_extent_info (const struct vmdk_image *img, size_t i,
                                 struct vmdk_extent_info *ei);

/* The i-th ddb.* key of the link's descriptor (key with its "ddb."
 * prefix, value unquoted).
 */
extern int vmdk_get_ddb (const struct vmdk_image *img, size_t i,
                         const char **key, const char **value);

/* Read count bytes at any byte offset.  offset + count must not exceed
 * the virtual size.
 */
extern int vmdk_pread (struct vmdk_image *img, void *buf, size_t count,
                       uint64_t offset);

/* Block status.  Runs are reported in ascending, contiguous order
 * starting at or before offset, covering at least up to offset + count
 * (the last run may go further).  The callback returns 0 to go on, 1
 * to stop early, -1 on error (it must then set errno).
 */
enum vmdk_map_type {
  VMDK_MAP_DATA = 0,          /* allocated, read from a file */
  VMDK_MAP_ZERO = 1,          /* allocated, reads as zeroes */
  VMDK_MAP_HOLE = 3,          /* unallocated, reads as zeroes */
};
typedef int (*vmdk_map_fn) (void *opaque, uint64_t offset, uint64_t length,
                            enum vmdk_map_type type);
extern int vmdk_map (struct vmdk_image *img, uint64_t offset, uint64_t count,
                     vmdk_map_fn fn, void *opaque);

/* Block status in the terms of "qemu-img map": the same runs, each
 * with the link of the chain that answers for it and, for data stored
 * as it is (not compressed), its place in a file.  Runs are split
 * where any of that changes, but are not merged.
 */
struct vmdk_map_entry {
  uint64_t offset, length;      /* virtual bytes */
  enum vmdk_map_type type;
  /* Some link allocates the range (a ZERO extent and a host-file hole
   * in a flat extent count: they never fall through); false: it falls
   * through the whole chain and reads as zeroes.
   */
  bool present;
  /* The link that answers: 0 the image, 1 its parent, ...; for ranges
   * that are not present, the deepest link they reach.
   */
  unsigned depth;
  /* Where the run is mapped: the file (named as its descriptor names
   * it, valid while the image is open) and the byte offset there of
   * the run's first byte, for data stored uncompressed and for a flat
   * extent's host-file holes (HOLE, present).  Otherwise NULL.
   */
  const char *file;
  uint64_t file_offset;
};
typedef int (*vmdk_map_entry_fn) (void *opaque,
                                  const struct vmdk_map_entry *entry);
extern int vmdk_map_entries (struct vmdk_image *img, uint64_t offset,
                             uint64_t count, vmdk_map_entry_fn fn,
                             void *opaque);

/* Writes.  The image is writable if it was opened with readonly false
 * and every RW extent of the top link can be written; otherwise
 * vmdk_is_writable says why not.  Writes go to the top link only.
 */
#define VMDK_FUA 1              /* durable before returning */
#define VMDK_MAY_TRIM 2         /* zero: may deallocate */
#define VMDK_FAST_ZERO 4        /* zero: fail with ENOTSUP if slow */

extern bool vmdk_is_writable (const struct vmdk_image *img,
                              const char **reason);
extern int vmdk_pwrite (struct vmdk_image *img, const void *buf,
                        size_t count, uint64_t offset, unsigned flags);
extern int vmdk_zero (struct vmdk_image *img, uint64_t count,
                      uint64_t offset, unsigned flags);
extern int vmdk_trim (struct vmdk_image *img, uint64_t count,
                      uint64_t offset, unsigned flags);
/* Every completed write becomes durable. */
extern int vmdk_flush (struct vmdk_image *img);

/* Creating images (create.c).  Names and values are nbdkit-vddk's
 * create-* parameters, so that both front ends parse them here, once.
 */
enum vmdk_create_type {
  VMDK_CREATE_MONOLITHIC_SPARSE,  /* createType monolithicSparse */
  VMDK_CREATE_MONOLITHIC_FLAT,    /* monolithicFlat */
  VMDK_CREATE_SPLIT_SPARSE,       /* twoGbMaxExtentSparse */
  VMDK_CREATE_SPLIT_FLAT,         /* twoGbMaxExtentFlat */
  VMDK_CREATE_VMFS_FLAT,          /* vmfs */
  VMDK_CREATE_VMFS_THIN,          /* vmfs, ddb.thinProvisioned = "1" */
  VMDK_CREATE_VMFS_SPARSE,        /* vmfsSparse (COWD) */
  VMDK_CREATE_STREAM_OPTIMIZED,   /* streamOptimized */
};

enum vmdk_adapter_type {
  VMDK_ADAPTER_IDE,
  VMDK_ADAPTER_BUSLOGIC,
  VMDK_ADAPTER_LSILOGIC,
};

struct vmdk_create_options {
  enum vmdk_create_type type;
  /* Virtual size in bytes: > 0, a multiple of 512.  0 with a parent:
   * the parent's size.
   */
  uint64_t size;
  enum vmdk_adapter_type adapter;
  unsigned hw_version;          /* ddb.virtualHWVersion */
  /* A delta link over this image (relative to the new image's
   * directory, found like any parent), or NULL.
   */
  const char *parent;
  struct vmdk_file_policy files;  /* where the parent may be */
};

/* Fill opts with the defaults: monolithic-sparse, scsi-buslogic,
 * hardware version 4 (workstation5), no parent, size 0.
 */
extern void vmdk_create_defaults (struct vmdk_create_options *opts);

/* Create a new image at path with every file it names, none of which
 * may exist.  All or nothing: on error every file created is removed.
 */
extern int vmdk_create (const char *path,
                        const struct vmdk_create_options *opts);
/* The same in an arbitrary byte source (which must support create). */
extern int vmdk_create_source (struct vmdk_source *src, const char *name,
                               const struct vmdk_create_options *opts);

/* Grow the image at path to size bytes (a multiple of 512, not less
 * than its size): monolithicSparse, twoGbMaxExtentSparse, monolithicFlat,
 * twoGbMaxExtentFlat and vmfs (flat) images, delta links included.  The
 * last extent grows (a split image's up to 2047 MiB, then it gains
 * extent files), the descriptor gets the new extent lines, geometry
 * and a new CID.  The new space reads as zeroes.  Other kinds
 * (streamOptimized, vmfsSparse, seSparse, custom) are refused, and so
 * is shrinking.  opts: as for vmdk_open (readonly is ignored).  A
 * crash leaves the image as it was, or grown.
 */
extern int vmdk_resize (const char *path, uint64_t size,
                        const struct vmdk_options *opts);

/* The parameter values: each parser returns 0, or -1 with an error
 * naming the value and listing what is accepted.
 */
extern int vmdk_create_type_parse (const char *value,
                                   enum vmdk_create_type *type);
extern const char *vmdk_create_type_name (enum vmdk_create_type type);
/* The accepted create types, comma-separated (for --dump-plugin). */
extern const char *vmdk_create_type_list (void);
extern int vmdk_adapter_type_parse (const char *value,
                                    enum vmdk_adapter_type *adapter);
/* workstation4 ... esx65, or a number from 3 to 255. */
extern int vmdk_hw_version_parse (const char *value, unsigned *version);
/* The deflate level of streamOptimized writes: 1 to 9. */
extern int vmdk_compression_level_parse (const char *value, int *level);

/* Parse a size as nbdkit_parse_size does: decimal digits, then
 * optionally one suffix (any case): b (bytes), s (512-byte sectors),
 * k, M, G, T, P, E (powers of 1024).  At most 2^63 - 1.  Returns 0,
 * or -1 with an error quoting str.
 */
extern int vmdk_parse_size (const char *str, uint64_t *size);

/* Checking and repairing (check*.c).  The files of the top link are
 * checked from their metadata (grain data is not read, but for the
 * compressed grains of streamOptimized files, which are inflated); the
 * parents of a snapshot chain are opened only to compare CIDs.
 *
 * Each finding names the file, the structure ("table": "grain table",
 * "redundant grain directory", "header", "footer", ...) with its index
 * and the entry when there is one, and byte offsets: where the bad item
 * is in the file, and where it points.  Numbers that do not apply are
 * -1.
 */
enum vmdk_check_kind {
  VMDK_CHECK_CORRUPT,         /* inconsistent: data may be wrong or lost */
  VMDK_CHECK_LEAK,            /* space in a file that nothing references */
  VMDK_CHECK_NOTE,            /* worth knowing, not an inconsistency */
  VMDK_CHECK_REPAIRED,        /* what a repair did */
  VMDK_CHECK_NOT_REPAIRED,    /* what a repair left alone, and why */
};

struct vmdk_check_finding {
  enum vmdk_check_kind kind;
  const char *code;           /* stable short name: "gte-past-eof", ... */
  const char *file;           /* the file; NULL: the image as a whole */
  const char *table;          /* the structure concerned, or NULL */
  int64_t table_index;        /* its number (grain table 3), or -1 */
  int64_t entry;              /* the entry in it, or -1 */
  int64_t offset;             /* byte offset in the file of the item */
  int64_t target;             /* byte offset the item points at */
  /* Disk bytes whose reads the finding concerns (length 0: none). */
  uint64_t disk_offset, disk_length;
  /* More than 1: this finding stands for count like ones (the rest of
   * a kind in one file beyond max_reports are summed up in one).
   */
  uint64_t count;
  const char *message;        /* a sentence naming all of the above */
};

typedef void (*vmdk_check_fn) (void *opaque,
                               const struct vmdk_check_finding *f);

struct vmdk_check_options {
  /* Repair what can be made consistent without losing a valid grain.
   * All findings are reported first, then what was done.
   */
  bool repair;
  vmdk_check_fn fn;
  void *opaque;
  /* Findings of one kind reported per file; the rest are counted and
   * summed up in one finding (0: 20).
   */
  unsigned max_reports;
  struct vmdk_file_policy files;
};

struct vmdk_check_summary {
  uint64_t corruptions, leaks, notes;   /* findings of each kind */
  uint64_t leaked_bytes;
  uint64_t repairs, not_repaired;       /* actions, and refusals */
  uint64_t files;                       /* files checked */
  uint64_t grains;                      /* allocated grains seen */
};

/* Check (and with opts->repair, repair) the image at path.  Returns 0
 * with the counts in *sum, or -1 with an error if the image could not
 * be opened or read at all.
 */
extern int vmdk_check (const char *path, const struct vmdk_check_options *opts,
                       struct vmdk_check_summary *sum);
/* The same, with files supplied by a byte source (which the call does
 * not take over).
 */
extern int vmdk_check_source (struct vmdk_source *src, const char *name,
                              const struct vmdk_check_options *opts,
                              struct vmdk_check_summary *sum);

/* The library that inflates compressed grains: "libdeflate" or "zlib". */
extern const char *vmdk_inflate_backend (void);

/* The calling thread's last error. */
extern const char *vmdk_errmsg (void);

/* Log hook (the plugin routes it to nbdkit_debug, and warnings to
 * nbdkit_error).  categories selects the debug categories; warnings are
 * always delivered.  The function receives the message's category.
 */
enum vmdk_debug_category {
  VMDK_DEBUG_OPEN = 1,        /* what was parsed at open */
  VMDK_DEBUG_GRAINS = 2,      /* per-request grain lookups (verbose) */
  VMDK_DEBUG_CACHE = 4,       /* grain-table cache misses/evictions */
  VMDK_LOG_WARNING = 0x100,   /* always delivered when a function is set */
};
typedef void (*vmdk_debug_fn) (unsigned category, const char *msg);
extern void vmdk_set_debug (vmdk_debug_fn fn, unsigned categories);

#endif /* VMDK_H */
