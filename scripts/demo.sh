#!/usr/bin/env bash
# krio's main job on a fresh machine: install everything, build, start the local registry
# with the project's own busybox images, start krio, pull an image, run a pod and a container
# that prints a line, show its logs with `krioctl logs`, and clean up. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "== building (release)"
cargo build --release --workspace --bins --quiet

echo "== starting the local registry and pushing test images"
scripts/registry.sh start 5000
target/release/krio-testimg push --registry 127.0.0.1:5000

sock=/run/krio/krio.sock
log=/tmp/krio-demo/krio.log
rm -rf /tmp/krio-demo/logs   # the example pod's log_directory: start with fresh logs
mkdir -p /tmp/krio-demo
if [ -S "$sock" ] && target/release/krioctl -r "unix://$sock" version >/dev/null 2>&1; then
	echo "== krio is already running on $sock"
	krio_pid=""
else
	echo "== starting krio (log: $log)"
	target/release/krio >"$log" 2>&1 &
	krio_pid=$!
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
fi
k() { target/release/krioctl -r "unix://$sock" "$@"; }
cleanup() {
	set +e
	[ -n "${ctr:-}" ] && k rm -f "$ctr" >/dev/null
	[ -n "${pod:-}" ] && { k stopp "$pod" >/dev/null; k rmp "$pod" >/dev/null; }
	if [ -n "$krio_pid" ]; then kill "$krio_pid"; wait "$krio_pid" 2>/dev/null; fi
}
trap cleanup EXIT

k version
echo "== krioctl pull"
k pull 127.0.0.1:5000/krio-test/busybox:latest
k images
echo "== krioctl runp examples/pod.json"
pod=$(k runp examples/pod.json)
echo "pod: $pod"
k inspectp "$pod" | grep -E '"(ip|state)"' || true
echo "== krioctl create + start"
ctr=$(k create "$pod" examples/container.json examples/pod.json)
k start "$ctr"
for _ in $(seq 100); do
	k inspect "$ctr" | grep -q '"CONTAINER_EXITED"' && break
	sleep 0.1
done
k ps -a
echo "== krioctl logs $ctr"
k logs "$ctr"
echo "== cleaning up"
k rm -f "$ctr" && ctr=""
k stopp "$pod" && k rmp "$pod" && pod=""
k pods
echo "== done"
