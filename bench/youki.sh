#!/usr/bin/env bash
# The container lifecycle tests under youki, the runtime handler scripts/install-deps.sh does not
# install:  bench/youki.sh [--install-only]   (bench/run.sh runs it at its end when KRIO_BENCH_YOUKI=1,
# and with --install-only before its per-handler rows when youki is missing). Needs root.
#
# youki has no Debian package; `cargo install youki --features v1` builds it (the `v1` feature drives
# this host's hybrid cgroup layout, which youki sees as cgroup v1). That build took 20 min 36 s on this
# 2-core machine (shared with other builds), more than the test suite's budget leaves, so the suite
# does not build it: the `*_under_youki` tests are #[ignore]d there. This script
# installs youki into /usr/local/bin when it is missing (the build is cached there), then runs those
# tests with --ignored (each fails loudly if youki is missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "youki.sh: must run as root" >&2; exit 1; }
if ! command -v youki >/dev/null; then
	echo "youki.sh: building youki 0.7.0 (cargo install youki --features v1), about 20 min on 2 cores" >&2
	start=$(date +%s)
	nice -n 10 cargo install youki --locked --version 0.7.0 --features v1 --root /usr/local
	echo "youki.sh: youki built and installed in $(( $(date +%s) - start )) s" >&2
fi
youki --version | sed -n 1p   # not head: youki panics when its stdout closes early
[ "${1:-}" = --install-only ] && exit 0
cd "$repo"
flock /tmp/krio-e2e.lock \
	cargo test -p krio --test e2e_pod --test e2e_stream -- --ignored under_youki
