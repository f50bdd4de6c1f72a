#!/usr/bin/env bash
# krio's main job on a fresh machine: install everything, build, start the local registry
# with the project's own busybox images, start krio, pull an image, run a pod and a container
# that prints a line, show its logs with `krioctl logs`, and clean up. Needs root.
# At the end it says what it left running (the local registry, if it started it) and how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== installing the Debian packages krio uses (once; apt-get prints nothing meanwhile)"
scripts/install-deps.sh
if [ -x target/release/krio ]; then
	echo "== building (release; incremental)"
else
	echo "== building (release): the first build takes about 8 minutes on 2 cores; cargo lists each crate as it compiles"
fi
cargo build --release --workspace --bins

registry_was_running=0
scripts/registry.sh status 5000 >/dev/null 2>&1 && registry_was_running=1
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
	[ -S "$sock" ] || { cat "$log"; echo "demo.sh: krio did not start within 10 s" >&2; exit 1; }
fi
k() { target/release/krioctl -r "unix://$sock" "$@"; }
cleanup() {
	set +e
	[ -n "${ctr:-}" ] && k rm -f "$ctr" >/dev/null
	[ -n "${pod:-}" ] && { k stopp "$pod" >/dev/null; k rmp "$pod" >/dev/null; }
	if [ -n "$krio_pid" ]; then kill "$krio_pid"; wait "$krio_pid" 2>/dev/null; fi
	echo "== left running:"
	if [ "$registry_was_running" = 1 ]; then
		echo "   the local registry on 127.0.0.1:5000 (it was running before the demo; left as it was)"
	else
		echo "   the local registry on 127.0.0.1:5000 with the test images; stop it with: scripts/registry.sh stop 5000"
	fi
	if [ -z "$krio_pid" ]; then
		echo "   the krio daemon on $sock (it was running before the demo; left as it was)"
	else
		echo "   no krio daemon (the demo's is stopped; its log: $log); the pulled image stays in"
		echo "   /var/lib/krio (remove with: rm -rf /var/lib/krio /run/krio)"
	fi
	if [ -e /etc/cni/net.d/10-krio-bridge.conflist ]; then
		echo "   krio's default pod network: /etc/cni/net.d/10-krio-bridge.conflist and bridge krio0"
		echo "   (kept for the next start; remove with: rm /etc/cni/net.d/10-krio-bridge.conflist; ip link del krio0)"
	fi
}
trap cleanup EXIT

k version
echo "== krioctl info (NetworkReady, RuntimeReady) and krioctl status"
k info | sed -n '/"conditions"/,/]/p'
k status | sed -n '1,9p'
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
echo "== waiting for the container to exit"
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
