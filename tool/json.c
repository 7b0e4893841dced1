/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>

#include "json.h"

void
json_init (struct json *j, FILE *f)
{
  j->f = f;
  j->depth = 0;
  j->has_items[0] = false;
  j->after_key = false;
}

/* The length of the UTF-8 sequence at s (1 to 4), or 0 if it is not
 * one (overlong forms, surrogates and values past U+10FFFF included).
 */
static int
utf8_length (const unsigned char *s)
{
  unsigned c = s[0], n, i, v;

  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, v = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, v = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, v = c & 0x07;
  else
    return 0;
  for (i = 1; i < n; ++i) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    v = v << 6 | (s[i] & 0x3f);
  }
  if ((n == 3 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) ||
      (n == 4 && (v < 0x10000 || v > 0x10ffff)))
    return 0;
  return n;
}

void
json_quote (FILE *f, const char *str)
{
  const unsigned char *s = (const unsigned char *) str;

  fputc ('"', f);
  while (*s) {
    int n = utf8_length (s);

    if (*s == '"' || *s == '\\')
      fprintf (f, "\\%c", *s);
    else if (*s == '\n')
      fputs ("\\n", f);
    else if (*s == '\t')
      fputs ("\\t", f);
    else if (*s < 0x20 || *s == 0x7f)
      fprintf (f, "\\u%04x", *s);
    else if (n == 0)            /* not UTF-8: the byte as a code point */
      fprintf (f, "\\u%04x", *s);
    else {
      fwrite (s, 1, n, f);
      s += n;
      continue;
    }
    s++;
  }
  fputc ('"', f);
}

static void
indent (struct json *j)
{
  unsigned i;

  fputc ('\n', j->f);
  for (i = 0; i < j->depth; ++i)
    fputs ("  ", j->f);
}

/* Before a value: a comma and a new line, unless it follows a key. */
static void
before_value (struct json *j)
{
  if (j->after_key) {
    j->after_key = false;
    return;
  }
  if (j->depth > 0) {
    if (j->has_items[j->depth])
      fputc (',', j->f);
    indent (j);
  }
  j->has_items[j->depth] = true;
}

static void
open_container (struct json *j, char c)
{
  before_value (j);
  fputc (c, j->f);
  assert (j->depth + 1 < JSON_MAX_DEPTH);
  j->has_items[++j->depth] = false;
}

static void
close_container (struct json *j, char c)
{
  bool had_items = j->has_items[j->depth];

  assert (j->depth > 0);
  j->depth--;
  if (had_items)
    indent (j);
  fputc (c, j->f);
  if (j->depth == 0)
    fputc ('\n', j->f);
}

void
json_begin_object (struct json *j)
{
  open_container (j, '{');
}

void
json_end_object (struct json *j)
{
  close_container (j, '}');
}

void
json_begin_array (struct json *j)
{
  open_container (j, '[');
}

void
json_end_array (struct json *j)
{
  close_container (j, ']');
}

void
json_key (struct json *j, const char *key)
{
  before_value (j);
  json_quote (j->f, key);
  fputs (": ", j->f);
  j->after_key = true;
}

void
json_string (struct json *j, const char *s)
{
  before_value (j);
  json_quote (j->f, s);
}

void
json_uint (struct json *j, uint64_t v)
{
  before_value (j);
  fprintf (j->f, "%" PRIu64, v);
}

void
json_bool (struct json *j, bool v)
{
  before_value (j);
  fputs (v ? "true" : "false", j->f);
}

void
json_null (struct json *j)
{
  before_value (j);
  fputs ("null", j->f);
}

void
json_string_or_null (struct json *j, const char *s)
{
  if (s)
    json_string (j, s);
  else
    json_null (j);
}
