#!/bin/sh
# ldm-eval through the real program: statistics files, FID/KID/IS of image
# folders, data sources and models, the anchors of the measures (a set
# against itself ~0, noise far), and its messages for bad input.
# usage: eval_cli.sh BUILD_DIR
set -u
BUILD=$(cd "$1" && pwd)
B=$BUILD/tools
POKE=$BUILD/tests/h5poke
. "$(dirname "$0")/testlib.sh"
# score NAME: the value on the last line of the last command's stdout, which
# must read "NAME <number>".
score() {
    last=$(tail -n 1 "$T/out")
    case $last in
    "$1 "*) echo "${last#"$1 "}" ;;
    *) echo "bad"; fail "last line of stdout is '$last', not '$1 <value>'" ;;
    esac
}
# check_value DESC AWK-CONDITION VALUE: the condition on v holds.
check_value() { if awk -v v="$3" "BEGIN { exit !($2) }"; then pass "$1 ($3)"; else fail "$1 ($3)"; fi; }

E=$B/ldm-eval
expect_ok "ldm-eval --help" "$E" --help
for c in stats fid kid is; do expect_ok "ldm-eval $c --help" "$E" $c --help; done
expect_fail "unknown command" "unknown command" "$E" frechet
expect_fail "no arguments" "usage" "$E"

# Reference statistics of the first 1,000 test images with the default
# (shipped) network, from a build folder that is not the source tree's.
expect_ok "stats of fashion-mnist-test" "$E" stats --data fashion-mnist-test --n 1000 --out "$T/ref.h5" --threads 2
expect_ok "FID of the same images against them" "$E" fid --data fashion-mnist-test --n 1000 --ref "$T/ref.h5" --threads 2
check_value "FID of a set against itself is ~0" "v < 1e-3 && v > -1e-3" "$(score FID)"
expect_ok "the training set's first 1,000 against them" "$E" fid --data fashion-mnist --n 1000 --ref "$T/ref.h5" --threads 2
train_fd=$(score FID)
check_value "train against test is small (< 10)" "v > 0 && v < 10" "$train_fd"

# A folder of generated RGB images: far from Fashion-MNIST; against its own
# statistics 0; KID and IS through the same reader.
sh "$(dirname "$0")/../tools/gen-images.sh" "$T/img" 300 48 >/dev/null 2>&1 || fail "gen-images.sh"
expect_ok "FID of generated RGB images" "$E" fid --images "$T/img" --ref "$T/ref.h5" --threads 2
noise_fd=$(score FID)
check_value "generated images are far from Fashion-MNIST (> 20 x train's)" "v > 20 * $train_fd" "$noise_fd"
expect_ok "stats of the folder" "$E" stats --images "$T/img" --out "$T/img.h5" --threads 2
expect_ok "FID of the folder against its own statistics" "$E" fid --images "$T/img" --ref "$T/img.h5" --threads 2
check_value "folder against itself ~0" "v < 1e-3 && v > -1e-3" "$(score FID)"
expect_ok "FID from two statistics files" "$E" fid --stats "$T/img.h5" --ref "$T/ref.h5"
check_value "statistics files give the folder's FID" "v == $noise_fd" "$(score FID)"
expect_ok "KID of the folder against the test images" "$E" kid --images "$T/img" --ref "$T/ref.h5" --kid-subsets 20 --kid-size 200 --threads 2
check_value "KID of noise is large (> 0.1)" "v > 0.1" "$(score KID)"
expect_ok "KID of the test images against themselves" "$E" kid --data fashion-mnist-test --n 1000 --ref "$T/ref.h5" --kid-subsets 20 --kid-size 500 --threads 2
# (unnormalised features: KID's subset spread is large; compare with it)
kid_sd=$(sed -n 's/^KID std \([0-9.e+-]*\) .*/\1/p' "$T/out")
check_value "KID of a set against itself ~0 (within 3 std of the subsets, $kid_sd)" "v < 3 * $kid_sd && v > -3 * $kid_sd" "$(score KID)"
expect_ok "IS of the generated images" "$E" is --images "$T/img" --threads 2
gen_is=$(score IS)
expect_ok "IS of the test images" "$E" is --data fashion-mnist-test --n 1000 --threads 2
check_value "IS of real images is high (> 5) and in [1, 10], generated ones lower" "v > 5 && v <= 10 && v > $gen_is" "$(score IS)"

# Mixed sizes: resized to the first image's side (documented).
mkdir -p "$T/mixed/a" "$T/mixed/b"
sh "$(dirname "$0")/../tools/gen-images.sh" "$T/mixed/a" 20 32 >/dev/null 2>&1
sh "$(dirname "$0")/../tools/gen-images.sh" "$T/mixed/b" 20 40 >/dev/null 2>&1
expect_ok "a folder of mixed sizes" "$E" fid --images "$T/mixed" --ref "$T/ref.h5" --threads 2

# Straight from a model: the same images as ldm-sample's PNGs, so the same
# FID as the folder it writes (the images are rounded to 8 bits alike).
V="--data fashion-mnist-test --batch 16 --base-channels 4 --threads 1 --eval-every 1000"
expect_ok "train a tiny VAE" "$B/vae-train" $V --out "$T/vae.h5" --steps 3
expect_ok "encode its cache" "$B/vae-encode" --vae "$T/vae.h5" --data fashion-mnist-test --out "$T/lat.h5" --threads 1
expect_ok "train a tiny UNet" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/unet.h5" --steps 2 --base-channels 16 --batch 8 --threads 1 --eval-every 1000
expect_ok "ldm-sample 40 PNGs" "$B/ldm-sample" --unet "$T/unet.h5" --vae "$T/vae.h5" --n 40 --steps 5 --out-dir "$T/smp" --batch 16 --threads 2
expect_ok "FID of the PNG folder" "$E" fid --images "$T/smp" --ref "$T/ref.h5" --threads 2
png_fd=$(score FID)
expect_ok "FID straight from the model" "$E" fid --unet "$T/unet.h5" --vae "$T/vae.h5" --n 40 --steps 5 --batch 16 --ref "$T/ref.h5" --threads 2
check_value "the model's FID equals its PNGs' ($png_fd)" "v == $png_fd" "$(score FID)"
expect_ok "IS straight from the model" "$E" is --unet "$T/unet.h5" --vae "$T/vae.h5" --n 40 --steps 5 --is-splits 2
expect_ok "train a tiny class-conditional UNet" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/cu.h5" --steps 2 --base-channels 16 --batch 8 --threads 1 --eval-every 1000 --num-classes 10
expect_ok "FID of all classes with guidance" "$E" fid --unet "$T/cu.h5" --vae "$T/vae.h5" --n 20 --steps 3 --class all --guidance 2 --ref "$T/ref.h5" --threads 2
grep -q "^class accuracy 0\.[0-9]* (fmnist-cnn" "$T/out" && pass "a conditional model's class accuracy is printed" || fail "no class accuracy line"
expect_fail "a class out of range" "give a class 0..9" "$E" fid --unet "$T/cu.h5" --vae "$T/vae.h5" --n 4 --class 10 --ref "$T/ref.h5"
expect_fail "--unet without --n" "needs --vae and --n" "$E" fid --unet "$T/unet.h5" --vae "$T/vae.h5" --ref "$T/ref.h5"
expect_fail "--class on an unconditional UNet" "unconditional" "$E" fid --unet "$T/unet.h5" --vae "$T/vae.h5" --n 4 --class 3 --ref "$T/ref.h5"
# FD while training: the logged value is the FD ldm-eval gives the same
# checkpoint (same seed, same images); --keep-best keeps the checkpoint.
expect_ok "ldm-train --fid-every" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/fu.h5" --steps 4 --base-channels 16 --batch 8 --threads 2 --eval-every 2 --vae "$T/vae.h5" --fid-every 2 --fid-ref "$T/ref.h5" --fid-n 40 --fid-steps 5 --keep-best
logged=$(sed -n 's/^{"step": 4, "fd": \([0-9.e+-]*\)}$/\1/p' "$T/fu.h5.log.jsonl")
[ -f "$T/fu.best.h5" ] && pass "--keep-best wrote fu.best.h5" || fail "--keep-best wrote no fu.best.h5"
expect_ok "ldm-eval on the run's checkpoint" "$E" fid --unet "$T/fu.h5" --vae "$T/vae.h5" --n 40 --steps 5 --ref "$T/ref.h5" --threads 1
check_value "the logged FD ($logged) is ldm-eval's" "v - $logged < 1e-3 && $logged - v < 1e-3" "$(score FID)"
expect_fail "--fid-every without --fid-ref" "needs --vae and --fid-ref" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/fx.h5" --steps 1 --vae "$T/vae.h5" --fid-every 1
cp "$T/ref.h5" "$T/ref-other.h5" && "$POKE" "$T/ref-other.h5" @net_hash str:0123456789abcdef
expect_fail "--fid-ref of other network weights" "ref-other.h5" "$B/ldm-train" --latents "$T/lat.h5" --out "$T/fx.h5" --steps 1 --vae "$T/vae.h5" --fid-every 1 --fid-ref "$T/ref-other.h5"
expect_ok "train another tiny VAE" "$B/vae-train" $V --out "$T/vae2.h5" --steps 1 --seed 1
expect_fail "--unet with another VAE" "has hash" "$E" fid --unet "$T/unet.h5" --vae "$T/vae2.h5" --n 4 --ref "$T/ref.h5"

# Bad input: a message each, exit non-zero.
mkdir "$T/empty"
expect_fail "an empty folder" "$T/empty" "$E" fid --images "$T/empty" --ref "$T/ref.h5"
expect_fail "a missing reference" "$T/nope.h5" "$E" fid --images "$T/img" --ref "$T/nope.h5"
expect_fail "samples and reference both missing" "give the samples" "$E" fid --ref "$T/ref.h5"
expect_fail "an unknown network" "no file" "$E" stats --data fashion-mnist-test --net nosuchnet --out "$T/x.h5"
cp "$T/img.h5" "$T/other.h5" && "$POKE" "$T/other.h5" @net_hash str:0123456789abcdef
expect_fail "statistics of another network's weights" "$T/other.h5" "$E" fid --stats "$T/other.h5" --ref "$T/ref.h5"
cp "$T/img.h5" "$T/prep.h5" && "$POKE" "$T/prep.h5" @preprocess str:something-else
expect_fail "statistics of other preprocessing" "$T/prep.h5" "$E" fid --stats "$T/prep.h5" --ref "$T/ref.h5"
expect_fail "stats --out onto its own input folder" "expected a file" "$E" stats --images "$T/img" --out "$T/img"
expect_fail "is with a reference" "takes no reference" "$E" is --images "$T/img" --ref "$T/ref.h5"

# n smaller than the feature dimension (128): a warning, a finite FID.
expect_ok "FID of 50 images (n < D)" "$E" fid --data fashion-mnist-test --n 50 --ref "$T/ref.h5"
grep -qi "singular" "$T/err" && pass "n < D warns that the covariance is singular" || fail "no singular-covariance warning"
check_value "FID with n < D is finite" "v == v + 0 && v > 0" "$(score FID)"

finish eval_cli
