#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs prerequisites, checks formatting and lints,
# builds, starts the local registry and a krio daemon for the benchmark driver check, and runs
# every unit and end-to-end test. Needs root (the end-to-end tests run real containers).
#
# Usage: scripts/test.sh [CARGO-TEST-SELECTION...]   e.g. `-p krio-oci -p krio-net` (default
# `--workspace`): checks and builds stay whole, the tests run are the selection.
#
# Every test binary runs, even after a failure (`cargo test --no-fail-fast`). The last line of
# the output is the summary CI judges by, summed over cargo test's `test result:` lines:
#   N passed, N failed            (then `, N ignored` when some tests were ignored)
# A test binary that dies without its `test result:` line counts as one failed test. The exit
# status is non-zero whenever anything failed.
#
# The suite stops what it started: the benchmark check's daemon (its containers and mounts), and
# each local registry (5000: this script and the end-to-end tests; 5010: krio-testimg; 5020:
# krio-image) that was not already running when the suite began. Processes and mounts that
# appeared during the run and are still there at the end are listed as leftovers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --quiet

# Registries already running belong to someone else (another session, a developer): left alone.
registry_ports=(5000 5010 5020)
ours=()
for port in "${registry_ports[@]}"; do
	scripts/registry.sh status "$port" >/dev/null 2>&1 || ours+=("$port")
done

# What runs and is mounted now, to name leftovers at the end.
snapshot() {
	ps -eo pid=,comm=,args= | awk '$2 ~ /^(krio|krio-.*|runc|containerd.*|docker-registry)$/' || true
	awk '{print "mount " $5}' /proc/self/mountinfo
}
before=$(mktemp /tmp/krio-test-before-XXXXXX)
snapshot | sort >"$before"

work=$(mktemp -d /tmp/krio-test-XXXXXX)
results="$work/cargo-test.out"
krio_pid=""
cleanup() {
	if [ -n "$krio_pid" ]; then
		kill "$krio_pid" 2>/dev/null || true
		wait "$krio_pid" 2>/dev/null || true
		krio_pid=""
	fi
	for c in $(runc --root "$work/run/runtime/runc" list -q 2>/dev/null); do
		runc --root "$work/run/runtime/runc" delete --force "$c" >/dev/null 2>&1 || true
	done
	# Monitors and pod inits of the daemon's pods name its directories on their command lines.
	for cmdline in /proc/[0-9]*/cmdline; do
		if { tr '\0' ' ' <"$cmdline"; } 2>/dev/null | grep -qF "$work/"; then
			pid=${cmdline#/proc/}
			kill -KILL "${pid%/cmdline}" 2>/dev/null || true
		fi
	done
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	for port in "${ours[@]}"; do
		scripts/registry.sh stop "$port" >/dev/null || true
	done
	rm -rf "$work"
}
trap 'cleanup; rm -f "$before"' EXIT

scripts/registry.sh start 5000
target/debug/krio-testimg push --registry 127.0.0.1:5000 >/dev/null

# A daemon for the benchmark driver's smoke test (crates/krio-bench/tests).
mkdir -p "$work/cni"
echo '{"cniVersion":"1.0.0","name":"krio-test-lo","plugins":[{"type":"loopback"}]}' >"$work/cni/10-lo.conflist"
target/debug/krio --config /dev/null --listen "$work/krio.sock" --root "$work/root" --state-dir "$work/run" \
	--cni-conf-dir "$work/cni" >"$work/krio.log" 2>&1 &
krio_pid=$!
for _ in $(seq 100); do [ -S "$work/krio.sock" ] && break; sleep 0.1; done
[ -S "$work/krio.sock" ] || { cat "$work/krio.log"; echo "krio did not start" >&2; exit 1; }
export KRIO_BENCH_ENDPOINT="unix://$work/krio.sock"

echo "== cargo test"
start=$SECONDS
set +e
selection=("$@")
[ ${#selection[@]} -gt 0 ] || selection=(--workspace)
cargo test "${selection[@]}" --no-fail-fast --quiet -- --test-threads 4 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

# Sum the `test result:` lines; count binaries that failed without one.
read -r passed failed ignored <<<"$(awk '
	/^test result: / {
		for (i = 4; i <= NF; i++) {
			if ($i ~ /^passed;?$/) p += $(i - 1)
			if ($i ~ /^failed;?$/) f += $(i - 1)
			if ($i ~ /^ignored;?$/) g += $(i - 1)
		}
		if ($3 == "FAILED.") reported++
	}
	/^error: (test|doctest) failed, to rerun pass/ { binaries++ }
	END {
		silent = binaries - reported
		if (silent > 0) f += silent
		print p + 0, f + 0, g + 0
	}' "$results")"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
	echo "cargo test failed (exit $status) before any test failed: see the errors above" >&2
	failed=1
fi

cp "$results" /tmp/krio-test-last.out
cleanup
trap - EXIT
echo "== cargo test took ${elapsed}s (output: /tmp/krio-test-last.out)"

leftovers=$(snapshot | sort | comm -13 "$before" -)
rm -f "$before"
if [ -n "$leftovers" ]; then
	echo "== leftovers (not there before the suite):"
	echo "$leftovers"
fi

summary="$passed passed, $failed failed"
[ "$ignored" -gt 0 ] && summary+=", $ignored ignored"
echo "$summary"
[ "$failed" -eq 0 ] && [ "$status" -eq 0 ]
