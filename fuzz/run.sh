#!/bin/sh
# Builds the libFuzzer targets with clang-14 (-fsanitize=fuzzer,address,
# undefined) into build-fuzz/, runs each over its committed seed corpus, then
# fuzzes each for FUZZ_SECONDS (default 20) with a scratch corpus seeded from
# it. Exits non-zero on the first crash, leak or sanitizer report (the
# reproducer is left in build-fuzz/). Needs: clang-14 libclang-rt-14-dev
# libomp-14-dev, and the project's own dependencies.
# usage: fuzz/run.sh [SECONDS]
set -eu
cd "$(dirname "$0")/.."
SECS=${1:-${FUZZ_SECONDS:-20}}
CC=${CC_FUZZ:-clang-14}
O=build-fuzz
mkdir -p $O/obj
FLAGS="-g -O1 -std=gnu11 -fopenmp -fno-omit-frame-pointer -fsanitize=address,undefined
  -fno-sanitize-recover=undefined -Icommon -Idatasets -Ivae -Idiffusion -Ifuzz
  $(pkg-config --cflags hdf5 openblas) -I/usr/include/stb"
LIBS="$(pkg-config --libs hdf5 openblas) -lz -lm"
# every library source (no main() in these folders), so a new file is never missed
SRCS=$(ls common/*.c datasets/*.c vae/*.c diffusion/*.c)
OBJS=""
for s in $SRCS; do
    o=$O/obj/$(echo "$s" | tr / _).o
    # stb (not ours) gets ASan but not UBSan: stb_image 2.27 computes
    # NULL + 0 on a PNG whose first IDAT chunk is empty (harmless, and a
    # header we cannot patch); memory errors in it still stop the run.
    extra=""
    [ "$s" = common/stb_impl.c ] && extra="-fno-sanitize=undefined"
    [ "$o" -nt "$s" ] || $CC $FLAGS $extra -fsanitize=fuzzer-no-link -c "$s" -o "$o"
    OBJS="$OBJS $o"
done
# HDF5 keeps library state for the process lifetime: not our leaks.
printf 'leak:libhdf5\n' > $O/lsan.supp
export LSAN_OPTIONS="suppressions=$PWD/$O/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
for t in idx image h5; do
    $CC $FLAGS -fsanitize=fuzzer fuzz/fuzz_$t.c $OBJS $LIBS -o $O/fuzz_$t
    echo "== fuzz_$t: seed corpus"
    $O/fuzz_$t -runs=0 -rss_limit_mb=2048 fuzz/corpus/$t >$O/fuzz_$t.log 2>&1 ||
        { tail -40 $O/fuzz_$t.log; exit 1; }
    echo "== fuzz_$t: ${SECS}s"
    rm -rf $O/corpus_$t && mkdir -p $O/corpus_$t
    (cd $O && ./fuzz_$t -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 corpus_$t ../fuzz/corpus/$t >fuzz_$t.log 2>&1) ||
        { tail -60 $O/fuzz_$t.log; exit 1; }
    grep -E "stat::number_of_executed_units|cov:" $O/fuzz_$t.log | tail -2
done
echo "fuzz: all targets clean"
