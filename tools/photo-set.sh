#!/bin/sh
# Builds an RGB photograph set from photographs Debian 12 packages ship:
# random crops of random scale, area-averaged to SIZE x SIZE PNGs, in
# OUT/train/ and OUT/test/, the test crops from photographs held out of
# training (OUT/sources.txt says which went where). Deterministic from the
# seed and the package versions. Nothing of it is committed.
#
# Sources: 45 photographs, every one checked by eye to be a photograph (not
# a drawing or a render) out of the images these packages ship:
#   lomiri-wallpapers-16.04   14  (umang is a render; left out)
#   lomiri-wallpapers-20.04    1  (the others are renders or composites)
#   mate-backgrounds          12  (nature/; abstract/ and desktop/ are renders)
#   plasma-workspace-wallpapers 11 (most KDE wallpapers are renders)
#   python3-skimage            5  (the colour photographs of skimage.data)
#   python3-sklearn            2  (china.jpg, flower.jpg)
# The four wallpaper packages hold data only (no dependencies) and are
# installed with apt-get as tools/setup.sh installs. python3-skimage and
# python3-sklearn would pull in some 120 Python packages for 7 images, so
# unless they are installed already only their .deb files are fetched
# (apt-get download) and unpacked under OUT/.debs/ (dpkg-deb -x).
set -eu

usage() {
    cat <<EOF
usage: $0 OUT [--n 5000] [--test 500] [--size 64] [--seed 0]

Writes N training and TEST held-out crops (RGB PNGs of SIZE x SIZE pixels,
crops of random side between 1/8 and 1/2 of a photo's shorter side,
area-averaged) into OUT/train/ and OUT/test/. The held-out crops come from
photographs that no training crop is taken from. Installs the Debian
packages that ship the photographs when missing (apt-get, through sudo when
not root), builds gen-crops in ./build if needed (or uses \$GEN_CROPS).
OUT/train and OUT/test must not exist or be empty.
EOF
}

OUT=""
N=5000 TEST=500 SIZE=64 SEED=0
while [ $# -gt 0 ]; do
    case "$1" in
    -h|--help) usage; exit 0 ;;
    --n|--test|--size|--seed)
        [ $# -ge 2 ] || { echo "photo-set: $1 needs a value" >&2; exit 2; }
        case "$1" in
        --n) N=$2 ;; --test) TEST=$2 ;; --size) SIZE=$2 ;; --seed) SEED=$2 ;;
        esac
        shift 2 ;;
    -*) echo "photo-set: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *)
        [ -z "$OUT" ] || { echo "photo-set: one output folder only (got '$OUT' and '$1')" >&2; exit 2; }
        OUT=$1; shift ;;
    esac
done
[ -n "$OUT" ] || { usage >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# package<TAB>path, one photograph a line.
SOURCES="lomiri-wallpapers-16.04	/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/Dragonfly_by_Bolly.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/Picture_0B_by_freespace.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/Picture_1A_by_freespace.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/Wine_by_Jakkub_Mede.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/aitzgorri_by_Aitzol_Berasategi.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/analogpattern_by_Peter_Nerlich.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/free_by_Peter_Nerlich.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/greentock_by_Peter_Nerlich.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/seeding_by_Clements_Engelhardt.jpg
lomiri-wallpapers-16.04	/usr/share/backgrounds/sunset_by_Aitzol_Berasategi.jpg
lomiri-wallpapers-20.04	/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Aqua.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Blinds.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Dune.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/FreshFlower.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Garden.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/GreenMeadow.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/LadyBird.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/RainDrops.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Storm.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/TwoWings.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/Wood.jpg
mate-backgrounds	/usr/share/backgrounds/mate/nature/YellowFlower.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/BytheWater/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/ColdRipple/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/ColorfulCups/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/DarkestHour/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/EveningGlow/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/FallenLeaf/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/Grey/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/Kite/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/OneStandsOut/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/Path/contents/images/2560x1600.jpg
plasma-workspace-wallpapers	/usr/share/wallpapers/summer_1am/contents/images/2560x1600.jpg
python3-skimage	/usr/lib/python3/dist-packages/skimage/data/astronaut.png
python3-skimage	/usr/lib/python3/dist-packages/skimage/data/chelsea.png
python3-skimage	/usr/lib/python3/dist-packages/skimage/data/coffee.png
python3-skimage	/usr/lib/python3/dist-packages/skimage/data/motorcycle_left.png
python3-skimage	/usr/lib/python3/dist-packages/skimage/data/rocket.jpg
python3-sklearn	/usr/lib/python3/dist-packages/sklearn/datasets/images/china.jpg
python3-sklearn	/usr/lib/python3/dist-packages/sklearn/datasets/images/flower.jpg"
INSTALL="lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 mate-backgrounds plasma-workspace-wallpapers"
UNPACK="python3-skimage python3-sklearn"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for p in $INSTALL; do installed "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    echo "photo-set: installing$missing" >&2
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

mkdir -p "$OUT"
DEBS="$OUT/.debs"
for p in $UNPACK; do
    installed "$p" && continue
    if [ ! -d "$DEBS/$p" ]; then
        echo "photo-set: fetching $p (its images only; not installed)" >&2
        mkdir -p "$DEBS/dl"
        # apt-get download needs the package lists; on a fresh machine they
        # may be missing.
        (cd "$DEBS/dl" && apt-get download "$p") ||
            { $SUDO apt-get update -q && (cd "$DEBS/dl" && apt-get download "$p"); }
        dpkg-deb -x "$DEBS/dl/${p}"_*.deb "$DEBS/$p.tmp"
        mv "$DEBS/$p.tmp" "$DEBS/$p"
        rm -f "$DEBS/dl/${p}"_*.deb
    fi
done

# The photo list gen-crops reads: installed files in place, unpacked ones
# under OUT/.debs/<package>.
LIST="$OUT/photos.txt"
printf '%s\n' "$SOURCES" | while IFS='	' read -r pkg path; do
    if installed "$pkg"; then f=$path; else f="$DEBS/$pkg$path"; fi
    [ -r "$f" ] || { echo "photo-set: $f: missing (package $pkg)" >&2; exit 1; }
    printf '%s\n' "$f"
done > "$LIST"

GEN=${GEN_CROPS:-}
if [ -z "$GEN" ]; then
    GEN="$ROOT/build/tools/gen-crops"
    if [ ! -x "$GEN" ]; then
        [ -f "$ROOT/build/build.ninja" ] || meson setup "$ROOT/build" "$ROOT" --buildtype=release
        ninja -C "$ROOT/build" tools/gen-crops
    fi
fi
"$GEN" --list "$LIST" --out "$OUT" --n "$N" --test "$TEST" --size "$SIZE" --seed "$SEED"
