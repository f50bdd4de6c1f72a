#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs prerequisites, checks formatting and lints,
# builds, starts the local registry and a krio daemon for the benchmark driver check, and runs
# every unit and end-to-end test. Needs root (the end-to-end tests run real containers).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --quiet

scripts/registry.sh start 5000
target/debug/krio-testimg push --registry 127.0.0.1:5000 >/dev/null

# A daemon for the benchmark driver's smoke test (crates/krio-bench/tests).
work=$(mktemp -d /tmp/krio-test-XXXXXX)
mkdir -p "$work/cni"
echo '{"cniVersion":"1.0.0","name":"krio-test-lo","plugins":[{"type":"loopback"}]}' >"$work/cni/10-lo.conflist"
target/debug/krio --config /dev/null --listen "$work/krio.sock" --root "$work/root" --state-dir "$work/run" \
	--cni-conf-dir "$work/cni" >"$work/krio.log" 2>&1 &
krio_pid=$!
cleanup() {
	kill "$krio_pid" 2>/dev/null || true
	wait "$krio_pid" 2>/dev/null || true
	for c in $(runc --root "$work/run/runtime/runc" list -q 2>/dev/null); do
		runc --root "$work/run/runtime/runc" delete --force "$c" >/dev/null 2>&1 || true
	done
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$work/krio.sock" ] && break; sleep 0.1; done
[ -S "$work/krio.sock" ] || { cat "$work/krio.log"; echo "krio did not start" >&2; exit 1; }
export KRIO_BENCH_ENDPOINT="unix://$work/krio.sock"

echo "== cargo test"
cargo test --workspace --quiet -- --test-threads 4
