#!/usr/bin/env bash
# Installs everything durafs's tests and benchmarks need on a fresh Debian
# machine: FUSE userspace tools, the pjdfstest POSIX suite, bindfs (the
# benchmark peer) and the tools the scripts call (mkfs.ext4 for the
# ext4 -o sync rival of the durability benchmark, sqlite3 for the crash
# tests of a real database), and the Rust standard libraries of the other
# OSes the platform layer is type-checked for. Idempotent; run as root.
set -euo pipefail

need_apt=()
for pkg in fuse3 libacl1-dev acl bindfs fio attr procps util-linux e2fsprogs sqlite3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The FUSE device must exist; in a VM it is there once the module is loaded.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if [ ! -e /dev/fuse ]; then
  echo "setup: /dev/fuse is missing and 'modprobe fuse' did not create it" >&2
  exit 1
fi

if ! command -v pjdfstest >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/pjdfstest" ]; then
  echo "setup: installing pjdfstest (cargo install, a few minutes the first time)"
  cargo install --locked --quiet pjdfstest
fi

# The standard libraries of the OSes the platform layer is type-checked for
# (macOS, Windows, and FreeBSD for the std-only module): test.sh runs
# `cargo clippy --target` for each. Nothing is linked, so no SDK is needed.
cross_targets=(x86_64-apple-darwin aarch64-apple-darwin x86_64-pc-windows-msvc x86_64-unknown-freebsd)
installed=$(rustup target list --installed 2>/dev/null || true)
missing=()
for t in "${cross_targets[@]}"; do
  grep -qx "$t" <<<"$installed" || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: adding Rust targets for the cross-OS checks: ${missing[*]}"
  rustup target add "${missing[@]}" >/dev/null 2>&1 || {
    echo "setup: 'rustup target add ${missing[*]}' failed: the macOS/Windows/FreeBSD" \
      "checks of test.sh need these standard libraries (network access to" \
      "static.rust-lang.org, or a toolchain that ships them)" >&2
    exit 1
  }
fi

# pjdfstest's dummy users: nobody/nogroup exist on Debian; it also needs a
# second unprivileged account with its own group.
getent group durafs-tests >/dev/null || groupadd --system durafs-tests
getent passwd durafs-tests >/dev/null || useradd --system -g durafs-tests -M -s /usr/sbin/nologin durafs-tests
echo "setup: done"
