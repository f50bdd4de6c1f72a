#!/usr/bin/env bash
# Build (once, cached) and push the multi-layer Debian image used by the pull benchmark.
# usage: debian-image.sh REGISTRY            -> pushes REGISTRY/krio-bench/debian:bookworm
# The rootfs comes from `debootstrap --variant=minbase` with the apt mirror configured on this machine
# (first URIs line of /etc/apt/sources.list.d/debian.sources, or $KRIO_BENCH_MIRROR). It is split into
# 4 gzip'd layers: usr/lib/x86_64-linux-gnu, the rest of usr/lib, usr/share, everything else.
# Cache: ${KRIO_BENCH_CACHE:-/var/cache/krio-bench}/debian-<key>/ (key = suite + package list).
# Prints the layer files (one a line) on stdout's last lines as "layer: PATH".
set -euo pipefail
reg=${1:?usage: $0 REGISTRY}
here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
pkgs=python3,perl,git,curl,ca-certificates,procps,iproute2,less
cache=${KRIO_BENCH_CACHE:-/var/cache/krio-bench}
key=$(printf '%s %s v1' "$suite" "$pkgs" | sha256sum | cut -c1-12)
dir=$cache/debian-$key
if [ ! -f "$dir/done" ]; then
  command -v debootstrap >/dev/null || { echo "debian-image: debootstrap missing (apt-get install -y debootstrap)" >&2; exit 1; }
  mirror=${KRIO_BENCH_MIRROR:-}
  if [ -z "$mirror" ]; then
    mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 | awk '{print $2}')
  fi
  if [ -z "$mirror" ]; then
    mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | awk '{print $2}')
  fi
  [ -n "$mirror" ] || { echo "debian-image: no apt mirror found; set KRIO_BENCH_MIRROR" >&2; exit 1; }
  rm -rf "$dir"; mkdir -p "$dir"
  echo "debian-image: debootstrap $suite from $mirror into $dir/rootfs (about 2 minutes)" >&2
  debootstrap --variant=minbase --include="$pkgs" "$suite" "$dir/rootfs" "$mirror" > "$dir/debootstrap.log" 2>&1 \
    || { echo "debian-image: debootstrap failed, see $dir/debootstrap.log" >&2; exit 1; }
  rm -rf "$dir"/rootfs/var/cache/apt/archives/*.deb "$dir"/rootfs/var/lib/apt/lists/* "$dir"/rootfs/dev/*
  root=$dir/rootfs
  topts=(--sort=name --numeric-owner --xattrs -C "$root")
  tar "${topts[@]}" -cf - --no-recursion usr usr/lib --recursion usr/lib/x86_64-linux-gnu | gzip -n > "$dir/layer1.tar.gz"
  tar "${topts[@]}" -cf - --exclude=usr/lib/x86_64-linux-gnu --no-recursion usr --recursion usr/lib | gzip -n > "$dir/layer2.tar.gz"
  tar "${topts[@]}" -cf - --no-recursion usr --recursion usr/share | gzip -n > "$dir/layer3.tar.gz"
  mapfile -t top < <(find "$root" -mindepth 1 -maxdepth 1 ! -name usr -printf '%f\n' | sort)
  mapfile -t usr_rest < <(find "$root/usr" -mindepth 1 -maxdepth 1 ! -name lib ! -name share -printf 'usr/%f\n' | sort)
  tar "${topts[@]}" -cf - --no-recursion usr --recursion "${top[@]}" "${usr_rest[@]}" | gzip -n > "$dir/layer4.tar.gz"
  { du -sb "$root" | cut -f1; find "$root" | wc -l; } > "$dir/stats"
  rm -rf "$root"
  touch "$dir/done"
fi
"$here/lib/oci-push.sh" "$reg" krio-bench/debian "$suite" '{"Cmd":["/bin/bash"]}' \
  "$dir/layer1.tar.gz" "$dir/layer2.tar.gz" "$dir/layer3.tar.gz" "$dir/layer4.tar.gz" >&2
for i in 1 2 3 4; do echo "layer: $dir/layer$i.tar.gz"; done
