#!/bin/sh
# Command-line behaviour: --help, and every bad input of stage 1 gets one
# clear message naming the file and a non-zero exit (never a signal/crash).
# usage: cli_test.sh BUILD_DIR
set -u
B=$(cd "$1" && pwd)/tools
. "$(dirname "$0")/testlib.sh"

for p in vae-train vae-encode vae-reconstruct vae-decode ldm-train ldm-sample; do
    expect_ok "$p --help" "$B/$p" --help
    expect_fail "$p with an unknown flag" "unknown option" "$B/$p" --bogus
done

# Data sources.
expect_fail "missing data path" "$T/nope" "$B/vae-train" --data "$T/nope" --out "$T/v.h5" --steps 1
mkdir "$T/empty"
expect_fail "empty folder" "$T/empty" "$B/vae-train" --data "$T/empty" --out "$T/v.h5" --steps 1
mkdir "$T/junk"; echo "not an image" > "$T/junk/a.png"; head -c 100 /dev/urandom > "$T/junk/b.jpg"
expect_fail "folder with no decodable image" "$T/junk" "$B/vae-train" --data "$T/junk" --out "$T/v.h5" --steps 1
printf '\000\000\010\004abcdefgh' > "$T/bad-images-idx3-ubyte"
expect_fail "IDX with a wrong magic" "$T/bad-images-idx3-ubyte" "$B/vae-train" --data "$T/bad-images-idx3-ubyte" --out "$T/v.h5" --steps 1
FM=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
gzip -dc $FM | head -c 20000 > "$T/trunc-images-idx3-ubyte"
expect_fail "truncated IDX" "$T/trunc-images-idx3-ubyte" "$B/vae-train" --data "$T/trunc-images-idx3-ubyte" --out "$T/v.h5" --steps 1

# A tiny VAE to have real checkpoints and caches.
TINY="--data fashion-mnist-test --batch 8 --base-channels 4 --threads 1"
expect_ok "train a tiny VAE" "$B/vae-train" $TINY --out "$T/a.h5" --steps 3
expect_ok "train a tiny VAE with 2 latent channels" "$B/vae-train" $TINY --latent-channels 2 --out "$T/b.h5" --steps 2
expect_ok "resume to step 4" "$B/vae-train" --data fashion-mnist-test --out "$T/a.h5" --steps 4 --resume
expect_fail "resume with a contradicting --batch" "contradicts the checkpoint" "$B/vae-train" --data fashion-mnist-test --out "$T/a.h5" --steps 5 --resume --batch 64
expect_fail "resume with a contradicting --latent-channels" "contradicts the checkpoint" "$B/vae-train" --data fashion-mnist-test --out "$T/a.h5" --steps 5 --resume --latent-channels 8
expect_fail "resume on other data" "contradicts the checkpoint" "$B/vae-train" --data fashion-mnist --out "$T/a.h5" --steps 5 --resume
expect_ok "--resume without a checkpoint starts fresh" "$B/vae-train" $TINY --out "$T/fresh.h5" --steps 1 --resume
grep -q "starts a fresh run" "$T/err" && echo "PASS fresh-start message" || { echo "FAIL fresh-start message"; fails=$((fails + 1)); }

# Checkpoints that are not VAE checkpoints.
echo "hello" > "$T/text.h5"
expect_fail "checkpoint that is not HDF5" "$T/text.h5" "$B/vae-encode" --vae "$T/text.h5" --data fashion-mnist-test --out "$T/l.h5"
head -c 3000 "$T/a.h5" > "$T/trunc.h5"
expect_fail "truncated checkpoint" "$T/trunc.h5" "$B/vae-encode" --vae "$T/trunc.h5" --data fashion-mnist-test --out "$T/l.h5"
expect_fail "missing checkpoint" "$T/none.h5" "$B/vae-encode" --vae "$T/none.h5" --data fashion-mnist-test --out "$T/l.h5"

# Caches.
expect_ok "encode with the tiny VAE" "$B/vae-encode" --vae "$T/a.h5" --data fashion-mnist-test --out "$T/lat.h5" --threads 1
[ -f "$T/lat.h5" ] && ! ls "$T"/lat.h5.tmp.* >/dev/null 2>&1 && echo "PASS cache in place, no temporary left" || { echo "FAIL cache file"; fails=$((fails + 1)); }
expect_fail "a latent cache passed as a VAE checkpoint" "$T/lat.h5" "$B/vae-encode" --vae "$T/lat.h5" --data fashion-mnist-test --out "$T/l2.h5"
expect_ok "decode the cache with its VAE" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/lat.h5" --n 8 --out "$T/dec.png"
expect_fail "cache whose shapes disagree with the VAE" "latents are" "$B/vae-decode" --vae "$T/b.h5" --latents "$T/lat.h5" --n 8 --out "$T/dec.png"
expect_fail "a checkpoint passed as a cache" "$T/a.h5" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/a.h5" --n 8 --out "$T/dec.png"
expect_ok "reconstruct" "$B/vae-reconstruct" --vae "$T/a.h5" --data fashion-mnist-test --n 16 --out "$T/rec.png"
grep -q "PSNR" "$T/out" && echo "PASS reconstruct prints the PSNR" || { echo "FAIL reconstruct prints the PSNR"; fails=$((fails + 1)); }
expect_fail "unwritable output path" "$T/nodir/x.png" "$B/vae-reconstruct" --vae "$T/a.h5" --data fashion-mnist-test --n 4 --out "$T/nodir/x.png"

# Stage 2.
U="--base-channels 16 --batch 8 --threads 1"
expect_ok "train a tiny UNet" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u.h5" --steps 2 $U
expect_fail "a VAE checkpoint passed as a latent cache" "$T/a.h5" "$B/ldm-train" --latents "$T/a.h5" --out "$T/u2.h5" --steps 1 $U
expect_ok "encode with the 2-channel VAE" "$B/vae-encode" --vae "$T/b.h5" --data fashion-mnist-test --out "$T/latb.h5" --threads 1
expect_fail "resume on a cache of another latent shape" "$T/latb.h5" "$B/ldm-train" --latents "$T/latb.h5" --out "$T/u.h5" --steps 3 --resume
expect_fail "resume with a contradicting --schedule" "contradicts the checkpoint" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u.h5" --steps 3 --resume --schedule cosine
expect_fail "unknown schedule" "cosinus" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u3.h5" --steps 1 --schedule cosinus
expect_fail "attention at a side the UNet never reaches" "attention resolution 16" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u3.h5" --steps 1 --attn-res 16 $U
expect_fail "--sample-every without --vae" "needs --vae" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u3.h5" --steps 1 --sample-every 1
expect_ok "sample 4 images" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 4 --steps 3 --out "$T/s.png" --out-dir "$T/imgs" --threads 1
[ "$(ls "$T/imgs" | wc -l)" -eq 4 ] && echo "PASS --out-dir holds the 4 images only" || { echo "FAIL --out-dir contents"; fails=$((fails + 1)); }
expect_fail "sample grid past the file-size limit" "cannot write PNG" sh -c "ulimit -f 1; exec '$B/ldm-sample' --unet '$T/u.h5' --vae '$T/a.h5' --n 64 --steps 3 --out '$T/full.png' --threads 1"
[ ! -e "$T/full.png" ] && ! ls "$T"/full.png.tmp.* >/dev/null 2>&1 && echo "PASS no partial PNG left" || { echo "FAIL a partial PNG was left"; fails=$((fails + 1)); }
expect_fail "a VAE checkpoint passed as --unet" "expected a unet checkpoint" "$B/ldm-sample" --unet "$T/a.h5" --vae "$T/a.h5" --n 4 --out "$T/s.png"
expect_fail "a UNet checkpoint passed as --vae" "expected a vae checkpoint" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/u.h5" --n 4 --out "$T/s.png"
expect_fail "a VAE of another latent shape" "decodes" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/b.h5" --n 4 --out "$T/s.png"
expect_ok "train the tiny VAE one more step (new hash)" "$B/vae-train" --data fashion-mnist-test --out "$T/a.h5" --steps 5 --resume
expect_fail "a VAE whose hash differs" "hash" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 4 --out "$T/s.png"
expect_fail "DDIM steps larger than T" "--steps 1001" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 4 --steps 1001 --out "$T/s.png"
expect_fail "--n 0" "--n must be at least 1" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 0 --out "$T/s.png"
expect_fail "unwritable sample path" "$T/nodir/s.png" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 4 --out "$T/nodir/s.png"
expect_fail "unwritable checkpoint path" "$T/nodir/u.h5" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/nodir/u.h5" --steps 1 $U

# Folders larger than --max-memory are decoded while encoding (streamed): the
# same cache as when held decoded. 40 generated 32x32 PNGs; gen-images.sh
# needs cc and stb, as the build does. A file removed mid-run is tested in
# test_datasets (its timing is not the CLI's to control).
if ! "$(dirname "$0")/../tools/gen-images.sh" "$T/png" 40 32 >/dev/null 2>"$T/err"; then
    echo "FAIL tools/gen-images.sh"; sed 's/^/    /' "$T/err" | tail -5; fails=$((fails + 1))
fi
expect_ok "encode a PNG folder held decoded" "$B/vae-encode" --vae "$T/a.h5" --data "$T/png" --out "$T/latp.h5" --batch 8 --threads 1
expect_ok "encode it streamed (--max-memory 20K)" "$B/vae-encode" --vae "$T/a.h5" --data "$T/png" --out "$T/lats.h5" --batch 8 --threads 1 --max-memory 20K
if ! command -v h5diff >/dev/null 2>&1; then
    echo "SKIP streamed == held decoded (h5diff not found: apt-get install hdf5-tools)"
elif h5diff "$T/latp.h5" "$T/lats.h5" >"$T/out" 2>&1; then
    echo "PASS streamed cache == held-decoded cache (h5diff)"
else
    echo "FAIL streamed cache differs from the held-decoded one"; sed 's/^/    /' "$T/out" | tail -5; fails=$((fails + 1))
fi
expect_fail "--max-memory below two batches" "raise --max-memory" "$B/vae-encode" --vae "$T/a.h5" --data "$T/png" --out "$T/latx.h5" --batch 8 --max-memory 1K
expect_fail "--max-memory not a size" "expects a size" "$B/vae-encode" --vae "$T/a.h5" --data "$T/png" --out "$T/latx.h5" --max-memory 12X
# Unclamped, a batch of 100000 would allocate GBs of activations.
expect_ok "--batch 100000 on 40 images fits in 1.5 GB" sh -c "ulimit -v 1500000; exec '$B/vae-encode' --vae '$T/a.h5' --data '$T/png' --out '$T/latb.h5' --batch 100000 --threads 1"

# Samplers, classes and guidance (ldm-sample). A cache of the labelled test
# set with the current VAE, a conditional and an unconditional UNet on it.
# expect_exit2 DESC PATTERN CMD...: a usage error: exit 2 and PATTERN in stderr.
expect_exit2() {
    desc=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -eq 2 ] && grep -q -- "$pat" "$T/err"; then
        echo "PASS $desc (exit 2: $(grep -m1 -- "$pat" "$T/err"))"
    else
        echo "FAIL $desc (exit $rc, wanted 2 and a message matching '$pat')"; sed 's/^/    /' "$T/err" | tail -5
        fails=$((fails + 1))
    fi
}
expect_ok "encode the labelled test set with the current VAE" "$B/vae-encode" --vae "$T/a.h5" --data fashion-mnist-test --out "$T/latc.h5" --threads 1
expect_ok "train a tiny class-conditional UNet" "$B/ldm-train" --latents "$T/latc.h5" --out "$T/uc.h5" --steps 1 --num-classes 10 $U
expect_ok "train a tiny unconditional UNet" "$B/ldm-train" --latents "$T/latc.h5" --out "$T/un.h5" --steps 1 $U
SU="--vae $T/a.h5 --n 2 --steps 3 --threads 1"
for s in ddpm ddim dpmpp2m euler_a; do
    expect_ok "--sampler $s" "$B/ldm-sample" --unet "$T/un.h5" $SU --sampler $s --out "$T/s-$s.png"
done
expect_exit2 "unknown sampler" "unknown sampler 'euler'" "$B/ldm-sample" --unet "$T/un.h5" $SU --sampler euler --out "$T/s.png"
expect_exit2 "DPM-Solver++ steps larger than T" "--steps 1001" "$B/ldm-sample" --unet "$T/un.h5" --vae "$T/a.h5" --sampler dpmpp2m --steps 1001 --out "$T/s.png"
expect_ok "--class 7 --guidance 3 (DPM-Solver++)" "$B/ldm-sample" --unet "$T/uc.h5" $SU --sampler dpmpp2m --class 7 --guidance 3 --out "$T/c7.png"
grep -q "class 7 (Sneaker)" "$T/err" && echo "PASS the progress line names the class" || { echo "FAIL the progress line names the class"; sed 's/^/    /' "$T/err" | tail -3; fails=$((fails + 1)); }
expect_ok "--class by name" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class "Ankle boot" --out "$T/c9.png"
grep -q "class 9 (Ankle boot)" "$T/err" && echo "PASS --class Ankle boot is class 9" || { echo "FAIL --class by name"; fails=$((fails + 1)); }
expect_ok "no --class on a conditional UNet (the null class)" "$B/ldm-sample" --unet "$T/uc.h5" $SU --sampler euler_a --out "$T/cn.png"
expect_ok "--class all: a row per class" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class all --guidance 2 --out "$T/all.png" --out-dir "$T/all"
[ "$(ls "$T/all" | wc -l)" -eq 20 ] && echo "PASS --class all --n 2 --out-dir holds 20 images" || { echo "FAIL --class all --out-dir contents"; fails=$((fails + 1)); }
# 10 rows of 2 images of 32 x 32: taller than wide (width and height from the PNG header)
set -- $(od -An -tu1 -j16 -N8 "$T/all.png" 2>/dev/null) 0 0 0 0 0 0 0 0
w=$(( ($1 << 24) + ($2 << 16) + ($3 << 8) + $4 )) h=$(( ($5 << 24) + ($6 << 16) + ($7 << 8) + $8 ))
[ "$w" -gt 0 ] && [ "$h" -gt $((4 * w)) ] && echo "PASS --class all grid is 10 rows of 2 ($w x $h)" || { echo "FAIL --class all grid shape ($w x $h)"; fails=$((fails + 1)); }
expect_exit2 "--class out of range" "out of range" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class 10 --out "$T/s.png"
expect_exit2 "--class neither a number nor a name" "neither 'all', a class number" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class Sneakers --out "$T/s.png"
expect_exit2 "--class on an unconditional UNet" "unconditional UNet" "$B/ldm-sample" --unet "$T/un.h5" $SU --class 1 --out "$T/s.png"
expect_exit2 "--guidance NaN" "--guidance must be a finite number" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class 1 --guidance nan --out "$T/s.png"
expect_exit2 "--guidance negative" "--guidance must be at least 0" "$B/ldm-sample" --unet "$T/uc.h5" $SU --class 1 --guidance -1 --out "$T/s.png"
expect_exit2 "--class all grid too large" "use --out-dir" "$B/ldm-sample" --unet "$T/uc.h5" --vae "$T/a.h5" --class all --n 500 --out "$T/s.png"
expect_ok "train a conditional UNet without label dropout" "$B/ldm-train" --latents "$T/latc.h5" --out "$T/uc0.h5" --steps 1 --num-classes 10 --p-uncond 0 $U
expect_ok "--guidance on it" "$B/ldm-sample" --unet "$T/uc0.h5" $SU --class 2 --guidance 3 --out "$T/s.png"
grep -q "warning: .*without label dropout" "$T/err" && echo "PASS it warns: trained without label dropout" || { echo "FAIL no label-dropout warning"; fails=$((fails + 1)); }
expect_ok "--guidance without --class" "$B/ldm-sample" --unet "$T/un.h5" $SU --guidance 3 --out "$T/s.png"
grep -q "warning: .*--guidance without --class has no effect" "$T/err" && echo "PASS it warns: no effect without --class" || { echo "FAIL no warning for --guidance without --class"; fails=$((fails + 1)); }

# Class labels: folders of class sub-folders (vae-encode), ldm-train
# --num-classes. "bag b/" sorts before "bag/" as a path but after it as a
# name: items 0-2 (bag b) are class 1, 3-5 (bag) class 0, 6-8 (shoe) class 2.
for c in shoe bag "bag b"; do
    "$(dirname "$0")/../tools/gen-images.sh" "$T/kcls/$c" 3 32 >/dev/null 2>"$T/err" ||
        { echo "FAIL tools/gen-images.sh"; sed 's/^/    /' "$T/err" | tail -5; fails=$((fails + 1)); }
done
expect_ok "encode a folder of class sub-folders" "$B/vae-encode" --vae "$T/a.h5" --data "$T/kcls" --out "$T/kcls.h5" --threads 1 --batch 2
grep -q "3 classes: 0 bag, 1 bag b, 2 shoe" "$T/err" && echo "PASS vae-encode names the classes in byte order" || { echo "FAIL vae-encode class line"; sed 's/^/    /' "$T/err" | tail -3; fails=$((fails + 1)); }
# h5val -a /ATTR FILE, h5val -d /DATASET FILE: the value(s), whitespace squeezed
h5val() { h5dump -y -w 0 "$1" "$2" "$3" 2>/dev/null | sed -n '/DATA {/,/^ *}/p' | sed '1d;$d' | tr -s ' \n' ' ' | sed 's/^ //;s/ $//'; }
if ! command -v h5dump >/dev/null 2>&1; then
    echo "SKIP cache labels and class names (h5dump not found: apt-get install hdf5-tools)"
else
    v=$(h5val -d /labels "$T/kcls.h5")
    [ "$v" = "1, 1, 1, 0, 0, 0, 2, 2, 2" ] && echo "PASS the cache's labels follow the class folders ($v)" || { echo "FAIL cache labels: '$v'"; fails=$((fails + 1)); }
    v=$(h5val -a /class_names "$T/kcls.h5")
    [ "$v" = '"bag bag b shoe"' ] && echo "PASS the cache's class_names attribute ($v)" || { echo "FAIL class_names: '$v'"; fails=$((fails + 1)); }
fi
expect_ok "encode it streamed (--max-memory 5K)" "$B/vae-encode" --vae "$T/a.h5" --data "$T/kcls" --out "$T/kcls2.h5" --threads 1 --batch 2 --max-memory 5K
if command -v h5diff >/dev/null 2>&1; then
    h5diff "$T/kcls.h5" "$T/kcls2.h5" >"$T/out" 2>&1 && echo "PASS streamed labelled cache == held-decoded one (h5diff)" || { echo "FAIL streamed labelled cache differs"; fails=$((fails + 1)); }
fi
# 90 classes of 52-character names: 4769 bytes, more than an attribute holds.
for i in $(seq 10 99); do
    d="$T/klong/class-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; mkdir -p "$d"
    cp "$T/kcls/bag/000/000000.png" "$d/"
done
expect_ok "encode 90 classes whose names do not fit an attribute" "$B/vae-encode" --vae "$T/a.h5" --data "$T/klong" --out "$T/klong.h5" --threads 1
grep -q "warning: .*90 classes take 4769 bytes.*keeps the labels without the names" "$T/err" && grep -q ", labels$" "$T/err" && echo "PASS ... warns, keeps the labels without names" || { echo "FAIL long class names"; sed 's/^/    /' "$T/err" | tail -3; fails=$((fails + 1)); }
mkdir -p "$T/kmix/sub"
cp "$T/kcls/bag/000/000000.png" "$T/kmix/"; cp "$T/kcls/bag/000/000001.png" "$T/kmix/sub/"
expect_ok "a folder mixing root images and sub-folders encodes" "$B/vae-encode" --vae "$T/a.h5" --data "$T/kmix" --out "$T/kmix.h5" --threads 1
grep -q "warning: .*1 images directly in the folder.*no class labels" "$T/err" && echo "PASS ... with a warning and no labels" || { echo "FAIL mixed-folder warning"; sed 's/^/    /' "$T/err" | tail -3; fails=$((fails + 1)); }
mkdir -p "$T/knl/a
b"
cp "$T/kcls/bag/000/000000.png" "$T/knl/a
b/"
expect_fail "a class folder name with a line break" "holds a line break" "$B/vae-encode" --vae "$T/a.h5" --data "$T/knl" --out "$T/knl.h5" --threads 1
K="--base-channels 16 --batch 4 --threads 1"
expect_ok "conditional ldm-train on the class folders" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku.h5" --steps 2 --num-classes 3 $K
grep -q "class-conditional on 3 classes (named)" "$T/err" && echo "PASS ldm-train says it trains on 3 named classes" || { echo "FAIL ldm-train class line"; fails=$((fails + 1)); }
if command -v h5dump >/dev/null 2>&1; then
    v="$(h5val -a /num_classes "$T/ku.h5") $(h5val -a /p_uncond "$T/ku.h5") $(h5val -a /class_names "$T/ku.h5")"
    [ "$v" = '3 0.1 "bag bag b shoe"' ] && echo "PASS the checkpoint records num_classes, p_uncond, class_names ($v)" || { echo "FAIL checkpoint class attributes: '$v'"; fails=$((fails + 1)); }
fi
expect_fail "--num-classes on a cache without labels" "kmix.h5: the cache has no labels" "$B/ldm-train" --latents "$T/kmix.h5" --out "$T/ku2.h5" --steps 1 --num-classes 2 $K
expect_fail "--num-classes other than the cache's named classes" "names 3 classes, not the 4" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku2.h5" --steps 1 --num-classes 4 $K
expect_ok "encode the test set by path (labels, no names)" "$B/vae-encode" --vae "$T/a.h5" --data "$FM" --out "$T/kfm.h5" --threads 1
expect_fail "labels outside 0..K-1: the cache and the first item named" "kfm.h5: item 0 has label 9, outside 0..4" "$B/ldm-train" --latents "$T/kfm.h5" --out "$T/ku2.h5" --steps 1 --num-classes 5 $K
expect_fail "--resume with another --num-classes" "--num-classes 4 contradicts the checkpoint" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku.h5" --steps 3 --resume --num-classes 4
expect_fail "--resume of an unconditional run with --num-classes" "--num-classes 10 contradicts the checkpoint .*(0)" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u.h5" --steps 3 --resume --num-classes 10
expect_fail "--resume with another --p-uncond" "--p-uncond 0.5 contradicts the checkpoint" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku.h5" --steps 3 --resume --p-uncond 0.5
expect_fail "--p-uncond without --num-classes" "--p-uncond needs a class-conditional run" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku2.h5" --steps 1 --p-uncond 0.2 $K
expect_fail "--p-uncond above 1" "--p-uncond must be at most 1" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku2.h5" --steps 1 --num-classes 3 --p-uncond 1.5 $K
expect_fail "--num-classes negative" "--num-classes must be at least 0" "$B/ldm-train" --latents "$T/kcls.h5" --out "$T/ku2.h5" --steps 1 --num-classes -1 $K

finish cli_test
