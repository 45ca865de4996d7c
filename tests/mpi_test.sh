#!/bin/sh
# Data-parallel ldm-train and vae-train under MPI (tools/dist.h), through
# the real tools and mpirun. ldm-train on a small random cache (gen-cache):
#   - K = 2 and 4 ranks train bit-identically to one process with the same
#     --grad-chunks: every dataset and attribute of the checkpoints, the loss
#     and grad norm logged at every step; over an epoch's short last batch
#     (uneven chunks, an empty chunk, a rank with no items), with classes
#     (label dropout), streamed and in memory;
#   - --resume of a K = 2 checkpoint on one process, and the reverse, equal
#     the uninterrupted run;
#   - SIGTERM to one rank: one checkpoint, exit 0; resuming it is exact;
#   - bad input, each a message naming the rank and a non-zero exit: no
#     --grad-chunks for the ranks, a number of ranks not a power of two,
#     ranks with other flags, a cache missing on one rank, a rank resuming
#     other weights, a cache truncated under one rank mid-run, ranks whose
#     weights drift apart (LDM_FAULT_DIVERGE_STEP).
# vae-train on 40 generated images (gen-images.sh), both families (f4c4; kl
# tiny with LPIPS and the discriminator starting mid-run):
#   - 2 ranks train bit-identically to one process at --grad-chunks 2 (an
#     epoch's short last batch: uneven chunks), the kl family also 4 ranks at
#     --grad-chunks 4 (an empty chunk, ranks with no items): checkpoints
#     (/disc and its running statistics included) and logged figures;
#   - --resume across K both ways (the kl runs with the discriminator on);
#   - a rank reading other images: a message naming the rank.
# Every rank runs one thread, as the single process does: a rank's own sums
# are bit-identical only at the same thread count.
# Needs mpirun (openmpi-bin) and h5diff (hdf5-tools).
# usage: mpi_test.sh BUILD_DIR yes|no   (no: built without MPI, skipped)
set -u
if [ "${2:-no}" != yes ]; then
    echo "mpi_test: built without MPI (install libopenmpi-dev, then meson setup --reconfigure): skipped"
    exit 77 # meson: skipped
fi
for p in mpirun h5diff h5dump; do
    if ! command -v $p >/dev/null 2>&1; then
        echo "mpi_test: $p not found (apt-get install openmpi-bin hdf5-tools): skipped"
        exit 77
    fi
done
B=$(cd "$1" && pwd)
L=$B/tools/ldm-train
. "$(dirname "$0")/testlib.sh"
# As root like CI; more ranks than cores on a 2-core machine.
MPI="mpirun --allow-run-as-root --oversubscribe"

ckpt_attr() { h5dump -a "/$2" "$1" 2>/dev/null | sed -n 's/.*(0): \([0-9-]*\).*/\1/p'; }
# watchdog PID: kills PID after 120 s (ranks that fail to agree would wait
# for each other for ever).
watchdog() { (sleep 120; kill "$1" 2>/dev/null) >/dev/null 2>&1 & }
# rank_pid MPIRUN_PID R: the process id of rank R.
rank_pid() {
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"; return
        fi
    done
}

"$B/tools/gen-cache" --out "$T/lat.h5" --n 700 --side 8 >/dev/null 2>&1 ||
    { echo "mpi_test: gen-cache failed"; exit 1; }
# 630 training items in batches of 22: 29 steps an epoch, the last of 14
# items, in chunks of 6 (6, 6, 2 and 0 items: rank 1 of 2 gets 2, rank 3 of
# 4 none).
A="--latents $T/lat.h5 --base-channels 16 --batch 22 --threads 1 --eval-every 10 --num-classes 10 --grad-chunks 4"

# ---------------------------------------------------------------- K ranks == one process
run k1 "$L" $A --out "$T/k1.h5" --steps 36
check "one process, --grad-chunks 4, 36 steps" ok k1
check "... the checkpoint stores grad_chunks 4" test "$(ckpt_attr "$T/k1.h5" grad_chunks)" = 4
run k2 $MPI -np 2 "$L" $A --out "$T/k2.h5" --steps 36
check "2 ranks, 36 steps (streamed)" ok k2
check "2 ranks == one process: checkpoints bit-identical" same_ckpt "$T/k1.h5" "$T/k2.h5"
check "2 ranks == one process: the same loss and grad norm at every step" \
    same_losses "$T/k1.h5.log.jsonl" "$T/k2.h5.log.jsonl"
run k4 $MPI -np 4 "$L" $A --out "$T/k4.h5" --steps 36 --in-memory
check "4 ranks, 36 steps (--in-memory)" ok k4
check "4 ranks == one process: checkpoints bit-identical" same_ckpt "$T/k1.h5" "$T/k4.h5"
check "4 ranks == one process: the same loss and grad norm at every step" \
    same_losses "$T/k1.h5.log.jsonl" "$T/k4.h5.log.jsonl"
check "only rank 0 writes: one 'done' line" test "$(grep -c 'ldm-train: done' "$T/k4.err")" = 1

# ---------------------------------------------------------------- resume across K
run r2a $MPI -np 2 "$L" $A --out "$T/r21.h5" --steps 18
run r2b "$L" $A --out "$T/r21.h5" --steps 36 --resume
check "18 steps on 2 ranks, then --resume on one process to 36" ok r2b
check "... bit-identical to the uninterrupted run" same_ckpt "$T/k1.h5" "$T/r21.h5"
check "... the same losses at every step" same_losses "$T/k1.h5.log.jsonl" "$T/r21.h5.log.jsonl"
run r1a "$L" $A --out "$T/r12.h5" --steps 18
run r1b $MPI -np 2 "$L" --latents "$T/lat.h5" --threads 1 --out "$T/r12.h5" --steps 36 --resume
check "18 steps on one process, then --resume on 2 ranks to 36 (settings from the checkpoint)" ok r1b
check "... bit-identical to the uninterrupted run" same_ckpt "$T/k1.h5" "$T/r12.h5"
check "... the same losses at every step" same_losses "$T/k1.h5.log.jsonl" "$T/r12.h5.log.jsonl"

# ---------------------------------------------------------------- SIGTERM on one rank
$MPI -np 2 "$L" $A --out "$T/si.h5" --steps 1000000 >"$T/si.err" 2>&1 &
mp=$!
watchdog $mp
wait_lines "$T/si.h5.log.jsonl" 12
r1=$(rank_pid $mp 1)
[ -n "$r1" ] && kill -TERM "$r1"
wait $mp; rc=$?
S=$(sed -n 's/.*interrupted; checkpoint written to .* at step \([0-9]*\).*/\1/p' "$T/si.err")
check "SIGTERM to rank 1 (pid ${r1:-not found}): exit 0 (got $rc), 'checkpoint written ... at step S' once (S=$S)" \
    test "$rc" -eq 0 -a -n "$S" -a "$(grep -c 'checkpoint written' "$T/si.err")" = 1
if [ -n "$S" ]; then
    check "... the checkpoint is at step $S" test "$(ckpt_step "$T/si.h5")" = "$S"
    S2=$((S + 3))
    run si2 "$L" $A --out "$T/si.h5" --steps $S2 --resume
    run sir "$L" $A --out "$T/sir.h5" --steps $S2
    check "... resumed on one process to $S2: bit-identical to an uninterrupted run" \
        same_ckpt "$T/sir.h5" "$T/si.h5"
fi

# ---------------------------------------------------------------- bad input
G="--latents $T/lat.h5 --base-channels 16 --batch 22 --threads 1 --eval-every 10 --steps 4"
expect_fail "2 ranks without --grad-chunks: the flag to give" "give --grad-chunks 2" \
    $MPI -np 2 "$L" $G --out "$T/b1.h5"
expect_fail "3 ranks" "must be a power of two" $MPI -np 3 "$L" $G --out "$T/b2.h5" --grad-chunks 4
expect_fail "rank 1 with another --lr" "rank 1 of 2 has other flags" \
    $MPI -np 1 "$L" $G --out "$T/b3.h5" --grad-chunks 2 : -np 1 "$L" $G --out "$T/b3.h5" --grad-chunks 2 --lr 1e-3
expect_fail "rank 1 cannot open its cache: named" "rank 1 of 2 stopped during its setup" \
    $MPI -np 1 "$L" $G --out "$T/b4.h5" --grad-chunks 2 : -np 1 "$L" $G --latents "$T/none.h5" --out "$T/b4.h5" --grad-chunks 2
check "... with the rank's own message naming the file" grep -q "none.h5" "$T/err"
check "... no checkpoint written" test ! -e "$T/b4.h5"

# Two working folders with the same relative paths: the same flags, each
# rank its own files.
mkdir "$T/d0" "$T/d1"
cp "$T/lat.h5" "$T/d0/"; cp "$T/lat.h5" "$T/d1/"
W="--latents lat.h5 --base-channels 16 --batch 22 --threads 1 --eval-every 10 --grad-chunks 2 --out u.h5"
(cd "$T/d0" && "$L" $W --steps 5 >/dev/null 2>&1)
cp "$T/d0/u.h5" "$T/d1/u.h5"
"$B/tests/h5poke" "$T/d1/u.h5" /model/conv_in.weight 0.5
expect_fail "rank 1 resumes other weights" "rank 1 of 2 starts from other weights" \
    $MPI -np 1 -wdir "$T/d0" "$L" $W --steps 10 --resume : -np 1 -wdir "$T/d1" "$L" $W --steps 10 --resume
check "... the checkpoint of rank 0 untouched" test "$(ckpt_step "$T/d0/u.h5")" = 5

rm -f "$T"/d0/u.h5* "$T"/d1/u.h5*
$MPI -np 1 -wdir "$T/d0" "$L" $W --steps 1000000 : -np 1 -wdir "$T/d1" "$L" $W --steps 1000000 \
    >"$T/tr.err" 2>&1 &
mp=$!
watchdog $mp
wait_lines "$T/d0/u.h5.log.jsonl" 3
truncate -s 100000 "$T/d1/lat.h5"
wait $mp; rc=$?
check "the cache truncated under rank 1 mid-run: exit $rc (wanted 1..123), 'rank 1 of 2 failed in this step'" \
    test $rc -ge 1 -a $rc -lt 124 -a -n "$(grep 'rank 1 of 2 failed in this step' "$T/tr.err")"
check "... and rank 1's message naming the cache" grep -q "lat.h5: cannot read items" "$T/tr.err"

export LDM_FAULT_DIVERGE_STEP=7
expect_fail "the weights of rank 1 drift at step 7" "the weights of rank 1 of 2 differ from rank 0's" \
    $MPI -np 2 "$L" $G --out "$T/b5.h5" --grad-chunks 2 --steps 20 --ckpt-every 5
unset LDM_FAULT_DIVERGE_STEP
check "... the last checkpoint is the one of step 5" test "$(ckpt_step "$T/b5.h5")" = 5

# ---------------------------------------------------------------- vae-train
# 36 training images in batches of 10: 4 steps an epoch, the last of 6 items
# (chunks of 5: 5 and 1; chunks of 3: 3, 3, 0 and 0).
V=$B/tools/vae-train
HERE=$(cd "$(dirname "$0")" && pwd)
sh "$HERE/../tools/gen-images.sh" "$T/img" 40 32 >/dev/null 2>&1 ||
    { echo "mpi_test: gen-images failed"; exit 1; }
VF="--data $T/img --channels 3 --image-size 32 --base-channels 8 --batch 10 --hflip --threads 1 \
    --eval-every 10"
VK="--arch kl --data $T/img --image-size 32 --base-channels 8 --groups 4 --ch-mult 1,2 \
    --disc-width 4 --disc-start 3 --perceptual $HERE/golden/lpips_net.h5 --batch 10 --hflip \
    --threads 1 --eval-every 10"
VR="--data $T/img --threads 1 --steps 12 --resume" # the rest from the checkpoint
for arch in f4c4 kl; do
    if [ $arch = f4c4 ]; then VA=$VF; else VA=$VK; fi
    run v1 "$V" $VA --grad-chunks 2 --out "$T/v1$arch.h5" --steps 12
    check "vae-train --arch $arch: one process, --grad-chunks 2, 12 steps" ok v1
    run v2 $MPI -np 2 "$V" $VA --grad-chunks 2 --out "$T/v2$arch.h5" --steps 12
    check "... 2 ranks" ok v2
    check "... 2 ranks == one process: checkpoints bit-identical" \
        same_ckpt "$T/v1$arch.h5" "$T/v2$arch.h5"
    check "... 2 ranks == one process: the same figures at every step" \
        same_losses "$T/v1$arch.h5.log.jsonl" "$T/v2$arch.h5.log.jsonl"
    run va $MPI -np 2 "$V" $VA --grad-chunks 2 --out "$T/v21$arch.h5" --steps 4
    check "... 4 steps on 2 ranks" ok va
    run vb "$V" $VR --out "$T/v21$arch.h5"
    check "... then --resume on one process to 12" ok vb
    check "... bit-identical to the uninterrupted run" same_ckpt "$T/v1$arch.h5" "$T/v21$arch.h5"
    check "... the same figures at every step" \
        same_losses "$T/v1$arch.h5.log.jsonl" "$T/v21$arch.h5.log.jsonl"
    run va "$V" $VA --grad-chunks 2 --out "$T/v12$arch.h5" --steps 5
    check "... 5 steps on one process" ok va
    run vb $MPI -np 2 "$V" $VR --out "$T/v12$arch.h5"
    check "... then --resume on 2 ranks to 12" ok vb
    check "... bit-identical to the uninterrupted run" same_ckpt "$T/v1$arch.h5" "$T/v12$arch.h5"
    check "... the same figures at every step" \
        same_losses "$T/v1$arch.h5.log.jsonl" "$T/v12$arch.h5.log.jsonl"
done
check "the kl checkpoints hold the discriminator's running statistics" \
    sh -c "h5ls -r '$T/v2kl.h5' | grep -q '^/disc/running/main.3.running_var'"
run v1 "$V" $VK --grad-chunks 4 --out "$T/v1g4.h5" --steps 8
run v4 $MPI -np 4 "$V" $VK --grad-chunks 4 --out "$T/v4g4.h5" --steps 8
check "vae-train --arch kl, --grad-chunks 4: 4 ranks (some with no items) run" ok v4
check "... 4 ranks == one process: checkpoints bit-identical" same_ckpt "$T/v1g4.h5" "$T/v4g4.h5"
check "... 4 ranks == one process: the same figures at every step" \
    same_losses "$T/v1g4.h5.log.jsonl" "$T/v4g4.h5.log.jsonl"

# Rank 1's copy of the images differs in one image: other data.
mkdir "$T/e0" "$T/e1"
cp -r "$T/img" "$T/e0/img"; cp -r "$T/img" "$T/e1/img"
first=$(find "$T/e1/img" -name '*.png' | sort | head -1)
find "$T/e1/img" -name '*.png' | sort | sed -n 2p | xargs -I{} cp {} "$first"
E="--data img --channels 3 --image-size 32 --base-channels 8 --batch 10 --threads 1 --steps 2 \
   --grad-chunks 2 --out v.h5"
expect_fail "vae-train: rank 1 reads other images" "rank 1 of 2 reads other data" \
    $MPI -np 1 -wdir "$T/e0" "$V" $E : -np 1 -wdir "$T/e1" "$V" $E
check "... no checkpoint written" test ! -e "$T/e0/v.h5"

finish mpi_test
