#!/bin/sh
# Installs what is missing (Debian packages), then configures and builds
# ldm.c into ./build. Used by tools/demo.sh, tests/run.sh and CI.
set -eu
cd "$(dirname "$0")/.."
PKGS="${LDM_EXTRA_PKGS:-} gcc pkg-config meson ninja-build libopenblas-openmp-dev libhdf5-dev libstb-dev zlib1g-dev dataset-fashion-mnist"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi
[ -f build/build.ninja ] || meson setup build --buildtype=release
meson compile -C build
