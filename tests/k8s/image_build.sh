#!/bin/bash
# ctest image_cpu_build (label image): builds k8s/images/cpu.Dockerfile for real with buildah and
# runs tools inside the image as its user:
#   image_build.sh SOURCE_DIR BIN_DIR PYTHON
# 1. A Debian 12 base made with debootstrap from Debian's archive (no registry is reachable here),
#    cached as a tar under ${EFFNET_CACHE_DIR:-~/.cache/effnet}, imported as debian:12.12-slim.
# 2. effnet-image-stage stage: this build's tools, the torch wheel's libraries and the runtime
#    packages (Note [artifacts] in the Dockerfile: --build-arg ARTIFACTS=prebuilt, no compile).
# 3. buildah bud of the runtime stage (apt installs the resolved packages, the user, the loader
#    cache, the in-image check that every tool loads).
# 4. In the image, as effnet: effnet-inspect --help; every tool on PATH; sshd -t with the image's
#    sshd config; effnet-synth + effnet-prepare + effnet-train for one epoch of a tiny model;
#    effnet-run with 2 ranks under mpirun (as the MPIJob launcher runs it, without root).
# Exit 77 (skipped) without root, buildah or debootstrap. Storage: vfs under a temporary folder,
# removed at the end; downloaded .debs are cached next to the base.
set -euo pipefail
src="$(realpath "$1")"
bin="$(realpath "$2")"
python="$3"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (buildah with vfs storage and chroot isolation)"
command -v buildah >/dev/null || skip "no buildah (apt-get install -y buildah debootstrap)"
command -v debootstrap >/dev/null || skip "no debootstrap (apt-get install -y buildah debootstrap)"

t0=$(date +%s)
say() { echo "[image_build +$(($(date +%s) - t0))s] $*"; }
cache="${EFFNET_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/effnet}"
mirror="${EFFNET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tag="$(sed -n 's/^ARG DEBIAN_TAG=//p' "$src/k8s/images/cpu.Dockerfile")"
mkdir -p "$cache/apt-archives"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/effnet-image.XXXXXX")"
B=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() {
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Base image (Debian 12 minbase with bookworm, -updates and -security, like debian:12-slim).
base="$cache/debian-12-minbase.tar"
if [ ! -f "$base" ]; then
  say "debootstrap bookworm from $mirror (cached as $base)"
  root="$work/rootfs"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; echo "FAIL: debootstrap"; exit 1; }
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  tar -C "$root" --numeric-owner -cf "$base.tmp" .
  mv "$base.tmp" "$base"
  rm -rf "$root"
fi
say "base $(du -h "$base" | cut -f1); importing as debian:$tag"
ctr="$("${B[@]}" from scratch)"
"${B[@]}" add "$ctr" "$base" / >/dev/null
"${B[@]}" config --cmd /bin/bash "$ctr"
"${B[@]}" commit --quiet "$ctr" "docker.io/library/debian:$tag" >/dev/null
"${B[@]}" rm "$ctr" >/dev/null

# 2. The build context: the staged artifacts of this build.
site="$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
venv="${site%/lib/python3*/site-packages}"
"$src/k8s/images/effnet-image-stage" stage --bin "$bin" --source "$src" --venv "$venv" \
  --out "$work/context/stage"
say "staged $(du -sh "$work/context/stage" | cut -f1)"

# 3. The image.
"${B[@]}" bud --isolation chroot --pull=never --layers=false --build-arg ARTIFACTS=prebuilt \
  --volume "$cache/apt-archives:/var/cache/apt/archives" \
  -f "$src/k8s/images/cpu.Dockerfile" -t localhost/effnet-dist:test "$work/context" \
  >"$work/bud.log" 2>&1 || { tail -40 "$work/bud.log"; echo "FAIL: buildah bud"; exit 1; }
size="$("${B[@]}" images --format '{{.Size}}' localhost/effnet-dist:test)"
say "built localhost/effnet-dist:test ($size)"

# 4. Tools inside the image, as its user.
ctr="$("${B[@]}" from localhost/effnet-dist:test)"
run() { "${B[@]}" run --isolation chroot "$ctr" -- "$@"; }
fail=0
check() {  # check WHAT COMMAND...: runs COMMAND in the image, reports, counts failures
  local what="$1"; shift
  if out="$(run "$@" 2>&1)"; then
    say "ok: $what"
  else
    echo "$out" | tail -20
    echo "FAIL: $what"
    fail=1
  fi
}
check "runs as effnet" sh -c '[ "$(id -un)" = effnet ] && [ "$HOME" = /home/effnet ] || { id; exit 1; }'
check "effnet-inspect --help" effnet-inspect --help
check "every tool is on PATH" sh -c 'for t in '"$("$src/k8s/images/effnet-image-stage" tools | tr '\n' ' ')"'; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done'
check "sshd -t with the image's config (port 2222)" sh -c \
  'ssh-keygen -q -t rsa -N "" -f ~/.ssh/id_rsa && /usr/sbin/sshd -t -f ~/.sshd_config && grep -q "^Port 2222" ~/.sshd_config && ssh -G localhost | grep -q "^port 2222"'
cat >"$work/tiny.yaml" <<YAML
job: {epochs: 1, seed: 7, progressive: {num_stages: 1, min_image_size: 32, max_image_size: 32}}
model: {variant: b0, extra_width: 0.25, extra_depth: 0.25}
data: {batch_size: 8, eval_image_size: 32}
runtime: {threads: 1}
YAML
"${B[@]}" copy --chown 1000:1000 "$ctr" "$work/tiny.yaml" /home/effnet/tiny.yaml >/dev/null
check "effnet-synth + effnet-prepare + 1-epoch effnet-train" sh -c \
  'cd ~ && effnet-synth --out synth --per-class 6 --size 32 --seed 3 >/dev/null &&
   effnet-prepare --csv synth/synth.csv --images synth/images --out data.h5 --size 32 >/dev/null &&
   effnet-train --config tiny.yaml --data data.h5 --out run >train.log 2>&1 || { tail -20 train.log; exit 1; }
   test -f run/summary.json && effnet-inspect data.h5 >/dev/null'
# What the MPIJob launcher does, as the same user: mpirun (no --allow-run-as-root) under
# effnet-run, with the coordinator, two ranks, one epoch.
check "effnet-run --np 2 (coordinator + mpirun + 2 effnet-worker ranks, non-root)" sh -c \
  'cd ~ && effnet-run --np 2 --oversubscribe --config tiny.yaml --data data.h5 --out run2 \
     >run2.log 2>&1 || { tail -30 run2.log; exit 1; }
   test -f run2/summary.json'
say "done ($([ $fail = 0 ] && echo PASS || echo FAIL)); cleaning the vfs storage"
exit "$fail"
