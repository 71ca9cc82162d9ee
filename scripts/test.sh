#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# checks formatting, lints and docs, builds, runs every test (unit,
# integration through real FUSE mounts, the data-integrity stress run) and
# the pjdfstest POSIX suite against a mount.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
echo "== cargo build --release"
cargo build --release --quiet
echo "== cargo test (unit, integration through real mounts, stress)"
cargo test --release
echo "== pjdfstest"
bash scripts/pjdfstest.sh target/release/durafs
