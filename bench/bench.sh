#!/usr/bin/env bash
# nbdkit-vmdk
# Copyright (C) 2026 The nbdkit-vmdk authors
# SPDX-License-Identifier: BSD-3-Clause (see COPYING)

# Benchmark the plugin against qemu-nbd and nbdkit-file-plugin:
#
#   bench/bench.sh [--quick] [--only=read,stream,write] [--repeat=N] [OPTIONS]
#
# Not a test: it takes about 8 minutes with the defaults (20 with
# --repeat=3), most of it making the images and the 20 s fio runs.  In one run, on the same
# images, it measures three servers, each started daemonized on a Unix
# socket, waited for, measured, and stopped:
#
#   vmdk      nbdkit -U SOCK [-r] ./vmdk.so file=IMAGE.vmdk [readonly=true]
#   qemu-nbd  qemu-nbd -f vmdk [-r] -t -e 0 --fork -k SOCK IMAGE.vmdk
#   file      nbdkit -U SOCK [-r] file file=IMAGE.raw   (the same bytes, raw)
#
# Groups of measurements (--only selects some):
#
#   read    fully allocated monolithicSparse of random data:
#           sequential read (nbdcopy to null:, MB/s) and random 4 KiB
#           reads (fio nbd engine, iodepth 32, 2 jobs, IOPS)
#   stream  the same two on a streamOptimized image of moderately
#           compressible data (about 2.5:1), and the inflate limit:
#           bench/inflate-limit inflating every grain of the image in
#           memory, no NBD, on one thread and on $(nproc) threads; the
#           sequential read is reported as a fraction of the latter
#   write   random 4 KiB writes into a fresh, empty monolithicSparse
#           (fio randwrite, iodepth 32, 2 jobs, IOPS) and sequential
#           1 MiB writes filling a fresh image (fio write, 2 jobs each
#           writing its half, iodepth 16, then a flush, MB/s); every
#           server gets its own fresh image
#
# Options:
#   --quick          512 MiB images, 5 s fio runs, 16 GiB random-write image
#   --only=LIST      comma-separated groups: read, stream, write
#   --repeat=N       measure everything N times (servers back to back in a
#                    rotating order) and report medians (default 1)
#   --size=SIZE      size of the read/stream images and of the
#                    sequential-write images (default 2G)
#   --write-size=SIZE  virtual size of the random-write image (default
#                    128G: large enough that most 4 KiB writes allocate a
#                    new grain, see bench/README.md)
#   --runtime=S      seconds per fio run (default 20)
#   --plugin=PATH    the plugin to measure (default: vmdk.so at the top of
#                    the tree; it is copied first, so a rebuild during the
#                    run does not change what is measured)
#   --keep           keep the scratch directory
#
# The scratch directory is made under $BENCH_DIR (default /var/tmp) and
# removed at the end.  It needs about 2.5 x SIZE + 3 GiB of free space.
# Page caches are not dropped: every image is read once (cat > /dev/null)
# just before each server that reads it is measured, so every server
# starts warm.

set -euo pipefail

# usage, die, random_bytes, compressible_bytes, to_bytes, median.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# ---------------------------------------------------------------- options

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)

quick=false
only=read,stream,write
repeat=1
size=
write_size=
runtime=
plugin=${VMDK_PLUGIN:-$srcdir/vmdk.so}
keep=false

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage 0 ;;
    --quick) quick=true ;;
    --only=*) only=${1#--only=} ;;
    --repeat=*) repeat=${1#--repeat=} ;;
    --size=*) size=${1#--size=} ;;
    --write-size=*) write_size=${1#--write-size=} ;;
    --runtime=*) runtime=${1#--runtime=} ;;
    --plugin=*) plugin=${1#--plugin=} ;;
    --keep) keep=true ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage 1 ;;
  esac
  shift
done

if $quick; then
  : "${size:=512M}" "${write_size:=16G}" "${runtime:=5}"
else
  : "${size:=2G}" "${write_size:=128G}" "${runtime:=20}"
fi

want_read=false want_stream=false want_write=false
IFS=, read -r -a groups <<<"$only"
for g in "${groups[@]}"; do
  case "$g" in
    read) want_read=true ;;
    stream) want_stream=true ;;
    write) want_write=true ;;
    *) die "--only: unknown group '$g' (read, stream, write)" ;;
  esac
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat: $repeat is not a positive number"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "--runtime: $runtime is not a positive number"

size_bytes=$(to_bytes "$size")
write_bytes=$(to_bytes "$write_size")
(( size_bytes >= 64 << 20 && size_bytes % (2 << 20) == 0 )) ||
  die "--size must be a multiple of 2 MiB, at least 64 MiB"
(( write_bytes >= 64 << 20 )) || die "--write-size must be at least 64 MiB"

for t in qemu-img qemu-nbd nbdkit nbdcopy nbdinfo fio jq python3 awk; do
  command -v "$t" >/dev/null || die "$t is needed (Debian: qemu-utils nbdkit libnbd-bin fio jq python3)"
done
[ -e "$plugin" ] || die "$plugin does not exist: build first (make -j2)"
inflate_limit=$srcdir/bench/inflate-limit
! $want_stream || [ -x "$inflate_limit" ] ||
  die "$inflate_limit does not exist: build first (make -j2)"
nbdkit file --version >/dev/null 2>&1 || die "nbdkit's file plugin is missing"

# ---------------------------------------------------------------- scratch

scratch=$(mktemp -d "${BENCH_DIR:-/var/tmp}/nbdkit-vmdk-bench.XXXXXX")
server_pid=
cleanup ()
{
  stop_server
  if $keep; then
    echo "bench.sh: kept $scratch"
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -L "$plugin" "$scratch/vmdk.so"
! $want_stream || cp "$inflate_limit" "$scratch/inflate-limit"
plugin_desc="$plugin"
plugin_tree=$(dirname "$(readlink -f "$plugin")")
if git -C "$plugin_tree" rev-parse --short HEAD >/dev/null 2>&1; then
  plugin_desc+=" (built in a tree at $(git -C "$plugin_tree" rev-parse --short HEAD)"
  if git -C "$plugin_tree" status --porcelain --untracked-files=no 2>/dev/null |
       grep -qE ' (lib|plugin)/'; then
    plugin_desc+=", lib/ or plugin/ modified"
  fi
  plugin_desc+=")"
fi
sock=$scratch/sock
pidfile=$scratch/server.pid
log=$scratch/server.log
uri="nbd+unix:///?socket=$sock"

# ---------------------------------------------------------------- servers

# stop_server: TERM the daemon whose pid we recorded, wait for it to go.
stop_server ()
{
  local i
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for ((i = 0; i < 1200; i++)); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "bench.sh: server $server_pid did not exit in 120 s, killing it" >&2
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  server_pid=
  rm -f "$sock" "$pidfile"
}

# start_server vmdk|qemu|file ro|rw IMAGE
start_server ()
{
  local kind=$1 mode=$2 image=$3 ro=() i
  rm -f "$sock" "$pidfile"
  : >"$log"
  case "$kind" in
    vmdk)
      [ "$mode" = ro ] && ro=(-r)
      nbdkit --log=stderr -U "$sock" -P "$pidfile" "${ro[@]}" \
        "$scratch/vmdk.so" file="$image" \
        ${ro[0]:+readonly=true} 2>>"$log" ;;
    qemu)
      [ "$mode" = ro ] && ro=(-r)
      qemu-nbd -f vmdk "${ro[@]}" -t -e 0 --fork --pid-file="$pidfile" \
        -k "$sock" "$image" 2>>"$log" ;;
    file)
      [ "$mode" = ro ] && ro=(-r)
      nbdkit --log=stderr -U "$sock" -P "$pidfile" "${ro[@]}" \
        file file="$image" 2>>"$log" ;;
  esac || { cat "$log" >&2; die "$kind server did not start on $image"; }
  for ((i = 0; i < 600; i++)); do
    if [ -s "$pidfile" ] && [ -S "$sock" ]; then
      server_pid=$(cat "$pidfile")
      if nbdinfo --size "$uri" >/dev/null 2>&1; then
        return 0
      fi
    fi
    sleep 0.1
  done
  cat "$log" >&2
  die "$kind server on $image not ready after 60 s"
}

# ---------------------------------------------------------------- measures

# Each prints one number.
measure_seqread ()
{
  local t0 t1
  t0=$(date +%s.%N)
  nbdcopy "$uri" null: || die "nbdcopy failed"
  t1=$(date +%s.%N)
  awk -v b="$1" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f\n", b / 1e6 / (z - a) }'
}

run_fio ()                      # run_fio OUT FIO-ARGS...
{
  local out=$1
  shift
  fio --ioengine=nbd --uri="$uri" --group_reporting \
      --output-format=json --output="$out" "$@" >/dev/null 2>"$out.err" ||
    { cat "$out.err" >&2; die "fio failed"; }
  [ "$(jq '.jobs[0].error' "$out")" = 0 ] || die "fio reported an error: $(cat "$out")"
}

measure_randread ()
{
  run_fio "$scratch/fio.json" --name=r --rw=randread --bs=4k --iodepth=32 \
    --numjobs=2 --time_based --runtime="$runtime"
  jq '.jobs[0].read.iops' "$scratch/fio.json" | awk '{ printf "%.0f\n", $1 }'
}

measure_randwrite ()
{
  run_fio "$scratch/fio.json" --name=w --rw=randwrite --bs=4k --iodepth=32 \
    --numjobs=2 --time_based --runtime="$runtime"
  jq '.jobs[0].write.iops' "$scratch/fio.json" | awk '{ printf "%.0f\n", $1 }'
}

# The whole image, each job writing its half, or as much as fits in the
# fio runtime (qemu-nbd syncs every grain-table update, and would take
# minutes), then a flush (NBD_CMD_FLUSH), included in the time.
measure_seqwrite ()
{
  local half=$(($1 / 2))
  run_fio "$scratch/fio.json" --name=s --rw=write --bs=1M --iodepth=16 \
    --numjobs=2 --size="$half" --offset_increment="$half" --runtime="$runtime" \
    --end_fsync=1
  jq '.jobs[0].write.bw_bytes' "$scratch/fio.json" |
    awk '{ printf "%.1f\n", $1 / 1e6 }'
}

warm ()
{
  cat "$1" >/dev/null
}

# ---------------------------------------------------------------- images


# make_vmdk NAME GENERATOR SUBFORMAT: $scratch/NAME.raw, $size_bytes
# bytes from GENERATOR, and qemu-img's SUBFORMAT copy $scratch/NAME.vmdk.
make_vmdk ()
{
  local name=$1 generator=$2 subformat=$3
  "$generator" "$size_bytes" >"$scratch/$name.raw"
  [ "$(stat -c %s "$scratch/$name.raw")" = "$size_bytes" ] ||
    die "could not make $name.raw"
  qemu-img convert -f raw -O vmdk -o subformat="$subformat" \
    "$scratch/$name.raw" "$scratch/$name.vmdk"
}

file_mib ()
{
  awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.0f MiB", b / 1048576 }'
}

# ---------------------------------------------------------------- results

declare -A result               # result[test,server,round] = number
tests=()
declare -A unit target_server target_ratio title

add_test ()                     # add_test KEY UNIT TARGET-SERVER RATIO TITLE
{
  tests+=("$1")
  unit[$1]=$2
  target_server[$1]=$3
  target_ratio[$1]=$4
  title[$1]=$5
}

# The three servers in an order that rotates from one measurement to the
# next, and from one round to the next, so that no server is always
# measured first (or last), and each measurement sees every order over
# three rounds.
order_count=0
server_order ()                 # server_order ROUND
{
  local s=(vmdk qemu file)
  local k=$(((order_count + $1) % 3))
  echo "${s[*]:k} ${s[*]:0:k}"
}

say ()
{
  printf '%s\n' "$*" >&2
}

# ---------------------------------------------------------------- run

say "== nbdkit-vmdk benchmark"
say "plugin:   $plugin_desc"
say "versions: $(nbdkit --version | head -1), $(qemu-nbd --version | head -1), $(fio --version), nbdcopy $(nbdcopy --version | head -1 | awk '{print $2}')"
say "machine:  $(nproc) CPUs, load before: $(uptime | sed 's/.*load average: //')"
say "scratch:  $scratch"
say "settings: size $size, random-write image $write_size, fio runtime ${runtime}s, $repeat round(s)"

if $want_read; then
  say "-- making the read images: $size of random data"
  make_vmdk read random_bytes monolithicSparse
  say "   read.vmdk (monolithicSparse) $(file_mib "$scratch/read.vmdk")"
  add_test seqread MB/s file 0.8 "monolithicSparse sequential read"
  add_test randread IOPS file 0.6 "monolithicSparse random 4K read"
fi
if $want_stream; then
  say "-- making the stream images: $size of moderately compressible data"
  make_vmdk stream compressible_bytes streamOptimized
  say "   stream.vmdk (streamOptimized) $(file_mib "$scratch/stream.vmdk")," \
    "ratio $(awk -v r="$size_bytes" -v c="$(stat -c %s "$scratch/stream.vmdk")" 'BEGIN { printf "%.2f", r / c }'):1"
  add_test streamseq MB/s file 0.6 "streamOptimized sequential read"
  add_test streamrand IOPS qemu 6 "streamOptimized random 4K read"
fi
if $want_write; then
  add_test randwrite IOPS file 0.3 "random 4K allocating write"
  add_test seqwrite MB/s file 1.0 "sequential 1M write + flush"
fi

# run_read TEST MEASURE VMDK RAW ROUND
run_read ()
{
  local test=$1 fn=$2 vmdk=$3 raw=$4 round=$5 s img v t0 order
  order=$(server_order "$round")
  order_count=$((order_count + 1))
  for s in $order; do
    t0=$SECONDS
    case "$s" in file) img=$raw ;; *) img=$vmdk ;; esac
    warm "$img"
    start_server "$s" ro "$img"
    v=$("$fn" "$size_bytes")
    stop_server
    result[$test,$s,$round]=$v
    say "   round $round $test $s: $v ${unit[$test]} ($((SECONDS - t0)) s)"
  done
}

# fresh_image SERVER VSIZE: make a fresh empty image for SERVER, print its name.
fresh_image ()
{
  local s=$1 vsize=$2
  rm -f "$scratch"/w.*
  case "$s" in
    file)
      truncate -s "$vsize" "$scratch/w.raw"
      echo "$scratch/w.raw" ;;
    *)
      qemu-img create -q -f vmdk -o subformat=monolithicSparse \
        "$scratch/w.vmdk" "$vsize"
      echo "$scratch/w.vmdk" ;;
  esac
}

declare -A grains_note

# The inflate limit of the stream image on THREADS threads, in MB/s of
# inflated data (best of 3 passes).
measure_inflate_limit ()        # measure_inflate_limit THREADS
{
  "$scratch/inflate-limit" "$scratch/stream.vmdk" "$1" 3 |
    sed -n 's/.*MB\/s=//p'
}
declare -A limit                # limit[threads,round] = MB/s

# run_write TEST MEASURE VSIZE ROUND
run_write ()
{
  local test=$1 fn=$2 vsize=$3 round=$4 s img v before after t0 order
  order=$(server_order "$round")
  order_count=$((order_count + 1))
  for s in $order; do
    t0=$SECONDS
    img=$(fresh_image "$s" "$vsize")
    before=$(stat -c %s "$img")
    start_server "$s" rw "$img"
    v=$("$fn" "$vsize")
    stop_server
    result[$test,$s,$round]=$v
    after=$(stat -c %s "$img")
    if [ "$test" = randwrite ] && [ "$s" = vmdk ]; then
      # Grains appended, against writes done: how many writes allocated.
      grains_note[$round]=$(awk -v a="$after" -v b="$before" -v i="$v" -v t="$runtime" \
        'BEGIN { g = (a - b) / 65536; w = i * t;
                 printf "%.0f new grains for about %.0f writes (%.0f%% allocating)",
                        g, w, w ? 100 * g / w : 0 }')
    fi
    say "   round $round $test $s: $v ${unit[$test]} ($((SECONDS - t0)) s)"
    rm -f "$img"
  done
}

for ((round = 1; round <= repeat; round++)); do
  say "-- round $round of $repeat (load: $(uptime | sed 's/.*load average: //'))"
  if $want_read; then
    run_read seqread measure_seqread "$scratch/read.vmdk" "$scratch/read.raw" "$round"
    run_read randread measure_randread "$scratch/read.vmdk" "$scratch/read.raw" "$round"
  fi
  if $want_stream; then
    run_read streamseq measure_seqread "$scratch/stream.vmdk" "$scratch/stream.raw" "$round"
    run_read streamrand measure_randread "$scratch/stream.vmdk" "$scratch/stream.raw" "$round"
    warm "$scratch/stream.vmdk"
    for n in 1 "$(nproc)"; do
      limit[$n,$round]=$(measure_inflate_limit "$n")
      say "   round $round inflate limit, $n thread(s): ${limit[$n,$round]} MB/s"
    done
  fi
  if $want_write; then
    run_write randwrite measure_randwrite "$write_bytes" "$round"
    [ -n "${grains_note[$round]:-}" ] && say "   (vmdk: ${grains_note[$round]})"
    run_write seqwrite measure_seqwrite "$size_bytes" "$round"
  fi
done

# ---------------------------------------------------------------- table

say "elapsed: $((SECONDS / 60)) min $((SECONDS % 60)) s"
say "machine load after: $(uptime | sed 's/.*load average: //')"
echo
echo "Results ($repeat round(s); medians; ratios are medians of the per-round ratios)"
echo "Page cache: not dropped; every image was read once just before each server"
echo "reading it was measured.  qemu-nbd: default cache (writeback) and aio,"
echo "plus -t -e 0 so that several connections can be made."
echo
printf '%-34s %-5s %10s %10s %10s %9s %9s  %-22s %s\n' \
  test unit vmdk qemu-nbd nbdkit-file vmdk/file vmdk/qemu target met
missed=0
for t in "${tests[@]}"; do
  vals=()
  for s in vmdk qemu file; do
    xs=()
    for ((r = 1; r <= repeat; r++)); do xs+=("${result[$t,$s,$r]}"); done
    vals+=("$(median "${xs[@]}")")
  done
  rf=() rq=()
  for ((r = 1; r <= repeat; r++)); do
    rf+=("$(awk -v a="${result[$t,vmdk,$r]}" -v b="${result[$t,file,$r]}" 'BEGIN { print (b > 0 ? a / b : 0) }')")
    rq+=("$(awk -v a="${result[$t,vmdk,$r]}" -v b="${result[$t,qemu,$r]}" 'BEGIN { print (b > 0 ? a / b : 0) }')")
  done
  ratio_file=$(median "${rf[@]}")
  ratio_qemu=$(median "${rq[@]}")
  if [ "${target_server[$t]}" = file ]; then
    got=$ratio_file
    tgt=">= ${target_ratio[$t]}x nbdkit-file"
  else
    got=$ratio_qemu
    tgt=">= ${target_ratio[$t]}x qemu-nbd"
  fi
  met=$(awk -v g="$got" -v w="${target_ratio[$t]}" 'BEGIN { print (g >= w ? "yes" : "NO") }')
  [ "$met" = yes ] || missed=$((missed + 1))
  printf '%-34s %-5s %10.1f %10.1f %10.1f %8.2fx %8.2fx  %-22s %s\n' \
    "${title[$t]}" "${unit[$t]}" "${vals[0]}" "${vals[1]}" "${vals[2]}" \
    "$ratio_file" "$ratio_qemu" "$tgt" "$met"
done
if $want_stream; then
  cores=$(nproc)
  l1=() ln=() rl=()
  for ((r = 1; r <= repeat; r++)); do
    l1+=("${limit[1,$r]}")
    ln+=("${limit[$cores,$r]}")
    rl+=("$(awk -v a="${result[streamseq,vmdk,$r]}" -v b="${limit[$cores,$r]}" 'BEGIN { print (b > 0 ? a / b : 0) }')")
  done
  got=$(median "${rl[@]}")
  met=$(awk -v g="$got" 'BEGIN { print (g >= 0.7 ? "yes" : "NO") }')
  [ "$met" = yes ] || missed=$((missed + 1))
  echo
  printf 'inflate limit of stream.vmdk, in memory: %.1f MB/s on 1 thread, %.1f MB/s on %d\n' \
    "$(median "${l1[@]}")" "$(median "${ln[@]}")" "$cores"
  printf '%-34s %8.2fx  %-22s %s\n' "streamOptimized seq read / limit" "$got" \
    ">= 0.7x all-cores limit" "$met"
fi
echo
if ((missed == 0)); then
  echo "All targets met."
else
  echo "$missed target(s) missed."
fi
