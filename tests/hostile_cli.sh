#!/bin/sh
# Hostile paths, files and flags through the real tools: no crash, no hang,
# no overwritten input, no silent garbage.
#   - an output that is an input (same path, a hard link, a symlink, a log or
#     plot beside --out, a file --keep would delete): refused, input intact;
#   - a folder, FIFO or missing folder where a file goes, a file where a
#     folder goes: refused;
#   - a 600-character path works end to end; one the OS cannot take (or whose
#     temporary could not be named) is refused with a message, not a crash;
#   - a FIFO given as a checkpoint, cache or log: refused, no hang;
#   - NaN, infinite or huge weights, a negative Adam moment, a broken
#     scale_factor, schedule or prediction in a checkpoint: refused with the
#     file named, no black images;
#   - ldm-sample --n 10^9 --out-dir writes batch by batch in bounded memory;
#     a grid that large is refused;
#   - a second Ctrl-C while a checkpoint or cache is written: no temporary
#     file left.
# usage: hostile_cli.sh BUILD_DIR
set -u
BUILD=$(cd "$1" && pwd)
B=$BUILD/tools
POKE=$BUILD/tests/h5poke
. "$(dirname "$0")/testlib.sh"

# Tiny models: a VAE, its cache, a UNet.
V="--data fashion-mnist-test --batch 16 --base-channels 4 --threads 1 --eval-every 1000"
U="--base-channels 16 --batch 8 --threads 1 --eval-every 1000"
S="--n 4 --steps 2 --threads 1"
expect_ok "train a tiny VAE" "$B/vae-train" $V --out "$T/a.h5" --steps 3
expect_ok "encode its cache" "$B/vae-encode" --vae "$T/a.h5" --data fashion-mnist-test --out "$T/lat.h5" --threads 1
expect_ok "train a tiny UNet" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/u.h5" --steps 2 $U
for f in a.h5 lat.h5 u.h5; do cp "$T/$f" "$T/$f.orig"; done

# ---------------------------------------------------------------- outputs that are inputs
# On copies (sa, su, slat), so that a case that fails does not spoil the others.
for f in a u lat; do cp "$T/$f.h5" "$T/s$f.h5"; done
expect_fail "ldm-sample --out = --unet" "same file as --unet" "$B/ldm-sample" --unet "$T/su.h5" --vae "$T/sa.h5" $S --out "$T/su.h5"
expect_fail "ldm-sample --out = --vae" "same file as --vae" "$B/ldm-sample" --unet "$T/su.h5" --vae "$T/sa.h5" $S --out "$T/sa.h5"
ln "$T/sa.h5" "$T/a-hardlink.png"
expect_fail "ldm-sample --out a hard link to --vae" "same file as --vae" "$B/ldm-sample" --unet "$T/su.h5" --vae "$T/sa.h5" $S --out "$T/a-hardlink.png"
ln -s su.h5 "$T/u-symlink.png"
expect_fail "ldm-sample --out a symlink to --unet" "same file as --unet" "$B/ldm-sample" --unet "$T/su.h5" --vae "$T/sa.h5" $S --out "$T/u-symlink.png"
expect_fail "ldm-sample --out another spelling of --unet" "same file as --unet" "$B/ldm-sample" --unet "$T/su.h5" --vae "$T/sa.h5" $S --out "$T/./../$(basename "$T")/su.h5"
expect_fail "vae-decode --out = --vae" "same file as --vae" "$B/vae-decode" --vae "$T/sa.h5" --latents "$T/slat.h5" --n 4 --out "$T/sa.h5"
expect_fail "vae-decode --out = --latents" "same file as --latents" "$B/vae-decode" --vae "$T/sa.h5" --latents "$T/slat.h5" --n 4 --out "$T/slat.h5"
expect_fail "vae-reconstruct --out = --vae" "same file as --vae" "$B/vae-reconstruct" --vae "$T/sa.h5" --data fashion-mnist-test --n 4 --out "$T/sa.h5"
gzip -dc /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz > "$T/d-images-idx3-ubyte"
cp "$T/d-images-idx3-ubyte" "$T/d.orig"
expect_fail "vae-reconstruct --out = its IDX --data" "same file as --data" "$B/vae-reconstruct" --vae "$T/sa.h5" --data "$T/d-images-idx3-ubyte" --n 4 --out "$T/d-images-idx3-ubyte"
expect_fail "vae-train --out = its IDX --data" "same file as --data" "$B/vae-train" --data "$T/d-images-idx3-ubyte" --out "$T/d-images-idx3-ubyte" --steps 1 --batch 8 --base-channels 4 --threads 1
expect_fail "vae-train --resume --out = its IDX --data" "same file as --data" "$B/vae-train" --data "$T/d-images-idx3-ubyte" --out "$T/d-images-idx3-ubyte" --steps 1 --resume
check "  ... the IDX file is intact" cmp -s "$T/d-images-idx3-ubyte" "$T/d.orig"
cp "$T/sa.h5" "$T/enc.h5"
expect_fail "vae-encode --out = --vae" "same file as --vae" "$B/vae-encode" --vae "$T/enc.h5" --data fashion-mnist-test --out "$T/enc.h5" --threads 1
check "  ... the VAE is intact" cmp -s "$T/enc.h5" "$T/a.h5"
expect_fail "ldm-train --out = --latents" "same file as --latents" "$B/ldm-train" --latents "$T/slat.h5" --out "$T/slat.h5" --steps 1 $U
expect_fail "ldm-train --out = --vae" "same file as --vae" "$B/ldm-train" --latents "$T/slat.h5" --vae "$T/sa.h5" --sample-every 1 --out "$T/sa.h5" --steps 1 $U
cp "$T/slat.h5" "$T/c.log.jsonl"
expect_fail "ldm-train: the log beside --out = --latents" "the log of --out is the same file as --latents" "$B/ldm-train" --latents "$T/c.log.jsonl" --out "$T/c" --steps 1 $U
cp "$T/slat.h5" "$T/c.loss.png"
expect_fail "ldm-train: the loss plot beside --out = --latents" "the loss plot of --out is the same file as --latents" "$B/ldm-train" --latents "$T/c.loss.png" --out "$T/c.h5" --steps 1 $U
cp "$T/slat.h5" "$T/k.step7.h5"
expect_fail "ldm-train --keep would delete --latents k.step7.h5" "step-numbered copy" "$B/ldm-train" --latents "$T/k.step7.h5" --out "$T/k.h5" --keep 1 --steps 1 $U
check "  ... every input is intact" cmp -s "$T/sa.h5" "$T/a.h5"
check "  ... (cache)" cmp -s "$T/slat.h5" "$T/lat.h5"
check "  ... (UNet)" cmp -s "$T/su.h5" "$T/u.h5"

# ---------------------------------------------------------------- folders, FIFOs, missing folders
mkdir "$T/dir.png" "$T/dir.h5"
expect_fail "ldm-sample --out a folder" "is a folder" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" $S --out "$T/dir.png"
expect_fail "vae-train --out a folder" "is a folder" "$B/vae-train" $V --out "$T/dir.h5" --steps 1
expect_fail "vae-decode --out ending with /" "names a folder" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/lat.h5" --n 4 --out "$T/new/"
mkfifo "$T/out.fifo"
expect_fail "ldm-sample --out a FIFO" "not a regular file" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" $S --out "$T/out.fifo"
check "  ... the FIFO is still a FIFO" test -p "$T/out.fifo"
expect_fail "vae-reconstruct --out in a missing folder" "No such file" "$B/vae-reconstruct" --vae "$T/a.h5" --data fashion-mnist-test --n 4 --out "$T/nodir/r.png"
expect_fail "ldm-train --out under a file" "Not a directory" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/a.h5/u.h5" --steps 1 $U
expect_fail "ldm-sample --out-dir an existing file" "not a folder" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" $S --out-dir "$T/lat.h5"
expect_ok "ldm-sample --out-dir a missing nested folder" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" $S --out-dir "$T/x/y/imgs"
check "  ... holds the 4 images" test "$(ls "$T/x/y/imgs" | wc -l)" -eq 4

# ---------------------------------------------------------------- long paths
L=$(printf 'd%.0s' $(seq 200))
P="$T/$L/$L/$L"
mkdir -p "$P"
expect_ok "vae-train into a ${#P}-character folder" "$B/vae-train" $V --out "$P/v.h5" --steps 2
expect_ok "vae-train --resume there" "$B/vae-train" --data fashion-mnist-test --threads 1 --out "$P/v.h5" --steps 3 --resume --keep 2
expect_ok "vae-encode there" "$B/vae-encode" --vae "$P/v.h5" --data fashion-mnist-test --out "$P/lat.h5" --threads 1
expect_ok "ldm-train there (with sample grids)" "$B/ldm-train" --latents "$P/lat.h5" --vae "$P/v.h5" --sample-every 1 --out "$P/u.h5" --steps 1 $U
expect_ok "ldm-sample there (grid and folder)" "$B/ldm-sample" --unet "$P/u.h5" --vae "$P/v.h5" $S --out "$P/s.png" --out-dir "$P/imgs"
check "  ... every file in place, no temporary" test -f "$P/v.step3.h5" -a -f "$P/v.loss.png" -a -f "$P/u.samples-step1.png" -a -f "$P/s.png" -a -f "$P/imgs/000003.png"
check "  ... (no temporary)" test -z "$(ls "$P" | grep tmp)"
# 4095 is the most the OS takes; the temporary "<out>.tmp.<pid>" must fit too.
LONG=$(printf 'x%.0s' $(seq 4050))
expect_fail "vae-train --out of 4050 characters" "characters long" "$B/vae-train" $V --out "$T/$LONG" --steps 1
LONG=$(printf 'x%.0s' $(seq 5000))
expect_fail "ldm-train --out of 5000 characters" "characters long" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/$LONG" --steps 1 $U
expect_fail "ldm-sample --out-dir of 5000 characters" "characters long" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" $S --out-dir "$T/$LONG"
NAME=$(printf 'n%.0s' $(seq 250))
expect_fail "vae-decode --out with a 250-character file name" "file name is" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/lat.h5" --n 4 --out "$T/$NAME"

# ---------------------------------------------------------------- FIFOs as files to read
mkfifo "$T/fifo.h5"
expect_fail "vae-decode --vae a FIFO" "not a regular file" "$B/vae-decode" --vae "$T/fifo.h5" --latents "$T/lat.h5" --n 4 --out "$T/d.png"
expect_fail "vae-decode --latents a FIFO" "not a regular file" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/fifo.h5" --n 4 --out "$T/d.png"
expect_fail "ldm-sample --unet a FIFO" "not a regular file" "$B/ldm-sample" --unet "$T/fifo.h5" --vae "$T/a.h5" $S --out "$T/s.png"
expect_fail "ldm-sample --vae a FIFO" "not a regular file" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/fifo.h5" $S --out "$T/s.png"
expect_fail "vae-encode --vae a FIFO" "not a regular file" "$B/vae-encode" --vae "$T/fifo.h5" --data fashion-mnist-test --out "$T/l.h5"
expect_fail "ldm-train --resume from a FIFO" "not a regular file" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/fifo.h5" --steps 3 --resume
expect_fail "vae-train --resume from a FIFO" "not a regular file" "$B/vae-train" --data fashion-mnist-test --out "$T/fifo.h5" --steps 3 --resume
cp "$T/u.h5" "$T/r.h5"
mkfifo "$T/r.h5.log.jsonl"
expect_fail "ldm-train --resume with a FIFO as its log" "not a regular file" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/r.h5" --steps 3 --resume

# ---------------------------------------------------------------- non-finite numbers
poke() { f=$1; shift; cp "$T/$f.orig" "$T/$1"; "$POKE" "$T/$1" "$2" "$3" || fail "h5poke $*"; }
poke a.h5 nan-vae.h5 /model/decoder.0.weight nan
expect_fail "ldm-sample with NaN in the VAE's /model" "nan-vae.h5: /model/decoder.0.weight holds nan" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/nan-vae.h5" $S --out "$T/s.png"
expect_fail "vae-decode with NaN in the VAE's /model" "decoder.0.weight holds nan" "$B/vae-decode" --vae "$T/nan-vae.h5" --latents "$T/lat.h5" --n 4 --out "$T/d.png"
poke u.h5 inf-ema.h5 /ema/conv_in.weight inf
expect_fail "ldm-sample with infinity in the UNet's /ema" "inf-ema.h5: /ema/conv_in.weight holds inf" "$B/ldm-sample" --unet "$T/inf-ema.h5" --vae "$T/a.h5" $S --out "$T/s.png"
poke u.h5 nan-raw.h5 /model/out_conv.bias -nan
expect_fail "ldm-sample --weights raw with NaN in /model" "nan-raw.h5: /model/out_conv.bias holds" "$B/ldm-sample" --unet "$T/nan-raw.h5" --vae "$T/a.h5" $S --weights raw --out "$T/s.png"
poke u.h5 huge.h5 /ema/out_conv.bias 3e38
expect_fail "ldm-sample with a huge (finite) UNet weight" "huge.h5: the latents sampled for images 0..3 are not finite" "$B/ldm-sample" --unet "$T/huge.h5" --vae "$T/a.h5" $S --out "$T/huge.png" --out-dir "$T/huge"
check "  ... no PNG written" test ! -e "$T/huge.png" -a -z "$(ls "$T/huge")"
poke u.h5 m-nan.h5 /optim/m/conv_in.bias nan
expect_fail "ldm-train --resume with NaN in /optim/m" "m-nan.h5: /optim/m/conv_in.bias holds nan" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/m-nan.h5" --steps 3 --resume
poke u.h5 v-neg.h5 /optim/v/conv_in.bias -1
expect_fail "ldm-train --resume with a negative Adam second moment" "v-neg.h5: /optim/v/conv_in.bias holds -1" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/v-neg.h5" --steps 3 --resume
poke a.h5 vae-v-neg.h5 /optim/v/encoder.0.bias -1
expect_fail "vae-train --resume with a negative Adam second moment" "vae-v-neg.h5: /optim/v/encoder.0.bias holds -1" "$B/vae-train" --data fashion-mnist-test --out "$T/vae-v-neg.h5" --steps 4 --resume
for v in nan inf -inf 0 -1 1e300; do
    poke u.h5 scale.h5 @scale_factor $v
    expect_fail "ldm-sample with scale_factor $v" "scale.h5: .*scale_factor" "$B/ldm-sample" --unet "$T/scale.h5" --vae "$T/a.h5" $S --out "$T/s.png"
done
poke u.h5 sched.h5 @schedule str:quadratic
expect_fail "ldm-sample with an unknown schedule" "sched.h5: unknown noise schedule 'quadratic'" "$B/ldm-sample" --unet "$T/sched.h5" --vae "$T/a.h5" $S --out "$T/s.png"
expect_fail "ldm-train --resume with an unknown schedule" "sched.h5: unknown noise schedule 'quadratic'" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/sched.h5" --steps 3 --resume
poke u.h5 pred.h5 @prediction str:x0
expect_fail "ldm-sample with an unknown prediction" "pred.h5: unknown prediction 'x0'" "$B/ldm-sample" --unet "$T/pred.h5" --vae "$T/a.h5" $S --out "$T/s.png"
check "  ... no grid written by any of them" test ! -e "$T/s.png"

# ---------------------------------------------------------------- --n beyond memory
expect_fail "ldm-sample --n 5000 as one grid" "use --out-dir" "$B/ldm-sample" --unet "$T/u.h5" --vae "$T/a.h5" --n 5000 --out "$T/big.png"
expect_fail "vae-decode --n 5000 (one grid)" "at most 4096" "$B/vae-decode" --vae "$T/a.h5" --latents "$T/lat.h5" --n 5000 --out "$T/big.png"
# 10^9 images of 4x8x8 latents would be 1 TB of noise drawn up front; in
# batches the first PNGs appear at once, in 2 GB of address space. SIGINT
# after 4 s: exit 130, saying how many were written. (--foreground: timeout
# signals only ldm-sample; by default it signals its process group too, and
# the second SIGINT, if it lands after the first was handled, exits at once.)
sh -c "ulimit -v 2000000; exec timeout --foreground --preserve-status -s INT 4 '$B/ldm-sample' --unet '$T/u.h5' --vae '$T/a.h5' --n 1000000000 --batch 16 --steps 2 --threads 1 --out-dir '$T/many'" >"$T/out" 2>"$T/err"
rc=$?
n=$(ls "$T/many" 2>/dev/null | grep -c '\.png$')
if [ $rc -eq 130 ] && [ "$n" -ge 16 ] && grep -q "images written into" "$T/err"; then
    pass "ldm-sample --n 10^9 --out-dir: $n PNGs in 4 s under ulimit -v 2 GB, then interrupted"
else
    fail "ldm-sample --n 10^9 --out-dir (exit $rc, $n PNGs)"; tail -3 "$T/err" | sed 's/^/    /'
fi
check "  ... no temporary left" test -z "$(ls "$T/many" | grep tmp)"

# ---------------------------------------------------------------- a second Ctrl-C mid-write
# LDM_FAULT_CKPT_ABORT=sigint raises SIGINT twice halfway through the
# checkpoint's datasets: the second exits at once and must remove the temporary.
cp "$T/a.h5.orig" "$T/s.h5"
LDM_FAULT_CKPT_ABORT=sigint "$B/vae-train" --data fashion-mnist-test --threads 1 --out "$T/s.h5" --steps 5 --resume >"$T/out" 2>"$T/err"
rc=$?
check "vae-train: a second SIGINT mid-checkpoint exits 130 (got $rc)" test $rc -eq 130
check "  ... no temporary left" no_tmp "$T/s.h5"
check "  ... the previous checkpoint intact" cmp -s "$T/s.h5" "$T/a.h5.orig"
# Real signals: two SIGINTs 0.1 s apart while the cache is written, both
# within the first batch (a wider VAE, batches of 512: about 0.5 s each
# here), so the second comes before the loop polls the first. Had the loop
# polled it in between, vae-encode says so and removes the file itself: then
# this case proves nothing and says SKIP.
expect_ok "train a wider VAE (1 step)" "$B/vae-train" --data fashion-mnist-test --batch 8 --base-channels 32 --threads 1 --eval-every 1000 --out "$T/w.h5" --steps 1
"$B/vae-encode" --vae "$T/w.h5" --data fashion-mnist-test --out "$T/big.h5" --batch 512 --threads 1 >"$T/out" 2>"$T/err" &
pid=$!
i=0
while no_tmp "$T/big.h5" && [ $i -lt 400 ]; do sleep 0.02; i=$((i + 1)); done
sleep 0.05; kill -INT $pid; sleep 0.1; kill -INT $pid
wait $pid
rc=$?
if grep -q "interrupted; no cache written" "$T/err"; then
    echo "SKIP vae-encode: the first SIGINT was polled before the second came"
else
    check "vae-encode: a second SIGINT mid-write exits 130 (got $rc)" test $rc -eq 130
fi
check "  ... no temporary left, no cache" sh -c "! ls '$T'/big.h5* >/dev/null 2>&1"

# ---------------------------------------------------------------- folder walk
# Symbolic links that loop (sub/loop -> .) or lead to a parent (sub/up -> ..)
# must not make the walk grow or count an image twice: 2 real images.
mkdir -p "$T/walk/sub"
set -- "$T"/x/y/imgs/*.png
cp "$1" "$T/walk/a.png"; cp "$2" "$T/walk/sub/b.png"
ln -s . "$T/walk/sub/loop"; ln -s .. "$T/walk/sub/up"
expect_ok "vae-train on a folder with a looping link and a link to its parent" \
    "$B/vae-train" --data "$T/walk" --image-size 8 --base-channels 4 --threads 1 --steps 1 --out "$T/walk.h5"
check "  ... counts each real image once (2 images)" grep -q "vae-train: 2 images from" "$T/err"
check "  ... and warns about nothing" test "$(grep -c warning "$T/err")" -eq 0

# ---------------------------------------------------------------- classes and guidance
# A class-conditional UNet on the pristine cache; flags and class names
# that could overflow, inject printf directives or mislabel.
cp "$T/lat.h5.orig" "$T/clat.h5"; cp "$T/a.h5.orig" "$T/ca.h5"
expect_ok "train a tiny class-conditional UNet" "$B/ldm-train" --latents "$T/clat.h5" --out "$T/uc.h5" --steps 1 --num-classes 10 $U
cp "$T/uc.h5" "$T/uc.h5.orig"
expect_fail "ldm-sample --guidance 1e300 (inf as a float)" "--guidance must be at most" "$B/ldm-sample" --unet "$T/uc.h5" --vae "$T/ca.h5" $S --class 1 --guidance 1e300 --out "$T/s.png"
expect_fail "ldm-sample --class with printf directives" "--class '%s%n%s%n' is neither" "$B/ldm-sample" --unet "$T/uc.h5" --vae "$T/ca.h5" $S --class '%s%n%s%n' --out "$T/s.png"
expect_fail "ldm-sample --class ''" "is neither 'all'" "$B/ldm-sample" --unet "$T/uc.h5" --vae "$T/ca.h5" $S --class '' --out "$T/s.png"
expect_fail "ldm-sample --class past long" "out of range" "$B/ldm-sample" --unet "$T/uc.h5" --vae "$T/ca.h5" $S --class 99999999999999999999 --out "$T/s.png"
poke uc.h5 names-num.h5 @class_names 3
expect_ok "ldm-sample with class_names a number" "$B/ldm-sample" --unet "$T/names-num.h5" --vae "$T/ca.h5" $S --class 4 --guidance 2 --out "$T/s.png"
check "  ... warns and shows the class by number" sh -c "grep -q 'does not name the 10 classes' '$T/err' && grep -q 'class 4 |' '$T/err'"
poke uc.h5 names-short.h5 @class_names "$(printf 'str:a\nb')"
expect_fail "ldm-sample --class by a name of a list too short" "is neither" "$B/ldm-sample" --unet "$T/names-short.h5" --vae "$T/ca.h5" $S --class b --out "$T/s.png"
check "  ... after a warning that the names do not fit" grep -q "does not name the 10 classes" "$T/err"
poke uc.h5 dropout.h5 @p_uncond 0
expect_ok "ldm-sample --guidance 3 on p_uncond 0" "$B/ldm-sample" --unet "$T/dropout.h5" --vae "$T/ca.h5" $S --class 0 --guidance 3 --out "$T/s.png"
check "  ... warns: no label dropout" grep -q "without label dropout" "$T/err"
# Guided sampling batches 2 x --batch items: --n 10^9 --class all still
# writes batch by batch in bounded memory.
sh -c "ulimit -v 2000000; exec timeout --foreground --preserve-status -s INT 4 '$B/ldm-sample' --unet '$T/uc.h5' --vae '$T/ca.h5' --class all --guidance 2 --n 1000000000 --batch 16 --steps 2 --threads 1 --out-dir '$T/manyc'" >"$T/out" 2>"$T/err"
rc=$?
n=$(ls "$T/manyc" 2>/dev/null | grep -c '\.png$')
if [ $rc -eq 130 ] && [ "$n" -ge 16 ] && grep -q "interrupted; $n images written into" "$T/err"; then
    pass "ldm-sample --class all --guidance 2 --n 10^9 --out-dir: $n PNGs in 4 s under ulimit -v 2 GB, then interrupted"
else
    fail "ldm-sample --class all --n 10^9 --out-dir (exit $rc, $n PNGs)"; tail -3 "$T/err" | sed 's/^/    /'
fi

# ---------------------------------------------------------------- class labels
# Class names and conditional settings that a file can get wrong: refused
# with the file and the attribute named, before any training.
poke lat.h5 k-empty.h5 @class_names "$(printf 'str:T-shirt/top\n\nPullover')"
expect_fail "a cache whose class_names has an empty name" "k-empty.h5: attribute 'class_names': class 1 has an empty name" "$B/ldm-train" --latents "$T/k-empty.h5" --out "$T/ku.h5" --steps 1 $U
poke lat.h5 k-trail.h5 @class_names "str:a
"
expect_fail "a cache whose class_names ends in a line break" "k-trail.h5: attribute 'class_names': class 1 has an empty name" "$B/ldm-train" --latents "$T/k-trail.h5" --out "$T/ku.h5" --steps 1 $U
poke lat.h5 k-num.h5 @class_names 7
expect_fail "a cache whose class_names is a number" "k-num.h5: attribute 'class_names' is a floating-point number" "$B/ldm-train" --latents "$T/k-num.h5" --out "$T/ku.h5" --steps 1 $U
mkdir -p "$T/kflat"
"$(dirname "$0")/../tools/gen-images.sh" "$T/kgen" 2 32 >/dev/null 2>&1 && mv "$T"/kgen/*/*.png "$T/kflat/"
expect_ok "encode a flat folder (no labels)" "$B/vae-encode" --vae "$T/a.h5.orig" --data "$T/kflat" --out "$T/kflat.h5" --threads 1
cp "$T/kflat.h5" "$T/kflat.h5.orig"
poke kflat.h5 k-nolab.h5 @class_names "str:a"
expect_fail "a cache with class_names but no labels" "k-nolab.h5: attribute 'class_names' names classes, but there are no labels" "$B/vae-decode" --vae "$T/a.h5.orig" --latents "$T/k-nolab.h5" --n 1 --out "$T/d.png"
cp "$T/lat.h5.orig" "$T/klat.h5"
expect_ok "train a tiny conditional UNet" "$B/ldm-train" --latents "$T/klat.h5" --out "$T/ku.h5" --steps 1 --num-classes 10 $U
cp "$T/ku.h5" "$T/ku.h5.orig"
poke ku.h5 k-p2.h5 @p_uncond 2
cp "$T/k-p2.h5" "$T/k-p2.before"
expect_fail "a checkpoint with p_uncond 2" "k-p2.h5: attribute 'p_uncond' is 2" "$B/ldm-train" --latents "$T/klat.h5" --out "$T/k-p2.h5" --steps 2 --resume --threads 1
poke ku.h5 k-pnan.h5 @p_uncond nan
expect_fail "a checkpoint with p_uncond NaN" "k-pnan.h5: attribute 'p_uncond'" "$B/ldm-train" --latents "$T/klat.h5" --out "$T/k-pnan.h5" --steps 2 --resume --threads 1
poke ku.h5 k-kf.h5 @num_classes 10.5
expect_fail "a checkpoint with num_classes 10.5" "k-kf.h5: attribute 'num_classes' is a floating-point number" "$B/ldm-train" --latents "$T/klat.h5" --out "$T/k-kf.h5" --steps 2 --resume --threads 1
check "  ... the refused checkpoint is left as it was" cmp -s "$T/k-p2.h5" "$T/k-p2.before"

finish hostile_cli
