#!/bin/sh
# The end-to-end demo: installs what is missing, builds, then on
# Fashion-MNIST trains the VAE, encodes the training set, trains the UNet and
# samples a grid, with budgets that finish in about 10 minutes on 2 cores.
# Everything goes to runs/demo/ (started afresh); the grid is runs/demo/samples.png.
# The samples use DDIM-50 with eta 1: after only ~600 UNet steps the
# deterministic sampler (eta 0) turns about half of the draws into blobs,
# while the stochastic one (like DDPM, at 1/20 of its cost) corrects the
# young model's errors along the way.
set -eu
cd "$(dirname "$0")/.."
tools/setup.sh
rm -rf runs/demo
exec tools/ldm-pipeline.sh --data fashion-mnist --out runs/demo \
    --vae-minutes "${DEMO_VAE_MINUTES:-2.5}" --ldm-minutes "${DEMO_LDM_MINUTES:-6}" --n 64 --eta 1 "$@"
