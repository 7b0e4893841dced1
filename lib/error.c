/* nbdkit-vmdk
 * Copyright (C) 2026 The nbdkit-vmdk authors
 * SPDX-License-Identifier: BSD-3-Clause (see COPYING)
 */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

/* One message per thread: requests run in parallel and must not
 * overwrite each other's errors.
 */
static __thread char errmsg[1024];

/* Expand %m ourselves, with glibc's untranslated description, so that
 * messages do not depend on the locale (and the engine never calls
 * gettext: see tests/wrappers/nbdkit for what that does to nbdkit
 * under a preloaded ASan runtime).
 */
static void
expand_percent_m (char *out, size_t n, const char *fs, int err)
{
  const char *desc = strerrordesc_np (err);
  size_t o = 0;

  if (desc == NULL)
    desc = "Unknown error";
  while (*fs && o + 1 < n) {
    if (fs[0] == '%' && fs[1] == 'm') {
      const char *d;

      for (d = desc; *d && o + 1 < n; ++d)
        out[o++] = *d;
      fs += 2;
    }
    else if (fs[0] == '%' && fs[1] == '%' && o + 2 < n) {
      out[o++] = *fs++;
      out[o++] = *fs++;
    }
    else
      out[o++] = *fs++;
  }
  out[o] = '\0';
}

int
vmdk_error (int errnum, const char *fs, ...)
{
  char format[1024];
  va_list args;

  /* Formats are short literals; one too long keeps glibc's %m. */
  if (strlen (fs) + 64 < sizeof format)
    expand_percent_m (format, sizeof format, fs, errno);
  else
    snprintf (format, sizeof format, "%s", fs);
  va_start (args, fs);
  vsnprintf (errmsg, sizeof errmsg, format, args);
  va_end (args);
  errno = errnum;
  return -1;
}

int
vmdk_error_prefix (const char *fs, ...)
{
  int saved_errno = errno;
  char prefix[sizeof errmsg];
  size_t plen, mlen;
  va_list args;

  va_start (args, fs);
  vsnprintf (prefix, sizeof prefix - 2, fs, args);
  va_end (args);
  strcat (prefix, ": ");
  plen = strlen (prefix);
  /* Shift the old message right (truncating its end), then prepend. */
  mlen = strnlen (errmsg, sizeof errmsg - 1);
  if (plen + mlen >= sizeof errmsg)
    mlen = sizeof errmsg - 1 - plen;
  memmove (errmsg + plen, errmsg, mlen);
  errmsg[plen + mlen] = '\0';
  memcpy (errmsg, prefix, plen);
  errno = saved_errno;
  return -1;
}

const char *
vmdk_errmsg (void)
{
  return errmsg[0] ? errmsg : "unknown error";
}

unsigned vmdk_log_categories;
static vmdk_debug_fn debug_fn;

void
vmdk_set_debug (vmdk_debug_fn fn, unsigned categories)
{
  debug_fn = fn;
  vmdk_log_categories = fn ? categories | VMDK_LOG_WARNING : 0;
}

void
vmdk_log_print (unsigned category, const char *fs, ...)
{
  char msg[1024];
  va_list args;

  if (!debug_fn)
    return;
  va_start (args, fs);
  vsnprintf (msg, sizeof msg, fs, args);
  va_end (args);
  debug_fn (category, msg);
}
