/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Descriptor grammar (VMware "Virtual Disk Format", libvmdk's notes):
 *
 *   # comment
 *   key = value             value optionally "quoted", spaces tolerated
 *   ACCESS SECTORS TYPE ["FILENAME" [OFFSET]]
 *
 * Keys are matched case-insensitively (libvmdk does; producers vary).
 * Unknown keys (ddb.*, changeTrackPath, ...) are accepted and ignored.
 * Anything else is an error that quotes the line: nothing is skipped
 * silently, so a descriptor we do not understand is never half-read.
 */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "array.h"
#include "descriptor.h"
#include "error.h"

static const char *const create_types[] = {
  "monolithicSparse", "monolithicFlat",
  "twoGbMaxExtentSparse", "2GbMaxExtentSparse",
  "twoGbMaxExtentFlat", "2GbMaxExtentFlat",
  "streamOptimized",
  "vmfs", "vmfsPreallocated", "vmfsEagerZeroedThick", "vmfsThin",
  "vmfsSparse", "seSparse",
  "custom",
  "fullDevice", "partitionedDevice",  /* only with allow_devices */
  NULL
};

static const struct {
  const char *name;
  enum extent_type type;
} extent_types[] = {
  { "FLAT", EXTENT_FLAT },
  { "SPARSE", EXTENT_SPARSE },
  { "ZERO", EXTENT_ZERO },
  { "VMFS", EXTENT_VMFS },
  { "VMFSSPARSE", EXTENT_VMFSSPARSE },
  { "SESPARSE", EXTENT_SESPARSE },
};

const char *
extent_type_name (enum extent_type t)
{
  size_t i;

  for (i = 0; i < sizeof extent_types / sizeof extent_types[0]; ++i)
    if (extent_types[i].type == t)
      return extent_types[i].name;
  return "?";
}

void
descriptor_free (struct descriptor *d)
{
  size_t i;

  if (d == NULL)
    return;
  for (i = 0; i < d->nr_extents; ++i) {
    free (d->extents[i].filename);
    free (d->extents[i].line);
  }
  free (d->extents);
  for (i = 0; i < d->nr_ddb; ++i) {
    free (d->ddb[i].key);
    free (d->ddb[i].value);
  }
  free (d->ddb);
  free (d->create_type);
  free (d->parent_hint);
  free (d);
}

bool
descriptor_probe (const char *text, size_t len)
{
  static const char sig[] = "# Disk DescriptorFile";
  size_t i;

  if (len >= sizeof sig - 1 &&
      strncasecmp (text, sig, sizeof sig - 1) == 0)
    return true;
  /* Otherwise accept any text that mentions createType near the top. */
  for (i = 0; i < len && i < 4096; ++i)
    if (text[i] == '\0' ||
        ((unsigned char) text[i] < 32 && !isspace ((unsigned char) text[i])))
      return false;
  return memmem (text, len < 4096 ? len : 4096, "createType", 10) != NULL;
}

/* Trim leading and trailing white space in place. */
static char *
trim (char *s)
{
  char *e;

  while (*s == ' ' || *s == '\t')
    s++;
  e = s + strlen (s);
  while (e > s && isspace ((unsigned char) e[-1]))
    *--e = '\0';
  return s;
}

/* Strip one pair of surrounding double quotes, if present. */
static char *
unquote (char *v)
{
  size_t n = strlen (v);

  if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
    v[n - 1] = '\0';
    return v + 1;
  }
  return v;
}

static int
parse_u64 (const char *s, int base, uint64_t *out)
{
  char *end;
  unsigned long long v;

  if (!isxdigit ((unsigned char) s[0]))
    return -1;
  errno = 0;
  v = strtoull (s, &end, base);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

static int
parse_cid (const char *value, uint32_t *cid, const char *name,
           unsigned line_no, const char *key)
{
  uint64_t v;

  if (parse_u64 (value, 16, &v) == -1 || v > UINT32_MAX)
    return vmdk_error (EINVAL, "%s: line %u: %s=\"%s\" is not a 32-bit "
                       "hexadecimal number", name, line_no, key, value);
  *cid = v;
  return 0;
}

static int
set_string (char **field, const char *value)
{
  free (*field);
  *field = strdup (value);
  if (*field == NULL)
    return vmdk_error (ENOMEM, "strdup: %m");
  return 0;
}

/* Remember a ddb.* key for those who show the descriptor (vmdk info). */
static int
add_ddb_key (struct descriptor *d, const char *key, const char *value)
{
  struct descriptor_key *k;
  size_t i;

  for (i = 0; i < d->nr_ddb; ++i)
    if (strcasecmp (d->ddb[i].key, key) == 0)
      return set_string (&d->ddb[i].value, value);
  if (array_reserve ((void **) &d->ddb, &d->ddb_alloc, d->nr_ddb + 1,
                     sizeof *d->ddb) == -1)
    return -1;
  k = &d->ddb[d->nr_ddb];
  k->key = strdup (key);
  k->value = strdup (value);
  if (k->key == NULL || k->value == NULL) {
    free (k->key);
    free (k->value);
    return vmdk_error (ENOMEM, "strdup: %m");
  }
  d->nr_ddb++;
  return 0;
}

static int
parse_key_value (struct descriptor *d, char *key, char *value,
                 const char *name, unsigned line_no)
{
  uint64_t v;

  key = trim (key);
  value = unquote (trim (value));

  if (strcasecmp (key, "version") == 0) {
    if (parse_u64 (value, 10, &v) == -1 || v < 1 || v > 3)
      return vmdk_error (ENOTSUP, "%s: line %u: version=%s is not supported "
                         "(expected 1, 2 or 3)", name, line_no, value);
    d->version = v;
  }
  else if (strcasecmp (key, "CID") == 0) {
    if (parse_cid (value, &d->cid, name, line_no, "CID") == -1)
      return -1;
    d->has_cid = true;
  }
  else if (strcasecmp (key, "parentCID") == 0)
    return parse_cid (value, &d->parent_cid, name, line_no, "parentCID");
  else if (strcasecmp (key, "createType") == 0) {
    size_t i;

    for (i = 0; create_types[i]; ++i)
      if (strcasecmp (value, create_types[i]) == 0)
        break;
    if (create_types[i] == NULL)
      return vmdk_error (ENOTSUP, "%s: line %u: createType=\"%s\" is not "
                         "supported (raw-device mappings such as vmfsRaw "
                         "and vmfsRDM cannot be served)", name, line_no, value);
    return set_string (&d->create_type, create_types[i]);
  }
  else if (strcasecmp (key, "parentFileNameHint") == 0)
    return set_string (&d->parent_hint, value);
  else if (strncasecmp (key, "ddb.", 4) == 0)
    return add_ddb_key (d, key, value);
  /* Anything else (encoding, isNativeSnapshot, changeTrackPath, ...)
   * carries no information the reader needs.
   */
  return 0;
}

/* Split the next white-space separated token; quoted tokens may hold
 * spaces.  Returns NULL at end of line, sets *bad on an open quote.
 */
static char *
next_token (char **p, bool *quoted, bool *bad)
{
  char *s = *p, *start;

  while (*s == ' ' || *s == '\t')
    s++;
  if (*s == '\0')
    return NULL;
  *quoted = *s == '"';
  if (*quoted) {
    start = ++s;
    s = strchr (s, '"');
    if (s == NULL) {
      *bad = true;
      return NULL;
    }
    *s++ = '\0';
    if (*s != '\0' && *s != ' ' && *s != '\t') {
      *bad = true;
      return NULL;
    }
  }
  else {
    start = s;
    while (*s && *s != ' ' && *s != '\t')
      s++;
  }
  if (*s)
    *s++ = '\0';
  *p = s;
  return start;
}

static int
parse_extent_line (struct descriptor *d, size_t *extents_alloc, char *line,
                   const char *orig, const char *name, unsigned line_no)
{
  struct descriptor_extent *e;
  char *p = line, *tok[6];
  bool quoted[6] = { false }, bad = false;
  size_t n = 0, i;
  uint64_t v;

#define BAD_LINE(why) \
  vmdk_error (EINVAL, "%s: line %u: invalid extent line \"%s\": %s", \
              name, line_no, orig, (why))

  while (n < 6 && (tok[n] = next_token (&p, &quoted[n], &bad)) != NULL)
    n++;
  if (bad)
    return BAD_LINE ("unterminated quoted file name");
  if (n == 6)
    return BAD_LINE ("too many fields (Windows device extents with a "
                     "partition UUID are not supported)");
  if (n < 3)
    return BAD_LINE ("expected ACCESS SECTORS TYPE [\"FILE\" [OFFSET]]");

  if (d->nr_extents >= DESCRIPTOR_MAX_EXTENTS)
    return vmdk_error (EINVAL, "%s: more than %d extents", name,
                       DESCRIPTOR_MAX_EXTENTS);
  if (array_reserve ((void **) &d->extents, extents_alloc, d->nr_extents + 1,
                     sizeof *e) == -1)
    return -1;
  e = &d->extents[d->nr_extents];
  memset (e, 0, sizeof *e);
  e->line_no = line_no;
  e->line = strdup (orig);
  if (e->line == NULL)
    return vmdk_error (ENOMEM, "strdup: %m");
  d->nr_extents++;              /* owned by d from now on */

  if (strcasecmp (tok[0], "RW") == 0)
    e->access = ACCESS_RW;
  else if (strcasecmp (tok[0], "RDONLY") == 0)
    e->access = ACCESS_RDONLY;
  else if (strcasecmp (tok[0], "NOACCESS") == 0)
    e->access = ACCESS_NOACCESS;
  else
    return BAD_LINE ("access must be RW, RDONLY or NOACCESS");

  if (parse_u64 (tok[1], 10, &v) == -1 || v == 0 ||
      v > UINT64_MAX / 512)
    return BAD_LINE ("the size in sectors must be a positive number");
  e->sectors = v;

  for (i = 0; i < sizeof extent_types / sizeof extent_types[0]; ++i)
    if (strcasecmp (tok[2], extent_types[i].name) == 0)
      break;
  if (i == sizeof extent_types / sizeof extent_types[0])
    return BAD_LINE ("extent type is not supported (raw-device extents "
                     "VMFSRDM / VMFSRAW cannot be served)");
  e->type = extent_types[i].type;

  if (e->type == EXTENT_ZERO) {
    if (n != 3)
      return BAD_LINE ("a ZERO extent takes no file name");
    return 0;
  }
  if (n < 4)
    return BAD_LINE ("missing file name");
  if (strlen (tok[3]) == 0 || strlen (tok[3]) > DESCRIPTOR_MAX_NAME)
    return BAD_LINE ("file name is empty or too long");
  e->filename = strdup (tok[3]);
  if (e->filename == NULL)
    return vmdk_error (ENOMEM, "strdup: %m");

  if (e->type == EXTENT_FLAT) {
    if (n != 5)
      return BAD_LINE ("a FLAT extent needs an offset after the file name");
    if (parse_u64 (tok[4], 10, &v) == -1 || v > UINT64_MAX / 512)
      return BAD_LINE ("the offset must be a number of sectors");
    e->offset = v;
  }
  else if (n != 4) {
    /* VMFS takes no offset (QEMU iotest 059); sparse kinds neither. */
    return BAD_LINE ("unexpected field after the file name");
  }
  return 0;
#undef BAD_LINE
}

bool
descriptor_is_extent_line (const char *s)
{
  static const char *const access[] = { "RW", "RDONLY", "NOACCESS" };
  size_t i, n;

  while (*s == ' ' || *s == '\t')
    s++;
  for (i = 0; i < 3; ++i) {
    n = strlen (access[i]);
    if (strncasecmp (s, access[i], n) == 0 && (s[n] == ' ' || s[n] == '\t'))
      return true;
  }
  return false;
}

/* The number of lines in text (n bytes): a last line without a
 * newline counts too.
 */
static size_t
count_lines (const char *text, size_t n)
{
  const char *p = text, *end = text + n;
  size_t lines = 0;

  while (p < end && (p = memchr (p, '\n', end - p)) != NULL) {
    lines++;
    p++;
  }
  return lines + (n > 0 && text[n - 1] != '\n');
}

struct descriptor *
descriptor_parse (const char *text, size_t len, const char *name)
{
  struct descriptor *d;
  char *copy, *line, *next;
  unsigned line_no = 0;
  size_t n, extents_alloc = 0;

  n = strnlen (text, len);
  if (n > DESCRIPTOR_MAX_BYTES) {
    vmdk_error (EINVAL, "%s: descriptor is larger than %d bytes", name,
                DESCRIPTOR_MAX_BYTES);
    return NULL;
  }
  /* Refuse before any per-line work. */
  if (count_lines (text, n) > DESCRIPTOR_MAX_LINES) {
    vmdk_error (EINVAL, "%s: descriptor has more than %d lines", name,
                DESCRIPTOR_MAX_LINES);
    return NULL;
  }
  d = calloc (1, sizeof *d);
  copy = malloc (n + 1);
  if (d == NULL || copy == NULL) {
    vmdk_error (ENOMEM, "malloc: %m");
    free (d);
    free (copy);
    return NULL;
  }
  memcpy (copy, text, n);
  copy[n] = '\0';
  d->version = 1;
  d->parent_cid = CID_NONE;

  for (line = copy; line && line < copy + n; line = next) {
    char *s, *eq, orig[256];

    next = strchr (line, '\n');
    if (next)
      *next++ = '\0';
    line_no++;
    s = trim (line);
    if (*s == '\0' || *s == '#')
      continue;
    snprintf (orig, sizeof orig, "%s", s);
    for (eq = s; *eq; eq++)
      if ((unsigned char) *eq < 32 && *eq != '\t') {
        vmdk_error (EINVAL, "%s: line %u: control character in "
                    "descriptor (not a text descriptor?)", name, line_no);
        goto err;
      }

    if (descriptor_is_extent_line (s)) {
      if (parse_extent_line (d, &extents_alloc, s, orig, name,
                             line_no) == -1)
        goto err;
    }
    else if ((eq = strchr (s, '=')) != NULL) {
      *eq = '\0';
      if (parse_key_value (d, s, eq + 1, name, line_no) == -1)
        goto err;
    }
    else {
      vmdk_error (EINVAL, "%s: line %u: cannot parse descriptor line \"%s\"",
                  name, line_no, orig);
      goto err;
    }
  }

  if (d->nr_extents == 0) {
    vmdk_error (EINVAL, "%s: descriptor has no extent lines", name);
    goto err;
  }
  if (d->create_type == NULL) {
    vmdk_error (EINVAL, "%s: descriptor has no createType", name);
    goto err;
  }
  free (copy);
  return d;

 err:
  free (copy);
  descriptor_free (d);
  return NULL;
}

struct descriptor *
descriptor_new_bare (uint64_t capacity, enum extent_type type,
                     const char *name)
{
  struct descriptor *d;

  if (capacity == 0 || capacity > UINT64_MAX / 512) {
    vmdk_error (EINVAL, "%s: header capacity %" PRIu64 " sectors is "
                "invalid and there is no descriptor", name, capacity);
    return NULL;
  }
  d = calloc (1, sizeof *d);
  if (d == NULL ||
      (d->extents = calloc (1, sizeof *d->extents)) == NULL ||
      (d->create_type = strdup ("monolithicSparse")) == NULL ||
      (d->extents[0].line = strdup ("(no descriptor)")) == NULL) {
    vmdk_error (ENOMEM, "calloc: %m");
    if (d)
      d->nr_extents = d->extents ? 1 : 0;
    descriptor_free (d);
    return NULL;
  }
  d->nr_extents = 1;
  d->version = 1;
  d->parent_cid = CID_NONE;
  d->extents[0].access = ACCESS_RW;
  d->extents[0].sectors = capacity;
  d->extents[0].type = type;
  return d;
}

/* In a descriptor file anything after the NUL is normally padding, but
 * QEMU rewriting the CID leaves the old tail behind the NUL when the
 * new text is shorter (it prints the CID without leading zeroes): such
 * files must keep working, so the rest is ignored, with a warning when
 * it is not padding.
 */
void
descriptor_warn_text_after_nul (const char *text, size_t len,
                                const char *name)
{
  const char *nul = memchr (text, '\0', len);
  size_t i;

  if (nul == NULL)
    return;
  for (i = nul - text; i < len; ++i)
    if (text[i] != '\0') {
      vmdk_warning ("%s: descriptor file has text after the NUL byte at "
                    "offset %td (at offset %zu): ignored, as QEMU does",
                    name, nul - text, i);
      return;
    }
}

static bool
is_blank (char c)
{
  return c == ' ' || c == '\t';
}

int
descriptor_find_cid (const char *text, size_t len, size_t *start,
                     size_t *width, const char *name)
{
  size_t pos = 0, p;

  len = strnlen (text, len);
  /* Find "CID" at the start of a line, then "=" and the digits. */
  for (;;) {
    while (pos < len && is_blank (text[pos]))
      pos++;
    if (len - pos >= 3 && strncasecmp (text + pos, "CID", 3) == 0) {
      p = pos + 3;
      while (p < len && is_blank (text[p]))
        p++;
      if (p < len && text[p] == '=') {
        p++;
        while (p < len && (is_blank (text[p]) || text[p] == '"'))
          p++;
        break;
      }
    }
    while (pos < len && text[pos] != '\n')
      pos++;
    if (pos >= len)
      return 0;
    pos++;
  }
  *start = p;
  while (p < len && isxdigit ((unsigned char) text[p]))
    p++;
  *width = p - *start;
  if (*width == 0)
    return vmdk_error (EINVAL, "%s: the CID line has no value", name);
  if (*width > 16)
    *width = 16;
  return 1;
}

uint32_t
descriptor_random_cid (unsigned width, uint32_t avoid)
{
  uint32_t cid, limit;

  limit = width >= 8 ? UINT32_MAX : (UINT32_C (1) << (4 * width)) - 1;
  do {
    if (getrandom (&cid, sizeof cid, 0) != sizeof cid)
      cid = (uint32_t) random ();
    cid &= limit;
  } while (cid == avoid || cid >= 0xfffffffe);
  return cid;
}
