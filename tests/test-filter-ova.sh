#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# The disks inside an OVA, as appliances ship: a ustar archive holding
# the .ovf descriptor first, then the disks (a streamOptimized one, as
# ovftool writes them, and a monolithicSparse one).  Each is served
# with "--filter=vmdk --filter=tar tar-entry=..." straight from the
# archive, and reads as the raw disk it was made from.  A tar entry
# that is not a VMDK (the .ovf) is refused with the engine's message.

source "${abs_srcdir:-$(dirname "$0")}/functions.sh"
set -euo pipefail
set -x

requires_vmdk_filter
requires_cmds nbdkit nbdinfo nbdcopy qemu-img cmp tar
requires_filter tar

make_scratch
cd "$scratch"
make_filter_images
mv so.vmdk appliance-disk1.vmdk
mv ms.vmdk appliance-disk2.vmdk
cat > appliance.ovf <<'OVF'
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">
  <References>
    <File ovf:href="appliance-disk1.vmdk" ovf:id="file1"/>
    <File ovf:href="appliance-disk2.vmdk" ovf:id="file2"/>
  </References>
</Envelope>
OVF
tar --format=ustar -cf appliance.ova appliance.ovf appliance-disk1.vmdk \
    appliance-disk2.vmdk
rm appliance-disk1.vmdk appliance-disk2.vmdk
tar -tf appliance.ova > members
test "$(head -1 members)" = appliance.ovf

for entry in appliance-disk1.vmdk appliance-disk2.vmdk; do
    check_filter_reads "OVA entry $entry" ref.raw \
        file appliance.ova --filter="$VMDK_FILTER" \
        --filter=tar tar-entry="$entry"
done

# The OVF descriptor is no VMDK: the client's connection fails with the
# engine's message, and nbdkit does not crash.
rc=0
nbdkit -U - file appliance.ova --filter="$VMDK_FILTER" --filter=tar \
       tar-entry=appliance.ovf --run 'nbdinfo --size "$uri"' \
       > ovf.out 2> ovf.err || rc=$?
cat ovf.err
if [ "$rc" -ne 0 ] && check_no_crash "$rc" ovf.err &&
   grep -q 'image below: not a VMDK file' ovf.err; then
    pass "the .ovf entry is refused"
else
    fail "the .ovf entry: status $rc"
fi

check_summary
