#!/usr/bin/env bash
# Download published RetinaFace weights and verify their sha256 before putting them in place.
#
# Usage: scripts/fetch_weights.sh {mobilenet0.25|resnet50} DEST_FILE
#
# Environment overrides:
#   FACEDET_WEIGHTS_URL     download from this URL instead (https:// or file://), e.g. a mirror;
#                           the default checksum of the backbone still applies
#   FACEDET_WEIGHTS_SHA256  expected sha256 instead of the default (for a different file)
#
# Defaults:
#   mobilenet0.25  biubug6's MobileNet0.25 weights as redistributed by hukkelas/DSFD-Pytorch-Inference
#   resnet50       biubug6's Resnet50_Final.pth as redistributed by xinntao/facexlib (release v0.1.0,
#                  detection_Resnet50_Final.pth, 109,497,761 bytes); the same sha256 is pinned by
#                  several independent projects that download this file.
#
# The file is downloaded next to DEST_FILE under a temporary name, checked with sha256sum and only
# then renamed into place; an existing DEST_FILE with the right checksum is left alone.
set -euo pipefail

prog=$(basename "$0")
die() {
  echo "$prog: error: $*" >&2
  exit 1
}
usage() {
  echo "usage: $prog {mobilenet0.25|resnet50} DEST_FILE" >&2
  exit 2
}

[ $# -eq 2 ] || usage
backbone=$1
dest=$2

case "$backbone" in
  mobilenet0.25)
    url='https://raw.githubusercontent.com/hukkelas/DSFD-Pytorch-Inference/master/RetinaFace_mobilenet025.pth'
    sha='2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220'
    ;;
  resnet50)
    url='https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth'
    sha='6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d'
    ;;
  *)
    die "unknown backbone '$backbone' (expected mobilenet0.25 or resnet50)"
    ;;
esac

if [ -n "${FACEDET_WEIGHTS_URL:-}" ]; then
  url=$FACEDET_WEIGHTS_URL
fi
if [ -n "${FACEDET_WEIGHTS_SHA256:-}" ]; then
  sha=$FACEDET_WEIGHTS_SHA256
fi
sha=$(printf '%s' "$sha" | tr 'A-F' 'a-f')
[[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "FACEDET_WEIGHTS_SHA256 must be 64 hexadecimal digits"

command -v curl >/dev/null 2>&1 || die "curl is required"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required"

[ -n "$dest" ] || usage
[ ! -d "$dest" ] || die "DEST_FILE is a directory: $dest (give a file name)"
dest_dir=$(dirname -- "$dest")
[ -d "$dest_dir" ] || die "destination folder does not exist: $dest_dir"
[ -w "$dest_dir" ] || die "destination folder is not writable: $dest_dir"

sha_of() { sha256sum -- "$1" | cut -d' ' -f1; }

if [ -f "$dest" ]; then
  if [ "$(sha_of "$dest")" = "$sha" ]; then
    echo "$dest already present (sha256 $sha)"
    exit 0
  fi
  echo "$prog: $dest exists with a different sha256; downloading again" >&2
fi

tmp=$(mktemp -- "$dest.part.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT

echo "downloading $url"
if ! curl -fL --proto '=https,file' --proto-redir '=https' --retry 2 --connect-timeout 20 --max-time 900 \
  --silent --show-error -o "$tmp" -- "$url"; then
  die "download failed: $url"
fi

got=$(sha_of "$tmp")
if [ "$got" != "$sha" ]; then
  die "sha256 mismatch for $url: expected $sha, got $got (file not kept)"
fi

chmod 0644 -- "$tmp"
mv -f -- "$tmp" "$dest"
trap - EXIT
echo "saved $dest ($(wc -c <"$dest" | tr -d ' ') bytes, sha256 $sha)"
