#!/usr/bin/env bash
# Push an OCI image made of ready gzip'd tar layers to a plain-HTTP registry (Distribution API v2).
# usage: oci-push.sh REGISTRY REPO TAG CONFIG_EXTRA_JSON LAYER.tar.gz...
#   REGISTRY          e.g. 127.0.0.1:5000
#   REPO, TAG         e.g. krio-bench/debian bookworm
#   CONFIG_EXTRA_JSON JSON object merged into the image config's "config" (e.g. {"Cmd":["/bin/sh"]})
# Layers are pushed in order (base first). Blobs already present are skipped. Needs curl, jq, sha256sum, gzip.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: $0 REGISTRY REPO TAG CONFIG_EXTRA_JSON LAYER.tar.gz..." >&2; exit 2; }
reg=$1 repo=$2 tag=$3 extra=$4; shift 4
work=$(mktemp -d /tmp/krio-bench-push.XXXXXX)
trap 'rm -rf "$work"' EXIT

push_blob() { # file -> prints digest
  local f=$1 dig loc
  dig="sha256:$(sha256sum "$f" | cut -d' ' -f1)"
  if curl -fsS -o /dev/null -I "http://$reg/v2/$repo/blobs/$dig" 2>/dev/null; then echo "$dig"; return; fi
  loc=$(curl -fsS -X POST -D - -o /dev/null "http://$reg/v2/$repo/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  [ -n "$loc" ] || { echo "oci-push: registry $reg gave no upload location" >&2; exit 1; }
  case $loc in http*) ;; *) loc="http://$reg$loc" ;; esac
  case $loc in *\?*) loc="$loc&digest=$dig" ;; *) loc="$loc?digest=$dig" ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc" >/dev/null
  echo "$dig"
}

layers_json='[]' diffids='[]'
for l in "$@"; do
  d=$(push_blob "$l")
  size=$(stat -c %s "$l")
  diff="sha256:$(gzip -dc "$l" | sha256sum | cut -d' ' -f1)"
  layers_json=$(jq -c --arg d "$d" --argjson s "$size" '. + [{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":$d,"size":$s}]' <<<"$layers_json")
  diffids=$(jq -c --arg d "$diff" '. + [$d]' <<<"$diffids")
done
jq -n --argjson extra "$extra" --argjson diffids "$diffids" \
  '{architecture:"amd64",os:"linux",config:({Env:["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]} + $extra),rootfs:{type:"layers",diff_ids:$diffids}}' \
  > "$work/config.json"
cdig=$(push_blob "$work/config.json")
csize=$(stat -c %s "$work/config.json")
jq -n --arg cd "$cdig" --argjson cs "$csize" --argjson layers "$layers_json" \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$cd,size:$cs},layers:$layers}' \
  > "$work/manifest.json"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$work/manifest.json" \
  "http://$reg/v2/$repo/manifests/$tag" >/dev/null
echo "pushed $reg/$repo:$tag ($# layers)"
