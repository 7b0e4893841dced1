/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* The grain-table cache: hits and misses, the budget, pinning across
 * eviction, duplicate inserts, and a multi-threaded stress.  Run under
 * ASan, any use of an evicted-and-freed table is caught.
 */

#include <config.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder.h"
#include "gtcache.h"
#include "tap.h"

/* The cache splits its budget over this many shards and keeps at least
 * one entry per shard (gtcache.c NR_SHARDS): the most it may exceed
 * its budget by is one entry per shard.
 */
#define SHARDS 64

static void
fill (unsigned char *p, uint64_t key, size_t n)
{
  size_t i;

  for (i = 0; i < n; ++i)
    p[i] = (key * 131 + (key >> 32) * 17 + i * 7) & 0xff;
}

static bool
verify (const unsigned char *p, uint64_t key, size_t n)
{
  size_t i;

  for (i = 0; i < n; ++i)
    if (p[i] != ((key * 131 + (key >> 32) * 17 + i * 7) & 0xff))
      return false;
  return true;
}

/* Insert a filled table for key; returns it pinned. */
static struct gt_entry *
put (struct gtcache *c, uint64_t key, size_t n)
{
  struct gt_entry *e = gtcache_alloc (n);

  if (e == NULL)
    abort ();
  fill (gtcache_data (e), key, n);
  return gtcache_insert (c, key, e);
}

static void
test_basic (void)
{
  struct gtcache *c = gtcache_new (1024 * 1024);
  struct gtcache_stats st;
  struct gt_entry *pin, *p, *e;
  uint32_t a, b;
  uint64_t k, k2;
  void *data;

  CHECK (c != NULL);
  a = gtcache_new_owner (c);
  b = gtcache_new_owner (c);
  CHECK (a != b);
  CHECK (gtcache_new_owner (c) != b);
  k = gtcache_key (a, 7);
  k2 = gtcache_key (b, 7);
  CHECK (k != k2);
  CHECK (gtcache_key (a, 0xffffffff) != gtcache_key (a + 1, 0));

  pin = (struct gt_entry *) 1;
  CHECK (gtcache_get (c, k, &pin) == NULL);
  CHECK (pin == NULL);
  gtcache_get_stats (c, &st);
  CHECK_EQ (st.misses, 1);
  CHECK_EQ (st.hits, 0);
  CHECK_EQ (st.bytes, 0);

  e = gtcache_alloc (2048);
  CHECK (e != NULL);
  fill (gtcache_data (e), k, 2048);
  p = gtcache_insert (c, k, e);
  CHECK (p == e);
  CHECK (gtcache_data (p) == gtcache_data (e));
  gtcache_unpin (p);
  gtcache_get_stats (c, &st);
  CHECK_EQ (st.bytes, 2048);

  data = gtcache_get (c, k, &pin);
  CHECK (data != NULL);
  CHECK (pin == e);
  CHECK (data == gtcache_data (e));
  CHECK (data && verify (data, k, 2048));
  gtcache_unpin (pin);

  /* Same table index, other owner: a miss. */
  CHECK (gtcache_get (c, k2, &pin) == NULL);
  gtcache_get_stats (c, &st);
  CHECK_EQ (st.hits, 1);
  CHECK_EQ (st.misses, 2);
  CHECK_EQ (st.evictions, 0);

  /* An entry that is never inserted can be discarded. */
  e = gtcache_alloc (4096);
  CHECK (e != NULL);
  gtcache_discard (e);

  /* Unpinning NULL (a miss's pin) is harmless. */
  gtcache_unpin (NULL);
  gtcache_free (c);
  gtcache_free (NULL);
}

static void
test_duplicate (void)
{
  struct gtcache *c = gtcache_new (1024 * 1024);
  struct gtcache_stats st;
  struct gt_entry *p1, *p2, *e2, *pin;
  uint64_t k = gtcache_key (gtcache_new_owner (c), 3);
  void *data;

  p1 = put (c, k, 512);
  /* Another thread loaded the same table meanwhile: its insert gets
   * the existing entry, and its own copy is discarded.
   */
  e2 = gtcache_alloc (512);
  memset (gtcache_data (e2), 0x55, 512);
  p2 = gtcache_insert (c, k, e2);
  CHECK (p2 == p1);
  CHECK (verify (gtcache_data (p2), k, 512));
  gtcache_get_stats (c, &st);
  CHECK_EQ (st.bytes, 512);
  gtcache_unpin (p1);
  gtcache_unpin (p2);
  /* Still cached (the cache's own reference). */
  data = gtcache_get (c, k, &pin);
  CHECK (data != NULL && verify (data, k, 512));
  gtcache_unpin (pin);
  gtcache_free (c);
}

static void
test_budget (void)
{
  const size_t sz = 4096, n = 2000;
  const uint64_t budget = 256 * 1024;
  struct gtcache *c = gtcache_new (budget);
  struct gtcache_stats st;
  uint32_t owner = gtcache_new_owner (c);
  size_t i, hits = 0;
  bool over = false;

  for (i = 0; i < n; ++i) {
    gtcache_unpin (put (c, gtcache_key (owner, i), sz));
    gtcache_get_stats (c, &st);
    if (st.bytes > budget + SHARDS * sz)
      over = true;
  }
  CHECK_MSG (!over, "bytes %llu > budget %llu + %d entries",
             (unsigned long long) st.bytes, (unsigned long long) budget,
             SHARDS);
  CHECK (st.evictions > 0);
  /* Every table is either still cached or was evicted. */
  CHECK_EQ (st.evictions + st.bytes / sz, n);
  CHECK_EQ (st.bytes % sz, 0);

  /* The cached ones are still right, and the recent ones are there. */
  for (i = 0; i < n; ++i) {
    struct gt_entry *pin;
    uint64_t k = gtcache_key (owner, i);
    void *data = gtcache_get (c, k, &pin);

    if (data) {
      hits++;
      CHECK_MSG (verify (data, k, sz), "table %zu", i);
      gtcache_unpin (pin);
    }
  }
  CHECK_EQ (hits, st.bytes / sz);
  CHECK (hits > 0);
  gtcache_free (c);

  /* A budget of zero still keeps one table per shard. */
  c = gtcache_new (0);
  for (i = 0; i < 500; ++i)
    gtcache_unpin (put (c, gtcache_key (1, i), 100 + i));
  gtcache_get_stats (c, &st);
  CHECK (st.bytes > 0);
  CHECK (st.bytes <= SHARDS * 600);
  CHECK (st.evictions >= 500 - SHARDS);
  gtcache_free (c);
}

static void
test_pinned (void)
{
  struct gtcache *c = gtcache_new (4096);
  struct gtcache_stats st;
  struct gt_entry *p0, *p1, *pin;
  uint64_t k0 = gtcache_key (9, 0);
  unsigned char *d0;
  size_t i;

  p0 = put (c, k0, 3000);
  d0 = gtcache_data (p0);
  /* Push it out of the cache while pinned. */
  for (i = 1; i < 5000 && gtcache_get (c, k0, &pin) != NULL; ++i) {
    gtcache_unpin (pin);
    gtcache_unpin (put (c, gtcache_key (9, i), 3000));
  }
  CHECK_MSG (gtcache_get (c, k0, &pin) == NULL, "never evicted");
  gtcache_get_stats (c, &st);
  CHECK (st.evictions > 0);
  /* The pinned table is still readable (ASan: not freed). */
  CHECK (verify (d0, k0, 3000));
  /* Reloading it makes a new entry; the old pin stays valid. */
  p1 = put (c, k0, 3000);
  CHECK (p1 != p0);
  CHECK (verify (gtcache_data (p1), k0, 3000));
  CHECK (verify (d0, k0, 3000));
  gtcache_unpin (p0);
  gtcache_unpin (p1);

  /* A table pinned while the whole cache is freed outlives it. */
  p0 = put (c, gtcache_key (10, 1), 777);
  gtcache_free (c);
  CHECK (verify (gtcache_data (p0), gtcache_key (10, 1), 777));
  gtcache_unpin (p0);
}

/* Stress: threads look up random tables, load them on a miss, hold a
 * few pins for a while, and check every table they read.
 */
#define THREADS 8
#define ITERATIONS 20000
#define KEYS 3000
#define HELD 4

static struct gtcache *stress_cache;
static atomic_uint stress_gets;
static atomic_uint stress_bad;

static size_t
size_of (uint64_t key)
{
  return 256 + (key % 7) * 128;
}

static void *
stress_thread (void *arg)
{
  struct rng r;
  struct {
    struct gt_entry *pin;
    const unsigned char *data;
    uint64_t key;
  } held[HELD] = { { 0 } };
  size_t i, j;

  rng_init (&r, (uintptr_t) arg);
  for (i = 0; i < ITERATIONS; ++i) {
    uint64_t key = gtcache_key (1 + rng_below (&r, 2), rng_below (&r, KEYS));
    struct gt_entry *pin;
    const unsigned char *data = gtcache_get (stress_cache, key, &pin);

    atomic_fetch_add (&stress_gets, 1);
    if (data == NULL) {
      pin = put (stress_cache, key, size_of (key));
      data = gtcache_data (pin);
    }
    if (!verify (data, key, size_of (key)))
      atomic_fetch_add (&stress_bad, 1);
    /* Hold it in a random slot, releasing what was there. */
    j = rng_below (&r, HELD + 1);
    if (j == HELD)
      gtcache_unpin (pin);
    else {
      if (held[j].pin) {
        if (!verify (held[j].data, held[j].key, size_of (held[j].key)))
          atomic_fetch_add (&stress_bad, 1);
        gtcache_unpin (held[j].pin);
      }
      held[j].pin = pin;
      held[j].data = data;
      held[j].key = key;
    }
  }
  for (j = 0; j < HELD; ++j)
    if (held[j].pin) {
      if (!verify (held[j].data, held[j].key, size_of (held[j].key)))
        atomic_fetch_add (&stress_bad, 1);
      gtcache_unpin (held[j].pin);
    }
  return NULL;
}

static void
test_stress (void)
{
  const uint64_t budget = 128 * 1024;
  pthread_t th[THREADS];
  struct gtcache_stats st;
  size_t i;

  stress_cache = gtcache_new (budget);
  for (i = 0; i < THREADS; ++i)
    CHECK (pthread_create (&th[i], NULL, stress_thread,
                           (void *) (uintptr_t) (i + 1)) == 0);
  for (i = 0; i < THREADS; ++i)
    pthread_join (th[i], NULL);
  gtcache_get_stats (stress_cache, &st);
  CHECK_EQ (atomic_load (&stress_bad), 0);
  CHECK_EQ (st.hits + st.misses, atomic_load (&stress_gets));
  CHECK (st.hits > 0);
  CHECK (st.evictions > 0);
  CHECK (st.bytes <= budget + SHARDS * size_of (6));
  gtcache_free (stress_cache);
}

/* gtcache_get_or_reserve: of many threads wanting one missing key,
 * exactly one fills it and the others wait and see its bytes; after a
 * failed fill, waiters get nothing and the key can be reserved again.
 */
struct reserve_arg {
  struct gtcache *c;
  uint64_t key;
  bool fail;
  int fills;                    /* how many threads reserved (atomic) */
  int seen;                     /* how many saw the filled bytes */
  int empty;                    /* how many got neither */
};

static void *
reserve_thread (void *p)
{
  struct reserve_arg *a = p;
  struct gt_entry *pin;
  const unsigned char *data;

  data = gtcache_get_or_reserve (a->c, a->key, 1024, &pin);
  if (data) {
    CHECK (data[0] == 0x5a && data[1023] == 0x5a);
    __atomic_add_fetch (&a->seen, 1, __ATOMIC_RELAXED);
    gtcache_unpin (pin);
  }
  else if (pin) {
    __atomic_add_fetch (&a->fills, 1, __ATOMIC_RELAXED);
    usleep (20000);             /* let the others find it loading */
    memset (gtcache_data (pin), 0x5a, 1024);
    gtcache_loaded (a->c, pin, !a->fail);
    gtcache_unpin (pin);
  }
  else
    __atomic_add_fetch (&a->empty, 1, __ATOMIC_RELAXED);
  return NULL;
}

static void
test_reserve (void)
{
  struct gtcache *c = gtcache_new (1024 * 1024);
  struct gtcache_stats st;
  pthread_t t[8];
  struct gt_entry *pin;
  size_t i;
  int pass;

  for (pass = 0; pass < 2; ++pass) {
    struct reserve_arg a = { c, gtcache_key (7, pass), pass == 1, 0, 0, 0 };

    for (i = 0; i < 8; ++i)
      pthread_create (&t[i], NULL, reserve_thread, &a);
    for (i = 0; i < 8; ++i)
      pthread_join (t[i], NULL);
    if (!a.fail) {
      CHECK_EQ (a.fills, 1);
      CHECK_EQ (a.seen, 7);
    }
    else {
      /* Threads that waited for the failed fill got nothing; any that
       * came after it reserved the key afresh (and failed too).
       */
      CHECK (a.fills >= 1);
      CHECK_EQ (a.seen, 0);
      CHECK_EQ (a.fills + a.empty, 8);
      CHECK (gtcache_get (c, a.key, &pin) == NULL && pin == NULL);
    }
  }
  gtcache_get_stats (c, &st);
  CHECK (st.waits >= 1);
  gtcache_free (c);
}

/* gtcache_try_reserve takes a key nobody has, never one that is
 * cached or being filled, and never waits.
 */
static void
test_try_reserve (void)
{
  struct gtcache *c = gtcache_new (1024 * 1024);
  uint64_t k1 = gtcache_key (3, 1), k2 = gtcache_key (3, 2);
  struct gt_entry *e, *pin;
  unsigned char *data;

  CHECK_EQ (gtcache_budget (c), 1024 * 1024);
  e = gtcache_try_reserve (c, k1, 512);
  CHECK (e != NULL);
  CHECK (gtcache_try_reserve (c, k1, 512) == NULL);   /* being filled */
  fill (gtcache_data (e), k1, 512);
  gtcache_loaded (c, e, true);
  gtcache_unpin (e);
  CHECK (gtcache_try_reserve (c, k1, 512) == NULL);   /* cached */
  data = gtcache_get (c, k1, &pin);
  CHECK (data != NULL && verify (data, k1, 512));
  gtcache_unpin (pin);

  /* A withdrawn fill leaves the key free again. */
  e = gtcache_try_reserve (c, k2, 512);
  CHECK (e != NULL);
  gtcache_loaded (c, e, false);
  gtcache_unpin (e);
  CHECK (gtcache_get (c, k2, &pin) == NULL && pin == NULL);
  e = gtcache_try_reserve (c, k2, 512);
  CHECK (e != NULL);
  gtcache_loaded (c, e, false);
  gtcache_unpin (e);
  gtcache_free (c);
}

int
main (void)
{
  test_basic ();
  test_duplicate ();
  test_budget ();
  test_pinned ();
  test_stress ();
  test_reserve ();
  test_try_reserve ();
  return test_exit ("test-gtcache");
}
