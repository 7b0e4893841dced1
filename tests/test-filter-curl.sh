#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The filter over the curl plugin, from a real HTTP server that honours
# Range requests: lighttpd (Debian package lighttpd), started by the
# test on a free localhost port, serving a directory of the scratch
# directory.  monolithicSparse and streamOptimized images, and the
# streamOptimized disk inside an OVA (--filter=vmdk --filter=tar), read
# as qemu-img's raw.  The server's access log shows that the images
# were read in ranges, never downloaded whole.  Skipped if lighttpd is
# not installed.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_cmds nbdkit nbdinfo nbdcopy qemu-img cmp tar
requires nbdkit curl --version
requires_filter tar
lighttpd=$(command -v lighttpd || echo /usr/sbin/lighttpd)
if [ ! -x "$lighttpd" ]; then
    echo "$0: lighttpd (Debian package lighttpd) is not installed: test skipped"
    exit 77
fi

make_scratch
cd "$scratch"
scratch=$(pwd -P)
mkdir www
make_filter_images
cp ms.vmdk so.vmdk www/
cp so.vmdk disk1.vmdk
echo '<Envelope/>' > appliance.ovf
tar --format=ustar -cf www/appliance.ova appliance.ovf disk1.vmdk

# Is something listening on localhost:PORT?
port_in_use () { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# lighttpd_conf PORT: its configuration, on stdout.
lighttpd_conf ()
{
    cat <<EOF
server.document-root = "$scratch/www"
server.bind = "127.0.0.1"
server.port = $1
server.errorlog = "$scratch/lighttpd-error.log"
server.pid-file = "$scratch/lighttpd.pid"
server.upload-dirs = ( "$scratch/tmp" )
server.modules = ( "mod_accesslog" )
accesslog.filename = "$scratch/access.log"
accesslog.format = "%r %s %b"
EOF
}

# Start lighttpd (it daemonizes) on a free port; another process may
# take the port between the check and the bind: then try another.
started=no
for (( try = 0; try < 20; try++ )); do
    port=$(( 20000 + RANDOM % 30000 ))
    if port_in_use "$port"; then continue; fi
    lighttpd_conf "$port" > lighttpd.conf
    rm -f lighttpd.pid
    "$lighttpd" -f lighttpd.conf || continue
    for (( i = 0; i < 100; i++ )); do
        if [ -s lighttpd.pid ] && port_in_use "$port"; then break; fi
        sleep 0.1
    done
    if [ -s lighttpd.pid ] && port_in_use "$port"; then
        started=yes
        break
    fi
done
if [ "$started" != yes ]; then
    cat lighttpd-error.log || :
    echo "$0: lighttpd did not start"
    exit 1
fi
cleanup_fn kill_nbdkit "$scratch/lighttpd.pid"
url="http://127.0.0.1:$port"

for img in ms.vmdk so.vmdk; do
    check_filter_reads "$img over HTTP" ref.raw \
        curl url="$url/$img" --filter="$VMDK_FILTER"
done
check_filter_reads "the OVA's disk over HTTP" ref.raw \
    curl url="$url/appliance.ova" --filter="$VMDK_FILTER" \
    --filter=tar tar-entry=disk1.vmdk

# Ranges, not whole files: GETs of the images were answered 206
# (partial content), none 200, and none moved a whole file.  lighttpd
# buffers its access log: stop it first.
kill_nbdkit "$scratch/lighttpd.pid"
cat access.log
whole=$(stat -c %s www/so.vmdk)
if grep -q 'GET /so.vmdk HTTP/1.1 206 ' access.log &&
   grep -q 'GET /appliance.ova HTTP/1.1 206 ' access.log &&
   not grep -E 'GET /[a-z]+\.(vmdk|ova) HTTP/1\.1 200 ' access.log &&
   awk -v s="$whole" '$1 == "GET" && $NF >= s { bad = 1 } END { exit bad }' \
       access.log; then
    pass "the images were read in ranges"
else
    fail "an image was not read in ranges"
fi

check_summary
