/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "gtcache.h"

#define NR_SHARDS 64            /* power of 2 */
#define BUCKETS_PER_SHARD 256   /* power of 2 */

struct gt_entry {
  atomic_uint refs;             /* the cache's reference + pins */
  uint64_t key;
  size_t bytes;
  bool attached;                /* in the hash table (shard lock) */
  bool dirty;                   /* pinned in the cache (shard lock) */
  bool loading;                 /* reserved, being filled (shard lock) */
  bool failed;                  /* the fill failed (shard lock) */
  struct gt_entry *hash_next;
  struct gt_entry *lru_prev, *lru_next;   /* most recent at head */
  _Alignas (8) unsigned char data[];
};

struct shard {
  pthread_mutex_t lock;
  pthread_cond_t loaded;        /* a loading entry was filled */
  struct gt_entry *buckets[BUCKETS_PER_SHARD];
  struct gt_entry *lru_head, *lru_tail;
  uint64_t bytes, budget;
  uint64_t hits, misses, evictions, waits;
  /* Evicted entries kept for reuse.  Recycling inside the shard keeps
   * memory at the budget: freed chunks would otherwise pile up in
   * whichever malloc arena each thread happened to use.
   */
  struct gt_entry *free_list;
  unsigned nr_free;
};

#define MAX_FREE_PER_SHARD 32

struct gtcache {
  struct shard shards[NR_SHARDS];
  atomic_uint next_owner;
};

static inline uint64_t
hash_key (uint64_t k)
{
  k ^= k >> 33;
  k *= UINT64_C (0xff51afd7ed558ccd);
  k ^= k >> 33;
  return k;
}

static struct shard *
shard_of (struct gtcache *c, uint64_t h)
{
  return &c->shards[h & (NR_SHARDS - 1)];
}

static struct gt_entry **
bucket_of (struct shard *s, uint64_t h)
{
  return &s->buckets[(h >> 8) & (BUCKETS_PER_SHARD - 1)];
}

struct gtcache *
gtcache_new (uint64_t budget_bytes)
{
  struct gtcache *c = calloc (1, sizeof *c);
  size_t i;

  if (c == NULL)
    return NULL;
  for (i = 0; i < NR_SHARDS; ++i) {
    pthread_mutex_init (&c->shards[i].lock, NULL);
    pthread_cond_init (&c->shards[i].loaded, NULL);
    c->shards[i].budget = budget_bytes / NR_SHARDS;
  }
  atomic_init (&c->next_owner, 1);
  return c;
}

uint32_t
gtcache_new_owner (struct gtcache *c)
{
  return atomic_fetch_add (&c->next_owner, 1);
}

void
gtcache_unpin (struct gt_entry *e)
{
  if (e && atomic_fetch_sub (&e->refs, 1) == 1)
    free (e);
}

void
gtcache_free (struct gtcache *c)
{
  size_t i;
  struct gt_entry *e, *next;

  if (c == NULL)
    return;
  for (i = 0; i < NR_SHARDS; ++i) {
    for (e = c->shards[i].lru_head; e; e = next) {
      next = e->lru_next;
      gtcache_unpin (e);
    }
    for (e = c->shards[i].free_list; e; e = next) {
      next = e->hash_next;
      free (e);
    }
    pthread_mutex_destroy (&c->shards[i].lock);
    pthread_cond_destroy (&c->shards[i].loaded);
  }
  free (c);
}

static void
lru_unlink (struct shard *s, struct gt_entry *e)
{
  if (e->lru_prev) e->lru_prev->lru_next = e->lru_next;
  else s->lru_head = e->lru_next;
  if (e->lru_next) e->lru_next->lru_prev = e->lru_prev;
  else s->lru_tail = e->lru_prev;
}

static void
lru_push_head (struct shard *s, struct gt_entry *e)
{
  e->lru_prev = NULL;
  e->lru_next = s->lru_head;
  if (s->lru_head) s->lru_head->lru_prev = e;
  s->lru_head = e;
  if (s->lru_tail == NULL) s->lru_tail = e;
}

static struct gt_entry *
find_locked (struct shard *s, uint64_t h, uint64_t key)
{
  struct gt_entry *e;

  for (e = *bucket_of (s, h); e; e = e->hash_next)
    if (e->key == key)
      return e;
  return NULL;
}

static struct gt_entry *take_free_locked (struct shard *s, size_t bytes);
static void evict_locked (struct shard *s);

/* Put e in the hash table at the head of the LRU, pinned for the
 * caller, then bring the shard back within budget.
 */
static void
attach_locked (struct shard *s, uint64_t h, uint64_t key, struct gt_entry *e)
{
  struct gt_entry **b = bucket_of (s, h);

  e->key = key;
  e->attached = true;
  atomic_init (&e->refs, 2);    /* the cache's and the caller's */
  e->hash_next = *b;
  *b = e;
  lru_push_head (s, e);
  s->bytes += e->bytes;
  evict_locked (s);
}

/* Pin e and move it to the head of the LRU.  If another thread is
 * filling it, wait; NULL if that fill failed (e is not pinned then).
 * lookup says whether to count a hit (or wait) in the statistics.
 */
static struct gt_entry *
pin_locked (struct shard *s, struct gt_entry *e, bool lookup)
{
  atomic_fetch_add (&e->refs, 1);
  if (e->loading) {
    s->waits += lookup;
    while (e->loading)
      pthread_cond_wait (&s->loaded, &s->lock);
    if (e->failed) {
      /* Withdrawn (detached) by the filler; whoever lets go last
       * frees it.
       */
      if (atomic_fetch_sub (&e->refs, 1) == 1)
        free (e);
      return NULL;
    }
  }
  else
    s->hits += lookup;
  if (e->attached && s->lru_head != e) {
    lru_unlink (s, e);
    lru_push_head (s, e);
  }
  return e;
}

/* A new entry for key, attached and marked loading (threads that want
 * key meanwhile wait for it), pinned for the caller; NULL if no memory.
 */
static struct gt_entry *
reserve_locked (struct shard *s, uint64_t h, uint64_t key, size_t bytes)
{
  struct gt_entry *e = take_free_locked (s, bytes);

  if (e == NULL)
    e = gtcache_alloc (bytes);
  if (e) {
    e->loading = true;
    attach_locked (s, h, key, e);
  }
  return e;
}

void *
gtcache_get (struct gtcache *c, uint64_t key, struct gt_entry **pin)
{
  return gtcache_get_or_reserve (c, key, 0, pin);
}

void *
gtcache_get_or_reserve (struct gtcache *c, uint64_t key, size_t bytes,
                        struct gt_entry **pin)
{
  uint64_t h = hash_key (key);
  struct shard *s = shard_of (c, h);
  struct gt_entry *e;

  pthread_mutex_lock (&s->lock);
  e = find_locked (s, h, key);
  if (e) {
    e = pin_locked (s, e, true);
    pthread_mutex_unlock (&s->lock);
    *pin = e;
    return e ? e->data : NULL;
  }
  s->misses++;
  e = bytes > 0 ? reserve_locked (s, h, key, bytes) : NULL;
  pthread_mutex_unlock (&s->lock);
  *pin = e;
  return NULL;
}

struct gt_entry *
gtcache_try_reserve (struct gtcache *c, uint64_t key, size_t bytes)
{
  uint64_t h = hash_key (key);
  struct shard *s = shard_of (c, h);
  struct gt_entry *e = NULL;

  pthread_mutex_lock (&s->lock);
  if (find_locked (s, h, key) == NULL)
    e = reserve_locked (s, h, key, bytes);
  pthread_mutex_unlock (&s->lock);
  return e;
}

uint64_t
gtcache_budget (const struct gtcache *c)
{
  return c->shards[0].budget * NR_SHARDS;
}

struct gt_entry *
gtcache_alloc (size_t bytes)
{
  struct gt_entry *e = malloc (sizeof *e + bytes);

  if (e == NULL)
    return NULL;
  memset (e, 0, sizeof *e);
  e->bytes = bytes;
  return e;
}

/* An evicted entry of this size, reset, or NULL. */
static struct gt_entry *
take_free_locked (struct shard *s, size_t bytes)
{
  struct gt_entry *e, **pp;

  for (pp = &s->free_list; *pp; pp = &(*pp)->hash_next)
    if ((*pp)->bytes == bytes) {
      e = *pp;
      *pp = e->hash_next;
      s->nr_free--;
      memset (e, 0, sizeof *e);
      e->bytes = bytes;
      return e;
    }
  return NULL;
}

struct gt_entry *
gtcache_alloc_for (struct gtcache *c, uint64_t key, size_t bytes)
{
  struct shard *s = shard_of (c, hash_key (key));
  struct gt_entry *e;

  pthread_mutex_lock (&s->lock);
  e = take_free_locked (s, bytes);
  pthread_mutex_unlock (&s->lock);
  return e ? e : gtcache_alloc (bytes);
}

void *
gtcache_data (struct gt_entry *e)
{
  return e->data;
}

void
gtcache_discard (struct gt_entry *e)
{
  free (e);
}

/* Drop least recently used entries until the shard is within budget,
 * but always keep the newest entry (a budget smaller than one table
 * still caches one).
 */
/* Drop least recently used clean entries until the shard is within
 * budget, but always keep the newest entry (a budget smaller than one
 * table still caches one).  Dirty entries are skipped: they hold the
 * only copy of updates not yet on disk.
 */
/* Take e out of the hash table and LRU and drop the cache's reference;
 * unpinned memory is kept for reuse.
 */
static void
detach_locked (struct shard *s, struct gt_entry *e)
{
  struct gt_entry **pp;

  for (pp = bucket_of (s, hash_key (e->key)); *pp != e; pp = &(*pp)->hash_next)
    ;
  *pp = e->hash_next;
  lru_unlink (s, e);
  e->attached = false;
  s->bytes -= e->bytes;
  if (atomic_fetch_sub (&e->refs, 1) == 1) {
    if (s->nr_free < MAX_FREE_PER_SHARD) {
      e->hash_next = s->free_list;
      s->free_list = e;
      s->nr_free++;
    }
    else
      free (e);
  }
}

/* Drop least recently used clean entries until the shard is within
 * budget, but always keep the newest entry (a budget smaller than one
 * table still caches one).  Dirty entries hold the only copy of updates
 * not yet on disk, and loading ones are being filled: both stay.
 */
static void
evict_locked (struct shard *s)
{
  struct gt_entry *victim = s->lru_tail;

  while (s->bytes > s->budget && victim && victim != s->lru_head) {
    struct gt_entry *prev = victim->lru_prev;

    if (!victim->dirty && !victim->loading) {
      detach_locked (s, victim);
      s->evictions++;
    }
    victim = prev;
  }
}

void
gtcache_loaded (struct gtcache *c, struct gt_entry *e, bool ok)
{
  struct shard *s = shard_of (c, hash_key (e->key));

  pthread_mutex_lock (&s->lock);
  e->loading = false;
  e->failed = !ok;
  if (!ok && e->attached)
    detach_locked (s, e);
  pthread_cond_broadcast (&s->loaded);
  pthread_mutex_unlock (&s->lock);
}

bool
gtcache_mark_dirty (struct gtcache *c, struct gt_entry *e)
{
  struct shard *s = shard_of (c, hash_key (e->key));
  bool ok;

  pthread_mutex_lock (&s->lock);
  ok = e->attached;
  if (ok)
    e->dirty = true;
  pthread_mutex_unlock (&s->lock);
  return ok;
}

void
gtcache_clean (struct gtcache *c, struct gt_entry *e)
{
  struct shard *s = shard_of (c, hash_key (e->key));

  pthread_mutex_lock (&s->lock);
  e->dirty = false;
  evict_locked (s);
  pthread_mutex_unlock (&s->lock);
}

struct gt_entry *
gtcache_insert (struct gtcache *c, uint64_t key, struct gt_entry *e)
{
  uint64_t h = hash_key (key);
  struct shard *s = shard_of (c, h);
  struct gt_entry *old;

  pthread_mutex_lock (&s->lock);
  /* Someone inserted (or is filling) the key first: use theirs.  A
   * fill that failed is withdrawn before waiters wake, so look again.
   */
  while ((old = find_locked (s, h, key)) != NULL) {
    old = pin_locked (s, old, false);
    if (old) {
      pthread_mutex_unlock (&s->lock);
      free (e);
      return old;
    }
  }
  attach_locked (s, h, key, e);
  pthread_mutex_unlock (&s->lock);
  return e;
}

void
gtcache_get_stats (struct gtcache *c, struct gtcache_stats *st)
{
  size_t i;

  memset (st, 0, sizeof *st);
  for (i = 0; i < NR_SHARDS; ++i) {
    struct shard *s = &c->shards[i];

    pthread_mutex_lock (&s->lock);
    st->hits += s->hits;
    st->misses += s->misses;
    st->evictions += s->evictions;
    st->waits += s->waits;
    st->bytes += s->bytes;
    pthread_mutex_unlock (&s->lock);
  }
}
