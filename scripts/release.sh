#!/bin/sh
# Builds krio's release binaries and splits their debug info into separate files.
#
#   scripts/release.sh [OUTDIR]      (default: target/dist)
#
# For each of krio, krio-monitor and krioctl, OUTDIR gets the stripped binary and
# <name>.debug, which holds its debug sections (the release profile keeps line tables:
# `debug = "line-tables-only"`, enough for symbolized backtraces). The binary carries a
# .gnu_debuglink naming <name>.debug (with its CRC), so gdb, perf and eu-stack find it when it
# sits beside the binary or under /usr/lib/debug. Prints each file's size in bytes.
set -eu

cd "$(dirname "$0")/.."
out=${1:-target/dist}
bins="krio krio-monitor krioctl"

command -v objcopy >/dev/null || { echo "release.sh: objcopy (binutils) is required" >&2; exit 1; }
cargo build --release --locked -p krio -p krio-monitor -p krioctl --bins
mkdir -p "$out"
for b in $bins; do
    src=target/release/$b
    objcopy --only-keep-debug "$src" "$out/$b.debug"
    chmod 0644 "$out/$b.debug"
    # The link is made from inside OUTDIR so that it names the bare file name.
    cp "$src" "$out/$b.tmp"
    (cd "$out" && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$b.debug" "$b.tmp" "$b")
    rm -f "$out/$b.tmp"
done
for f in $bins; do
    printf '%s\t%s\t%s.debug\t%s\n' "$f" "$(stat -c %s "$out/$f")" "$f" "$(stat -c %s "$out/$f.debug")"
done
