/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* A small JSON writer: pretty-printed objects and arrays, strings
 * escaped (control characters, and bytes that are not UTF-8, which a
 * hostile descriptor may hold, become \uXXXX escapes), so the output
 * is always valid JSON.
 */

#ifndef VMDK_TOOL_JSON_H
#define VMDK_TOOL_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 16

struct json {
  FILE *f;
  unsigned depth;
  bool has_items[JSON_MAX_DEPTH];  /* a comma is due before the next */
  bool after_key;                  /* the next value follows a key */
};

extern void json_init (struct json *j, FILE *f);
extern void json_begin_object (struct json *j);
extern void json_end_object (struct json *j);
extern void json_begin_array (struct json *j);
extern void json_end_array (struct json *j);
/* The key of the next value in an object. */
extern void json_key (struct json *j, const char *key);
extern void json_string (struct json *j, const char *s);
extern void json_uint (struct json *j, uint64_t v);
extern void json_bool (struct json *j, bool v);
extern void json_null (struct json *j);
/* A string, or null if s is NULL. */
extern void json_string_or_null (struct json *j, const char *s);

/* Write s as a JSON string literal (with quotes) to f. */
extern void json_quote (FILE *f, const char *s);

#endif /* VMDK_TOOL_JSON_H */
