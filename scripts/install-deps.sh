#!/usr/bin/env bash
# Installs the Debian packages krio builds, runs and tests with. Idempotent; needs root.
set -euo pipefail
packages=(
	runc                          # the default OCI runtime
	runsc                         # gVisor: the sandboxed runtime handler (tests of runtime handlers)
	busybox-static                # test images are built from it
	docker-registry               # the local registry tests and the demo pull from
	containernetworking-plugins   # CNI plugins in /usr/lib/cni
	protobuf-compiler             # protoc, for the CRI bindings (krio-cri)
	containerd                    # krioctl's interoperability test starts a private instance
	iptables iproute2             # CNI bridge/portmap, test inspection
	e2fsprogs mount               # mkfs.ext4, losetup: the full-disk test's loop filesystem
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
	# Packages such as docker-registry and containerd start a system service on install (a
	# registry on :5000 would take the tests' port). Tests start private instances instead, so
	# no service may start: unless the machine already has a policy, deny every start during
	# the install (invoke-rc.d and deb-systemd-invoke ask /usr/sbin/policy-rc.d; 101 = denied).
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# install-deps.sh: no service starts during the install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt-get update -qq
	apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "install-deps.sh: cargo (Rust toolchain) not found" >&2; exit 1; }

# Python grpcio (a client on gRPC's C core) for the interoperability test,
# crates/krio/tests/e2e_interop.rs.
if ! python3 -c 'import grpc' 2>/dev/null; then
	if ! python3 -m pip --version >/dev/null 2>&1; then
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq python3 python3-pip >/dev/null
	fi
	echo "install-deps.sh: installing grpcio from PyPI"
	python3 -m pip install --quiet grpcio 2>/dev/null ||
		python3 -m pip install --quiet --break-system-packages grpcio
fi
