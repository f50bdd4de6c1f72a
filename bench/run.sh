#!/usr/bin/env bash
# krio vs containerd benchmarks, one command:  bench/run.sh [--quick] [options]
#
# Installs the Debian packages it needs, builds krio and krio-bench in release, starts the shared local
# registry (scripts/registry.sh) and pushes the test images (krio-testimg) plus a 4-layer Debian image,
# starts containerd (bench/containerd/config.toml, under /tmp/krio-bench-ctrd) and krio (under
# /tmp/krio-bench-krio) with the SAME CNI configuration, runs the workloads against each runtime
# alternating (A B A B ...): start/teardown, calls, busy, stream (exec, attach memory), memory
# (krio-bench run), restart (this script kills and restarts the daemon around krio-bench
# restart-prep/restart-wait), and the floor of pod start (krio-bench floor: runc + CNI directly);
# then pod start and memory per runtime handler (krio restarted with [runtimes.*] tables for runsc
# and youki; containerd + runc as the reference; krio-bench run --workloads handler); then the cold pulls; then pools everything into bench/out/results.json, BENCHMARKS.md and
# bench/out/start-latency.svg. Needs root.
#
# Options:
#   --quick            tiny sizes, 1 round, pull of the busybox image; output in bench/out/quick/ and
#                      BENCHMARKS.md is NOT touched (written to bench/out/quick/BENCHMARKS.md).
#   --rounds N         rounds of the start/calls/memory workloads per runtime (default 3).
#   --pull-runs N      cold pulls per runtime (default 3; each on a fresh loop-mounted filesystem).
#   --runtimes LIST    space/comma separated, default "containerd,krio".
#   --handlers LIST    krio runtime handlers for the per-handler rows, space/comma separated, default
#                      "runc,runsc,runsc-pod,youki" (runsc: pod_sandbox = "per-container", runsc-pod:
#                      pod_sandbox = "pod"); "none" skips them. A handler whose binary is missing is
#                      skipped and said so (youki: /usr/local/bin/youki, built by bench/youki.sh when
#                      KRIO_BENCH_YOUKI=1). Needs both containerd and krio in --runtimes.
#   --net MODE         bridge (default: bridge + host-local, no iptables) or host (host-network pods,
#                      no CNI at all). containerd 1.6 rejects a loopback-only network ("failed to find
#                      network info for sandbox"), so a loopback-only conflist cannot be shared.
#   --registry H:P     registry to use (default 127.0.0.1:5000 = scripts/registry.sh + krio-testimg).
#                      Any other value starts a private docker-registry on that port and pushes minimal
#                      busybox/pause images from bench/lib/mini-images.sh instead.
#   --no-apt           do not apt-get install anything.
#   --debug            use debug builds (target/debug; for the test suite, which builds debug anyway).
#   --out DIR          output directory (default bench/out, or bench/out/quick with --quick).
#   --markdown FILE    where to write the Markdown (default BENCHMARKS.md, quick: <out>/BENCHMARKS.md).
# Environment: KRIO_EXTRA_ARGS (extra krio daemon flags), KRIO_BENCH_MIRROR (apt mirror for debootstrap),
#   KRIO_BENCH_YOUKI=1 (build youki first when it is missing, about 20 min, and run bench/youki.sh at the end).
set -euo pipefail

private_registry_pid=""
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
quick=0 rounds=3 pull_runs=3 runtimes="containerd,krio" handlers="runc,runsc,runsc-pod,youki" net=bridge registry=127.0.0.1:5000 apt=1
out="" markdown="" profile=release
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --pull-runs) pull_runs=$2; shift ;;
    --runtimes) runtimes=$2; shift ;;
    --handlers) handlers=$2; shift ;;
    --net) net=$2; shift ;;
    --registry) registry=$2; shift ;;
    --no-apt) apt=0 ;;
    --debug) profile=debug ;;
    --out) out=$2; shift ;;
    --markdown) markdown=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "== $(date +%H:%M:%S) $*" >&2; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
[[ $pull_runs =~ ^[0-9]+$ ]] || die "--pull-runs must be a non-negative integer"
case $net in bridge|host) ;; *) die "--net must be bridge or host" ;; esac
runtimes=${runtimes//,/ }
for rt in $runtimes; do case $rt in containerd|krio) ;; *) die "unknown runtime $rt" ;; esac; done
handlers=${handlers//,/ }; [ "$handlers" = none ] && handlers=""
for h in $handlers; do case $h in runc|runsc|runsc-pod|youki) ;; *) die "unknown handler $h (runc, runsc, runsc-pod, youki)" ;; esac; done
[ "$(id -u)" = 0 ] || die "must run as root"
if [ $quick = 1 ]; then
  rounds=1; pull_runs=1
  out=${out:-$repo/bench/out/quick}; markdown=${markdown:-$out/BENCHMARKS.md}
else
  out=${out:-$repo/bench/out}; markdown=${markdown:-$repo/BENCHMARKS.md}
fi
raw=$out/raw
rm -rf "$raw"; mkdir -p "$raw"

# ---------------------------------------------------------------- packages
pkgs=(containerd runc containernetworking-plugins docker-registry busybox-static debootstrap jq curl
      e2fsprogs util-linux iproute2 tar gzip)
if [ $apt = 1 ]; then
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; }
  fi
fi

# ---------------------------------------------------------------- youki (not a Debian package)
youki_bin=/usr/local/bin/youki
if [[ " $handlers " == *" youki "* ]] && [ ! -x "$youki_bin" ] && [ "${KRIO_BENCH_YOUKI:-0}" = 1 ]; then
  log "building youki for the youki handler (bench/youki.sh --install-only; about 20 min)"
  "$here/youki.sh" --install-only >&2 || die "building youki failed"
fi

# ---------------------------------------------------------------- build
cd "$repo"
cargo_profile=(--release); [ $profile = debug ] && cargo_profile=()
log "cargo build ($profile: krio-bench $( [[ $runtimes == *krio* ]] && echo 'krio krio-monitor'))"
cargo build "${cargo_profile[@]}" -q -p krio-bench
bench=$repo/target/$profile/krio-bench
if [[ $runtimes == *krio* ]]; then
  cargo build "${cargo_profile[@]}" -q -p krio -p krio-monitor \
    || die "building krio failed; run with --runtimes containerd to measure containerd alone"
  [ -x "$repo/target/$profile/krio" ] || die "krio binary missing: $repo/target/$profile/krio (the krio crate builds no daemon?)"
fi

# ---------------------------------------------------------------- daemons
ctrd=/tmp/krio-bench-ctrd
kr=/tmp/krio-bench-krio
declare -A pid sock marker
krio_config=/dev/null   # the per-handler phase restarts krio with $kr/handlers.toml
sock[containerd]=$ctrd/containerd.sock; marker[containerd]=$ctrd
sock[krio]=$kr/krio.sock;               marker[krio]=$kr

unmount_under() { # unmount everything below $1, deepest first
  grep -o " $1[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

launch_daemon() { # runtime: start it in the background (pid[$rt]); does not wait for it
  local rt=$1
  case $rt in
    containerd)
      mkdir -p "$ctrd/root" "$ctrd/state"
      rm -rf "$ctrd/certs.d"; mkdir -p "$ctrd/certs.d/$registry"
      sed "s|127.0.0.1:5000|$registry|g" "$here/containerd/certs.d/127.0.0.1:5000/hosts.toml" > "$ctrd/certs.d/$registry/hosts.toml"
      sed "s|127.0.0.1:5000|$registry|g" "$here/containerd/config.toml" > "$ctrd/config.toml"
      setsid containerd --config "$ctrd/config.toml" >> "$ctrd/log" 2>&1 < /dev/null &
      pid[$rt]=$! ;;
    krio)
      mkdir -p "$kr/root" "$kr/state"
      # shellcheck disable=SC2086
      setsid "$repo/target/$profile/krio" --config "$krio_config" --listen "${sock[krio]}" --root "$kr/root" \
        --state-dir "$kr/state" --cni-conf-dir "$cni/net.d" ${KRIO_EXTRA_ARGS:-} >> "$kr/log" 2>&1 < /dev/null &
      pid[$rt]=$! ;;
  esac
}

start_daemon() { # runtime: launch it and wait until it answers (removing the bench's leftover pods)
  local rt=$1
  launch_daemon "$rt"
  for _ in $(seq 300); do
    [ -S "${sock[$rt]}" ] && "$bench" cleanup --endpoint "${sock[$rt]}" >/dev/null 2>&1 && return 0
    kill -0 "${pid[$rt]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 30 "${marker[$rt]}/log" >&2 || true
  die "$rt did not come up on ${sock[$rt]} (log: ${marker[$rt]}/log)"
}

stop_daemon() { # runtime
  local rt=$1 p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  "$bench" cleanup --endpoint "${sock[$rt]}" >/dev/null 2>&1 || true
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  pid[$rt]=""
  rm -f "${sock[$rt]}"
}

fresh_state() { # runtime: wipe the runtime's directories (nothing may be mounted there)
  local d=${marker[$1]}
  unmount_under "$d"
  rm -rf "$d/root" "$d/state" "$d/log" "$d/config.toml" "$d/handlers.toml"
}

floor_cleanup() { # containers, mounts and pins the floor may have left after a failure
  local fl=/tmp/krio-bench-floor id
  if [ -d "$fl/runc" ]; then
    for id in $(runc --root "$fl/runc" list -q 2>/dev/null); do runc --root "$fl/runc" delete --force "$id"; done
  fi
  unmount_under "$fl"
}

cleanup() {
  set +e
  for rt in containerd krio; do stop_daemon "$rt"; done
  # containerd's shims outlive it; they exit once their containers are gone (cleanup above).
  unmount_under /tmp/krio-bench-loop
  unmount_under "$ctrd"; unmount_under "$kr"
  for l in $(losetup -j /tmp/krio-bench-loop/fs.img 2>/dev/null | cut -d: -f1); do losetup -d "$l"; done
  floor_cleanup
  rm -rf /tmp/krio-bench-loop /tmp/krio-bench-logs "$ctrd" "$kr" /tmp/krio-bench-cni /tmp/krio-bench-floor
  ip link del krbench0 2>/dev/null
  [ -n "$private_registry_pid" ] && kill "$private_registry_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT

# ---------------------------------------------------------------- registry and images
if [ "$registry" = 127.0.0.1:5000 ]; then
  "$repo/scripts/registry.sh" start 5000 >&2
  log "pushing test images (krio-testimg)"
  cargo run "${cargo_profile[@]}" -q -p krio-testimg -- push --registry "$registry" >/dev/null \
    || die "krio-testimg push failed"
else
  port=${registry##*:}
  regdir=/tmp/krio-bench-reg$port
  if ! curl -fsS -m 2 "http://$registry/v2/" >/dev/null 2>&1; then
    mkdir -p "$regdir/data"
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\nlog:\n  level: warn\n' \
      "$regdir/data" "$registry" > "$regdir/config.yml"
    setsid docker-registry serve "$regdir/config.yml" > "$regdir/log" 2>&1 < /dev/null &
    private_registry_pid=$!
    for _ in $(seq 100); do curl -fsS -m 1 "http://$registry/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  "$here/lib/mini-images.sh" "$registry" >&2
fi
busybox=$registry/krio-test/busybox:latest
if [ $quick = 1 ] || [ "$pull_runs" = 0 ]; then
  pull_image=$busybox
else
  log "Debian image for the pull benchmark (built once, cached in /var/cache/krio-bench)"
  "$here/debian-image.sh" "$registry" > /dev/null
  pull_image=$registry/krio-bench/debian:bookworm
fi

# ---------------------------------------------------------------- CNI (shared by both runtimes)
cni=/tmp/krio-bench-cni
mkdir -p "$cni/net.d" "$cni/ipam"
rm -f "$cni"/net.d/*
if [ $net = bridge ]; then cp "$here"/cni/bridge/*.conflist "$cni/net.d/"; else cp "$here"/cni/loopback/*.conflist "$cni/net.d/"; fi
host_net=(); [ $net = host ] && host_net=(--host-network)


# ---------------------------------------------------------------- the floor's rootfs
# The floor of pod start (krio-bench floor) runs the same busybox image's unpacked layers, as an
# overlay lower directory, with the same CNI conflist; it needs a pod network (skipped with --net host).
floor_dir=/tmp/krio-bench-floor
floor=0
if [ $net = bridge ]; then
  floor=1
  rm -rf "$floor_dir"; mkdir -p "$floor_dir/lower"
  bb_path=${busybox#*/}
  bb_manifest=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$registry/v2/${bb_path%:*}/manifests/${bb_path##*:}")
  for d in $(jq -r '.layers[].digest' <<<"$bb_manifest"); do
    curl -fsS "http://$registry/v2/${bb_path%:*}/blobs/$d" | tar -xz -C "$floor_dir/lower"
  done
  [ -x "$floor_dir/lower/bin/sleep" ] || die "floor: $busybox has no /bin/sleep"
fi

# ---------------------------------------------------------------- restart and reconcile
# With N running containers, the daemon is stopped (SIGTERM, then in a second pass SIGKILL) and
# started again; krio-bench restart-wait times from the new start until ListContainers lists them
# all RUNNING. bench/run.sh owns the daemon process, so it kills and starts it here.
restart_round() { # runtime round
  local rt=$1 r=$2 ids sig t0
  ids=$raw/$rt-r$r-restart.ids
  "$bench" restart-prep --endpoint "${sock[$rt]}" --runtime "$rt" --round "$r" --ids-file "$ids" \
    --image "$busybox" "${host_net[@]}" "${sizes[@]}" 2>> "$raw/$rt-r$r.log" \
    || { tail -n 20 "$raw/$rt-r$r.log" >&2; die "$rt restart-prep $r failed"; }
  for sig in TERM KILL; do
    kill -"$sig" "${pid[$rt]}"
    wait "${pid[$rt]}" 2>/dev/null || true
    t0=${EPOCHREALTIME/./}
    launch_daemon "$rt"
    "$bench" restart-wait --endpoint "${sock[$rt]}" --runtime "$rt" --round "$r" --out "$raw" \
      --ids-file "$ids" --since-unix-us "$t0" --signal "sig${sig,,}" 2>> "$raw/$rt-r$r.log" \
      || { tail -n 20 "$raw/$rt-r$r.log" >&2; die "$rt restart-wait ($sig) $r failed"; }
  done
  "$bench" cleanup --endpoint "${sock[$rt]}" >/dev/null 2>> "$raw/$rt-r$r.log" \
    || die "$rt: removing the restart pods failed"
}

# ---------------------------------------------------------------- rounds: start, calls, busy, stream, restart, memory
if [ $quick = 1 ]; then sizes=(--quick); else sizes=(); fi
for rt in $runtimes; do stop_daemon "$rt"; fresh_state "$rt"; start_daemon "$rt"; done
round_runtimes=$runtimes; [ $floor = 1 ] && round_runtimes="$runtimes floor"
for ((r = 0; r < rounds; r++)); do
  for rt in $round_runtimes; do
    log "round $((r + 1))/$rounds: $rt"
    if [ "$rt" = floor ]; then
      "$bench" floor --out "$raw" --round "$r" --lower "$floor_dir/lower" --work "$floor_dir" \
        --conflist "$cni/net.d/10-krio-bench.conflist" --cni-bin /usr/lib/cni "${sizes[@]}" 2> "$raw/floor-r$r.log" \
        || { tail -n 20 "$raw/floor-r$r.log" >&2; floor_cleanup; die "floor round $r failed (full log: $raw/floor-r$r.log)"; }
      continue
    fi
    "$bench" run --endpoint "${sock[$rt]}" --runtime "$rt" --round "$r" --out "$raw" --image "$busybox" \
      --daemon-pid "${pid[$rt]}" --proc-marker "${marker[$rt]}" --log-root "/tmp/krio-bench-logs/$rt" \
      "${host_net[@]}" "${sizes[@]}" 2> "$raw/$rt-r$r.log" \
      || { tail -n 20 "$raw/$rt-r$r.log" >&2; die "$rt round $r failed (full log: $raw/$rt-r$r.log)"; }
    log "round $((r + 1))/$rounds: $rt restart"
    restart_round "$rt" "$r"
  done
done

# ---------------------------------------------------------------- per runtime handler
# krio is restarted (same root and state) with a configuration holding a [runtimes.NAME] table for
# each installed handler besides runc; then, per round, containerd (its default runc handler, the
# reference) and krio under each handler, alternating. A handler whose binary is missing gets a
# result file saying it was skipped, so the report says so too.
handler_available=() handler_skipped=()
declare -A handler_config
handler_config[runc]='default handler (runc from Debian)'
handler_config[runsc]='runsc, `pod_sandbox = "per-container"` (a gVisor sandbox per container), `--platform=ptrace --network=host`'
handler_config[runsc-pod]='runsc, `pod_sandbox = "pod"` (one gVisor sandbox per pod), `--platform=ptrace --network=host`'
handler_config[youki]='youki, `pod_sandbox = "none"`'
runsc_toml() { # name mode
  printf '[runtimes.%s]\npath = "%s"\nruntime_args = ["--platform=ptrace", "--network=host"]\npod_sandbox = "%s"\nprivileged_without_host_devices = true\nallowed_annotations = ["dev.gvisor."]\n\n' \
    "$1" "$(command -v runsc)" "$2"
}
if [ -n "$handlers" ] && { [[ " $runtimes " != *" krio "* ]] || [[ " $runtimes " != *" containerd "* ]]; }; then
  log "per-handler rows skipped: they need both containerd and krio in --runtimes"
  handlers=""
fi
if [ -n "$handlers" ]; then
  : > "$kr/handlers.toml"
  for h in $handlers; do
    case $h in
      runc) bin=$(command -v runc || true) ;;
      runsc|runsc-pod) bin=$(command -v runsc || true) ;;
      youki) bin=$youki_bin; [ -x "$bin" ] || bin="" ;;
    esac
    if [ -z "$bin" ]; then
      why="not installed ($( [ $h = youki ] && echo "$youki_bin missing; KRIO_BENCH_YOUKI=1 builds it" || echo "no ${h%-pod} in PATH"))"
      log "handler $h SKIPPED: $why"
      handler_skipped+=("$h: $why")
      jq -n --arg h "$h" --arg why "$why" \
        '{schema:1,runtime:"krio",workload:("handler-"+$h),round:0,started_unix_ns:0,duration_ms:0,
          params:{handler:$h,runtime_handler:$h,skipped:$why},metrics:{}}' > "$raw/krio-r0-handler-$h.json"
      continue
    fi
    handler_available+=("$h")
    case $h in
      runsc) runsc_toml runsc per-container >> "$kr/handlers.toml" ;;
      runsc-pod) runsc_toml runsc-pod pod >> "$kr/handlers.toml" ;;
      youki) printf '[runtimes.youki]\npath = "%s"\n\n' "$bin" >> "$kr/handlers.toml" ;;
    esac
  done
fi
if [ ${#handler_available[@]} -gt 0 ]; then
  stop_daemon krio
  krio_config=$kr/handlers.toml
  start_daemon krio
  for ((r = 0; r < rounds; r++)); do
    for rh in containerd:runc $(printf 'krio:%s ' "${handler_available[@]}"); do
      rt=${rh%%:*} h=${rh#*:} handler_arg=$h
      { [ "$rt" = containerd ] || [ "$h" = runc ]; } && handler_arg=""   # each daemon's default runc
      log "round $((r + 1))/$rounds: handler $h on $rt"
      "$bench" run --workloads handler --runtime-handler "$handler_arg" --handler-label "$h" \
        --handler-config "$( [ "$rt" = containerd ] && echo 'default handler (runc from Debian)' || echo "${handler_config[$h]}")" \
        --endpoint "${sock[$rt]}" --runtime "$rt" --round "$r" --out "$raw" --image "$busybox" \
        --daemon-pid "${pid[$rt]}" --proc-marker "${marker[$rt]}" --log-root "/tmp/krio-bench-logs/$rt" \
        "${host_net[@]}" "${sizes[@]}" 2> "$raw/$rt-r$r-handler-$h.log" && continue
      tail -n 20 "$raw/$rt-r$r-handler-$h.log" >&2
      # The reference and krio's default handler are essential; another handler's failure is
      # reported (notes, and a result saying so when no round of it succeeded) but not fatal.
      { [ "$rt" = containerd ] || [ "$h" = runc ]; } \
        && die "$rt handler $h round $r failed (full log: $raw/$rt-r$r-handler-$h.log)"
      why="failed in round $((r + 1)): $(grep -v '^ ' "$raw/$rt-r$r-handler-$h.log" | tail -n 1 | cut -c1-200)"
      log "handler $h on $rt FAILED (log: $raw/$rt-r$r-handler-$h.log); going on without it"
      handler_skipped+=("$h: $why")
      jq -n --arg h "$h" --arg why "$why" --argjson r "$r" \
        '{schema:1,runtime:"krio",workload:("handler-"+$h),round:$r,started_unix_ns:0,duration_ms:0,
          params:{handler:$h,runtime_handler:$h,skipped:$why},metrics:{}}' > "$raw/krio-r$r-handler-$h.json"
    done
  done
fi
for rt in $runtimes; do stop_daemon "$rt"; done
krio_config=/dev/null

# ---------------------------------------------------------------- pulls, each on a fresh filesystem
loop=/tmp/krio-bench-loop
fresh_fs() { # mountpoint size: a new ext4 (no journal, like this machine's root) on a loop device
  mkdir -p "$loop" "$1"
  rm -f "$loop/fs.img"
  truncate -s "$2" "$loop/fs.img"
  mkfs.ext4 -q -F -O ^has_journal "$loop/fs.img"
  mount -o loop "$loop/fs.img" "$1"
}
drop_fs() { # mountpoint
  umount "$1" 2>/dev/null || umount -l "$1"
  rm -f "$loop/fs.img"
}
fs_size=6G; [ $quick = 1 ] && fs_size=512M

pull_floor() { # round: curl blob | tar -xz per layer into a fresh filesystem; sequential, then parallel
  local r=$1 repo_path=${pull_image#*/} dest=$loop/floor
  local name=${repo_path%:*} tag=${repo_path##*:}
  local manifest digests t0 t1 seq_us par_us
  manifest=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$registry/v2/$name/manifests/$tag")
  digests=$(jq -r '.layers[].digest' <<<"$manifest")
  fresh_fs "$dest" "$fs_size"
  t0=$(date +%s%N)
  for d in $digests; do
    curl -fsS "http://$registry/v2/$name/blobs/$d" | tar -xz -C "$dest"
  done
  t1=$(date +%s%N); seq_us=$(( (t1 - t0) / 1000 ))
  drop_fs "$dest"
  fresh_fs "$dest" "$fs_size"
  local pids=()
  t0=$(date +%s%N)
  for d in $digests; do
    mkdir -p "$dest/$d"
    (curl -fsS "http://$registry/v2/$name/blobs/$d" | tar -xz -C "$dest/$d") &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "floor: parallel extraction failed"; done
  t1=$(date +%s%N); par_us=$(( (t1 - t0) / 1000 ))
  drop_fs "$dest"
  jq -n --arg img "$pull_image" --argjson r "$r" --argjson t0 "$t0" --argjson s "$seq_us" --argjson p "$par_us" \
    '{schema:1,runtime:"floor",workload:"pull",round:$r,started_unix_ns:$t0,duration_ms:(($s+$p)/1000),
      params:{image:$img,pull:"curl blob | tar -xz, one layer after another",
              pull_parallel:"curl blob | tar -xz, all layers at once into separate directories"},
      metrics:{pull:{unit:"ms",samples:[$s/1000]},pull_parallel:{unit:"ms",samples:[$p/1000]}}}' \
    > "$raw/floor-r$r-pull.json"
}

for ((r = 0; r < pull_runs; r++)); do
  for rt in $runtimes floor; do
    log "pull $((r + 1))/$pull_runs: $rt ($pull_image)"
    if [ $rt = floor ]; then pull_floor "$r"; continue; fi
    fresh_state "$rt"
    fresh_fs "${marker[$rt]}/root" "$fs_size"
    start_daemon "$rt"
    "$bench" pull --endpoint "${sock[$rt]}" --runtime "$rt" --round "$r" --out "$raw" --image "$pull_image" \
      --daemon-pid "${pid[$rt]}" --proc-marker "${marker[$rt]}" --create-after "${host_net[@]}" 2> "$raw/$rt-pull-r$r.log" \
      || { tail -n 20 "$raw/$rt-pull-r$r.log" >&2; die "$rt pull $r failed"; }
    stop_daemon "$rt"
    unmount_under "${marker[$rt]}/root/"
    drop_fs "${marker[$rt]}/root"
  done
done
[ "$pull_runs" -gt 0 ] && for rt in $runtimes; do fresh_state "$rt"; done

# ---------------------------------------------------------------- report
notes=$out/notes.md
{
  echo "- Date: $(date -u +%Y-%m-%dT%H:%MZ). Machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")."
  echo "- containerd $(containerd --version | awk '{print $3}') (Debian, built-in CRI plugin; config bench/containerd/config.toml), runc $(runc --version | awk 'NR==1{print $3}')."
  echo "- krio: $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo 'uncommitted tree')$(cd "$repo" && [ -n "$(git status --porcelain -- crates 2>/dev/null)" ] && echo ' with local changes'), $profile build; started with \`--config /dev/null\` and the bench's CNI directory."
  if [ $net = bridge ]; then
    echo "- Pod network: the same CNI conflist for both (bench/cni/bridge: bridge + host-local IPAM, no masquerade, no portmap). containerd 1.6 cannot run pods on a loopback-only network."
  else
    echo "- Pod network: host network for every pod (no CNI), for both runtimes."
  fi
  echo "- Rounds: $rounds of start/teardown, calls, busy, stream, restart and memory per runtime (and of the floor), alternating $(echo $runtimes | sed 's/ / then /') in each round$( [ $quick = 1 ] && echo ' (**--quick: tiny sizes, not representative**)')."
  [ "$pull_runs" = 0 ] && echo "- Pull: not run (--pull-runs 0)."
  [ "$pull_runs" != 0 ] && echo "- Pull: $pull_runs cold pull(s) per runtime of \`$pull_image\`, each into a **fresh loop-mounted ext4 filesystem** (no journal, like this machine's root) as the runtime's root, with a newly started daemon, so ext4's inode-reuse slowdown after mass deletions cannot skew it. After each pull, CreateContainer from the pulled image is timed too (\`create_container_after_pull\`; \`pull_and_create\` is the sum), so unpacking deferred to container creation is not missed. The floor (\`curl | tar -xz\` per layer, sequentially = \`pull\`, all layers at once = \`pull_parallel\`) ran on equally fresh filesystems, without fsync (neither runtime was asked to sync either)."
  if [ $quick = 0 ] && [ "$pull_runs" != 0 ]; then
    st=$(cat /var/cache/krio-bench/debian-*/stats 2>/dev/null | head -2 | tr '\n' ' ')
    set -- $st
    echo "- Pull image: Debian bookworm minbase + python3, perl, git, curl (debootstrap, bench/debian-image.sh), 4 gzip layers, $(( ${1:-0} / 1048576 )) MiB unpacked, ${2:-?} entries."
  fi
  if [ $floor = 1 ]; then
    echo "- Floor (start/teardown): \`krio-bench floor\` with the same conflist, CNI plugins from Debian's containernetworking-plugins (/usr/lib/cni), runc $(runc --version | awk 'NR==1{print $3}'), the busybox image's layer unpacked once by curl | tar as the overlay lower directory; rounds alternate with the runtimes'."
  else
    echo "- Floor: not run (--net host: no pod network to add)."
  fi
  if [ ${#handler_available[@]} -gt 0 ] || [ ${#handler_skipped[@]} -gt 0 ]; then
    echo "- Per runtime handler: $rounds round(s), alternating containerd (runc, the reference) then krio under $(echo "${handler_available[@]:-none}" | sed 's/ /, /g'); krio restarted for them with \`--config\` naming a file with a \`[runtimes.NAME]\` table for each (runsc: \`runtime_args = [\"--platform=ptrace\", \"--network=host\"]\`, \`privileged_without_host_devices = true\`, \`allowed_annotations = [\"dev.gvisor.\"]\`; runsc-pod the same with \`pod_sandbox = \"pod\"\`) and the same root. runsc $(runsc --version 2>/dev/null | awk '/runsc version/{print $3}')$( [ -x "$youki_bin" ] && echo ", $("$youki_bin" --version 2>/dev/null | sed -n 1p)")."
    for sk in "${handler_skipped[@]}"; do echo "- Handler not measured: $sk."; done
  fi
  echo "- Restart: the daemon is killed with SIGTERM and waited for, started again, then SIGKILL and started again; the clock starts just before the daemon process is started (bash \$EPOCHREALTIME) and krio-bench polls from a process started right after."
  echo "- Registry: docker-registry 2.8 on $registry. Latencies are measured by krio-bench around each gRPC call (one HTTP/2 connection)."
} > "$notes"
"$bench" report --in "$raw" --results "$out/results.json" --svg "$out/start-latency.svg" --markdown "$markdown" \
  --notes "$notes" --link-dir "$(realpath --relative-to="$(dirname "$markdown")" "$out")"
log "done: $out/results.json, $out/start-latency.svg, $markdown"
# The container lifecycle tests under youki (built with cargo, not in the test suite): bench/youki.sh.
if [ "${KRIO_BENCH_YOUKI:-0}" = 1 ]; then
  log "youki lifecycle tests (bench/youki.sh)"
  "$here/youki.sh"
fi
