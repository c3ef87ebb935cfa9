#!/bin/bash
# make devset: fetch the real-footage development videos once into a cache outside the repo.
# usage: bash bench/devset/ensure.sh [DEST]   (default: $VIDLOOM_DEVSET or ~/.cache/vidloom/devset)
# Idempotent: when every file of MANIFEST.tsv is present with its sha256, nothing is fetched.
# Then builds the two labelled compilations of single-shot excerpts (make_compilation.py) into
# DEST/videos/compilation/{transitions,hard}.mp4 (+ .json), unless they are there and up to date.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=$(realpath -m "${1:-${VIDLOOM_DEVSET:-$HOME/.cache/vidloom/devset}}")

check() {  # prints the manifest paths that are missing or differ
  tail -n +2 "$HERE/MANIFEST.tsv" | while IFS=$'\t' read -r path _ _ _ _ _ sha; do
    f="$DEST/$path"
    if [ ! -f "$f" ] || [ "$(sha256sum "$f" | cut -c1-16)" != "$sha" ]; then echo "$path"; fi
  done
}

compilations() {  # labelled in tests/data/devset_truth.json as compilation/<name>.mp4
  command -v ffmpeg >/dev/null || { echo "devset: the compilations need ffmpeg (make system-deps)" >&2; exit 1; }
  mkdir -p "$DEST/videos/compilation"
  for name in transitions hard; do
    (cd "$DEST" && python3 "$HERE/make_compilation.py" "$name" "videos/compilation/$name.mp4") \
      || { echo "devset: building compilation/$name.mp4 failed" >&2; exit 1; }
  done
}

bad=$(check)
if [ -z "$bad" ]; then
  echo "devset: $(($(wc -l < "$HERE/MANIFEST.tsv") - 1)) videos verified in $DEST"
  compilations
  exit 0
fi
echo "devset: fetching into $DEST (missing or changed: $(echo "$bad" | wc -l) files)"
mkdir -p "$(dirname "$DEST")"  # the fetch log sits beside DEST
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO bash "$HERE/fetch_all.sh" "$DEST" >"$DEST.fetch.log" 2>&1 || { tail -20 "$DEST.fetch.log" >&2; exit 1; }
[ -z "$SUDO" ] || $SUDO chown -R "$(id -u):$(id -g)" "$DEST"
bad=$(check)
if [ -n "$bad" ]; then
  echo "devset: sha256 mismatch or missing after fetch:" >&2; echo "$bad" >&2; exit 1
fi
echo "devset: $(($(wc -l < "$HERE/MANIFEST.tsv") - 1)) videos verified in $DEST"
compilations
