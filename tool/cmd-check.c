/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk check [--json] [--repair] IMAGE
 *
 * Exit status as qemu-img check's: 0 clean, 2 corruption, 3 only
 * leaked space, 1 could not open (or bad usage).  With --repair the
 * status is that of a second check of the repaired image ("double
 * checking", as qemu-img says), whose findings are shown too.
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"
#include "vmdk.h"

/* Each kind of finding: its JSON name and its text label. */
static const struct {
  const char *name, *label;
} kinds[] = {
  [VMDK_CHECK_CORRUPT] = { "corruption", "ERROR" },
  [VMDK_CHECK_LEAK] = { "leak", "Leaked" },
  [VMDK_CHECK_NOTE] = { "note", "Note" },
  [VMDK_CHECK_REPAIRED] = { "repaired", "Repaired" },
  [VMDK_CHECK_NOT_REPAIRED] = { "not-repaired", "Not repaired" },
};

/* ------------------------------------------------------------------ */
/* JSON output, written as findings arrive. */

struct output {
  bool json;
  bool first;                   /* no element yet in the open array */
  bool in_repairs;              /* the "repairs" array is open */
};

/* Length of the valid UTF-8 sequence at s (0 if none). */
static size_t
utf8_length (const unsigned char *s)
{
  size_t n, i;

  if (s[0] < 0x80)
    return 1;
  n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3
    : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
  for (i = 1; i < n; ++i)
    if ((s[i] & 0xc0) != 0x80)
      return 0;
  return n;
}

/* A JSON string: file names may hold any bytes, so bytes that are not
 * UTF-8 become U+FFFD.
 */
static void
json_string (const char *str)
{
  const unsigned char *s = (const unsigned char *) str;
  size_t n;

  putchar ('"');
  while (*s) {
    if (*s == '"' || *s == '\\')
      printf ("\\%c", *s++);
    else if (*s < 0x20)
      printf ("\\u%04x", *s++);
    else if ((n = utf8_length (s)) == 0) {
      fputs ("\\ufffd", stdout);
      s++;
    }
    else {
      fwrite (s, 1, n, stdout);
      s += n;
    }
  }
  putchar ('"');
}

static void
json_key_string (const char *key, const char *value)
{
  printf (", \"%s\": ", key);
  if (value)
    json_string (value);
  else
    fputs ("null", stdout);
}

static void
json_key_int (const char *key, int64_t value)
{
  if (value < 0)
    printf (", \"%s\": null", key);
  else
    printf (", \"%s\": %" PRId64, key, value);
}

static void
json_finding (const struct vmdk_check_finding *f)
{
  printf ("    { \"kind\": \"%s\"", kinds[f->kind].name);
  json_key_string ("code", f->code);
  json_key_string ("file", f->file);
  json_key_string ("table", f->table);
  json_key_int ("table-index", f->table_index);
  json_key_int ("entry", f->entry);
  json_key_int ("offset", f->offset);
  json_key_int ("target", f->target);
  if (f->disk_length) {
    json_key_int ("disk-offset", f->disk_offset);
    json_key_int ("disk-length", f->disk_length);
  }
  json_key_int ("count", f->count);
  json_key_string ("message", f->message);
  fputs (" }", stdout);
}

static void
json_summary (const struct vmdk_check_summary *s, const char *indent)
{
  printf ("%s\"corruptions\": %" PRIu64 ",\n"
          "%s\"leaks\": %" PRIu64 ",\n"
          "%s\"leaked-bytes\": %" PRIu64 ",\n"
          "%s\"notes\": %" PRIu64 ",\n"
          "%s\"files\": %" PRIu64 ",\n"
          "%s\"allocated-grains\": %" PRIu64,
          indent, s->corruptions, indent, s->leaks, indent, s->leaked_bytes,
          indent, s->notes, indent, s->files, indent, s->grains);
}

static void
on_finding (void *opaque, const struct vmdk_check_finding *f)
{
  struct output *out = opaque;
  bool action = f->kind == VMDK_CHECK_REPAIRED ||
    f->kind == VMDK_CHECK_NOT_REPAIRED;

  if (!out->json) {
    printf ("%s: %s\n", kinds[f->kind].label, f->message);
    return;
  }
  /* Findings all come before the repairs. */
  if (action && !out->in_repairs) {
    fputs (out->first ? "],\n  \"repairs\": [" : "\n  ],\n  \"repairs\": [",
           stdout);
    out->in_repairs = true;
    out->first = true;
  }
  fputs (out->first ? "\n" : ",\n", stdout);
  out->first = false;
  json_finding (f);
}

/* Close the open array ("findings" or "repairs"). */
static void
json_close_array (struct output *out)
{
  fputs (out->first ? "]" : "\n  ]", stdout);
}

/* ------------------------------------------------------------------ */
/* Text output. */

static void
text_summary (const struct vmdk_check_summary *s)
{
  if (s->corruptions == 0 && s->leaks == 0)
    printf ("No errors were found on the image.\n");
  if (s->corruptions)
    printf ("%" PRIu64 " errors were found on the image.\n"
            "Data may be corrupted, or further writes to the image may "
            "corrupt it.\n", s->corruptions);
  if (s->leaks)
    printf ("%s%" PRIu64 " leaks (%" PRIu64 " bytes) were found on the "
            "image.\nThis means waste of disk space, but no harm to data.\n",
            s->corruptions ? "\n" : "", s->leaks, s->leaked_bytes);
  printf ("%" PRIu64 " allocated grains in %" PRIu64 " files.\n", s->grains,
          s->files);
}

static int
status_of (const struct vmdk_check_summary *s)
{
  return s->corruptions ? EXIT_CORRUPT : s->leaks ? EXIT_LEAKS : EXIT_OK;
}

static void
usage (FILE *f)
{
  fprintf (f, "usage: vmdk check [--json] [--repair] IMAGE\n");
}

/* The check failed (the image could not be opened, or read): the
 * JSON document gets an "error" member, so that it stays valid.
 */
static int
fail (struct output *out, bool nested)
{
  fflush (stdout);
  if (out->json) {
    json_close_array (out);
    fputs (",\n  \"error\": ", stdout);
    json_string (vmdk_errmsg ());
    fputs (nested ? "\n  }\n}\n" : "\n}\n", stdout);
  }
  tool_engine_error ();
  return EXIT_ERROR;
}

int
cmd_check (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "json", no_argument, NULL, 'j' },
    { "repair", no_argument, NULL, 'r' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct output out = { .first = true };
  struct vmdk_check_options opts = { .fn = on_finding, .opaque = &out };
  struct vmdk_check_summary sum, after;
  const char *image;
  int c;

  optind = 1;
  while ((c = getopt_long (argc, argv, "h", long_options, NULL)) != -1) {
    switch (c) {
    case 'j': out.json = true; break;
    case 'r': opts.repair = true; break;
    case 'h': usage (stdout); return EXIT_OK;
    default: usage (stderr); return EXIT_ERROR;
    }
  }
  if (optind != argc - 1) {
    usage (stderr);
    return EXIT_ERROR;
  }
  image = argv[optind];

  if (out.json) {
    fputs ("{\n  \"image\": ", stdout);
    json_string (image);
    fputs (",\n  \"findings\": [", stdout);
  }
  if (vmdk_check (image, &opts, &sum) == -1)
    return fail (&out, false);
  if (out.json) {
    json_close_array (&out);
    fputs (",\n", stdout);
    json_summary (&sum, "  ");
    printf (",\n  \"repaired\": %" PRIu64 ",\n  \"not-repaired\": %" PRIu64,
            sum.repairs, sum.not_repaired);
  }
  if (!opts.repair || sum.repairs + sum.not_repaired == 0) {
    if (out.json)
      fputs ("\n}\n", stdout);
    else
      text_summary (&sum);
    return status_of (&sum);
  }

  /* Double check the repaired image. */
  if (out.json)
    fputs (",\n  \"after-repair\": {\n    \"findings\": [", stdout);
  else
    printf ("\nThe following inconsistencies were found:\n"
            "    %" PRIu64 " corruptions\n    %" PRIu64 " leaks\n"
            "%" PRIu64 " repairs were made, %" PRIu64 " were refused.\n\n"
            "Double checking the repaired image now...\n", sum.corruptions,
            sum.leaks, sum.repairs, sum.not_repaired);
  out.first = true;
  out.in_repairs = false;
  opts.repair = false;
  if (vmdk_check (image, &opts, &after) == -1)
    return fail (&out, true);
  if (out.json) {
    json_close_array (&out);
    fputs (",\n", stdout);
    json_summary (&after, "    ");
    fputs ("\n  }\n}\n", stdout);
  }
  else
    text_summary (&after);
  return status_of (&after);
}
