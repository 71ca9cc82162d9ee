#!/usr/bin/env bash
# Mounts a demo directory through durafs with the built-in default policy and
# shows it working. Leaves it mounted; the last lines say how to unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v fusermount3 >/dev/null 2>&1 || bash scripts/setup.sh
cargo build --release --quiet
bin=$PWD/target/release/durafs
demo=${DURAFS_DEMO:-/tmp/durafs-demo}
# A mount left by an earlier run (even one whose daemon died with the machine)
# is unmounted first: a dead FUSE mount makes even mkdir fail with ENOTCONN.
if grep -q " $demo/mnt fuse" /proc/mounts; then "$bin" umount "$demo/mnt"; fi
mkdir -p "$demo/backing" "$demo/mnt"
echo "durafs mount $demo/backing $demo/mnt"
"$bin" mount "$demo/backing" "$demo/mnt"
echo "mounted:"
grep " $demo/mnt " /proc/mounts
echo "hello from $(date -u +%FT%TZ)" > "$demo/mnt/hello.txt"
mkdir -p "$demo/mnt/dir" && mv "$demo/mnt/hello.txt" "$demo/mnt/dir/hello.txt"
echo "through the mount:   $(cat "$demo/mnt/dir/hello.txt")"
echo "on the backing dir:  $(cat "$demo/backing/dir/hello.txt")"
echo
echo "durafs status $demo/mnt"
"$bin" status "$demo/mnt"
echo
echo "durafs explain --policy policies/database.toml data/app.db notes.txt"
"$bin" explain --policy policies/database.toml data/app.db notes.txt
echo "unmount with: $bin umount $demo/mnt"
