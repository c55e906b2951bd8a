#!/bin/bash
# ctest image_runtime_packages: the runtime-package step of both Dockerfiles
# (k8s/images/effnet-image-stage packages), run on this build's binaries.
#   image_packages.sh BIN_DIR PYTHON
# - every tool the images ship exists in BIN_DIR;
# - every library they load resolves to a Debian package, with one explicit exception: the torch
#   wheel (torch/ and nvidia/ in PYTHON's site-packages, Note [provided libraries]); in
#   particular HDF5, gRPC, OpenMPI, OpenCV, spdlog and yaml-cpp, which the old
#   `ldd | dpkg -S` missed on merged-/usr Debian (Note [merged /usr]);
# - a library that no package owns (a copy of libhdf5_serial on LD_LIBRARY_PATH), or that the
#   loader cannot find, fails the step naming the library and the binary.
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
# A library the loader cannot find at all fails the step too (a program linked against a library
# that is then removed).
if command -v cc >/dev/null; then
  echo 'int gone(void) { return 0; }' >"$tmp/gone.c"
  echo 'int gone(void); int main(void) { return gone(); }' >"$tmp/main.c"
  cc -shared -fPIC -o "$tmp/libgone.so" "$tmp/gone.c" && cc -o "$tmp/uses-gone" "$tmp/main.c" \
    -L"$tmp" -lgone && rm "$tmp/libgone.so"
  set +e
  msg="$("$stage_tool" packages "$tmp/uses-gone" 2>&1)"
  rc=$?
  set -e
  echo "missing library: exit $rc: $msg"
  if [ "$rc" -ne 1 ] || ! grep -q "libgone.so (needed by $tmp/uses-gone): not found by the loader" <<<"$msg"; then
    echo "FAIL: a library the loader cannot find must fail the step naming it"
    fail=1
  fi
fi
[ "$fail" = 0 ] && echo PASS
exit "$fail"
