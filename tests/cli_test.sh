#!/bin/sh
# Command-line behaviour: --help, and every bad input of stage 1 gets one
# clear message naming the file and a non-zero exit (never a signal/crash).
# usage: cli_test.sh BUILD_DIR
set -u
B=$(cd "$1" && pwd)/tools
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0

# expect_fail DESC PATTERN CMD...: exit code 1..127 and PATTERN in stderr.
expect_fail() {
    desc=$1 pat=$2; shift 2
    "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -ge 1 ] && [ $rc -lt 128 ] && grep -q -- "$pat" "$T/err"; then
        echo "PASS $desc (exit $rc: $(grep -m1 -- "$pat" "$T/err"))"
    else
        echo "FAIL $desc (exit $rc, wanted a message matching '$pat')"; sed 's/^/    /' "$T/err" | tail -5
        fails=$((fails + 1))
    fi
}
expect_ok() {
    desc=$1; shift
    if "$@" >"$T/out" 2>"$T/err"; then echo "PASS $desc"
    else echo "FAIL $desc (exit $?)"; sed 's/^/    /' "$T/err" | tail -5; fails=$((fails + 1)); fi
}

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

echo "cli_test: $fails failure(s)"
[ $fails -eq 0 ]
