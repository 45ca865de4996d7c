#!/bin/sh
# vae-train --arch kl through the real programs, on a tiny vae-kl (width 8,
# two levels, 32x32 RGB) and discriminator: the kl-gan run with the
# discriminator starting mid-run and LPIPS (the narrow converter-made net of
# tests/golden/lpips_net.h5), an interrupted run resumed bit-identical to the
# straight one, --no-disc, --init, the other tools on the result with no
# family flag, and a message for each bad input of issue 13.
# usage: kl_cli.sh BUILD_DIR
set -u
BUILD=$(cd "$1" && pwd)
B=$BUILD/tools
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/testlib.sh"
LP=$HERE/golden/lpips_net.h5

sh "$HERE/../tools/gen-images.sh" "$T/img" 40 32 >/dev/null 2>&1 || { echo "gen-images failed"; exit 1; }
KL="--arch kl --data $T/img --batch 4 --base-channels 8 --groups 4 --ch-mult 1,2 --disc-width 4 \
    --image-size 32 --threads 2 --hflip"

# The kl-gan run, straight and interrupted after step 3 then resumed: the
# discriminator starts at step 2, so the resume crosses its first steps.
expect_ok "kl-gan run with LPIPS, discriminator from step 2" \
    $B/vae-train $KL --disc-start 2 --perceptual "$LP" --steps 5 --out "$T/a.h5"
check "the log has the kl-gan figures" grep -q '"d_loss"' "$T/a.h5.log.jsonl"
check "the loss plot was drawn" test -s "$T/a.loss.png"
expect_ok "kl-gan run, first 3 steps" \
    $B/vae-train $KL --disc-start 2 --perceptual "$LP" --steps 3 --out "$T/b.h5"
expect_ok "resumed to step 5" $B/vae-train --steps 5 --out "$T/b.h5" --resume --data "$T/img" --threads 2
check "resumed run bit-identical to the straight one (h5diff, /disc included)" \
    h5diff -q "$T/a.h5" "$T/b.h5"
check "the checkpoint holds the discriminator under /disc" \
    sh -c "h5ls -r '$T/a.h5' | grep -q '^/disc/running/main.3.running_var'"
check "--resume keeps --arch, LPIPS and the discriminator start (from the attributes)" \
    sh -c "grep -q 'LPIPS' '$T/err' && grep -q 'from step 2' '$T/err'"

expect_ok "kl run without the discriminator" $B/vae-train $KL --no-disc --steps 2 --out "$T/n.h5"
check "--no-disc writes no /disc" sh -c "! h5ls '$T/n.h5' | grep -q '^disc'"

# The tools take the kl checkpoint from its attributes, no flag.
expect_ok "vae-reconstruct on a kl checkpoint" \
    $B/vae-reconstruct --vae "$T/a.h5" --data "$T/img" --n 8 --out "$T/rec.png" --threads 2
expect_ok "vae-encode on a kl checkpoint" \
    $B/vae-encode --vae "$T/a.h5" --data "$T/img" --out "$T/lat.h5" --threads 2
check "its latents are 4 x 16 x 16" sh -c "h5ls '$T/lat.h5' | grep -q 'mean.*{40, 4, 16, 16}'"

# --init: fine-tuning starts from the file's weights with a fresh optimizer.
expect_ok "--init from a kl checkpoint" $B/vae-train --arch kl --data "$T/img" --batch 4 \
    --image-size 32 --disc-width 4 --threads 2 --init "$T/n.h5" --steps 1 --out "$T/i.h5"
check "--init starts at step 0 (the run ends at step 1)" \
    sh -c "h5dump -a step '$T/i.h5' | grep -q '(0): 1'"

# Bad input: one message each, non-zero exit.
expect_fail "--arch kl resuming an f4c4 checkpoint" "f4c4" \
    sh -c "$B/vae-train --data fashion-mnist-test --steps 1 --batch 4 --base-channels 4 --threads 2 \
           --out '$T/f.h5' >/dev/null 2>&1 && $B/vae-train --arch kl --data fashion-mnist-test \
           --steps 2 --out '$T/f.h5' --resume --threads 2"
expect_fail "--arch f4c4 resuming a kl checkpoint" "contradicts" \
    $B/vae-train --arch f4c4 --data "$T/img" --steps 9 --out "$T/a.h5" --resume --threads 2
expect_fail "--disc-start beyond the run" "never train" \
    $B/vae-train $KL --disc-start 5 --steps 5 --out "$T/x.h5"
expect_fail "image size not a multiple of 2^(levels-1)" "not a multiple" \
    $B/vae-train $KL --ch-mult 1,2,4,4 --image-size 36 --no-disc --steps 1 --out "$T/x.h5"
expect_fail "discriminator on images too small" "at least 24" \
    $B/vae-train --arch kl --data "$T/img" --image-size 16 --ch-mult 1,2 --base-channels 8 \
    --groups 4 --steps 1 --out "$T/x.h5" --threads 2
expect_fail "perceptual weights of another kind" "lpips" \
    $B/vae-train $KL --perceptual "$T/a.h5" --steps 1 --out "$T/x.h5"
expect_fail "perceptual weights missing" "$T/nope.h5" \
    $B/vae-train $KL --perceptual "$T/nope.h5" --steps 1 --out "$T/x.h5"
cp "$T/n.h5" "$T/nan.h5"
"$BUILD/tests/h5poke" "$T/nan.h5" /model/decoder.conv_out.weight nan
expect_fail "--init with a damaged tensor" "decoder.conv_out.weight" \
    $B/vae-train --arch kl --data "$T/img" --image-size 32 --batch 4 --threads 2 --init "$T/nan.h5" --steps 1 \
    --out "$T/x.h5"
cp "$T/n.h5" "$T/shape.h5"
"$BUILD/tests/h5poke" "$T/shape.h5" @ch 16
expect_fail "--init with a damaged configuration attribute" "attribute 'ch'" \
    $B/vae-train --arch kl --data "$T/img" --image-size 32 --batch 4 --threads 2 --init "$T/shape.h5" --steps 1 \
    --out "$T/x.h5"
expect_fail "--init with an architecture flag" "architecture" \
    $B/vae-train --arch kl --data "$T/img" --ch-mult 1,2,4 --init "$T/n.h5" --steps 1 --out "$T/x.h5"
expect_fail "--arch of no family" "f4c4 or kl" \
    $B/vae-train --arch xl --data "$T/img" --steps 1 --out "$T/x.h5"
check "no output left by the failed runs" test ! -e "$T/x.h5"

finish kl_cli
