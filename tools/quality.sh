#!/bin/bash
# Sample quality of the C pipeline against the same pipeline in PyTorch
# (tests/reference/torch_pipeline.py), by the Frechet distance of
# Fashion-MNIST classifier features to the test set (tests/reference/frechet.py).
# See docs/QUALITY.md. For each seed, runs the C chain (vae-train, vae-encode,
# ldm-train, ldm-sample --out-dir) and the PyTorch one with the same settings,
# one after the other (never at the same time: they share the cores), then
# prints a table and appends one JSON line per run to <out>/results.jsonl.
set -u
cd "$(dirname "$0")/.."
BIN=${LDM_BIN:-build/tools}
PY=${PYTHON:-/usr/bin/python3}
REF=tests/reference

usage() {
    cat >&2 <<USAGE
usage: $0 --equal-steps | --equal-time [options]
  --equal-steps       VAE 285 steps, UNet 850 steps (C must match PyTorch
                      within the seed-to-seed spread)
  --equal-time        VAE 6 minutes, UNet 16 minutes (C should do at least as well)
  --seeds "S ..."     seeds (default "0 1")
  --threads T         threads for every stage, C and PyTorch (default 2)
  --n N               samples per run, DDIM-50 from the EMA weights (default 2000)
  --vae-steps N, --unet-steps N, --vae-minutes M, --unet-minutes M
                      override the mode's budgets (smoke runs)
  --impl "c torch"    which pipelines to run (default both)
  --nice N            run every stage under nice -n N (default 0)
  --out DIR           results folder (default runs/quality)
  --classifier PATH   feature classifier (default runs/quality/classifier.pt),
                      trained first if missing
Environment: LDM_BIN (default build/tools), PYTHON (default /usr/bin/python3).
USAGE
}

mode="" seeds="0 1" threads=2 n=2000 impls="c torch" nicen=0 out=runs/quality
clf=runs/quality/classifier.pt
vsteps="" usteps="" vmin="" umin=""
while [ $# -gt 0 ]; do
    case $1 in
    --equal-steps) mode=steps; shift ;;
    --equal-time) mode=time; shift ;;
    --seeds) seeds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --vae-steps) vsteps=$2; shift 2 ;;
    --unet-steps) usteps=$2; shift 2 ;;
    --vae-minutes) vmin=$2; shift 2 ;;
    --unet-minutes) umin=$2; shift 2 ;;
    --impl) impls=$2; shift 2 ;;
    --nice) nicen=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --classifier) clf=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: $0: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$mode" ] || { usage; echo "error: $0: give --equal-steps or --equal-time" >&2; exit 2; }
if [ "$mode" = steps ]; then
    [ -n "$vsteps$vmin" ] || vsteps=285
    [ -n "$usteps$umin" ] || usteps=850
else
    [ -n "$vsteps$vmin" ] || vmin=6
    [ -n "$usteps$umin" ] || umin=16
fi
for i in $impls; do
    case $i in c|torch) ;; *) echo "error: $0: --impl takes c and/or torch, not '$i'" >&2; exit 2 ;; esac
done
case " $impls " in *" c "*)
    for p in vae-train vae-encode ldm-train ldm-sample; do
        [ -x "$BIN/$p" ] || { echo "error: $BIN/$p not found; build first (tools/setup.sh)" >&2; exit 1; }
    done ;;
esac
mkdir -p "$out" || exit 1
results=$out/results.jsonl
run_id=$(date -u +%Y%m%dT%H%M%SZ)-$mode
NICE="nice -n $nicen"

stopped=0
trap 'stopped=1' INT TERM
# step NAME CMD...: runs one command; exits the driver on failure or Ctrl-C.
step() {
    name=$1; shift
    echo "== $name: $*" >&2
    "$@"; rc=$?
    if [ $stopped -ne 0 ]; then echo "$0: interrupted during $name" >&2; exit 130; fi
    if [ $rc -ne 0 ]; then echo "$0: $name failed (exit $rc)" >&2; exit $rc; fi
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

if [ ! -f "$clf" ]; then
    step classifier $NICE "$PY" $REF/fmnist_classifier.py --out "$clf" --threads "$threads"
fi

# record IMPL SEED DIR: FD of DIR/samples plus the run's steps and timings
# (from the C logs or the PyTorch summary, and DIR/times.json) -> results.jsonl.
record() {
    $NICE "$PY" - "$1" "$2" "$3" "$clf" "$results" "$run_id" "$mode" "$threads" <<'PYEOF'
import json, os, subprocess, sys
sys.path.insert(0, "tests/reference")
import frechet
impl, seed, d, clf, results, run_id, mode, threads = sys.argv[1:]
r = {"run_id": run_id, "mode": mode, "impl": impl, "seed": int(seed), "threads": int(threads)}
try:
    r["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()
except OSError:
    pass
if impl == "c":
    def lines(p):
        with open(p) as f:
            return [json.loads(l) for l in f if l.strip()]
    v, u = lines(f"{d}/vae.h5.log.jsonl"), lines(f"{d}/unet.h5.log.jsonl")
    vs = [l for l in v if "loss" in l]
    us = [l for l in u if "loss" in l]
    r.update(vae_steps=vs[-1]["step"], vae_train_s=vs[-1]["elapsed_s"], vae_loss=vs[-1]["loss"],
             vae_heldout_psnr=[l for l in v if "heldout_psnr" in l][-1]["heldout_psnr"],
             unet_steps=us[-1]["step"], unet_train_s=us[-1]["elapsed_s"], unet_loss=us[-1]["loss"],
             unet_heldout_loss=[l for l in u if "heldout_loss" in l][-1]["heldout_loss"])
    with open(f"{d}/times.json") as f:
        r.update(json.load(f))
else:
    with open(f"{d}/summary.json") as f:
        s = json.load(f)
    for k in ("vae_steps", "vae_train_s", "vae_loss", "vae_heldout_psnr", "encode_s",
              "scale_factor", "unet_steps", "unet_train_s", "unet_loss", "unet_heldout_loss",
              "sample_s", "torch"):
        r[k] = s[k]
e = frechet.evaluate(f"{d}/samples", clf, int(threads))
r.update(n=e["n"], fd=round(e["fd"], 4), class_hist=e["class_hist"], samples=f"{d}/samples")
with open(results, "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"{impl} seed {seed}: FD {r['fd']:.3f} ({r['vae_steps']} VAE steps, "
      f"{r['unet_steps']} UNet steps)", file=sys.stderr)
PYEOF
    rc=$?
    [ $rc -eq 0 ] || { echo "$0: recording $3 failed (exit $rc)" >&2; exit $rc; }
}

# The floor: N real training images against the test set.
step reference $NICE "$PY" - "$n" "$clf" "$results" "$run_id" "$mode" "$threads" <<'PYEOF'
import json, sys
sys.path.insert(0, "tests/reference")
import frechet
n, clf, results, run_id, mode, threads = sys.argv[1:]
e = frechet.evaluate(f"train:{n}", clf, int(threads))
with open(results, "a") as f:
    f.write(json.dumps({"run_id": run_id, "mode": mode, "impl": "data", "seed": None,
                        "n": e["n"], "fd": round(e["fd"], 4),
                        "class_hist": e["class_hist"], "samples": f"train:{n}"}) + "\n")
print(f"reference: {n} training images, FD {e['fd']:.3f}", file=sys.stderr)
PYEOF

budget_c() { # stage steps minutes -> C flags
    [ -n "$2" ] && printf -- '--steps %s ' "$2"
    [ -n "$3" ] && printf -- '--minutes %s ' "$3"
}
budget_py() { # prefix steps minutes -> torch_pipeline flags
    [ -n "$2" ] && printf -- '--%s-steps %s ' "$1" "$2"
    [ -n "$3" ] && printf -- '--%s-minutes %s ' "$1" "$3"
}

for seed in $seeds; do
    for impl in $impls; do
        d=$out/$mode/$impl-s$seed
        rm -rf "$d" && mkdir -p "$d" || exit 1
        if [ "$impl" = c ]; then
            t0=$(now)
            step vae-train $NICE "$BIN/vae-train" --data fashion-mnist --out "$d/vae.h5" \
                $(budget_c vae "$vsteps" "$vmin") --seed "$seed" --threads "$threads"
            t1=$(now)
            step vae-encode $NICE "$BIN/vae-encode" --vae "$d/vae.h5" --data fashion-mnist \
                --out "$d/latents.h5" --seed "$seed" --threads "$threads"
            t2=$(now)
            step ldm-train $NICE "$BIN/ldm-train" --latents "$d/latents.h5" --out "$d/unet.h5" \
                $(budget_c unet "$usteps" "$umin") --seed "$seed" --threads "$threads"
            t3=$(now)
            step ldm-sample $NICE "$BIN/ldm-sample" --unet "$d/unet.h5" --vae "$d/vae.h5" \
                --n "$n" --out-dir "$d/samples" --seed "$seed" --threads "$threads"
            t4=$(now)
            printf '{"vae_wall_s": %.2f, "encode_s": %.2f, "unet_wall_s": %.2f, "sample_s": %.2f}\n' \
                "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" "$(secs "$t2" "$t3")" "$(secs "$t3" "$t4")" \
                > "$d/times.json"
        else
            step torch-pipeline $NICE "$PY" $REF/torch_pipeline.py \
                $(budget_py vae "$vsteps" "$vmin") $(budget_py unet "$usteps" "$umin") \
                --n "$n" --seed "$seed" --threads "$threads" --out-dir "$d/samples" \
                --summary "$d/summary.json"
        fi
        record "$impl" "$seed" "$d"
    done
done

# The table and the verdict for this run.
"$PY" - "$results" "$run_id" "$mode" <<'PYEOF'
import json, sys
results, run_id, mode = sys.argv[1:]
with open(results) as f:
    rows = [r for r in map(json.loads, filter(str.strip, f)) if r["run_id"] == run_id]
print(f"\nrun {run_id} ({'equal steps' if mode == 'steps' else 'equal wall-clock time'})")
print(f"{'impl':6} {'seed':>4} {'VAE steps':>9} {'VAE s':>7} {'UNet steps':>10} {'UNet s':>7} "
      f"{'sample s':>8} {'PSNR':>6} {'UNet loss':>9} {'FD':>8}")
for r in rows:
    if r["impl"] == "data":
        print(f"{'data':6} {'':>4} {'':>9} {'':>7} {'':>10} {'':>7} {'':>8} {'':>6} {'':>9} "
              f"{r['fd']:8.3f}   ({r['samples']}: the floor for n = {r['n']})")
        continue
    print(f"{r['impl']:6} {r['seed']:>4} {r['vae_steps']:>9} {r['vae_train_s']:>7.1f} "
          f"{r['unet_steps']:>10} {r['unet_train_s']:>7.1f} {r['sample_s']:>8.1f} "
          f"{r['vae_heldout_psnr']:>6.2f} {r['unet_heldout_loss']:>9.4f} {r['fd']:>8.3f}")
fd = {i: [r["fd"] for r in rows if r["impl"] == i] for i in ("c", "torch")}
if fd["c"] and fd["torch"]:
    mean = {i: sum(v) / len(v) for i, v in fd.items()}
    spread = max(max(v) - min(v) for v in fd.values())
    print(f"mean FD: C {mean['c']:.3f}, PyTorch {mean['torch']:.3f}; "
          f"seed-to-seed spread (largest max - min) {spread:.3f}")
    diff = mean["c"] - mean["torch"]
    if min(len(v) for v in fd.values()) < 2:
        print("verdict: n/a (one seed: no spread to compare with)")
    elif mode == "steps":
        print(f"verdict: {'PASS' if abs(diff) <= spread else 'FAIL'}: |C - PyTorch| = "
              f"{abs(diff):.3f} {'<=' if abs(diff) <= spread else '>'} spread {spread:.3f}")
    else:
        ok = diff <= 0
        print(f"verdict: {'PASS' if ok else 'FAIL'}: C - PyTorch = {diff:+.3f} "
              f"({'C at least as good' if ok else 'C worse'}"
              f"{', within the spread' if not ok and diff <= spread else ''})")
print(f"results appended to {results}")
PYEOF
