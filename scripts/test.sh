#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# checks formatting, lints (also for macOS, Windows and FreeBSD, whose
# platform modules CI can type-check but not run) and docs, builds, runs every test (unit,
# integration through real FUSE mounts, the data-integrity stress run) and
# the pjdfstest POSIX suite against a mount; builds the Debian package and
# lists it, and verifies the systemd units where systemd-analyze exists.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo clippy for macOS (the whole mount over macFUSE), Windows (over WinFsp) and FreeBSD (platform layer); type-check only"
# fuser/macos-no-mount: fuser without macFUSE's libfuse, which is not on
# this machine; a Mac build links it (README, Platforms).
for t in x86_64-apple-darwin aarch64-apple-darwin; do
  cargo clippy --target "$t" --features fuser/macos-no-mount --lib --bins --tests --quiet -- -D warnings
done
# Windows: the whole mount over WinFsp. winfsp/docsrs gives winfsp-sys's
# pregenerated bindings instead of running bindgen against the Windows SDK
# headers, which are not on this machine; the winfsp crate then asks for a
# nightly doc attribute, allowed for that one crate (RUSTC_BOOTSTRAP=winfsp).
# A Windows build omits both and generates its bindings (README, Platforms).
RUSTC_BOOTSTRAP=winfsp cargo clippy --target x86_64-pc-windows-msvc --features winfsp/docsrs \
  --lib --bins --tests --quiet -- -D warnings
cargo clippy --target x86_64-unknown-freebsd --lib --bins --tests --quiet -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "== cargo build --release"
cargo build --release --quiet
echo "== cargo test (unit, integration through real mounts, stress)"
cargo test --release
echo "== pjdfstest"
bash scripts/pjdfstest.sh target/release/durafs
echo "== Debian package (cargo-deb)"
deb=$(bash scripts/package.sh)
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb"
listing=$(dpkg-deb --contents "$deb")
for want in ./usr/bin/durafs ./usr/sbin/mount.fuse.durafs ./usr/sbin/mount.durafs \
  ./usr/share/durafs/policies/default.toml ./usr/lib/systemd/system/durafs@.service \
  ./usr/share/man/man8/durafs.8.gz ./usr/share/man/man8/durafs-mount.8.gz \
  ./usr/share/man/man5/durafs-policy.5.gz ./usr/share/bash-completion/completions/durafs; do
  grep -q " $want\( \|$\)" <<<"$listing" || { echo "the package lacks $want" >&2; exit 1; }
done
echo "== systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
  units=$(mktemp -d)
  trap 'rm -rf "$units"' EXIT
  # verify checks that ExecStart exists: point it at the binary just built.
  sed "s|/usr/bin/durafs|$PWD/target/release/durafs|" packaging/systemd/durafs@.service \
    >"$units/durafs@srv-data.service"
  cp packaging/systemd/srv-data.mount "$units/"
  systemd-analyze verify --man=no "$units/durafs@srv-data.service" "$units/srv-data.mount"
  echo "systemd-analyze verify: units ok"
else
  echo "systemd-analyze is not installed: the unit files were not verified"
fi

