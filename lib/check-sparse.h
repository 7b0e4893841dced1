/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Hosted sparse (KDMV) and COWD files, checked (check-sparse.c) and
 * repaired (check-sparse-fix.c).
 */

#ifndef VMDK_CHECK_SPARSE_H
#define VMDK_CHECK_SPARSE_H

#include <stdbool.h>
#include <stdint.h>

#include "check.h"
#include "header.h"

struct sparse_ctx {
  struct checker *c;
  struct extent_file *f;
  bool cowd;
  struct sparse_header h;       /* KDMV */
  struct cowd_header ch;        /* COWD */
  unsigned char cowd_buf[COWD_HEADER_SIZE];
  uint32_t cowd_unclean;
  struct space space;
  struct dir_check d;
  bool walked;                  /* the directories were checked */
  uint64_t data_start;          /* grains lie at or after this byte */
  uint32_t zero_value;          /* the zeroed-grain entry, 0: none */
  uint64_t grains_end;          /* the furthest end of a grain */
  uint64_t corruptions;         /* found in this file, before unclean */
  uint64_t leaked, tail_leak;   /* bytes; where a leak at EOF starts */
  uint64_t tail_data;           /* leaked bytes in it that are data */
  bool unclean;
  uint64_t next_free;           /* COWD: the next free sector it needs */
  bool io_failed;
  const char *stop;             /* why the file cannot be repaired */
};

/* Analyse the file (the header buf for KDMV; COWD reads its own),
 * reporting what is wrong.
 */
extern int sparse_analyze (struct sparse_ctx *s, const unsigned char *buf);
extern void sparse_release (struct sparse_ctx *s);
/* The repair pass, after sparse_analyze. */
extern int sparse_repair (struct sparse_ctx *s, const unsigned char *buf);
/* Call fn for the parts of [start, start+len) that hold data (not
 * holes of the host file).
 */
extern int sparse_for_each_data (struct vmdk_io *io, uint64_t start,
                                 uint64_t len,
                                 void (*fn) (struct sparse_ctx *s,
                                             uint64_t start, uint64_t len),
                                 struct sparse_ctx *s);

#endif /* VMDK_CHECK_SPARSE_H */
