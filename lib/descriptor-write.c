/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Writing descriptor text as VMware's own writer emits it
 * (VMDK-FORMAT.md (c)): the disk database keys, each once, in this
 * form, for new images and for stream images of other writers that
 * lack some of them.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "checked.h"
#include "descriptor.h"
#include "error.h"

void
text_append (struct text *t, const char *fs, ...)
{
  va_list args;
  int n;

  if (t->failed)
    return;
  for (;;) {
    va_start (args, fs);
    n = vsnprintf (t->s ? t->s + t->len : NULL,
                   t->s ? t->alloc - t->len : 0, fs, args);
    va_end (args);
    if (n < 0) {
      t->failed = true;
      return;
    }
    if (t->s && (size_t) n < t->alloc - t->len) {
      t->len += n;
      return;
    }
    t->alloc = MAX (t->alloc * 2, t->len + n + 4096);
    t->s = realloc (t->s, t->alloc);
    if (t->s == NULL) {
      t->failed = true;
      return;
    }
  }
}

static void
random_bytes (void *buf, size_t n)
{
  unsigned char *b = buf;
  size_t i;

  if (getrandom (buf, n, 0) != (ssize_t) n)
    for (i = 0; i < n; ++i)
      b[i] = random ();
}

struct geometry
descriptor_geometry (uint64_t sectors, bool ide)
{
  struct geometry g = { .sectors = 63, .heads = ide ? 16 : 255 };
  uint64_t max_cylinders = ide ? 16383 : 65535;

  g.cylinders = MIN (div_round_up (sectors, (uint64_t) g.heads * g.sectors),
                     max_cylinders);
  return g;
}

/* Does the line [p, nl) set key? */
static bool
line_sets_key (const char *p, const char *nl, const char *key)
{
  size_t n = strlen (key);

  while (p < nl && (*p == ' ' || *p == '\t'))
    p++;
  return (size_t) (nl - p) > n && strncasecmp (p, key, n) == 0 &&
    (p[n] == ' ' || p[n] == '\t' || p[n] == '=');
}

/* The end of the line at p (its '\n', or end). */
static const char *
line_end (const char *p, const char *end)
{
  const char *nl = memchr (p, '\n', end - p);

  return nl ? nl : end;
}

/* Does text (len bytes) have a line setting key? */
static bool
has_key (const char *text, size_t len, const char *key)
{
  const char *p = text, *end = text + len;

  while (p < end) {
    const char *nl = line_end (p, end);

    if (line_sets_key (p, nl, key))
      return true;
    p = nl + 1;
  }
  return false;
}

void
descriptor_write_ddb (struct text *t, const struct ddb_values *v,
                      const char *existing, size_t existing_len)
{
  unsigned char id[16];
  size_t i;

#define MISSING(key) (existing == NULL || \
                      !has_key (existing, existing_len, (key)))
  if (MISSING ("ddb.longContentID")) {
    random_bytes (id, sizeof id);
    text_append (t, "ddb.longContentID = \"");
    for (i = 0; i < 16; ++i)
      text_append (t, "%02x", id[i]);
    text_append (t, "\"\n");
  }
  if (MISSING ("ddb.uuid")) {
    random_bytes (id, sizeof id);
    text_append (t, "ddb.uuid = \"");
    for (i = 0; i < 16; ++i)
      text_append (t, "%02x%s", id[i], i == 15 ? "" : i == 7 ? "-" : " ");
    text_append (t, "\"\n");
  }
  if (MISSING ("ddb.virtualHWVersion"))
    text_append (t, "ddb.virtualHWVersion = \"%u\"\n", v->hw_version);
  if (MISSING ("ddb.geometry.cylinders"))
    text_append (t, "ddb.geometry.cylinders = \"%" PRIu32 "\"\n",
                 v->geo.cylinders);
  if (MISSING ("ddb.geometry.heads"))
    text_append (t, "ddb.geometry.heads = \"%" PRIu32 "\"\n", v->geo.heads);
  if (MISSING ("ddb.geometry.sectors"))
    text_append (t, "ddb.geometry.sectors = \"%" PRIu32 "\"\n",
                 v->geo.sectors);
  if (MISSING ("ddb.adapterType"))
    text_append (t, "ddb.adapterType = \"%s\"\n", v->adapter);
  if (v->thin && MISSING ("ddb.thinProvisioned"))
    text_append (t, "ddb.thinProvisioned = \"1\"\n");
  if (MISSING ("ddb.toolsInstallType"))
    text_append (t, "ddb.toolsInstallType = \"4\"\n");
  if (MISSING ("ddb.toolsVersion"))
    text_append (t, "ddb.toolsVersion = \"2147483647\"\n");
#undef MISSING
}

char *
descriptor_complete_ddb (const char *text, size_t len, uint64_t capacity,
                         size_t *out_len)
{
  /* What the existing adapter type implies for the geometry. */
  bool ide = false;
  struct ddb_values v = { .hw_version = 4, .adapter = "lsilogic" };
  struct text t = { 0 };

  size_t start, width;

  len = strnlen (text, len);
  if (has_key (text, len, "ddb.adapterType"))
    ide = strstr (text, "\"ide\"") != NULL;
  v.geo = descriptor_geometry (capacity, ide);
  /* VMware writes the CID with 8 digits; qemu-img drops leading
   * zeroes.
   */
  if (descriptor_find_cid (text, len, &start, &width, "descriptor") == 1 &&
      width < 8)
    text_append (&t, "%.*s%.*s%.*s", (int) start, text, (int) (8 - width),
                 "00000000", (int) (len - start), text + start);
  else
    text_append (&t, "%.*s", (int) len, text);
  if (len > 0 && text[len - 1] != '\n')
    text_append (&t, "\n");
  descriptor_write_ddb (&t, &v, text, len);
  if (t.failed) {
    free (t.s);
    vmdk_error (ENOMEM, "descriptor: %m");
    return NULL;
  }
  *out_len = t.len;
  return t.s;
}

const char *
extent_access_name (enum extent_access a)
{
  switch (a) {
  case ACCESS_RW: return "RW";
  case ACCESS_RDONLY: return "RDONLY";
  case ACCESS_NOACCESS: return "NOACCESS";
  }
  return "?";
}

/* The extent lines, as the descriptor grammar has them. */
static void
append_extent_lines (struct text *t, const struct descriptor_extent *exts,
                     size_t n, const char *eol)
{
  size_t i;

  for (i = 0; i < n; ++i) {
    const struct descriptor_extent *e = &exts[i];

    text_append (t, "%s %" PRIu64 " %s", extent_access_name (e->access),
                 e->sectors, extent_type_name (e->type));
    if (e->filename)
      text_append (t, " \"%s\"", e->filename);
    if (e->type == EXTENT_FLAT)
      text_append (t, " %" PRIu64, e->offset);
    text_append (t, "%s", eol);
  }
}

char *
descriptor_rewrite (const char *text, size_t len,
                    const struct descriptor_extent *exts, size_t n,
                    uint32_t cid, uint32_t cylinders, size_t *out_len)
{
  const char *p = text, *end;
  struct text t = { 0 };
  bool extents_done = false;

  len = strnlen (text, len);
  end = text + len;
  text_append (&t, "%s", "");   /* an empty text is not an error */
  while (p < end) {
    const char *nl = line_end (p, end);
    /* Each line keeps its ending (CRLF too). */
    const char *eol = nl == end ? "\n" : nl > p && nl[-1] == '\r' ? "\r\n"
                                                                : "\n";
    int body = (int) (nl - p) - (eol[0] == '\r');
    char *line = strndup (p, body);

    if (line == NULL)
      t.failed = true;
    else if (descriptor_is_extent_line (line)) {
      if (!extents_done)
        append_extent_lines (&t, exts, n, eol);
      extents_done = true;
    }
    else if (line_sets_key (p, nl, "CID"))
      text_append (&t, "CID=%08" PRIx32 "%s", cid, eol);
    else if (line_sets_key (p, nl, "ddb.geometry.cylinders"))
      text_append (&t, "ddb.geometry.cylinders = \"%" PRIu32 "\"%s",
                   cylinders, eol);
    else
      text_append (&t, "%s%s", line, eol);
    free (line);
    p = nl + 1;
  }
  if (t.failed) {
    free (t.s);
    vmdk_error (ENOMEM, "descriptor: %m");
    return NULL;
  }
  *out_len = t.len;
  return t.s;
}
