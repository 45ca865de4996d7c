#!/bin/sh
# The test command: installs what is missing, builds, runs every test
# (golden-file layer/model tests, data readers, checkpoints, command-line
# behaviour on bad input). Exits non-zero if any test fails.
set -eu
cd "$(dirname "$0")/.."
# hdf5-tools: h5diff, which the exact-resume tests use to compare checkpoints;
# Open MPI: the data-parallel training test (tests/mpi_test.sh).
LDM_EXTRA_PKGS="hdf5-tools openmpi-bin libopenmpi-dev" tools/setup.sh
meson test -C build --print-errorlogs "$@"
