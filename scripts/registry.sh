#!/usr/bin/env bash
# Local OCI registry for krio tests (Debian's `docker-registry`, distribution 2.8).
#
# Usage:
#   scripts/registry.sh start  [PORT]   start in the background (idempotent), wait until GET /v2/ is 200
#   scripts/registry.sh stop   [PORT]   stop it (ok if not running)
#   scripts/registry.sh status [PORT]   exit 0 and print "running" if it answers, else exit 1
#   scripts/registry.sh url    [PORT]   print http://127.0.0.1:PORT
#
# PORT defaults to 5000 (the shared registry). The registry listens on 127.0.0.1:PORT only, serves plain
# HTTP without auth, stores blobs under /var/lib/krio-test-registry-PORT (filesystem driver), allows
# DELETE, and logs to /tmp/krio-registry-PORT.log. Its config is /tmp/krio-registry-PORT.yml and its
# pid file /tmp/krio-registry-PORT.pid; start/stop are serialised with flock on /tmp/krio-registry-PORT.lock,
# so concurrent callers (parallel tests) are safe. No systemd is involved.
#
# Environment:
#   KRIO_REGISTRY_START_TIMEOUT   seconds to wait for /v2/ after start (default 20)
set -euo pipefail

die() {
	echo "registry.sh: error: $*" >&2
	exit 1
}

cmd="${1:-}"
port="${2:-5000}"
[[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "PORT must be a number in 1..65535, got '$port'"

storage="/var/lib/krio-test-registry-${port}"
log="/tmp/krio-registry-${port}.log"
config="/tmp/krio-registry-${port}.yml"
pidfile="/tmp/krio-registry-${port}.pid"
lockfile="/tmp/krio-registry-${port}.lock"
url="http://127.0.0.1:${port}"
timeout="${KRIO_REGISTRY_START_TIMEOUT:-20}"

# Prints the pid from the pid file if that process is alive and is a docker-registry.
live_pid() {
	[[ -f "$pidfile" ]] || return 1
	local pid
	pid="$(cat "$pidfile" 2>/dev/null || true)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# Guard against a recycled pid: it must be the registry binary.
	local exe
	exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
	[[ "$exe" == *docker-registry* ]] || return 1
	echo "$pid"
}

# HTTP status of GET /v2/ ("000" if nothing answers).
v2_status() {
	curl -s -o /dev/null -m 2 -w '%{http_code}' "$url/v2/" 2>/dev/null || true
}

# Closes every descriptor of the current (sub)shell above 2.
close_inherited_fds() {
	local fd
	for fd in /proc/"$BASHPID"/fd/*; do
		fd=${fd##*/}
		if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
			eval "exec ${fd}>&-" 2>/dev/null || true
		fi
	done
}

port_in_use() {
	ss -Hltn "sport = :$port" 2>/dev/null | grep -q .
}

do_start() {
	command -v docker-registry >/dev/null 2>&1 ||
		die "docker-registry is not installed (apt-get install -y docker-registry)"
	command -v curl >/dev/null 2>&1 || die "curl is not installed (apt-get install -y curl)"

	if pid="$(live_pid)"; then
		if [[ "$(v2_status)" == "200" ]]; then
			echo "registry already running on 127.0.0.1:${port} (pid ${pid})"
			return 0
		fi
		# Running but not yet (or no longer) answering: wait for it below.
	else
		rm -f "$pidfile"
		if port_in_use; then
			die "port ${port} is already in use by another process (not our registry; see: ss -ltnp 'sport = :${port}')"
		fi
		mkdir -p "$storage"
		cat >"$config" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: krio-test-registry
storage:
  filesystem:
    rootdirectory: ${storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}
  secret: krio-test-registry-not-secret
  headers:
    X-Content-Type-Options: [nosniff]
EOF
		# setsid: own session, so it outlives the calling shell and its job control.
		# No descriptor but stdio may reach the registry: it outlives its caller, and one it
		# kept would hold what it refers to for as long as it runs: the start/stop lock (9), or
		# the lock of a caller run under `flock /tmp/krio-e2e.lock cargo test ...`, which then
		# stays taken for everyone until the registry stops.
		(
			close_inherited_fds
			exec setsid docker-registry serve "$config" >>"$log" 2>&1 </dev/null
		) &
		pid=$!
		echo "$pid" >"$pidfile"
	fi

	local deadline=$((SECONDS + timeout))
	while ((SECONDS < deadline)); do
		if [[ "$(v2_status)" == "200" ]]; then
			echo "registry started on 127.0.0.1:${port} (pid ${pid}, storage ${storage}, log ${log})"
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			echo "---- last lines of ${log} ----" >&2
			tail -n 20 "$log" >&2 || true
			die "docker-registry exited during startup on port ${port}"
		fi
		sleep 0.2
	done
	echo "---- last lines of ${log} ----" >&2
	tail -n 20 "$log" >&2 || true
	die "registry on port ${port} did not answer GET /v2/ with 200 within ${timeout}s (pid ${pid} left running; run '$0 stop ${port}')"
}

do_stop() {
	local pid
	if ! pid="$(live_pid)"; then
		rm -f "$pidfile"
		echo "registry on port ${port} is not running"
		return 0
	fi
	kill -TERM "$pid"
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
	echo "registry on port ${port} stopped (pid ${pid})"
}

do_status() {
	local pid code
	code="$(v2_status)"
	if pid="$(live_pid)"; then
		if [[ "$code" == "200" ]]; then
			echo "running on 127.0.0.1:${port} (pid ${pid}, storage ${storage}, log ${log})"
			return 0
		fi
		echo "process ${pid} alive but GET ${url}/v2/ answered ${code}"
		return 1
	fi
	if [[ "$code" == "200" ]]; then
		echo "something not started by this script answers on ${url} (no live pid file ${pidfile})"
		return 1
	fi
	echo "not running on port ${port}"
	return 1
}

# Serialise start/stop of one port (parallel test processes call start concurrently).
lock() {
	command -v flock >/dev/null 2>&1 || die "flock (util-linux) is not installed"
	exec 9>"$lockfile"
	flock -w 60 9 || die "timed out waiting for lock ${lockfile}"
}

case "$cmd" in
start)
	lock
	do_start
	;;
stop)
	lock
	do_stop
	;;
status) do_status ;;
url) echo "$url" ;;
*)
	echo "usage: $0 {start|stop|status|url} [PORT]" >&2
	exit 2
	;;
esac
