/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Checking and repairing images (vmdk_check), inside lib/.
 *
 *   check.c         the run: the main file, its descriptor, each
 *                   extent file by kind, the CIDs of the chain; reports
 *   check-space.c   which bytes of a file hold what: metadata intervals
 *                   and a bitmap of grain slots (shared grains, leaks)
 *   check-dir.c     a grain directory and its redundant copy: regions,
 *                   table locations, tables compared, entries judged
 *   check-fix.c     carrying out the fixes check-dir.c planned
 *   check-sparse.c  hosted sparse (KDMV) and COWD files
 *   check-stream.c  streamOptimized files: markers, footer, grains
 *
 * A run is two passes when repairing: the check pass reports every
 * finding, then the repair pass analyses each file again (reporting
 * nothing) and carries out what can be done, reporting each action.
 */

#ifndef VMDK_CHECK_H
#define VMDK_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "descriptor.h"
#include "io.h"
#include "vmdk.h"

struct gtcache;
struct quota;

struct checker {
  const struct vmdk_check_options *opts;
  struct vmdk_check_summary *sum;
  bool repairing;               /* the repair pass */
  const char *file;             /* the file being checked */
  uint64_t file_corruptions;    /* CORRUPT findings there, in any pass */
  struct quota *quota;          /* reports per code in this file */
  size_t nr_quota, quota_alloc;
  struct gtcache *cache;        /* for reading compressed grains */
};

/* Where a finding is (see struct vmdk_check_finding; -1: none). */
struct where {
  const char *table;
  int64_t index, entry, offset, target;
  uint64_t disk_offset, disk_length;
};

static inline struct where
where_file (void)
{
  struct where w = { NULL, -1, -1, -1, -1, 0, 0 };
  return w;
}

static inline struct where
where_at (const char *table, int64_t index, int64_t entry, int64_t offset,
          int64_t target)
{
  struct where w = { table, index, entry, offset, target, 0, 0 };
  return w;
}

/* Report a finding in c->file.  In the repair pass findings are not
 * reported again; actions (REPAIRED, NOT_REPAIRED) always are.
 */
extern void check_report (struct checker *c, enum vmdk_check_kind kind,
                          const char *code, struct where w,
                          const char *fs, ...)
  __attribute__ ((format (printf, 5, 6)));
/* Start and end the reports of one file (the end sums up the findings
 * beyond max_reports).
 */
extern void check_begin_file (struct checker *c, const char *file);
extern void check_end_file (struct checker *c);

/* What the run knows about one extent file. */
struct extent_file {
  struct vmdk_io *io;
  uint64_t file_size;
  uint64_t extent_start;        /* disk offset of the extent */
  uint64_t extent_length;       /* bytes, from the descriptor line */
  bool has_parent;              /* unallocated grains show the parent */
  bool embedded_descriptor;     /* the file is the image's main file */
};

/* Check (or in the repair pass, repair) one extent file.  -1 only if
 * the run cannot go on (I/O error, no memory); what is wrong with the
 * file is reported.
 */
extern int check_kdmv (struct checker *c, struct extent_file *f);
extern int check_cowd (struct checker *c, struct extent_file *f);
extern int check_stream (struct checker *c, struct extent_file *f,
                         const unsigned char *header);

/* ------------------------------------------------------------------ */
/* check-space.c: what each byte of a file holds. */

/* A metadata structure's bytes. */
struct meta {
  uint64_t start, end;          /* bytes, end exclusive */
  const char *table;            /* its name, for messages */
  int64_t index;                /* its number, or -1 */
  uint32_t seq;                 /* registration order: later = intruder */
  uint32_t tag;                 /* the caller's */
};

/* An allocated grain not aligned to the bitmap's slots. */
struct odd_grain {
  uint64_t start, end;
  uint64_t t;
  uint32_t i;
};

struct space {
  uint64_t file_size;
  uint64_t slot;                /* bytes per bitmap bit; 0: no bitmap */
  uint64_t nr_slots;
  uint64_t *grains;             /* slot holds an aligned grain */
  uint64_t *touched;            /* slot touched by metadata or odd grain */
  struct meta *meta;
  size_t nr_meta, meta_alloc;
  uint64_t *reach;              /* furthest end of meta[0..k] */
  bool sealed;
  struct odd_grain *odd;
  size_t nr_odd, odd_alloc;
  bool odd_overflow;            /* too many odd grains to check */
};

/* Grain slots of slot bytes, if a bitmap of the file fits the budget
 * (else no duplicates or leaks can be found: slot is then 0).
 */
extern int space_init (struct space *s, uint64_t file_size, uint64_t slot);
extern void space_free (struct space *s);
extern int space_add_meta (struct space *s, uint64_t start, uint64_t len,
                           const char *table, int64_t index, uint32_t tag);
/* Sort the metadata and mark its slots; for each overlap of two
 * structures call fn with the one registered first and the intruder.
 */
typedef void (*meta_overlap_fn) (void *opaque, const struct meta *first,
                                 const struct meta *intruder);
extern int space_seal_meta (struct space *s, meta_overlap_fn fn,
                            void *opaque);
/* Before sealing: the first structure registered that overlaps
 * [start, start+len), or NULL.
 */
extern const struct meta *space_first_overlap (const struct space *s,
                                               uint64_t start, uint64_t len);
/* The metadata structure overlapping [start, end), or NULL. */
extern const struct meta *space_find_meta (const struct space *s,
                                           uint64_t start, uint64_t end);

enum claim {
  CLAIM_OK,                     /* the grain's bytes are its own */
  CLAIM_SHARED,                 /* another grain has them */
  CLAIM_META,                   /* metadata has them (*m says which) */
  CLAIM_NOMEM,
};
/* Claim [start, start+len) (inside the file) for entry i of table t. */
extern enum claim space_claim (struct space *s, uint64_t start, uint64_t len,
                               uint64_t t, uint32_t i,
                               const struct meta **m);
/* After all claims: odd grains that overlap another grain or metadata
 * (fn gets each loser once, with the claim it should have had).
 */
typedef void (*odd_conflict_fn) (void *opaque, const struct odd_grain *g,
                                 enum claim why, const struct meta *m);
extern void space_check_odd (struct space *s, odd_conflict_fn fn,
                             void *opaque);
/* Runs of unreferenced slots from byte from on: fn (start, length). */
typedef void (*leak_fn) (void *opaque, uint64_t start, uint64_t length);
extern void space_leaks (const struct space *s, uint64_t from, leak_fn fn,
                         void *opaque);
/* Pair leaked slots from byte from on (ascending) with the whole
 * aligned grains at the top of the file (descending) while the leak
 * lies below the grain, up to metadata or an odd grain: at most max
 * pairs of slot numbers.  Returns how many.
 */
extern size_t space_plan_moves (const struct space *s, uint64_t from,
                                uint64_t *holes, uint64_t *grains,
                                size_t max);
/* Where the last byte anything uses ends (metadata or grains). */
extern uint64_t space_used_end (const struct space *s);

/* ------------------------------------------------------------------ */
/* check-dir.c: a grain directory, its redundant copy and their tables. */

enum loc {
  LOC_NONE,                     /* entry 0: no table */
  LOC_OK,                       /* a table of its own, inside the file */
  LOC_MOVE,                     /* readable, but must move (overlaps
                                   other metadata, or is cut by EOF) */
  LOC_BAD,                      /* no table there (outside the file) */
};

enum verdict {
  V_ERROR,                      /* the check cannot go on (no memory) */
  V_OK,
  V_CLEAR,                      /* points nowhere: unallocate it */
  V_RELOCATE,                   /* its data is kept, in a grain of its own */
};

enum fix_kind { FIX_CLEAR, FIX_REDUNDANT, FIX_RELOCATE };

struct fix {
  uint64_t t;
  uint32_t i;
  uint32_t value;               /* the entry's new value */
  uint32_t old;                 /* FIX_RELOCATE: the grain to copy */
  uint8_t kind;
};

/* Where entry i of table t of copy k (at byte entry_offset of the file,
 * value v) is, and the grain it names.
 */
struct dir_check;
extern struct where entry_where (const struct dir_check *d, unsigned k,
                                 uint64_t t, uint32_t i,
                                 int64_t entry_offset, uint32_t v);
/* Report a corrupt entry at w: "FILE: TABLE T entry I (byte B, disk
 * offset D) = sector V: " and what fs says.
 */
extern void report_entry (struct checker *c, const char *code,
                          struct where w, const char *fs, ...)
  __attribute__ ((format (printf, 4, 5)));

/* Order fixes by table and entry (qsort). */
extern int cmp_fix (const void *a, const void *b);

struct dir_check;
/* Judge value v (not 0) of entry i of table t of copy k, at byte
 * entry_offset of the file; report what is wrong if report.
 */
typedef enum verdict (*judge_fn) (struct dir_check *d, unsigned k,
                                  uint64_t t, uint32_t i, uint32_t v,
                                  int64_t entry_offset, bool report);

struct dir_check {
  struct checker *c;
  struct vmdk_io *io;
  uint64_t file_size;
  uint64_t nr_gts;
  uint32_t gtes_per_gt;
  uint64_t gt_bytes;            /* entries * 4 */
  uint64_t gt_span;             /* on disk: a whole number of sectors */
  uint64_t grain_bytes;
  uint64_t extent_start, extent_length;
  unsigned copies;              /* 2 with a redundant directory */
  uint64_t dir_start[2];        /* bytes */
  uint64_t dir_span;            /* bytes of one directory on disk */
  bool dir_ok[2];                /* read (inside the file) */
  bool dir_move[2];             /* read, but must move */
  bool dirs_movable;            /* a directory may move */
  uint32_t *gde[2];             /* the directories as read (sectors) */
  uint8_t *loc[2];              /* enum loc of each table of each copy */
  struct space *space;
  uint64_t min_size;            /* the file must be this long */
  bool tables_movable;          /* tables may be rewritten elsewhere */
  judge_fn judge;
  void *opaque;

  /* The plan: entry fixes in (t, i) order. */
  struct fix *fixes;
  size_t nr_fixes, fixes_alloc;
  bool too_many_fixes;
  bool copies_differ;           /* some table or entry differs */
  bool misplaced;               /* some table must move or go */
  uint64_t grains;              /* allocated entries */
  unsigned char *zero_table;    /* gt_span zero bytes */
};

/* From a KDMV header (plain or stream): check the capacity against the
 * extent line and the directory's size, and describe the directories
 * in d.  Returns why the file cannot be checked further, or NULL.
 */
struct sparse_header;
extern const char *dir_from_header (struct dir_check *d, struct checker *c,
                                    const struct sparse_header *h,
                                    uint64_t extent_length);
/* Check the directories of file f described in d (nr_gts,
 * gtes_per_gt, copies, dir_start, grain_bytes), entries judged by
 * judge, with the file's metadata so far in space: the directory
 * regions are checked, read, registered with every table, the
 * metadata sealed, the tables classified (dir_load); then every table
 * is walked, the copies compared, the entries judged and the fixes
 * planned (dir_walk).
 */
extern int dir_check_file (struct dir_check *d, struct checker *c,
                           const struct extent_file *f, struct space *space,
                           judge_fn judge, void *opaque, bool tables_movable,
                           bool dirs_movable);
extern void dir_free (struct dir_check *d);
/* The name of a directory or table copy (0 primary, 1 redundant). */
extern const char *dir_name (unsigned copy);
extern const char *table_name (unsigned copy);
/* Reading tables, several at once where they lie one after another:
 * the bytes of table t of copy k (which must be readable), zero-filled
 * past the end of the file.  Free buf when done.
 */
struct batch {
  unsigned char *buf;
  size_t cap;
  uint64_t start, len;
};
extern const unsigned char *batch_table (struct batch *b, struct dir_check *d,
                                         unsigned k, uint64_t t);
/* Which copy's table the disk reads through (-1: none). */
extern int effective_copy (const struct dir_check *d, uint64_t t);
/* Does the plan change anything? */
extern bool dir_needs_repair (const struct dir_check *d);

/* check-fix.c */

/* Where the repair allocates: past everything, grains aligned. */
struct alloc {
  uint64_t next;                /* next free byte */
  uint64_t grain_align;
  uint64_t limit;               /* allocations must end at or below */
};

/* Why d's plan cannot be carried out, or NULL if it can. */
extern const char *dir_plan_refusal (const struct dir_check *d);
/* Carry out d's plan: copy relocated grains, extend the file, write
 * new and changed tables, then directories (each step synced before
 * the next depends on it).  *new_dir_start is set for a directory
 * copy that had to move (else left alone); the caller then points the
 * header at it.  before_meta (may be NULL) runs after the data is
 * written and before it is synced (COWD's next free sector).
 */
extern int fix_directories (struct dir_check *d, struct alloc *a,
                            uint64_t new_dir_start[2],
                            int (*before_meta) (void *opaque,
                                                uint64_t end),
                            void *opaque);
/* Move n grains (slot numbers grains[j], in slots of d->grain_bytes)
 * into leaked slots holes[j]: copy, sync, then point their entries (in
 * every copy of the tables) at the new places, sync.
 */
extern int fix_move_grains (struct dir_check *d, const uint64_t *holes,
                            const uint64_t *grains, size_t n);
/* Reclaim leaked space at the end of the file: cut it at end. */
extern int fix_truncate (struct checker *c, struct vmdk_io *io,
                         uint64_t old_size, uint64_t end);
/* Write bytes at offset and sync. */
extern int fix_write_sync (struct vmdk_io *io, const void *buf, size_t len,
                           uint64_t offset);

#endif /* VMDK_CHECK_H */
