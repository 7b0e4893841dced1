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

#include "graincache.h"

#define NR_SHARDS 8             /* power of 2 */
#define BUCKETS_PER_SHARD 64    /* power of 2 */
/* Evicted entries nobody else holds are kept for the next miss instead
 * of being freed: a grain-sized malloc and free per miss would make
 * glibc return and re-fault the pages every time.
 */
#define MAX_SPARES 2

enum grain_state { LOADING, READY, FAILED };

struct grain_entry {
  atomic_uint refs;             /* the cache's reference + pins */
  uint32_t owner;
  uint64_t index;
  uint64_t hash;
  size_t bytes;
  /* The rest is protected by the shard lock. */
  enum grain_state state;
  bool in_cache;
  struct grain_entry *hash_next;
  struct grain_entry *lru_prev, *lru_next;   /* most recent at head */
  _Alignas (64) unsigned char data[];
};

struct shard {
  pthread_mutex_t lock;
  pthread_cond_t loaded;        /* some LOADING entry changed state */
  struct grain_entry *buckets[BUCKETS_PER_SHARD];
  struct grain_entry *lru_head, *lru_tail;
  struct grain_entry *spares;   /* linked through hash_next */
  unsigned nr_spares;
  uint64_t bytes, budget;
  uint64_t hits, misses, waits, evictions;
};

struct graincache {
  struct shard shards[NR_SHARDS];
  atomic_uint next_owner;
};

static inline uint64_t
hash_key (uint32_t owner, uint64_t index)
{
  uint64_t k = index ^ ((uint64_t) owner * UINT64_C (0x9e3779b97f4a7c15));

  k ^= k >> 33;
  k *= UINT64_C (0xff51afd7ed558ccd);
  k ^= k >> 33;
  return k;
}

static struct shard *
shard_of (struct graincache *c, uint64_t h)
{
  return &c->shards[h & (NR_SHARDS - 1)];
}

static struct grain_entry **
bucket_of (struct shard *s, uint64_t h)
{
  return &s->buckets[(h >> 8) & (BUCKETS_PER_SHARD - 1)];
}

struct graincache *
graincache_new (uint64_t budget_bytes)
{
  struct graincache *c = calloc (1, sizeof *c);
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
graincache_new_owner (struct graincache *c)
{
  return atomic_fetch_add (&c->next_owner, 1);
}

void
graincache_unpin (struct grain_entry *e)
{
  if (e && atomic_fetch_sub (&e->refs, 1) == 1)
    free (e);
}

void *
graincache_data (struct grain_entry *e)
{
  return e->data;
}

void
graincache_free (struct graincache *c)
{
  struct grain_entry *e, *next;
  size_t i;

  if (c == NULL)
    return;
  for (i = 0; i < NR_SHARDS; ++i) {
    for (e = c->shards[i].lru_head; e; e = next) {
      next = e->lru_next;
      graincache_unpin (e);
    }
    for (e = c->shards[i].spares; e; e = next) {
      next = e->hash_next;
      free (e);
    }
    pthread_cond_destroy (&c->shards[i].loaded);
    pthread_mutex_destroy (&c->shards[i].lock);
  }
  free (c);
}

static void
lru_unlink (struct shard *s, struct grain_entry *e)
{
  if (e->lru_prev) e->lru_prev->lru_next = e->lru_next;
  else s->lru_head = e->lru_next;
  if (e->lru_next) e->lru_next->lru_prev = e->lru_prev;
  else s->lru_tail = e->lru_prev;
}

static void
lru_push_head (struct shard *s, struct grain_entry *e)
{
  e->lru_prev = NULL;
  e->lru_next = s->lru_head;
  if (s->lru_head) s->lru_head->lru_prev = e;
  s->lru_head = e;
  if (s->lru_tail == NULL) s->lru_tail = e;
}

static struct grain_entry *
find_locked (struct shard *s, uint64_t h, uint32_t owner, uint64_t index)
{
  struct grain_entry *e;

  for (e = *bucket_of (s, h); e; e = e->hash_next)
    if (e->index == index && e->owner == owner)
      return e;
  return NULL;
}

/* Take e out of the hash and LRU. */
static void
unlink_locked (struct shard *s, struct grain_entry *e)
{
  struct grain_entry **pp;

  for (pp = bucket_of (s, e->hash); *pp != e; pp = &(*pp)->hash_next)
    ;
  *pp = e->hash_next;
  lru_unlink (s, e);
  s->bytes -= e->bytes;
  e->in_cache = false;
}

/* ... and drop the cache's reference. */
static void
remove_locked (struct shard *s, struct grain_entry *e)
{
  unlink_locked (s, e);
  graincache_unpin (e);
}

/* Drop least recently used entries until the shard is within budget,
 * keeping the newest.  An entry still loading may go too: its loader
 * and waiters hold references, so it only stops being findable.
 */
static void
evict_locked (struct shard *s)
{
  while (s->bytes > s->budget && s->lru_tail && s->lru_tail != s->lru_head) {
    struct grain_entry *e = s->lru_tail;

    unlink_locked (s, e);
    s->evictions++;
    /* Only the cache holds it, and under the lock nobody can find it
     * any more: keep it as a spare.
     */
    if (e->state == READY && s->nr_spares < MAX_SPARES &&
        atomic_load (&e->refs) == 1) {
      e->hash_next = s->spares;
      s->spares = e;
      s->nr_spares++;
    }
    else
      graincache_unpin (e);
  }
}

const void *
graincache_get (struct graincache *c, uint32_t owner, uint64_t index,
                size_t load_bytes, struct grain_entry **pin)
{
  uint64_t h = hash_key (owner, index);
  struct shard *s = shard_of (c, h);
  struct grain_entry *e, *fresh = NULL;
  enum grain_state state;

  *pin = NULL;
  for (;;) {
    pthread_mutex_lock (&s->lock);
    e = find_locked (s, h, owner, index);
    if (e)
      break;
    if (fresh == NULL) {
      s->misses++;
      if (load_bytes == 0 || load_bytes > s->budget) {
        pthread_mutex_unlock (&s->lock);
        return NULL;
      }
      if (s->spares && s->spares->bytes == load_bytes) {
        fresh = s->spares;
        s->spares = fresh->hash_next;
        s->nr_spares--;
        goto insert;            /* the lock was held throughout */
      }
      /* Allocate with no lock held, then look again. */
      pthread_mutex_unlock (&s->lock);
      fresh = malloc (sizeof *fresh + load_bytes);
      if (fresh == NULL)
        return NULL;
      memset (fresh, 0, sizeof *fresh);
      continue;
    }
  insert:
    fresh->owner = owner;
    fresh->index = index;
    fresh->hash = h;
    fresh->bytes = load_bytes;
    fresh->state = LOADING;
    fresh->in_cache = true;
    atomic_init (&fresh->refs, 2);      /* the cache's and the loader's */
    fresh->hash_next = *bucket_of (s, h);
    *bucket_of (s, h) = fresh;
    lru_push_head (s, fresh);
    s->bytes += load_bytes;
    evict_locked (s);
    pthread_mutex_unlock (&s->lock);
    *pin = fresh;
    return NULL;
  }

  /* Found: pin it, and wait if another thread is still loading it. */
  atomic_fetch_add (&e->refs, 1);
  if (e->state == LOADING) {
    s->waits++;
    while (e->state == LOADING)
      pthread_cond_wait (&s->loaded, &s->lock);
  }
  else
    s->hits++;
  state = e->state;               /* final now: READY or FAILED */
  if (state == READY && e->in_cache && s->lru_head != e) {
    lru_unlink (s, e);
    lru_push_head (s, e);
  }
  pthread_mutex_unlock (&s->lock);
  free (fresh);
  if (state != READY) {
    graincache_unpin (e);
    return NULL;
  }
  *pin = e;
  return e->data;
}

void
graincache_loaded (struct graincache *c, struct grain_entry *e, bool ok)
{
  struct shard *s = shard_of (c, e->hash);

  pthread_mutex_lock (&s->lock);
  e->state = ok ? READY : FAILED;
  if (!ok && e->in_cache)
    remove_locked (s, e);       /* the caller still holds a pin */
  pthread_cond_broadcast (&s->loaded);
  pthread_mutex_unlock (&s->lock);
}

void
graincache_purge_owner (struct graincache *c, uint32_t owner)
{
  struct grain_entry *e, *next;
  size_t i;

  for (i = 0; i < NR_SHARDS; ++i) {
    struct shard *s = &c->shards[i];

    pthread_mutex_lock (&s->lock);
    for (e = s->lru_head; e; e = next) {
      next = e->lru_next;
      if (e->owner == owner)
        remove_locked (s, e);
    }
    pthread_mutex_unlock (&s->lock);
  }
}

void
graincache_get_stats (struct graincache *c, struct graincache_stats *st)
{
  size_t i;

  memset (st, 0, sizeof *st);
  for (i = 0; i < NR_SHARDS; ++i) {
    struct shard *s = &c->shards[i];

    pthread_mutex_lock (&s->lock);
    st->hits += s->hits;
    st->misses += s->misses;
    st->waits += s->waits;
    st->evictions += s->evictions;
    st->bytes += s->bytes;
    pthread_mutex_unlock (&s->lock);
  }
}
