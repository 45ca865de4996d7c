#!/bin/bash
# Runs ldm-bench (C) and tests/reference/torch_bench.py (PyTorch 1.13 on the
# identical networks) row by row, alternating C and PyTorch (A B A B ...) for
# --rounds rounds at each thread count, every row in a fresh process so that
# its peak RSS is its own. Prints a table of medians over the rounds and
# writes every raw JSON line (with the row label and round added) to --out.
# First checks that both sides count the same model FLOPs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PY=${PYTHON:-/usr/bin/python3}

usage() {
    cat >&2 <<USAGE
usage: $0 [options]
  --rounds N      C/PyTorch pairs per row and thread count (default 3)
  --reps R        timed steps per run; each run reports their median (default 5)
  --warmup W      untimed steps before them (default 1)
  --threads LIST  thread counts (default "1 2")
  --rows LIST     labels to run (default: all of them, see below)
  --build DIR     meson build folder holding tools/ldm-bench (default build)
  --out FILE      raw JSON lines (default bench-side-by-side.jsonl)
  --isa MODE      instruction set of the GEMMs and convolutions on both sides:
                  env (default: as the environment sets OPENBLAS_CORETYPE and
                  ONEDNN_MAX_CPU_ISA), avx2 (OpenBLAS Haswell kernels for C and
                  PyTorch, oneDNN limited to AVX2) or avx512 (OpenBLAS SkylakeX
                  kernels, oneDNN up to AVX-512); avx512 needs a CPU with it
  --torch-glibc-malloc
                  run PyTorch with glibc's heap trimming on (by default it is
                  off: see tests/reference/alloc.py)
Rows: vae-train vae-encode unet-train ddim (the default models on 1x32x32),
unet-train-b32 unet-train-b64 unet-train-b256 (UNet step batch scaling),
vae-train-rgb64 unet-train-rgb64 (64x64 RGB images: 4x16x16 latents, UNet
channel multipliers 1,2,2, attention at 4x4), kl-train (one kl-gan step of
vae-kl-f4 with the patchgan-d3 discriminator on and both Adam updates, batch
32, without LPIPS), kl-encode (vae-kl-f4's encoder, batch 256), both on 64x64
RGB images.
USAGE
}

rounds=3 reps=5 warmup=1 threads="1 2" rows="" build=build out=bench-side-by-side.jsonl
torch_malloc="" isa=env
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --isa) isa=$2; shift 2 ;;
    --torch-glibc-malloc) torch_malloc=--glibc-malloc-defaults; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown option $1" >&2; usage; exit 2 ;;
    esac
done
for v in "$rounds" "$reps"; do
    case $v in ''|*[!0-9]*|0) echo "error: --rounds and --reps must be positive integers" >&2; exit 2 ;; esac
done
case $warmup in ''|*[!0-9]*) echo "error: --warmup must be a non-negative integer" >&2; exit 2 ;; esac
for t in $threads; do
    case $t in ''|*[!0-9]*|0) echo "error: --threads takes positive integers" >&2; exit 2 ;; esac
done

# Both sides pick their kernels from the CPU unless told: OpenBLAS (C's GEMMs
# and PyTorch's matmuls) reads OPENBLAS_CORETYPE, oneDNN (PyTorch's
# convolutions) ONEDNN_MAX_CPU_ISA. Pinning both to one ISA compares code, not
# vector width.
case $isa in
env) ;;
avx2) export OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2 ;;
avx512)
    if ! grep -qw avx512f /proc/cpuinfo; then
        echo "error: --isa avx512: this CPU has no AVX-512" >&2
        exit 2
    fi
    export OPENBLAS_CORETYPE=SkylakeX ONEDNN_MAX_CPU_ISA=AVX512_CORE ;;
*) echo "error: --isa takes env, avx2 or avx512" >&2; usage; exit 2 ;;
esac

bench=${LDM_BENCH:-$build/tools/ldm-bench}
[ -x "$bench" ] || bench=$root/$build/tools/ldm-bench
if [ ! -x "$bench" ]; then
    echo "error: no ldm-bench at $build/tools/ldm-bench; build it: meson setup $build && ninja -C $build tools/ldm-bench" >&2
    exit 1
fi
torch_bench=$root/tests/reference/torch_bench.py
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "error: $PY cannot import torch (Debian: apt install python3-torch)" >&2
    exit 1
fi

# label|flags: the flags both programs get.
all_rows=(
    "vae-train|--row vae-train"
    "vae-encode|--row vae-encode"
    "unet-train|--row unet-train"
    "ddim|--row ddim"
    "unet-train-b32|--row unet-train --batch 32"
    "unet-train-b64|--row unet-train --batch 64"
    "unet-train-b256|--row unet-train --batch 256"
    "vae-train-rgb64|--row vae-train --image-size 64 --channels 3"
    "unet-train-rgb64|--row unet-train --image-size 64 --channels 3"
    "kl-train|--row kl-train --image-size 64 --channels 3"
    "kl-encode|--row kl-encode --image-size 64 --channels 3"
)
selected=()
for spec in "${all_rows[@]}"; do
    label=${spec%%|*}
    if [ -z "$rows" ] || [[ " $rows " == *" $label "* ]]; then selected+=("$spec"); fi
done
if [ ${#selected[@]} -eq 0 ]; then
    echo "error: --rows '$rows' names none of the rows" >&2
    usage
    exit 2
fi

# Same model FLOPs on both sides, or the GFLOP/s columns compare nothing
# (the kl autoencoder and the discriminator are counted at the same sizes).
for cfg in "--image-size 32 --channels 1" "--image-size 64 --channels 3"; do
    # shellcheck disable=SC2086
    if ! "$PY" "$torch_bench" --check-flops "$bench" $cfg; then
        echo "error: C and PyTorch FLOP counts differ ($cfg)" >&2
        exit 1
    fi
done

: > "$out" || exit 1
failed=0
echo "bench: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: OpenBLAS picks)}, ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-(unset: oneDNN picks)}; rounds $rounds, reps $reps, warmup $warmup; PyTorch malloc: ${torch_malloc:-keep freed memory}; raw lines in $out" >&2
for spec in "${selected[@]}"; do
    label=${spec%%|*}
    flags=${spec#*|}
    for t in $threads; do
        for r in $(seq 1 "$rounds"); do
            for impl in c torch; do
                echo "bench: $label threads $t round $r: $impl" >&2
                if [ $impl = c ]; then
                    # shellcheck disable=SC2086
                    line=$("$bench" $flags --threads "$t" --reps "$reps" --warmup "$warmup" 2>/dev/null)
                else
                    # shellcheck disable=SC2086
                    line=$("$PY" "$torch_bench" $flags $torch_malloc --threads "$t" --reps "$reps" --warmup "$warmup" 2>/dev/null)
                fi
                rc=$?
                if [ $rc -ne 0 ] || [ -z "$line" ]; then
                    echo "warning: $impl $label at $t threads failed (exit $rc); rerun it by hand to see why" >&2
                    failed=$((failed + 1))
                    continue
                fi
                echo "$line" | sed "s/^{/{\"label\": \"$label\", \"round\": $r, \"isa\": \"$isa\", /" >> "$out"
            done
        done
    done
done

"$PY" - "$out" <<'PYTABLE'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(list)  # (label, impl, threads) -> JSON lines
order = []
for line in open(sys.argv[1]):
    d = json.loads(line)
    key = (d["label"], d["impl"], d["threads"])
    runs[key].append(d)
    if d["label"] not in order:
        order.append(d["label"])
threads = sorted({k[2] for k in runs})

def med(label, impl, t, field):
    v = [d[field] for d in runs.get((label, impl, t), [])]
    return statistics.median(v) if v else None

def f(x, fmt):
    return format(x, fmt) if x is not None else "-"

head = ("row", "thr", "batch", "C img/s", "torch img/s", "C/torch", "C/best torch",
        "C %peak", "torch %peak", "C RSS MB", "torch RSS MB", "C 1->2", "torch 1->2")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for label in order:
    best_torch = max((med(label, "torch", t, "img_per_s") or 0) for t in threads) or None
    for t in threads:
        c, p = med(label, "c", t, "img_per_s"), med(label, "torch", t, "img_per_s")
        if c is None and p is None:
            continue
        batch = runs.get((label, "c", t), runs.get((label, "torch", t)))[0]["batch"]
        scal = {}
        for impl in ("c", "torch"):
            a, b = med(label, impl, 1, "img_per_s"), med(label, impl, 2, "img_per_s")
            scal[impl] = f"{b / a:.2f}x" if t == 2 and a and b else "-"
        print("| " + " | ".join([
            label, str(t), str(batch), f(c, ".2f"), f(p, ".2f"),
            f(c / p if c and p else None, ".2f"),
            f(c / best_torch if c and best_torch else None, ".2f"),
            f(med(label, "c", t, "pct_peak"), ".1f"), f(med(label, "torch", t, "pct_peak"), ".1f"),
            f(med(label, "c", t, "peak_rss_mb"), ".0f"), f(med(label, "torch", t, "peak_rss_mb"), ".0f"),
            scal["c"], scal["torch"]]) + " |")
print()
for t in threads:
    cs = [d["sgemm_peak_gflops"] for k, v in runs.items() if k[1] == "c" and k[2] == t for d in v]
    ts = [d["sgemm_peak_gflops"] for k, v in runs.items() if k[1] == "torch" and k[2] == t for d in v]
    if cs:
        print(f"sgemm 1024 peak at {t} thread(s): cblas_sgemm {statistics.median(cs):.1f} GFLOP/s, "
              f"torch.mm {statistics.median(ts):.1f} GFLOP/s (medians over all runs)" if ts else
              f"sgemm 1024 peak at {t} thread(s): cblas_sgemm {statistics.median(cs):.1f} GFLOP/s")
fl = {}
for (label, impl, t), v in runs.items():
    for d in v:
        if fl.setdefault(label, d["flops_per_img"]) != d["flops_per_img"]:
            print(f"WARNING: {label}: C and torch FLOPs per image differ")
print("model GFLOP per image: " + ", ".join(f"{k} {v / 1e9:.4g}" for k, v in fl.items()))
base = [d["base_rss_mb"] for k, v in runs.items() if k[1] == "torch" for d in v]
if base:
    print(f"(torch RSS includes about {statistics.median(base):.0f} MB for the interpreter and "
          "torch itself, measured before the model was built)")
PYTABLE
if [ "$failed" -gt 0 ]; then
    echo "error: $failed run(s) failed; their rows are missing from the table" >&2
    exit 1
fi
