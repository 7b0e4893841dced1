#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Serve a VMDK image over NBD with the plugin from this tree:
#
#   scripts/serve.sh [--port N] [FILE [PARAM=VALUE...]]
#
# Installs missing packages and builds first.  Without FILE it makes a
# small demo monolithicSparse image (text banners, random blocks and
# holes) in a scratch directory and serves that.  The image is always
# served read-only.  Extra PARAM=VALUE arguments go to the plugin (e.g.
# gt-cache=64M).  The server listens on a Unix socket under /tmp, or with
# --port N on localhost TCP port N.  It runs in the foreground: Ctrl-C
# stops it and removes the scratch directory.

set -euo pipefail
trap 'echo "serve.sh: failed at line $LINENO" >&2' ERR

usage ()
{
  sed -n 's/^#   //p' "${BASH_SOURCE[0]}" | head -n1 | sed 's/^/usage: /'
  exit "${1:-0}"
}

port=
file=
params=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --port) [ $# -ge 2 ] || usage 1; port=$2; shift 2 ;;
    --port=*) port=${1#--port=}; shift ;;
    -*) echo "serve.sh: unknown option $1" >&2; usage 1 ;;
    *=*) params+=("$1"); shift ;;
    *)
      if [ -n "$file" ]; then
        echo "serve.sh: only one FILE may be given" >&2
        usage 1
      fi
      file=$1
      shift
      ;;
  esac
done
if [ -n "$port" ] && ! [[ $port =~ ^[0-9]+$ && $port -ge 1 && $port -le 65535 ]]; then
  echo "serve.sh: --port: $port is not a TCP port number" >&2
  exit 1
fi
if [ -n "$file" ] && [ ! -f "$file" ]; then
  echo "serve.sh: $file: no such file" >&2
  exit 1
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/build.sh
source "$here/build.sh"

bash "$here/deps.sh"
vmdk_build "$vmdk_srcdir" >/dev/null || {
  echo "serve.sh: the build failed; run scripts/build.sh to see why" >&2
  exit 1
}
plugin=$vmdk_srcdir/vmdk.so

scratch=$(mktemp -d /tmp/nbdkit-vmdk.XXXXXX)
nbdkit_pid=
cleanup ()
{
  if [ -n "$nbdkit_pid" ]; then
    kill -TERM "$nbdkit_pid" 2>/dev/null || true
    wait "$nbdkit_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# make_demo DIR: write DIR/demo.raw and convert it to DIR/demo.vmdk.
make_demo ()
{
  local raw=$1/demo.raw mib=$((1024 * 1024))
  truncate -s 8M "$raw"
  {
    echo "nbdkit-vmdk demo disk"
    echo "made by scripts/serve.sh on $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "8 MiB monolithicSparse: random data at 1 MiB (256 KiB) and at"
    echo "3 MiB + 12345 (100 KiB, not grain-aligned), a text pattern at"
    echo "5 MiB (64 KiB), this banner and one at the end; the rest are holes."
  } | dd of="$raw" conv=notrunc status=none
  head -c $((256 * 1024)) /dev/urandom |
    dd of="$raw" bs=1024 seek=1024 conv=notrunc status=none
  head -c $((100 * 1024)) /dev/urandom |
    dd of="$raw" bs=1 seek=$((3 * mib + 12345)) conv=notrunc status=none
  # (yes(1) dies of SIGPIPE, which pipefail would count as a failure.)
  head -c 65536 < <(yes 'nbdkit-vmdk ') |
    dd of="$raw" bs=1024 seek=$((5 * 1024)) conv=notrunc status=none
  echo "end of the nbdkit-vmdk demo disk" |
    dd of="$raw" bs=512 seek=$((8 * 2048 - 1)) conv=notrunc status=none
  qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse \
    "$raw" "$1/demo.vmdk"
}

if [ -z "$file" ]; then
  make_demo "$scratch"
  file=$scratch/demo.vmdk
  echo "Demo image: $file"
  echo "  made from $scratch/demo.raw (compare with: cmp $scratch/demo.raw out.raw)"
fi

pidfile=$scratch/nbdkit.pid
if [ -n "$port" ]; then
  listen=(-i 127.0.0.1 -p "$port")
  uri="nbd://localhost:$port"
  qemu_uri=$uri
  nbd_client="nbd-client localhost $port /dev/nbd0 -readonly"
else
  sock=$scratch/nbd.sock
  listen=(-U "$sock")
  uri="nbd+unix:///?socket=$sock"
  qemu_uri=$uri
  nbd_client="nbd-client -unix $sock /dev/nbd0 -readonly"
fi

# Read-only: a demo server should never change the image it was given.
# -r makes the export read-only; readonly=true also opens the files
# read-only (unless the caller passed readonly=... themselves).
ro_param=(readonly=true)
for p in "${params[@]}"; do
  case "$p" in readonly=*) ro_param=() ;; esac
done
nbdkit -f -r -P "$pidfile" "${listen[@]}" "$plugin" file="$file" \
  "${ro_param[@]}" "${params[@]}" &
nbdkit_pid=$!
trap 'echo; echo "serve.sh: stopping"; exit 0' INT TERM

# Wait until nbdkit is ready (it writes the pid file once it listens).
for _ in $(seq 300); do
  [ -s "$pidfile" ] && break
  if ! kill -0 "$nbdkit_pid" 2>/dev/null; then
    rc=0
    wait "$nbdkit_pid" || rc=$?
    nbdkit_pid=
    echo "serve.sh: nbdkit failed to start (exit status $rc)" >&2
    exit 1
  fi
  sleep 0.1
done

cat <<INFO

Serving $file
NBD URI:  $uri

Attach with:
  # size, block sizes, read-only; then the allocation map:
  nbdinfo '$uri'
  nbdinfo --map '$uri'
  # copy the whole disk to a raw file:
  nbdcopy '$uri' out.raw
  # QEMU (the NBD export is raw):
  qemu-img info -f raw '$qemu_uri'
  qemu-io -r -f raw '$qemu_uri' -c 'read -v 0 512'
  # Linux kernel client (needs the nbd module and the nbd-client package):
  modprobe nbd && $nbd_client
  nbd-client -d /dev/nbd0     # detach

Press Ctrl-C to stop the server.
INFO

wait "$nbdkit_pid" || true
nbdkit_pid=
