#!/usr/bin/env bash
# Installs the Debian packages krio builds, runs and tests with. Idempotent; needs root.
set -euo pipefail
packages=(
	runc                          # the default OCI runtime
	busybox-static                # test images are built from it
	docker-registry               # the local registry tests and the demo pull from
	containernetworking-plugins   # CNI plugins in /usr/lib/cni
	protobuf-compiler             # protoc, for the CRI bindings (krio-cri)
	iptables iproute2             # CNI bridge/portmap, test inspection
	curl jq ca-certificates
	systemd                       # systemd-analyze verifies the units krio installs
)
[ "$(id -u)" -eq 0 ] || { echo "install-deps.sh: must run as root" >&2; exit 1; }
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "install-deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps.sh: cargo (Rust toolchain) not found" >&2; exit 1; }
