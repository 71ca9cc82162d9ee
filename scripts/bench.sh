#!/usr/bin/env bash
# Benchmarks durafs (pure passthrough: no added syncs), the backing
# directory natively and bindfs, side by side in one run, and prints each
# job's figure and durafs's ratio to native and to bindfs. Also measures the
# daemon's RSS after 100,000 files have been looked up.
#
# usage: scripts/bench.sh [--quick]       (run as root; needs fio and bindfs: scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
quick=0; [ "${1:-}" = "--quick" ] && quick=1
command -v fio >/dev/null && command -v bindfs >/dev/null && command -v mkfs.ext4 >/dev/null || bash scripts/setup.sh >/dev/null
cargo build --release --quiet
cargo bench --bench fsbench --no-run --quiet 2>/dev/null
bin=$PWD/target/release/durafs
fsbench=$(ls -t target/release/deps/fsbench-* | grep -v '\.d$' | head -1)

runtime=5; seqsize=1024M; nfiles=5000; rssfiles=100000
[ $quick = 1 ] && { runtime=2; seqsize=256M; nfiles=2000; rssfiles=20000; }

work=$(mktemp -d "$PWD/target/bench.XXXXXX")
chmod 755 "$work"
mkdir -p "$work"/{native,durafs-backing,durafs,bindfs-backing,bindfs}
cleanup() {
  for m in "$work/durafs" "$work/bindfs" "$work/rss-mnt"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" mount --policy policies/passthrough.toml "$work/durafs-backing" "$work/durafs" 2>/dev/null
bindfs --multithreaded "$work/bindfs-backing" "$work/bindfs"
targets=(native durafs bindfs)

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# fio job -> MiB/s (bandwidth) or IOPS
fio_run() { # dir name metric args...
  local dir=$1 name=$2 metric=$3; shift 3
  fio --name="$name" --directory="$dir" --output-format=json "$@" 2>/dev/null |
    python3 -c "
import json,sys
j=json.load(sys.stdin)['jobs']
w=sum(x['write']['$metric'] for x in j); r=sum(x['read']['$metric'] for x in j)
v=(w if w>0 else r)
print(round(v/1024 if '$metric'=='bw' else v, 1))"
}

declare -A res
job() { # key label unit
  printf '%-34s %-6s' "$2" "$3"
  for t in "${targets[@]}"; do printf ' %12s' "${res[$1,$t]}"; done
  local n=${res[$1,native]} d=${res[$1,durafs]} b=${res[$1,bindfs]}
  python3 -c "print('   %6.2fx  %6.2fx' % ($d/$n, $d/$b))"
}

# Each job runs on every target in turn before the next job starts, so
# slow drifts of the machine (disk cache, writeback) hit all three alike.
each() { for t in "${targets[@]}"; do d=$work/$t; "$@"; done; }
each eval 'res[seqw,$t]=$(fio_run "$d" seqw bw --rw=write --bs=1M --size=$seqsize --end_fsync=1 --ioengine=psync)'
drop_caches
each eval 'res[seqr,$t]=$(fio_run "$d" seqw bw --rw=read --bs=1M --size=$seqsize --ioengine=psync); rm -f "$d"/seqw*'
each eval 'res[randw,$t]=$(fio_run "$d" randw iops --rw=randwrite --bs=4k --size=256M --time_based --runtime=$runtime --ioengine=psync); rm -f "$d"/randw*'
each eval 'res[fsync,$t]=$(fio_run "$d" fsync iops --rw=randwrite --bs=4k --size=64M --fsync=1 --time_based --runtime=$runtime --ioengine=psync); rm -f "$d"/fsync*'
each eval 'res[fds4,$t]=$(fio_run "$d" fds4 iops --rw=randwrite --bs=4k --size=64M --fdatasync=1 --numjobs=4 --time_based --runtime=$runtime --ioengine=psync --group_reporting); rm -f "$d"/fds4*'
each eval 'mkdir "$d/meta"; res[create,$t]=$("$fsbench" create "$d/meta" $nfiles | awk "{print \$2}")'
each eval 'res[stat,$t]=$("$fsbench" stat "$d/meta" $nfiles | awk "{print \$2}")'
drop_caches
each eval 'res[statc,$t]=$("$fsbench" stat "$d/meta" $nfiles | awk "{print \$2}")'
each eval 'res[unlink,$t]=$("$fsbench" unlink "$d/meta" $nfiles | awk "{print \$2}")'
each eval 'res[replace,$t]=$("$fsbench" replace "$d/meta" 500 | awk "{print \$2}"); rm -rf "$d/meta"'

echo
echo "durafs bench ($(nproc) cores, backing: $(df -T "$work" | awk 'NR==2{print $2}'), kernel $(uname -r), durafs passthrough engine)"
printf '%-34s %-6s %12s %12s %12s   %7s  %7s\n' job unit native durafs bindfs "d/nat" "d/bindfs"
job seqw    "1 MiB sequential write (+fsync)" MiB/s
job seqr    "1 MiB sequential read (cold)" MiB/s
job randw   "4 KiB random buffered write" IOPS
job fsync   "4 KiB write+fsync" IOPS
job fds4    "4 writers, 4 KiB write+fdatasync" IOPS
job create  "create $nfiles small files" ops/s
job stat    "stat $nfiles files (just created)" ops/s
job statc   "stat $nfiles files (caches dropped)" ops/s
job unlink  "unlink $nfiles files" ops/s
job replace "write-tmp+fsync+rename+dir-fsync" ops/s

# Memory: the daemon's RSS after $rssfiles files have been looked up.
mkdir -p "$work/rss-backing" "$work/rss-mnt"
python3 -c "
import os
for i in range($rssfiles // 1000):
    d = '$work/rss-backing/d%03d' % i
    os.mkdir(d)
    for j in range(1000):
        open(d + '/f%04d' % j, 'w').close()
"
"$bin" mount --foreground --policy policies/passthrough.toml "$work/rss-backing" "$work/rss-mnt" 2>/dev/null &
pid=$!
for _ in $(seq 100); do mountpoint -q "$work/rss-mnt" && break; sleep 0.1; done
found=$(find "$work/rss-mnt" -type f -size -1000k 2>/dev/null | wc -l)
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
fds=$(ls /proc/$pid/fd | wc -l)
limit=$(awk '/Max open files/ {print $4}' /proc/$pid/limits)
echo
echo "daemon RSS after looking up $found of $rssfiles files: $((rss / 1024)) MiB ($fds fds held; fd limit $limit)"
[ "$found" -eq "$rssfiles" ] || echo "  (some lookups failed: see the daemon log)"
umount "$work/rss-mnt"; wait $pid || true

# ---------------------------------------------------------------------------
# Durability: each policy against its natural rival, in one run.
#  - sync=always: the app writes plainly through durafs; natively it does
#    write+fdatasync itself; and ext4 mounted -o sync,dirsync on a loop device.
#  - write=atomic: the app rewrites with O_TRUNC+write+close through durafs;
#    natively it does tmp+fsync+rename+dir-fsync by hand.
#  - write=append + sync=interval: a 4 KiB append stream, vs native buffered.
#  - --crash-sim: its overhead over plain passthrough on the same jobs; and,
#    for the sequential job, over plain passthrough with -o passthrough=off
#    (the same data path: the simulator must see every write, so it cannot
#    use kernel passthrough).
pol=$work/policies; mkdir -p "$pol"
printf 'version = 1\n[defaults]\nsync = "always"\ndir-sync = true\n' > "$pol/always.toml"
printf 'version = 1\n[defaults]\nwrite = "atomic"\n' > "$pol/atomic.toml"
printf 'version = 1\n[defaults]\nwrite = "append"\npreallocate = "16MiB"\nsync = { interval = "200ms" }\n' > "$pol/append.toml"
for p in always atomic append crash nopt; do mkdir -p "$work/d-$p-backing" "$work/d-$p"; done
"$bin" mount --policy "$pol/always.toml" "$work/d-always-backing" "$work/d-always" 2>/dev/null
"$bin" mount --policy "$pol/atomic.toml" "$work/d-atomic-backing" "$work/d-atomic" 2>/dev/null
"$bin" mount --policy "$pol/append.toml" "$work/d-append-backing" "$work/d-append" 2>/dev/null
"$bin" mount --crash-sim --policy policies/passthrough.toml "$work/d-crash-backing" "$work/d-crash" 2>/dev/null
"$bin" mount -o passthrough=off --policy policies/passthrough.toml "$work/d-nopt-backing" "$work/d-nopt" 2>/dev/null
truncate -s 2G "$work/ext4sync.img"
mkfs.ext4 -q -F "$work/ext4sync.img"
mkdir -p "$work/ext4sync"
mount -o loop,sync,dirsync "$work/ext4sync.img" "$work/ext4sync"
cleanup_durability() {
  for m in d-always d-atomic d-append d-crash d-nopt ext4sync; do
    mountpoint -q "$work/$m" 2>/dev/null && umount -l "$work/$m"
  done
  cleanup
}
trap cleanup_durability EXIT

fio4k() { # dir name jobs extra...
  local dir=$1 name=$2 jobs=$3; shift 3
  fio_run "$dir" "$name" iops --rw=randwrite --bs=4k --size=64M --numjobs="$jobs" \
    --time_based --runtime=$runtime --ioengine=psync --group_reporting "$@"
  rm -f "$dir/$name"*
}
# Each row runs $rounds rounds, durafs and its rival alternating, and shows
# the median of each side, the ratio of the medians and every round's
# ratio: on these machines one disk-bound run swings by 2x either way, and a
# single pair of runs said more about the disk than about durafs.
rounds=3
row() { # label unit "durafs figures" "rival figures" rival-name
  python3 - "$@" <<'PY'
import statistics, sys
label, unit, a, b, name = sys.argv[1:6]
a = [float(x) for x in a.split()]; b = [float(x) for x in b.split()]
ma, mb = statistics.median(a), statistics.median(b)
each = ' '.join('%.2f' % (x / y) for x, y in zip(a, b))
print('%-44s %-6s %10.1f %10.1f   %6.2fx  (vs %s; rounds %s)' % (label, unit, ma, mb, ma / mb, name, each))
PY
}
echo
echo "durability rows (durafs with the policy vs its rival, median of $rounds alternating rounds; ratio > 1: durafs faster)"
for jobs in 1 4; do
  a=; n=; e=
  for _ in $(seq $rounds); do
    a+=" $(fio4k "$work/d-always" al$jobs $jobs)"
    n+=" $(fio4k "$work/native" al$jobs $jobs --fdatasync=1)"
    e+=" $(fio4k "$work/ext4sync" al$jobs $jobs)"
  done
  row "sync=always, $jobs writer(s), 4 KiB writes" IOPS "$a" "$n" "native write+fdatasync"
  row "sync=always, $jobs writer(s), 4 KiB writes" IOPS "$a" "$e" "ext4 -o sync,dirsync"
done
# The same 4 writers on one shared file: the case group commit is for.
a=; n=
for _ in $(seq $rounds); do
  a+=" $(fio4k "$work/d-always" alsh 4 --filename=alshared)"; rm -f "$work/d-always/alshared"
  n+=" $(fio4k "$work/native" alsh 4 --filename=alshared --fdatasync=1)"; rm -f "$work/native/alshared"
done
row "sync=always, 4 writers on one file, 4 KiB" IOPS "$a" "$n" "native write+fdatasync"
a=; n=
for _ in $(seq $rounds); do
  a+=" $("$fsbench" rewrite "$work/d-atomic" 500 | awk '{print $2}')"
  n+=" $("$fsbench" replace "$work/native" 500 | awk '{print $2}')"
  rm -f "$work/native/config"*
done
row "write=atomic: O_TRUNC rewrite vs by-hand" ops/s "$a" "$n" "native tmp+fsync+rename+dir-fsync"
a=; n=
for _ in $(seq $rounds); do
  a+=" $(fio_run "$work/d-append" app bw --rw=write --bs=4k --size=256M --ioengine=psync)"
  n+=" $(fio_run "$work/native" app bw --rw=write --bs=4k --size=256M --ioengine=psync)"
  rm -f "$work/d-append/app"* "$work/native/app"*
done
row "write=append, interval 200ms, 4 KiB stream" MiB/s "$a" "$n" "native buffered"
seqw() { fio_run "$1" seqw bw --rw=write --bs=1M --size=$seqsize --end_fsync=1 --ioengine=psync; rm -f "$1"/seqw*; }
create() { mkdir -p "$1/meta$2"; "$fsbench" create "$1/meta$2" $nfiles | awk '{print $2}'; }
c=; p=; o=
for _ in $(seq $rounds); do
  c+=" $(seqw "$work/d-crash")"; p+=" $(seqw "$work/durafs")"; o+=" $(seqw "$work/d-nopt")"
done
row "--crash-sim: 1 MiB sequential write (+fsync)" MiB/s "$c" "$p" "durafs passthrough"
row "--crash-sim: 1 MiB sequential write (+fsync)" MiB/s "$c" "$o" "durafs passthrough, daemon IO"
# Nothing is removed between the rounds, and the order swaps each round:
# on ext4 without a journal a create skips over inodes freed in the last
# minute (recently_deleted), so files removed just before a round slowed
# whichever side came next (the crash simulator, 0.20x in one round).
c=; p=
for r in $(seq $rounds); do
  if [ $((r % 2)) = 1 ]; then
    c+=" $(create "$work/d-crash" $r)"; p+=" $(create "$work/durafs" $r)"
  else
    p+=" $(create "$work/durafs" $r)"; c+=" $(create "$work/d-crash" $r)"
  fi
done
rm -rf "$work/d-crash"/meta* "$work/durafs"/meta*
row "--crash-sim: create $nfiles small files" ops/s "$c" "$p" "durafs passthrough"
