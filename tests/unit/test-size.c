/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* vmdk_parse_size: what nbdkit_parse_size accepts, and the refusals. */

#include <config.h>

#include <errno.h>
#include <stdint.h>

#include "tap.h"

#define ACCEPT(str, want)                                               \
  do {                                                                  \
    uint64_t _v = 12345;                                                \
    CHECK_MSG (vmdk_parse_size ((str), &_v) == 0, "\"%s\" refused: %s", \
               (str), vmdk_errmsg ());                                  \
    CHECK_EQ (_v, (want));                                              \
  } while (0)

#define REFUSE(str, e, ...)                                             \
  do {                                                                  \
    uint64_t _v = 12345;                                                \
    int _r = vmdk_parse_size ((str), &_v), _e = errno;                  \
    CHECK_MSG (_r == -1, "\"%s\" accepted", (str));                     \
    CHECK_ERROR (_e, (e), __VA_ARGS__);                                 \
    CHECK_EQ (_v, 12345);       /* untouched */                         \
  } while (0)

int
main (void)
{
  ACCEPT ("0", 0);
  ACCEPT ("1", 1);
  ACCEPT ("512", 512);
  ACCEPT ("100b", 100);
  ACCEPT ("100B", 100);
  ACCEPT ("3s", 1536);
  ACCEPT ("3S", 1536);
  ACCEPT ("64k", 65536);
  ACCEPT ("64K", 65536);
  ACCEPT ("20M", UINT64_C (20) << 20);
  ACCEPT ("20m", UINT64_C (20) << 20);
  ACCEPT ("2G", UINT64_C (2) << 30);
  ACCEPT ("2T", UINT64_C (2) << 40);
  ACCEPT ("3p", UINT64_C (3) << 50);
  ACCEPT ("7E", UINT64_C (7) << 60);
  ACCEPT ("9223372036854775807", INT64_MAX);
  ACCEPT ("007", 7);

  REFUSE ("", EINVAL, "expected a number");
  REFUSE ("k", EINVAL, "expected a number");
  REFUSE ("-1", EINVAL, "\"-1\"", "expected a number");
  REFUSE (" 1", EINVAL, "expected a number");
  REFUSE ("+1", EINVAL, "expected a number");
  REFUSE ("1x", EINVAL, "unknown suffix \"x\"");
  REFUSE ("1MB", EINVAL, "unknown suffix \"MB\"");
  REFUSE ("1 M", EINVAL, "unknown suffix");
  REFUSE ("1.5G", EINVAL, "unknown suffix");
  REFUSE ("0x10", EINVAL, "unknown suffix");
  REFUSE ("9223372036854775808", ERANGE, "too large");
  REFUSE ("8E", ERANGE, "too large");
  REFUSE ("99999999999999999999999", ERANGE, "too large");
  REFUSE ("18014398509481984k", ERANGE, "too large");
  return test_exit ("test-size");
}
