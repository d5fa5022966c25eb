#!/usr/bin/env bash
# Builds the perch .deb of one architecture from a finished build:
#   scripts/make_package.sh ARCH BUILD_DIR ORT_LIBRARY OUT_DIR
# ARCH is a Debian architecture (amd64, arm64). The binary's RUNPATH is
# rewritten to /usr/lib/perch, where the package puts ONNX Runtime; the
# package is then checked with lintian. See docs/install.md.
set -euo pipefail

arch="$1" build="$(realpath "$2")" ort_lib="$(realpath "$3")" out="$4"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=$(sed -n 's/^project(perch VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")

stage="$build/package-src"
rm -rf "$stage"
mkdir -p "$stage/packaging" "$stage/docs" "$out"
cp -r "$root/packaging/debian" "$stage/debian"
cp -r "$root/packaging/systemd" "$root/packaging/etc" "$root/packaging/perch.1" "$stage/packaging/"
cp "$root/docs/install.md" "$stage/docs/"
cat >"$stage/debian/changelog" <<CHANGELOG
perch ($version) unstable; urgency=medium

  * perch $version.

 -- perch maintainers <perch@example.org>  $(date -R -d "@$(git -C "$root" log -1 --format=%ct)")
CHANGELOG

# The build's RUNPATH points at the ONNX Runtime it was linked against; the
# package's at its own copy. CMake edits the ELF in place (any architecture).
cp "$build/perch" "$stage/perch"
echo 'file(RPATH_SET FILE "${FILE}" NEW_RPATH /usr/lib/perch)' >"$stage/rpath.cmake"
cmake -DFILE="$stage/perch" -P "$stage/rpath.cmake"

(cd "$stage" && PERCH_BUILD="$stage" PERCH_ORT_LIB="$ort_lib" DEB_BUILD_OPTIONS=noddebs \
  dpkg-buildpackage -b -us -uc -d -a"$arch" >"$build/package.log" 2>&1) || {
  tail -n 40 "$build/package.log"
  echo "make_package: dpkg-buildpackage failed; the whole log is $build/package.log" >&2
  exit 1
}
# The units as installed, with ExecStart pointing at the packed binary
# (systemd-analyze checks that it exists and is executable).
units="$build/package-units"
rm -rf "$units" && mkdir -p "$units"
for unit in "$stage"/debian/perch/lib/systemd/system/*.service; do
  sed "s|/usr/bin/perch|$stage/debian/perch/usr/bin/perch|" "$unit" >"$units/$(basename "$unit")"
done
systemd-analyze verify --man=no "$units"/*.service

deb="perch_${version}_${arch}.deb"
mv "$build/$deb" "$out/"
rm -f "$build"/perch_"${version}"_"${arch}".buildinfo "$build"/perch_"${version}"_"${arch}".changes
echo "make_package: $out/$deb"
lintian --fail-on warning --suppress-tags-from-file "$root/packaging/lintian-suppressed" "$out/$deb"
