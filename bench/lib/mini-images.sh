#!/usr/bin/env bash
# Developer aid: push minimal busybox and pause images built from Debian's busybox-static to REGISTRY
# as krio-test/busybox:latest and krio-test/pause:latest. bench/run.sh uses krio-testimg instead;
# this exists so the harness can be tried before the shared registry and krio-testimg are there.
# usage: mini-images.sh REGISTRY
set -euo pipefail
reg=${1:?usage: $0 REGISTRY}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/krio-bench-mini.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/proc" "$work/root/sys" "$work/root/dev" "$work/root/etc"
cp /bin/busybox "$work/root/bin/busybox"
for a in sh sleep ls cat echo true; do ln "$work/root/bin/busybox" "$work/root/bin/$a"; done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/root" -cf - . | gzip -n > "$work/busybox.tar.gz"
"$here/oci-push.sh" "$reg" krio-test/busybox latest '{"Cmd":["/bin/sh"]}' "$work/busybox.tar.gz"
"$here/oci-push.sh" "$reg" krio-test/pause latest '{"Entrypoint":["/bin/sleep","infinity"]}' "$work/busybox.tar.gz"
