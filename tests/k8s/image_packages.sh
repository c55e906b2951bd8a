#!/bin/bash
# ctest image_runtime_packages: the runtime-package step of both Dockerfiles
# (k8s/images/effnet-image-stage packages), run on this build's binaries.
#   image_packages.sh BIN_DIR PYTHON
# - every tool the images ship exists in BIN_DIR;
# - every library they load resolves to a Debian package, with one explicit exception: the torch
#   wheel (torch/ and nvidia/ in PYTHON's site-packages, Note [provided libraries]); in
#   particular HDF5, gRPC, OpenMPI, OpenCV, spdlog and yaml-cpp, which the old
#   `ldd | dpkg -S` missed on merged-/usr Debian (Note [merged /usr]);
# - a library that no package owns (a copy of libhdf5_serial on LD_LIBRARY_PATH) fails the step,
#   naming the library and the binary.
set -euo pipefail
bin="$(realpath "$1")"
python="$2"
here="$(cd "$(dirname "$0")" && pwd)"
stage_tool="$here/../../k8s/images/effnet-image-stage"
command -v dpkg-query >/dev/null || { echo "SKIP: no dpkg-query (not a Debian system)"; exit 77; }

site="$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
provided=(--provided "$site/torch")
[ -d "$site/nvidia" ] && provided+=(--provided "$site/nvidia")
echo "exceptions (the torch wheel): ${provided[*]}"

files=()
compiled="$("$stage_tool" targets)"
for t in $compiled; do
  [ -x "$bin/$t" ] || { echo "FAIL: $bin/$t missing (the images ship it)"; exit 1; }
  files+=("$bin/$t")
done

out="$("$stage_tool" packages "${provided[@]}" "${files[@]}")"
echo "$(echo "$out" | wc -l) packages: $(echo "$out" | tr '\n' ' ')"
fail=0
for want in libhdf5-103 libgrpc++ libopenmpi libopencv-imgcodecs libspdlog libyaml-cpp libprotobuf \
  libfmt; do
  echo "$out" | grep -q "^${want}" || { echo "FAIL: no package for ${want}*"; fail=1; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
hdf5_lib="$(ldd "$bin/effnet-inspect" | awk '/libhdf5_serial/{print $3}')"
[ -n "$hdf5_lib" ] || { echo "FAIL: effnet-inspect does not load libhdf5_serial"; exit 1; }
cp "$(realpath "$hdf5_lib")" "$tmp/$(basename "$hdf5_lib")"
set +e
msg="$(LD_LIBRARY_PATH="$tmp" "$stage_tool" packages "${provided[@]}" "$bin/effnet-inspect" 2>&1)"
rc=$?
set -e
echo "unowned library: exit $rc: $msg"
if [ "$rc" -ne 1 ] || ! grep -q "$tmp/$(basename "$hdf5_lib") (needed by $bin/effnet-inspect): no Debian package owns it" <<<"$msg"; then
  echo "FAIL: a library no package owns must fail the step naming it and the binary"
  fail=1
fi
[ "$fail" = 0 ] && echo PASS
exit "$fail"
