/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk convert [-p] [-f FORMAT] [-t TYPE] [-c LEVEL] SRC DST
 *
 * SRC is a VMDK (any the engine reads, chains flattened) or a raw
 * file: it is a VMDK if it says it is one (vmdk_probe: a sparse or
 * COWD magic number, or a text descriptor), and then it must open as
 * one; anything else is raw.  -f raw / -f vmdk overrides the guess.
 * DST, which must not exist, is raw with -t raw, or without -t if its
 * name does not end in ".vmdk"; otherwise a new VMDK of TYPE (default
 * monolithic-sparse).  Only SRC's data is copied (map first), grains
 * of zeroes are skipped, and the copy runs on every core.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "copy.h"
#include "tool.h"
#include "vmdk.h"

#define PROBE_BYTES 4096

enum format { FORMAT_GUESS, FORMAT_RAW, FORMAT_VMDK };

struct convert {
  const char *src_name, *dst_name;
  enum format src_format;
  bool dst_raw;
  struct vmdk_create_options create;
  int level;
  bool progress;
  struct disk src, dst;
  bool created;                 /* DST was made by us */
  uint64_t size;                /* of the source */
};

static bool
ends_with (const char *s, const char *suffix)
{
  size_t n = strlen (s), m = strlen (suffix);

  return n >= m && strcmp (s + n - m, suffix) == 0;
}

/* The size of a raw source: a regular file's, or a block device's. */
static int
raw_size (int fd, const char *name, uint64_t *size)
{
  struct stat st;

  if (fstat (fd, &st) == -1) {
    tool_error ("%s: %m", name);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    if (ioctl (fd, BLKGETSIZE64, size) == -1) {
      tool_error ("%s: %m", name);
      return -1;
    }
    return 0;
  }
  if (!S_ISREG (st.st_mode)) {
    tool_error ("%s: not a regular file or a block device", name);
    return -1;
  }
  *size = st.st_size;
  return 0;
}

/* Open SRC as a VMDK or as raw (see the comment at the top). */
static int
open_source (struct convert *cv)
{
  const struct vmdk_options opts = { .readonly = true };
  char buf[PROBE_BYTES];
  ssize_t n;
  int fd;

  fd = open (cv->src_name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd == -1) {
    tool_error ("%s: %m", cv->src_name);
    return -1;
  }
  if (cv->src_format == FORMAT_GUESS) {
    n = pread (fd, buf, sizeof buf, 0);
    if (n == -1) {
      tool_error ("%s: %m", cv->src_name);
      close (fd);
      return -1;
    }
    cv->src_format = vmdk_probe (buf, n) ? FORMAT_VMDK : FORMAT_RAW;
  }
  cv->src.name = cv->src_name;
  if (cv->src_format == FORMAT_RAW) {
    cv->src.fd = fd;
    return raw_size (fd, cv->src_name, &cv->size);
  }
  close (fd);
  cv->src.img = tool_open (cv->src_name, &opts);
  if (cv->src.img == NULL)
    return -1;
  cv->size = vmdk_get_size (cv->src.img);
  return 0;
}

/* Create DST: a raw file of the source's size, or a new VMDK (of the
 * size rounded up to a sector) opened for writing.
 */
static int
create_destination (struct convert *cv)
{
  const struct vmdk_options opts = {
    .readonly = false, .compression_level = cv->level,
  };
  const char *reason;

  cv->dst.name = cv->dst_name;
  if (cv->dst_raw) {
    cv->dst.fd = open (cv->dst_name,
                       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY,
                       0666);
    if (cv->dst.fd == -1) {
      tool_error ("%s: %m%s", cv->dst_name, errno == EEXIST ?
                  ": refusing to overwrite it" : "");
      return -1;
    }
    cv->created = true;
    if (ftruncate (cv->dst.fd, cv->size) == -1) {
      tool_error ("%s: %m", cv->dst_name);
      return -1;
    }
    /* Where the file system refuses O_DIRECT, every write is buffered. */
    cv->dst.direct_fd = open (cv->dst_name, O_WRONLY | O_DIRECT | O_CLOEXEC);
    return 0;
  }
  cv->create.size = (cv->size + 511) / 512 * 512;
  if (vmdk_create (cv->dst_name, &cv->create) == -1) {
    tool_file_error (cv->dst_name);
    return -1;
  }
  cv->created = true;
  cv->dst.img = tool_open (cv->dst_name, &opts);
  if (cv->dst.img == NULL)
    return -1;
  if (!vmdk_is_writable (cv->dst.img, &reason)) {
    tool_error ("%s: %s", cv->dst_name, reason);
    return -1;
  }
  return 0;
}

/* Make what was written durable. */
static int
finish_destination (struct convert *cv)
{
  if (cv->dst.img) {
    if (vmdk_flush (cv->dst.img) == 0)
      return 0;
    tool_file_error (cv->dst_name);
    return -1;
  }
  if (fdatasync (cv->dst.fd) == 0)
    return 0;
  tool_error ("%s: %m", cv->dst_name);
  return -1;
}

/* Remove the files of a destination that could not be completed. */
static void
remove_destination (struct convert *cv)
{
  const char *slash = strrchr (cv->dst_name, '/');
  int dir_len = slash ? (int) (slash - cv->dst_name + 1) : 0;
  struct vmdk_extent_info ei;
  size_t i, n;
  char *path;

  if (!cv->created)
    return;
  /* Extent files are named relative to the descriptor's directory. */
  if (cv->dst.img) {
    n = vmdk_get_extent_count (cv->dst.img);
    for (i = 0; i < n; ++i)
      if (vmdk_get_extent_info (cv->dst.img, i, &ei) == 0 && ei.file &&
          asprintf (&path, "%.*s%s", dir_len, cv->dst_name, ei.file) != -1) {
        unlink (path);
        free (path);
      }
    vmdk_close (cv->dst.img);
    cv->dst.img = NULL;
  }
  unlink (cv->dst_name);
  tool_error ("%s: removed (the conversion failed)", cv->dst_name);
}

static int
convert (struct convert *cv)
{
  struct range_list l = { 0 };
  int r = -1;

  if (open_source (cv) == -1 || data_ranges (&cv->src, cv->size, &l) == -1)
    goto out;
  if (create_destination (cv) == -1 ||
      copy_ranges (&cv->src, &cv->dst, &l, cv->progress) == -1 ||
      finish_destination (cv) == -1) {
    remove_destination (cv);
    goto out;
  }
  r = 0;
 out:
  range_list_free (&l);
  vmdk_close (cv->src.img);
  vmdk_close (cv->dst.img);
  if (cv->src.fd >= 0)
    close (cv->src.fd);
  if (cv->dst.fd >= 0)
    close (cv->dst.fd);
  if (cv->dst.direct_fd >= 0)
    close (cv->dst.direct_fd);
  return r;
}

int
cmd_convert (int argc, char **argv)
{
  static const struct option long_options[] = {
    { "progress", no_argument, NULL, 'p' },
    { "format", required_argument, NULL, 'f' },
    { "type", required_argument, NULL, 't' },
    { "compression-level", required_argument, NULL, 'c' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct convert cv = {
    .src = { .fd = -1, .direct_fd = -1 }, .dst = { .fd = -1, .direct_fd = -1 },
  };
  bool type_given = false;
  int c, r = 0;

  vmdk_create_defaults (&cv.create);
  optind = 1;
  while ((c = getopt_long (argc, argv, "pf:t:c:h", long_options, NULL))
         != -1) {
    switch (c) {
    case 'p': cv.progress = true; break;
    case 'f':
      if (strcmp (optarg, "raw") == 0)
        cv.src_format = FORMAT_RAW;
      else if (strcmp (optarg, "vmdk") == 0)
        cv.src_format = FORMAT_VMDK;
      else
        return tool_usage_error ("convert", "-f: unknown format \"%s\" "
                                 "(expected raw or vmdk)", optarg);
      break;
    case 't':
      type_given = true;
      cv.dst_raw = strcmp (optarg, "raw") == 0;
      if (!cv.dst_raw)
        r = vmdk_create_type_parse (optarg, &cv.create.type);
      break;
    case 'c': r = vmdk_compression_level_parse (optarg, &cv.level); break;
    case 'h': tool_usage (stdout, "convert"); return EXIT_OK;
    default: tool_usage (stderr, "convert"); return EXIT_ERROR;
    }
    if (r == -1)
      return tool_usage_error ("convert", "%s", vmdk_errmsg ());
  }
  if (argc - optind != 2)
    return tool_usage_error ("convert", "expected SRC and DST");
  cv.src_name = argv[optind];
  cv.dst_name = argv[optind + 1];
  if (!type_given)
    cv.dst_raw = !ends_with (cv.dst_name, ".vmdk");
  return convert (&cv) == 0 ? EXIT_OK : EXIT_ERROR;
}
