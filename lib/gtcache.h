/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A bounded, concurrent cache of grain tables (raw on-disk bytes),
 * shared by all extents of an image.
 *
 * The cache is split into shards, each with its own mutex and LRU list,
 * so parallel requests rarely contend.  A lookup pins the table (a
 * reference count) and the caller reads it with no lock held; eviction
 * only drops the cache's own reference, so a pinned table stays valid
 * until its last user unpins it.
 */

#ifndef VMDK_GTCACHE_H
#define VMDK_GTCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gtcache;
struct gt_entry;

extern struct gtcache *gtcache_new (uint64_t budget_bytes);
extern void gtcache_free (struct gtcache *c);

/* A key unique to one table: an owner id (one per extent) and the
 * table's index in its directory.
 */
static inline uint64_t
gtcache_key (uint32_t owner, uint32_t index)
{
  return ((uint64_t) owner << 32) | index;
}

/* The budget given to gtcache_new. */
extern uint64_t gtcache_budget (const struct gtcache *c);

/* Allocate a new owner id. */
extern uint32_t gtcache_new_owner (struct gtcache *c);

/* Find a table.  On a hit, returns its bytes and pins it in *pin.  If
 * another thread is filling the entry, waits for it.
 */
extern void *gtcache_get (struct gtcache *c, uint64_t key,
                          struct gt_entry **pin);

/* The same, but on a miss reserve the key with a new entry of bytes
 * (bytes > 0): returns NULL with *pin that entry, pinned and marked
 * loading; the caller fills gtcache_data (*pin), then calls
 * gtcache_loaded and gtcache_unpin.  Threads wanting the key meanwhile
 * wait, so the entry is filled once.  Returns NULL with *pin NULL if
 * nothing was reserved (bytes == 0, no memory, or a fill we waited for
 * failed): the caller then works without the cache.
 */
extern void *gtcache_get_or_reserve (struct gtcache *c, uint64_t key,
                                     size_t bytes, struct gt_entry **pin);
/* Reserve key, as gtcache_get_or_reserve does on a miss, but only if
 * no entry has it (filled or being filled): never waits.  Returns the
 * entry, pinned and loading, or NULL if the key is there or no memory.
 */
extern struct gt_entry *gtcache_try_reserve (struct gtcache *c, uint64_t key,
                                             size_t bytes);
/* Publish a reserved entry (ok), or withdraw it (!ok); wakes waiters. */
extern void gtcache_loaded (struct gtcache *c, struct gt_entry *e, bool ok);

/* Allocate an entry of the given size for the caller to fill; it is
 * not visible until gtcache_insert.  Returns NULL on ENOMEM.
 */
extern struct gt_entry *gtcache_alloc (size_t bytes);
/* The same, reusing memory of an evicted entry of key's shard. */
extern struct gt_entry *gtcache_alloc_for (struct gtcache *c, uint64_t key,
                                           size_t bytes);
extern void *gtcache_data (struct gt_entry *e);
/* Discard an entry that was never inserted. */
extern void gtcache_discard (struct gt_entry *e);

/* Publish a filled entry and return it pinned.  If another thread
 * inserted the same key first, e is discarded and the existing entry
 * is returned pinned instead.
 */
extern struct gt_entry *gtcache_insert (struct gtcache *c, uint64_t key,
                                        struct gt_entry *e);

extern void gtcache_unpin (struct gt_entry *e);

/* Dirty entries hold updates not yet written to disk: they are never
 * evicted until cleaned.  gtcache_mark_dirty fails (returns false) if
 * the pinned entry was evicted meanwhile; the caller must look the
 * table up again, because a new copy may have been read since.
 */
extern bool gtcache_mark_dirty (struct gtcache *c, struct gt_entry *e);
extern void gtcache_clean (struct gtcache *c, struct gt_entry *e);

/* Statistics (for debugging and tests). */
struct gtcache_stats {
  uint64_t hits, misses, evictions, waits, bytes;
};
extern void gtcache_get_stats (struct gtcache *c, struct gtcache_stats *s);

#endif /* VMDK_GTCACHE_H */
