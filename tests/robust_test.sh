#!/bin/sh
# "Nothing lost, nothing crashes", end to end through the real tools:
#   - exact resume: --steps 2N in one go == --steps N then --steps 2N --resume
#     (every dataset and attribute bit-identical, same logged loss at every
#     step), for vae-train and ldm-train, also from a periodic checkpoint and
#     from one written on SIGINT/SIGTERM;
#   - SIGINT/SIGTERM during training: checkpoint at the current step, exit 0;
#     during vae-encode: exit 130, nothing at the output path;
#   - kill -9 mid-checkpoint (LDM_FAULT_CKPT_ABORT) and at random moments:
#     the previous checkpoint stays whole and resumable;
#   - --keep K keeps the newest K step-numbered copies;
#   - a NaN loss (LDM_FAULT_NAN_STEP) stops with a message naming the step,
#     the last good checkpoint untouched;
#   - a file that cannot be written (ulimit -f): message, non-zero exit, the
#     previous file intact, no temporary left.
# Needs h5diff (Debian hdf5-tools). usage: robust_test.sh BUILD_DIR
set -u
B=$(cd "$1" && pwd)/tools
if ! command -v h5diff >/dev/null 2>&1 || ! command -v h5dump >/dev/null 2>&1; then
    echo "robust_test: h5diff/h5dump not found (apt-get install hdf5-tools)"
    exit 77 # meson: skipped
fi
. "$(dirname "$0")/testlib.sh"

V="--data fashion-mnist-test --batch 16 --base-channels 4 --threads 1 --eval-every 1000"
VR="--data fashion-mnist-test --threads 1 --eval-every 1000"

# ---------------------------------------------------------------- vae-train
run v1 "$B/vae-train" $V --out "$T/v1.h5" --steps 20 --ckpt-every 5 --keep 3
check "vae-train 20 steps in one go (--ckpt-every 5 --keep 3)" ok v1
run v2a "$B/vae-train" $V --out "$T/v2.h5" --steps 10
run v2b "$B/vae-train" $VR --out "$T/v2.h5" --steps 20 --resume
check "vae-train 10 steps, then --resume to 20" ok v2b
check "vae resume: checkpoints bit-identical (every dataset, attribute)" same_ckpt "$T/v1.h5" "$T/v2.h5"
check "vae resume: same loss/rec/kl logged at every step" same_losses "$T/v1.h5.log.jsonl" "$T/v2.h5.log.jsonl"
kept=$(cd "$T" && ls v1.step*.h5 2>/dev/null | tr '\n' ' ')
check "--keep 3 leaves exactly step10, step15, step20 (got: $kept)" test "$kept" = "v1.step10.h5 v1.step15.h5 v1.step20.h5 "
check "the numbered copy of step 15 says step 15" test "$(ckpt_step "$T/v1.step15.h5")" = 15
cp "$T/v1.step10.h5" "$T/v3.h5"
run v3 "$B/vae-train" $VR --out "$T/v3.h5" --steps 20 --resume
check "vae resume from the periodic checkpoint of step 10" ok v3
check "vae resume from a periodic checkpoint: bit-identical at step 20" same_ckpt "$T/v1.h5" "$T/v3.h5"

# SIGINT in the middle of a run.
"$B/vae-train" $V --out "$T/vi.h5" --steps 1000000 >"$T/vi.err" 2>&1 &
pid=$!
wait_lines "$T/vi.h5.log.jsonl" 15
kill -INT $pid; wait $pid; rc=$?
S=$(sed -n 's/.*interrupted; checkpoint written to .* at step \([0-9]*\).*/\1/p' "$T/vi.err")
check "vae-train on SIGINT: exit 0 and 'checkpoint written ... at step S' (S=$S)" test "$rc" -eq 0 -a -n "$S"
if [ -n "$S" ]; then
    check "the SIGINT checkpoint is at step $S" test "$(ckpt_step "$T/vi.h5")" = "$S"
    S2=$((S + 7))
    run vi2 "$B/vae-train" $VR --out "$T/vi.h5" --steps $S2 --resume
    run vr "$B/vae-train" $V --out "$T/vr.h5" --steps $S2
    check "vae resume from the SIGINT checkpoint (step $S -> $S2) and a run to $S2 in one go" ok vi2
    check "vae resume from SIGINT: bit-identical at step $S2" same_ckpt "$T/vr.h5" "$T/vi.h5"
    check "vae resume from SIGINT: same losses at every step" same_losses "$T/vr.h5.log.jsonl" "$T/vi.h5.log.jsonl"
fi

# kill -9 in the middle of writing a checkpoint (fault injection: _exit(3)
# halfway through the temporary file).
cp "$T/v2.h5" "$T/v2.before"
LDM_FAULT_CKPT_ABORT=1 "$B/vae-train" $VR --out "$T/v2.h5" --steps 25 --resume >"$T/vf.err" 2>&1; rc=$?
check "vae-train killed mid-checkpoint (exit $rc, wanted 3)" test $rc -eq 3
check "... the previous checkpoint is byte-identical" cmp -s "$T/v2.h5" "$T/v2.before"
rm -f "$T"/v2.h5.tmp.*
run v2c "$B/vae-train" $VR --out "$T/v2.h5" --steps 25 --resume
run v25 "$B/vae-train" $V --out "$T/v25.h5" --steps 25
check "... and resumes from it to step 25" ok v2c
check "... matching a run to 25 in one go" same_ckpt "$T/v2.h5" "$T/v25.h5"

# NaN loss at step 8 with checkpoints every 5: stops, step-5 file untouched.
run vn0 "$B/vae-train" $V --out "$T/vn.h5" --steps 5
cp "$T/vn.h5" "$T/vn.before"
LDM_FAULT_NAN_STEP=8 "$B/vae-train" $VR --out "$T/vn.h5" --steps 10 --ckpt-every 5 --resume >"$T/vn.err" 2>&1; rc=$?
check "vae-train NaN at step 8: non-zero exit ($rc) and a message naming step 8" \
    grep -q "step 8: the loss is not finite" "$T/vn.err"
[ $rc -ne 0 ] && [ $rc -lt 128 ] || fail "vae-train NaN exit code $rc"
check "... the step-5 checkpoint is byte-identical" cmp -s "$T/vn.h5" "$T/vn.before"
LDM_FAULT_NAN_STEP=1 "$B/vae-train" $V --out "$T/vn1.h5" --steps 3 >"$T/vn1.err" 2>&1; rc=$?
check "vae-train NaN at step 1: exit $rc, no checkpoint created" test $rc -eq 1 -a ! -e "$T/vn1.h5"

# A run that stopped after its last checkpoint (NaN at step 6, checkpoint at
# 3) left steps 4-5 in the log: a resume drops them, so every step is logged once.
LDM_FAULT_NAN_STEP=6 "$B/vae-train" $V --out "$T/vt.h5" --steps 8 --ckpt-every 3 >/dev/null 2>&1
run vt "$B/vae-train" $VR --out "$T/vt.h5" --steps 8 --resume
check "resume after steps logged past the checkpoint: steps 1-8 logged once each" \
    test "$(grep '"loss"' "$T/vt.h5.log.jsonl" | sed 's/{"step": \([0-9]*\),.*/\1/' | tr '\n' ' ')" = "1 2 3 4 5 6 7 8 "

# A file-size limit (as a full disk): the checkpoint cannot be written.
(ulimit -f 40; exec "$B/vae-train" $VR --out "$T/v2.h5" --steps 30 --resume) >"$T/vd.err" 2>&1; rc=$?
check "vae-train under ulimit -f: exit 1 (got $rc) with a message" \
    test $rc -eq 1 -a -n "$(grep 'writing the checkpoint failed' "$T/vd.err")"
check "... the previous checkpoint (step 25) is intact" same_ckpt "$T/v2.h5" "$T/v25.h5"
check "... no temporary file left" no_tmp "$T/v2.h5"

# ---------------------------------------------------------------- vae-encode
run enc "$B/vae-encode" --vae "$T/v1.h5" --data fashion-mnist-test --out "$T/lat.h5" --threads 1
check "vae-encode with the tiny VAE" ok enc
"$B/vae-encode" --vae "$T/v1.h5" --data fashion-mnist-test --out "$T/lat2.h5" --threads 1 --batch 4 >"$T/ei.err" 2>&1 &
pid=$!
i=0
while ! ls "$T"/lat2.h5.tmp.* >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
kill -INT $pid; wait $pid; rc=$?
check "vae-encode on SIGINT: exit 130 (got $rc)" test $rc -eq 130
check "... no file at the output path, no temporary" test ! -e "$T/lat2.h5" -a -z "$(ls "$T"/lat2.h5.tmp.* 2>/dev/null)"
(ulimit -f 40; exec "$B/vae-encode" --vae "$T/v1.h5" --data fashion-mnist-test --out "$T/lat3.h5" --threads 1) >"$T/ed.err" 2>&1; rc=$?
check "vae-encode under ulimit -f: exit 1 (got $rc), nothing at the output path, no temporary" \
    test $rc -eq 1 -a ! -e "$T/lat3.h5" -a -z "$(ls "$T"/lat3.h5.tmp.* 2>/dev/null)"

# ---------------------------------------------------------------- ldm-train
U="--latents $T/lat.h5 --base-channels 16 --batch 16 --threads 1 --eval-every 1000"
UR="--latents $T/lat.h5 --threads 1 --eval-every 1000"
run u1 "$B/ldm-train" $U --out "$T/u1.h5" --steps 8 --ckpt-every 2 --keep 2
check "ldm-train 8 steps in one go (--ckpt-every 2 --keep 2)" ok u1
run u2a "$B/ldm-train" $U --out "$T/u2.h5" --steps 4
run u2b "$B/ldm-train" $UR --out "$T/u2.h5" --steps 8 --resume
check "ldm-train 4 steps, then --resume to 8" ok u2b
check "ldm resume: checkpoints bit-identical (model, optim, ema, attributes)" same_ckpt "$T/u1.h5" "$T/u2.h5"
check "ldm resume: same loss and grad norm at every step" same_losses "$T/u1.h5.log.jsonl" "$T/u2.h5.log.jsonl"
kept=$(cd "$T" && ls u1.step*.h5 2>/dev/null | tr '\n' ' ')
check "--keep 2 leaves exactly step6, step8 (got: $kept)" test "$kept" = "u1.step6.h5 u1.step8.h5 "
cp "$T/u1.step6.h5" "$T/u3.h5"
run u3 "$B/ldm-train" $UR --out "$T/u3.h5" --steps 8 --resume
check "ldm resume from the periodic checkpoint of step 6: bit-identical at 8" same_ckpt "$T/u1.h5" "$T/u3.h5"

# SIGTERM in the middle of a run.
"$B/ldm-train" $U --out "$T/ui.h5" --steps 1000000 >"$T/ui.err" 2>&1 &
pid=$!
wait_lines "$T/ui.h5.log.jsonl" 3
kill -TERM $pid; wait $pid; rc=$?
S=$(sed -n 's/.*interrupted; checkpoint written to .* at step \([0-9]*\).*/\1/p' "$T/ui.err")
check "ldm-train on SIGTERM: exit 0 and 'checkpoint written ... at step S' (S=$S)" test "$rc" -eq 0 -a -n "$S"
if [ -n "$S" ]; then
    check "the SIGTERM checkpoint is at step $S" test "$(ckpt_step "$T/ui.h5")" = "$S"
    S2=$((S + 3))
    run ui2 "$B/ldm-train" $UR --out "$T/ui.h5" --steps $S2 --resume
    run ur "$B/ldm-train" $U --out "$T/ur.h5" --steps $S2
    check "ldm resume from the SIGTERM checkpoint (step $S -> $S2)" ok ui2
    check "ldm resume from SIGTERM: bit-identical at step $S2" same_ckpt "$T/ur.h5" "$T/ui.h5"
    check "ldm resume from SIGTERM: same losses at every step" same_losses "$T/ur.h5.log.jsonl" "$T/ui.h5.log.jsonl"
fi

# kill -9 mid-checkpoint, then resume.
cp "$T/u2.h5" "$T/u2.before"
LDM_FAULT_CKPT_ABORT=1 "$B/ldm-train" $UR --out "$T/u2.h5" --steps 9 --resume >"$T/uf.err" 2>&1; rc=$?
check "ldm-train killed mid-checkpoint (exit $rc, wanted 3)" test $rc -eq 3
check "... the previous checkpoint is byte-identical" cmp -s "$T/u2.h5" "$T/u2.before"
run u2c "$B/ldm-train" $UR --out "$T/u2.h5" --steps 9 --resume
check "... and resumes from it" ok u2c

# Real kill -9 at random moments of a run that checkpoints every step: the
# file at --out is always a whole checkpoint that resumes.
for delay in 0.7 1.1 1.6; do
    "$B/ldm-train" $UR --out "$T/u2.h5" --steps 1000000 --ckpt-every 1 --resume >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid; wait $pid 2>/dev/null
    s=$(ckpt_step "$T/u2.h5")
    run uk "$B/ldm-train" $UR --out "$T/u2.h5" --steps $((s + 1)) --resume
    check "kill -9 after ${delay}s: checkpoint at step $s is whole and resumes" ok uk
    rm -f "$T"/u2.h5.tmp.*
done

# NaN loss; a file-size limit.
cp "$T/u2.h5" "$T/u2.before"
s=$(ckpt_step "$T/u2.h5")
LDM_FAULT_NAN_STEP=$((s + 2)) "$B/ldm-train" $UR --out "$T/u2.h5" --steps $((s + 4)) --ckpt-every 1 --resume >"$T/un.err" 2>&1; rc=$?
check "ldm-train NaN at step $((s + 2)): exit 1 (got $rc) naming the step" \
    test $rc -eq 1 -a -n "$(grep "step $((s + 2)): the loss is not finite" "$T/un.err")"
check "... the checkpoint is the one of step $((s + 1)) (not overwritten)" test "$(ckpt_step "$T/u2.h5")" = $((s + 1))
cp "$T/u2.h5" "$T/u2.before"
(ulimit -f 100; exec "$B/ldm-train" $UR --out "$T/u2.h5" --steps $((s + 3)) --resume) >"$T/ud.err" 2>&1; rc=$?
check "ldm-train under ulimit -f: exit 1 (got $rc) with a message" \
    test $rc -eq 1 -a -n "$(grep 'writing the checkpoint failed' "$T/ud.err")"
check "... the previous checkpoint is byte-identical, no temporary left" cmp -s "$T/u2.h5" "$T/u2.before"
check "... no temporary file left" no_tmp "$T/u2.h5"

# ---------------------------------------------------------------- streaming
# A 100-image IDX file (the first 100 of fashion-mnist-test, header count
# patched), so that a short run crosses epochs (90 training items, batch 16:
# 6 steps an epoch).
FM=/usr/share/datasets/fashion-mnist
zcat $FM/t10k-images-idx3-ubyte.gz | head -c $((16 + 100 * 784)) >"$T/small-images-idx3-ubyte"
printf '\000\000\000\144' | dd of="$T/small-images-idx3-ubyte" bs=1 seek=4 conv=notrunc 2>/dev/null
run se "$B/vae-encode" --vae "$T/v1.h5" --data "$T/small-images-idx3-ubyte" --out "$T/small.h5" --threads 1
check "vae-encode of a 100-image IDX file" ok se
# Resume notices changed data: a changed image, fewer images.
cp "$T/small-images-idx3-ubyte" "$T/chg-images-idx3-ubyte"
run dc0 "$B/vae-train" $V --data "$T/chg-images-idx3-ubyte" --out "$T/vdc.h5" --steps 2
printf '\377\377\377\377' | dd of="$T/chg-images-idx3-ubyte" bs=1 seek=$((16 + 784 * 50 + 400)) conv=notrunc 2>/dev/null
run dc1 "$B/vae-train" $VR --data "$T/chg-images-idx3-ubyte" --out "$T/vdc.h5" --steps 4 --resume
check "vae-train --resume on an IDX file whose images changed: refused" \
    test $rc -eq 1 -a -n "$(grep 'images changed' "$T/dc1.err")"
head -c $((16 + 784 * 90)) "$T/small-images-idx3-ubyte" >"$T/chg-images-idx3-ubyte"
printf '\000\000\000\132' | dd of="$T/chg-images-idx3-ubyte" bs=1 seek=4 conv=notrunc 2>/dev/null
run dc2 "$B/vae-train" $VR --data "$T/chg-images-idx3-ubyte" --out "$T/vdc.h5" --steps 4 --resume
check "vae-train --resume on an IDX file that shrank from 100 to 90 images: refused" \
    test $rc -eq 1 -a -n "$(grep 'the data changed' "$T/dc2.err")"
S="--latents $T/small.h5 --base-channels 16 --batch 16 --threads 2 --eval-every 5"
run ss "$B/ldm-train" $S --out "$T/us.h5" --steps 14
run sm "$B/ldm-train" $S --out "$T/um.h5" --steps 14 --in-memory
check "ldm-train streamed and --in-memory, 14 steps over 3 epochs" ok ss
check "... bit-identical checkpoints (streamed vs in memory)" same_ckpt "$T/us.h5" "$T/um.h5"
check "... same losses at every step" same_losses "$T/us.h5.log.jsonl" "$T/um.h5.log.jsonl"
run sr1 "$B/ldm-train" $S --out "$T/usr.h5" --steps 9 --in-memory
run sr2 "$B/ldm-train" $S --out "$T/usr.h5" --steps 14 --resume
check "... in memory to step 9 (mid-epoch), streamed --resume to 14: bit-identical" same_ckpt "$T/us.h5" "$T/usr.h5"
check "the loss plot is written beside the checkpoint" \
    test "$(head -c 4 "$T/us.loss.png" | od -An -c | tr -d ' ')" = '211PNG'
run ss2 "$B/ldm-train" $S --out "$T/us.h5" --steps 3
check "a fresh run over an old one starts a fresh log (3 records) and keeps the old one aside" \
    test "$(grep -c '"loss"' "$T/us.h5.log.jsonl")" -eq 3 -a "$(grep -c '"loss"' "$T/us.h5.log.jsonl.prev")" -eq 14

# The cache is truncated while a run streams from it: a message naming the
# cache, a non-zero exit, the checkpoint untouched.
cp "$T/lat.h5" "$T/latcut.h5"
run ct0 "$B/ldm-train" --latents "$T/latcut.h5" --base-channels 16 --batch 16 --threads 1 --out "$T/ucut.h5" --steps 2
cp "$T/ucut.h5" "$T/ucut.before"
"$B/ldm-train" --latents "$T/latcut.h5" --threads 1 --out "$T/ucut.h5" --steps 1000000 --ckpt-every 1000000 --resume >"$T/ct.err" 2>&1 &
pid=$!
wait_lines "$T/ucut.h5.log.jsonl" 5
truncate -s 65536 "$T/latcut.h5"
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null; wait $pid; rc=$?
check "ldm-train on a cache truncated mid-run: exit 1 (got $rc) naming the cache" \
    test $rc -eq 1 -a -n "$(grep "latcut.h5" "$T/ct.err" | grep -i "item")"
check "... the checkpoint is untouched" cmp -s "$T/ucut.h5" "$T/ucut.before"

# ---------------------------------------------------------------- class-conditional
# The same 100 images with their labels beside them. A conditional run
# (label dropout on, base width 40 so that GroupNorm keeps the class path:
# at 32 channels or fewer a group is one channel and the time and class
# embedding cancel out) over 3 epochs: streamed == in memory, and exact
# resume mid-epoch, so the dropout draws follow (seed, step, place) alone.
cp "$T/small-images-idx3-ubyte" "$T/lab-images-idx3-ubyte"
zcat $FM/t10k-labels-idx1-ubyte.gz | head -c $((8 + 100)) >"$T/lab-labels-idx1-ubyte"
printf '\000\000\000\144' | dd of="$T/lab-labels-idx1-ubyte" bs=1 seek=4 conv=notrunc 2>/dev/null
run ke "$B/vae-encode" --vae "$T/v1.h5" --data "$T/lab-images-idx3-ubyte" --out "$T/lab.h5" --threads 1
check "vae-encode of the 100-image IDX file with its labels" ok ke
K="--latents $T/lab.h5 --base-channels 40 --batch 16 --threads 1 --eval-every 5 --num-classes 10 --p-uncond 0.3"
run ks "$B/ldm-train" $K --out "$T/ks.h5" --steps 14
run km "$B/ldm-train" $K --out "$T/km.h5" --steps 14 --in-memory
check "conditional ldm-train streamed and --in-memory, 14 steps over 3 epochs" ok ks
check "... bit-identical checkpoints (streamed vs in memory)" same_ckpt "$T/ks.h5" "$T/km.h5"
check "... same losses at every step" same_losses "$T/ks.h5.log.jsonl" "$T/km.h5.log.jsonl"
run kr1 "$B/ldm-train" $K --out "$T/kr.h5" --steps 9
run kr2 "$B/ldm-train" --latents "$T/lab.h5" --threads 1 --eval-every 5 --out "$T/kr.h5" --steps 14 --resume --in-memory
check "... 9 steps, then --resume to 14 (settings from the checkpoint)" ok kr2
check "... conditional resume: bit-identical at step 14" same_ckpt "$T/ks.h5" "$T/kr.h5"
check "... same losses at every step" same_losses "$T/ks.h5.log.jsonl" "$T/kr.h5.log.jsonl"
run k0 "$B/ldm-train" $K --out "$T/k0.h5" --steps 14 --p-uncond 0
check "... --p-uncond 0 trains another model (the labels matter)" sh -c "! h5diff -q '$T/ks.h5' '$T/k0.h5' >/dev/null 2>&1"
run kn "$B/ldm-train" --latents "$T/small.h5" --base-channels 16 --batch 16 --threads 1 --out "$T/kn.h5" --steps 2 --num-classes 10
check "--num-classes on the cache without labels: exit 1 (got $rc) naming it" \
    test $rc -eq 1 -a -n "$(grep "small.h5: the cache has no labels" "$T/kn.err")"
check "... and no checkpoint written" test ! -e "$T/kn.h5"

finish robust_test
