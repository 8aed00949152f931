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

# The counts on the last 'vm: N passed, N failed, N skipped' line of a scripts/vmtest log,
# as "passed failed skipped"; nothing if the run ended without that line.
vm_counts() { # log
	sed -n 's/^vm: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$1" | tail -n 1
}

# Whether DOC has the lines '<!-- NAME:begin -->' and '<!-- NAME:end -->' of a generated
# section; says so when it has not.
has_section() { # doc name
	grep -qxF "<!-- $2:begin -->" "$1" && grep -qxF "<!-- $2:end -->" "$1" || {
		say "$1 lacks the <!-- $2:begin --> / <!-- $2:end --> markers"
		return 1
	}
}

# Replaces what lies between the markers of section NAME of DOC with the content of FILE.
# Fails, leaving DOC as it was, when DOC lacks either marker.
replace_section() { # doc name file
	local begin="<!-- $2:begin -->" end="<!-- $2:end -->"
	has_section "$1" "$2" || return 1
	awk -v begin="$begin" -v end="$end" -v content="$3" '
		$0 == begin { print; while ((getline line < content) > 0) print line; skip = 1; next }
		$0 == end { skip = 0 }
		!skip' "$1" > "$1.new" && mv "$1.new" "$1"
}
