/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

/* Tiny check macros for the unit tests.  A failed CHECK prints the
 * file, line and expression and is counted; the test goes on, so one
 * run shows every failure.  main returns test_exit ().  Exit status 77
 * means "skipped" to automake.
 */

#ifndef VMDK_TEST_TAP_H
#define VMDK_TEST_TAP_H

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmdk.h"

/* Counters (atomic: threaded tests check from several threads). */
static atomic_uint test_checks;
static atomic_uint test_failures;

static inline void __attribute__ ((format (printf, 3, 4)))
test_fail (const char *file, int line, const char *fs, ...)
{
  va_list args;

  atomic_fetch_add (&test_failures, 1);
  flockfile (stderr);
  fprintf (stderr, "%s:%d: FAIL: ", file, line);
  va_start (args, fs);
  vfprintf (stderr, fs, args);
  va_end (args);
  fputc ('\n', stderr);
  funlockfile (stderr);
}

#define CHECK(cond)                                                     \
  do {                                                                  \
    atomic_fetch_add (&test_checks, 1);                                 \
    if (!(cond))                                                        \
      test_fail (__FILE__, __LINE__, "%s", #cond);                      \
  } while (0)

/* As CHECK, with a printf-style explanation of what was being tested. */
#define CHECK_MSG(cond, ...)                                            \
  do {                                                                  \
    atomic_fetch_add (&test_checks, 1);                                 \
    if (!(cond)) {                                                      \
      test_fail (__FILE__, __LINE__, "%s", #cond);                      \
      fprintf (stderr, "    ");                                         \
      fprintf (stderr, __VA_ARGS__);                                    \
      fputc ('\n', stderr);                                             \
    }                                                                   \
  } while (0)

/* Compare two integers, printing both values on failure. */
#define CHECK_EQ(a, b)                                                  \
  do {                                                                  \
    unsigned long long _a = (unsigned long long) (a);                   \
    unsigned long long _b = (unsigned long long) (b);                   \
    atomic_fetch_add (&test_checks, 1);                                 \
    if (_a != _b)                                                       \
      test_fail (__FILE__, __LINE__, "%s == %s (%llu != %llu)",         \
                 #a, #b, _a, _b);                                       \
  } while (0)

/* The last engine call failed with errno e and a message containing
 * every one of the given substrings (NULL-terminated list).
 */
static inline int
test_msg_has (const char *msg, ...)
{
  va_list args;
  const char *s;
  int ok = 1;

  va_start (args, msg);
  while ((s = va_arg (args, const char *)) != NULL)
    if (strstr (msg, s) == NULL)
      ok = 0;
  va_end (args);
  return ok;
}

#define CHECK_ERROR(saved_errno, e, ...)                                \
  do {                                                                  \
    const char *_m = vmdk_errmsg ();                                    \
    atomic_fetch_add (&test_checks, 1);                                 \
    if ((saved_errno) != (e))                                           \
      test_fail (__FILE__, __LINE__, "errno %d (%s), expected %d (%s);" \
                 " message: %s", (saved_errno), strerror (saved_errno), \
                 (e), strerror (e), _m);                                \
    atomic_fetch_add (&test_checks, 1);                                 \
    if (!test_msg_has (_m, __VA_ARGS__, (const char *) NULL))           \
      test_fail (__FILE__, __LINE__, "message \"%s\" lacks one of: %s", \
                 _m, #__VA_ARGS__);                                     \
  } while (0)

#define TEST_SKIP(...)                                                  \
  do {                                                                  \
    fprintf (stderr, "SKIP: ");                                         \
    fprintf (stderr, __VA_ARGS__);                                      \
    fputc ('\n', stderr);                                               \
    exit (77);                                                          \
  } while (0)

/* Print a summary; the exit status for main. */
static inline int
test_exit (const char *name)
{
  unsigned f = atomic_load (&test_failures);

  fprintf (stderr, "%s: %u checks, %u failed\n", name,
           atomic_load (&test_checks), f);
  return f ? 1 : 0;
}

#endif /* VMDK_TEST_TAP_H */
