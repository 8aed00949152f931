# shellcheck shell=bash
# Shared settings of the amd-sld scripts. Sourced, not run.

AMD_SLD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AMD_SLD_CACHE=${AMD_SLD_CACHE:-$HOME/.cache/amd-sld}
KERNEL_TARBALL=${KERNEL_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
# The kernel's Rust toolchain (Debian rustc-web), never rustup's rustc.
KRUSTC=${KRUSTC:-/usr/bin/rustc}
KCLIPPY=${KCLIPPY:-/usr/bin/clippy-driver}
BINDGEN=${BINDGEN:-$(command -v bindgen || echo "$HOME/.cargo/bin/bindgen")}
export PATH="$PATH:$HOME/.cargo/bin"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
