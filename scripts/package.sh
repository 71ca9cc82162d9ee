#!/usr/bin/env bash
# Builds the Debian package (target/debian/durafs_*.deb) with cargo-deb:
# the release binary, the generated man pages and shell completions, the
# mount(8) helper links, the example policies and the systemd units.
# Installs cargo-deb first if it is missing. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb (cargo install, a few minutes the first time)" >&2
  cargo install --locked --quiet cargo-deb
fi
cargo build --release --quiet
rm -rf target/assets
target/release/durafs generate-assets target/assets >/dev/null
mkdir -p target/assets/sbin
# mount -t fuse.durafs runs /usr/sbin/mount.fuse.durafs; the binary picks
# the helper's calling convention from its name.
ln -s ../bin/durafs target/assets/sbin/mount.fuse.durafs
ln -s ../bin/durafs target/assets/sbin/mount.durafs
cargo deb --no-build --strip --quiet >/dev/null
ls -t target/debian/durafs_*.deb | head -1
