#!/bin/bash
# Chains the two stages on one data set: vae-train -> vae-encode ->
# ldm-train -> ldm-sample, each with its own wall-clock budget. Training
# stages run with --resume, so rerunning the same command after a crash (or
# Ctrl-C) continues the runs. Ctrl-C stops the whole chain: the running stage
# writes its checkpoint and no later stage starts.
set -u
here=$(cd "$(dirname "$0")" && pwd)
BIN=${LDM_BIN:-$here/../build/tools}

usage() {
    cat >&2 <<USAGE
usage: $0 --data SRC --out DIR [options]
  --data SRC          image folder, IDX file, fashion-mnist or fashion-mnist-test
  --out DIR           run folder (vae.h5, latents.h5, unet.h5, samples.png, logs)
  --image-size S      image side, a multiple of 4 (default 32)
  --channels C        1 or 3 (default 1)
  --hflip             random horizontal flips for the VAE
  --vae-minutes M     VAE budget (default 3)
  --ldm-minutes M     UNet budget (default 6)
  --arch A            autoencoder family: f4c4 (default) or kl (photographs; see README)
  --attn-res LIST     latent sides with attention (default: ldm-train's, the lowest level's)
  --n N               images to sample (default 64)
  --eta E             DDIM eta of the final samples (default 0, deterministic)
  --threads T         threads (default: all cores)
  --seed S            seed (default 0)
USAGE
}

data="" out="" size=32 ch=1 hflip="" vmin=3 lmin=6 attn="" arch=f4c4 n=64 eta=0 threads="" seed=0
while [ $# -gt 0 ]; do
    case $1 in
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --image-size) size=$2; shift 2 ;;
    --channels) ch=$2; shift 2 ;;
    --hflip) hflip=--hflip; shift ;;
    --vae-minutes) vmin=$2; shift 2 ;;
    --ldm-minutes) lmin=$2; shift 2 ;;
    --attn-res) attn=$2; shift 2 ;;
    --arch) arch=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --eta) eta=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: $0: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$data" ] && [ -n "$out" ] || { usage; echo "error: --data and --out are required" >&2; exit 2; }
[ -x "$BIN/vae-train" ] || { echo "error: $BIN/vae-train not found; run tools/setup.sh first" >&2; exit 1; }
mkdir -p "$out" || exit 1
attnflag=""
[ -n "$attn" ] && attnflag="--attn-res $attn"
common="--seed $seed"
[ -n "$threads" ] && common="$common --threads $threads"

stopped=0
trap 'stopped=1' INT TERM
# run STAGE CMD...: runs one stage; stops the chain on failure or interrupt.
run() {
    stage=$1; shift
    echo "== $stage: $*" >&2
    "$@"; rc=$?
    if [ $stopped -ne 0 ]; then echo "$0: interrupted during $stage; stopping the chain" >&2; exit 130; fi
    if [ $rc -ne 0 ]; then echo "$0: $stage failed (exit $rc); stopping the chain" >&2; exit $rc; fi
}

t0=$(date +%s)
run vae-train "$BIN/vae-train" --data "$data" --out "$out/vae.h5" --minutes "$vmin" \
    --arch "$arch" --image-size "$size" --channels "$ch" $hflip --resume $common
run vae-reconstruct "$BIN/vae-reconstruct" --vae "$out/vae.h5" --data "$data" --n 32 --out "$out/reconstructions.png"
run vae-encode "$BIN/vae-encode" --vae "$out/vae.h5" --data "$data" --out "$out/latents.h5" $common
run ldm-train "$BIN/ldm-train" --latents "$out/latents.h5" --out "$out/unet.h5" --minutes "$lmin" \
    $attnflag --resume $common
run ldm-sample "$BIN/ldm-sample" --unet "$out/unet.h5" --vae "$out/vae.h5" --n "$n" \
    --eta "$eta" --out "$out/samples.png" $common
echo "$0: done in $(( $(date +%s) - t0 )) s; samples in $out/samples.png" >&2
