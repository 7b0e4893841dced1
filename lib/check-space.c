/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Which bytes of an extent file hold what, for the checker: the
 * metadata structures as a sorted list of intervals, and the grains as
 * a bitmap of grain-sized slots of the file (two bits a slot), so that
 * memory stays bounded: 8 MiB for a fully allocated 2 TiB file of
 * 64 KiB grains.  A grain that does not start on a slot boundary (some
 * writers append tables between grains) is kept in a list and checked
 * against everything else at the end.
 *
 * From the bitmap come the two findings that need the whole file at
 * once: grains named twice (or overlapping), and space that nothing
 * references (leaks).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "array.h"
#include "check.h"
#include "checked.h"
#include "error.h"

/* Two bitmaps of at most this many bytes each. */
#define MAX_BITMAP_BYTES (32 * 1024 * 1024)
/* Odd grains remembered (24 bytes each). */
#define MAX_ODD_GRAINS (1024 * 1024)

static bool
bit_get (const uint64_t *map, uint64_t k)
{
  return (map[k / 64] >> (k % 64)) & 1;
}

static void
bit_set (uint64_t *map, uint64_t k)
{
  map[k / 64] |= UINT64_C (1) << (k % 64);
}

int
space_init (struct space *s, uint64_t file_size, uint64_t slot)
{
  uint64_t words;

  memset (s, 0, sizeof *s);
  s->file_size = file_size;
  if (slot == 0)
    return 0;
  s->nr_slots = div_round_up (file_size, slot);
  words = div_round_up (s->nr_slots, 64);
  if (words > MAX_BITMAP_BYTES / 8)
    return 0;                   /* too many slots: no bitmap */
  s->grains = calloc (words ? words : 1, 8);
  s->touched = calloc (words ? words : 1, 8);
  if (s->grains == NULL || s->touched == NULL) {
    space_free (s);
    return vmdk_error (ENOMEM, "calloc: grain bitmap: %m");
  }
  s->slot = slot;
  return 0;
}

void
space_free (struct space *s)
{
  free (s->grains);
  free (s->touched);
  free (s->meta);
  free (s->reach);
  free (s->odd);
  s->grains = s->touched = s->reach = NULL;
  s->meta = NULL;
  s->odd = NULL;
}

int
space_add_meta (struct space *s, uint64_t start, uint64_t len,
                const char *table, int64_t index, uint32_t tag)
{
  struct meta *m;

  if (len == 0 || start >= s->file_size)
    return 0;
  if (array_reserve ((void **) &s->meta, &s->meta_alloc, s->nr_meta + 1,
                     sizeof *s->meta) == -1)
    return -1;
  m = &s->meta[s->nr_meta];
  m->start = start;
  m->end = MIN (s->file_size, start + len);     /* callers keep len sane */
  m->table = table;
  m->index = index;
  m->seq = s->nr_meta++;
  m->tag = tag;
  return 0;
}

static int
cmp_meta (const void *a, const void *b)
{
  const struct meta *x = a, *y = b;

  if (x->start != y->start)
    return x->start < y->start ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Mark the slots [start, end) touches. */
static void
touch (struct space *s, uint64_t start, uint64_t end)
{
  uint64_t k;

  if (s->slot == 0 || end <= start)
    return;
  for (k = start / s->slot; k <= (end - 1) / s->slot && k < s->nr_slots; ++k)
    bit_set (s->touched, k);
}

int
space_seal_meta (struct space *s, meta_overlap_fn fn, void *opaque)
{
  const struct meta *cover = NULL;
  size_t k;

  if (s->nr_meta)
    qsort (s->meta, s->nr_meta, sizeof *s->meta, cmp_meta);
  s->reach = malloc ((s->nr_meta ? s->nr_meta : 1) * sizeof *s->reach);
  if (s->reach == NULL)
    return vmdk_error (ENOMEM, "malloc: %m");
  for (k = 0; k < s->nr_meta; ++k) {
    const struct meta *m = &s->meta[k];

    touch (s, m->start, m->end);
    s->reach[k] = MAX (k ? s->reach[k - 1] : 0, m->end);
    /* cover: of the structures seen, the one reaching furthest. */
    if (cover && m->start < cover->end && fn) {
      if (m->seq > cover->seq)
        fn (opaque, cover, m);
      else
        fn (opaque, m, cover);
    }
    if (cover == NULL || m->end > cover->end)
      cover = m;
  }
  s->sealed = true;
  return 0;
}

const struct meta *
space_first_overlap (const struct space *s, uint64_t start, uint64_t len)
{
  size_t k;

  for (k = 0; k < s->nr_meta; ++k)
    if (start < s->meta[k].end && s->meta[k].start < start + len)
      return &s->meta[k];
  return NULL;
}

const struct meta *
space_find_meta (const struct space *s, uint64_t start, uint64_t end)
{
  size_t lo = 0, hi = s->nr_meta, k;

  /* The structures starting before end, looked at backwards while one
   * of them could still reach start (reach[] is the furthest end so
   * far).  Overlapping structures (already reported) may hide one
   * another: any will do.
   */
  if (!s->sealed)
    return NULL;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;

    if (s->meta[mid].start < end)
      lo = mid + 1;
    else
      hi = mid;
  }
  for (k = lo; k > 0; --k) {
    const struct meta *m = &s->meta[k - 1];

    if (s->reach[k - 1] <= start)
      break;
    if (m->end > start)
      return m;
  }
  return NULL;
}

/* Does [start, end) touch a slot set in map? */
static bool
touches (const struct space *s, const uint64_t *map, uint64_t start,
         uint64_t end)
{
  uint64_t k;

  for (k = start / s->slot; k <= (end - 1) / s->slot && k < s->nr_slots; ++k)
    if (bit_get (map, k))
      return true;
  return false;
}

enum claim
space_claim (struct space *s, uint64_t start, uint64_t len, uint64_t t,
             uint32_t i, const struct meta **m)
{
  uint64_t end = MIN (start + len, s->file_size);   /* start < file_size */
  uint64_t k;

  /* Metadata marked the slots it touches: search only there. */
  *m = NULL;
  if (s->slot == 0 || touches (s, s->touched, start, end))
    *m = space_find_meta (s, start, end);
  if (*m)
    return CLAIM_META;
  if (s->slot == 0)
    return CLAIM_OK;
  if (start % s->slot == 0 && len == s->slot) {
    k = start / s->slot;
    if (bit_get (s->grains, k))
      return CLAIM_SHARED;
    bit_set (s->grains, k);
    return CLAIM_OK;
  }
  if (s->nr_odd >= MAX_ODD_GRAINS) {
    s->odd_overflow = true;
    touch (s, start, end);
    return CLAIM_OK;
  }
  if (array_reserve ((void **) &s->odd, &s->odd_alloc, s->nr_odd + 1,
                     sizeof *s->odd) == -1)
    return CLAIM_NOMEM;
  s->odd[s->nr_odd++] = (struct odd_grain) { start, end, t, i };
  touch (s, start, end);
  return CLAIM_OK;
}

static int
cmp_odd (const void *a, const void *b)
{
  const struct odd_grain *x = a, *y = b;

  if (x->start != y->start)
    return x->start < y->start ? -1 : 1;
  if (x->t != y->t)
    return x->t < y->t ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}


void
space_check_odd (struct space *s, odd_conflict_fn fn, void *opaque)
{
  uint64_t reach = 0;
  size_t k;

  /* In file order, an odd grain starting before the furthest end of
   * the ones before it overlaps one of them: it loses.
   */
  if (s->nr_odd)
    qsort (s->odd, s->nr_odd, sizeof *s->odd, cmp_odd);
  for (k = 0; k < s->nr_odd; ++k) {
    const struct odd_grain *g = &s->odd[k];

    if (k > 0 && g->start < reach)
      fn (opaque, g, CLAIM_SHARED, NULL);
    else if (touches (s, s->grains, g->start, g->end))
      fn (opaque, g, CLAIM_SHARED, NULL);
    else
      reach = MAX (reach, g->end);
  }
}

void
space_leaks (const struct space *s, uint64_t from, leak_fn fn, void *opaque)
{
  uint64_t k, run = 0, first = 0;

  if (s->slot == 0)
    return;
  for (k = div_round_up (from, s->slot); k < s->nr_slots; ++k) {
    if (!bit_get (s->grains, k) && !bit_get (s->touched, k)) {
      if (run++ == 0)
        first = k;
      continue;
    }
    if (run)
      fn (opaque, first * s->slot, run * s->slot);
    run = 0;
  }
  if (run)                      /* the last slot may be short */
    fn (opaque, first * s->slot, s->file_size - first * s->slot);
}

size_t
space_plan_moves (const struct space *s, uint64_t from, uint64_t *holes,
                  uint64_t *grains, size_t max)
{
  uint64_t lo, hi;
  size_t n = 0;

  if (s->slot == 0 || s->nr_slots == 0)
    return 0;
  lo = div_round_up (from, s->slot);
  hi = s->nr_slots - 1;
  while (n < max && lo < hi) {
    if (bit_get (s->grains, lo) || bit_get (s->touched, lo)) {
      lo++;
      continue;
    }
    /* Only whole grains that nothing else touches move. */
    if (!bit_get (s->grains, hi) || bit_get (s->touched, hi) ||
        (hi + 1) * s->slot > s->file_size) {
      if (bit_get (s->touched, hi) ||
          (bit_get (s->grains, hi) && (hi + 1) * s->slot > s->file_size))
        break;                  /* metadata or a cut grain: stop there */
      hi--;
      continue;
    }
    holes[n] = lo++;
    grains[n++] = hi--;
  }
  return n;
}

uint64_t
space_used_end (const struct space *s)
{
  uint64_t end = 0, k;
  size_t j;

  for (j = 0; j < s->nr_meta; ++j)
    end = MAX (end, s->meta[j].end);
  for (j = 0; j < s->nr_odd; ++j)
    end = MAX (end, s->odd[j].end);
  if (s->slot) {
    for (k = s->nr_slots; k > 0; --k)
      if (bit_get (s->grains, k - 1) || bit_get (s->touched, k - 1)) {
        uint64_t slot_end = MIN (k * s->slot, s->file_size);

        end = MAX (end, slot_end);
        break;
      }
  }
  return end;
}
