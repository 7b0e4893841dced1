/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A small, bounded, concurrent cache of inflated grains, so that a
 * client reading a compressed grain a few KiB at a time inflates it
 * once.
 *
 * Like gtcache.c it is split into shards, each with its own mutex and
 * LRU list, and entries are reference counted: a reader pins an entry
 * and copies out of it with no lock held.  Unlike gtcache.c, a miss
 * publishes a "loading" entry first, so that concurrent readers of the
 * same grain wait for the one inflation instead of repeating it.  No
 * lock is held while a grain is inflated.
 */

#ifndef VMDK_GRAINCACHE_H
#define VMDK_GRAINCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct graincache;
struct grain_entry;

/* budget_bytes is split evenly between the shards; a grain larger
 * than one shard's share is never cached.
 */
extern struct graincache *graincache_new (uint64_t budget_bytes);
extern void graincache_free (struct graincache *c);

/* Each user (one compressed extent) takes an owner id; the key of a
 * grain is (owner, grain index).
 */
extern uint32_t graincache_new_owner (struct graincache *c);
/* Drop every entry of owner (entries still pinned live on until
 * unpinned).
 */
extern void graincache_purge_owner (struct graincache *c, uint32_t owner);

/* Find a grain.  Three outcomes:
 *
 * - It is cached (or another thread finishes loading it while we
 *   wait): returns its bytes, pinned in *pin.
 *
 * - It is not cached, and load_bytes > 0 fits the budget: returns NULL
 *   with *pin a new, pinned, loading entry of load_bytes.  The caller
 *   must fill graincache_data (*pin), then call graincache_loaded
 *   (successful or not) and graincache_unpin.
 *
 * - Otherwise (load_bytes == 0, too large, out of memory, or the load
 *   we waited for failed): returns NULL with *pin NULL.  The caller
 *   inflates into a buffer of its own.
 */
extern const void *graincache_get (struct graincache *c, uint32_t owner,
                                   uint64_t index, size_t load_bytes,
                                   struct grain_entry **pin);
extern void *graincache_data (struct grain_entry *e);
/* Publish a loading entry (ok) or withdraw it (!ok), waking waiters. */
extern void graincache_loaded (struct graincache *c, struct grain_entry *e,
                               bool ok);
extern void graincache_unpin (struct grain_entry *e);

/* Statistics (for debugging and tests).  waits counts lookups that
 * found the grain being loaded by another thread.
 */
struct graincache_stats {
  uint64_t hits, misses, waits, evictions, bytes;
};
extern void graincache_get_stats (struct graincache *c,
                                  struct graincache_stats *s);

#endif /* VMDK_GRAINCACHE_H */
