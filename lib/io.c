/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Helpers shared by all byte sources. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "error.h"
#include "io.h"

int
io_pread_full (struct vmdk_io *io, void *buf, size_t count, uint64_t offset,
               const char *what)
{
  int64_t r = io->ops->pread (io, buf, count, offset);

  if (r == -1)
    return -1;
  if ((size_t) r < count)
    return vmdk_error (EIO, "%s: %s at offset %" PRIu64 " (%zu bytes) "
                       "is beyond the end of the file", io->name, what,
                       offset, count);
  return 0;
}

int
io_pread_zerofill (struct vmdk_io *io, void *buf, size_t count,
                   uint64_t offset)
{
  int64_t r = io->ops->pread (io, buf, count, offset);

  if (r == -1)
    return -1;
  if ((size_t) r < count)
    memset ((char *) buf + r, 0, count - r);
  return 0;
}

int
io_write_zeroes (struct vmdk_io *io, uint64_t offset, uint64_t count)
{
  static const unsigned char zeroes[65536];

  while (count > 0) {
    size_t n = count < sizeof zeroes ? count : sizeof zeroes;

    if (io->ops->pwrite (io, zeroes, n, offset) == -1)
      return -1;
    offset += n;
    count -= n;
  }
  return 0;
}

void
io_close (struct vmdk_io *io)
{
  if (io)
    io->ops->close (io);
}
