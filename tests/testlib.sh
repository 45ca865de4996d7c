# testlib.sh: what the command-line test scripts share; sourced by them
# (`. "$(dirname "$0")/testlib.sh"`). Makes the temporary folder $T (removed
# on exit) and counts failures in $fails; `finish NAME` prints the summary
# and exits non-zero if any check failed.
# Passive OpenMP waits: spinning workers make the programs crawl on a
# loaded 2-core machine (the results do not depend on it).
export OMP_WAIT_POLICY=passive
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# check DESC CMD...: CMD must succeed.
check() { d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
# expect_fail DESC PATTERN CMD...: exit 1..123 (not a signal, not a timeout:
# the command runs under `timeout 60`) and PATTERN in stderr.
expect_fail() {
    desc=$1 pat=$2; shift 2
    timeout 60 "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -ge 1 ] && [ $rc -lt 124 ] && grep -q -- "$pat" "$T/err"; then
        pass "$desc (exit $rc: $(grep -m1 -- "$pat" "$T/err" | cut -c1-160))"
    else
        fail "$desc (exit $rc, wanted a message matching '$pat')"; sed 's/^/    /' "$T/err" | tail -5
    fi
}
# expect_ok DESC CMD...: exit 0 within 10 minutes; stdout in $T/out, stderr in $T/err.
expect_ok() {
    desc=$1; shift
    timeout 600 "$@" >"$T/out" 2>"$T/err"; rc=$?
    if [ $rc -eq 0 ]; then pass "$desc"
    else fail "$desc (exit $rc)"; sed 's/^/    /' "$T/err" | tail -5; fi
}
# no_tmp PATH: no temporary file of PATH is left.
no_tmp() { ! ls "$1".tmp.* >/dev/null 2>&1; }
finish() {
    echo
    if [ $fails -eq 0 ]; then echo "$1: all passed"; else echo "$1: $fails failed"; fi
    [ $fails -eq 0 ]
}

# ---- training runs (robust_test.sh, mpi_test.sh): checkpoints and logs
# run NAME CMD...: runs CMD with stdout+stderr in $T/NAME.err, sets $rc.
run() { n=$1; shift; "$@" >"$T/$n.err" 2>&1; rc=$?; }
ok() { # ok NAME: the last run exited 0, else print its tail
    if [ "$rc" -eq 0 ]; then return 0; fi
    echo "    (exit $rc)"; tail -3 "$T/$1.err" | sed 's/^/    /'; return 1
}
# same_ckpt A B: every dataset and attribute identical (h5diff compares
# values exactly when no tolerance is given; objects in one file only count).
same_ckpt() {
    h5diff -q "$1" "$2" >/dev/null 2>&1 && return 0
    h5diff "$1" "$2" 2>&1 | grep -v '^0 differences' | grep -B1 'differences\|Not comparable' | head -6 | sed 's/^/    /'
    return 1
}
# train_lines LOG: the per-step training records without timings.
train_lines() { grep '"loss"' "$1" | sed 's/, "img_per_s".*//'; }
same_losses() {
    train_lines "$1" >"$T/l1"; train_lines "$2" >"$T/l2"
    [ -s "$T/l1" ] && cmp -s "$T/l1" "$T/l2" && return 0
    diff "$T/l1" "$T/l2" | head -4 | sed 's/^/    /'; return 1
}
# ckpt_step FILE: the root attribute `step`.
ckpt_step() { h5dump -a /step "$1" 2>/dev/null | sed -n 's/.*(0): \([0-9-]*\).*/\1/p'; }
# wait_lines LOG N: waits (up to 60 s) until LOG has N training records.
wait_lines() {
    i=0
    while [ "$(cat "$1" 2>/dev/null | grep -c '"loss"')" -lt "$2" ] && [ $i -lt 600 ]; do
        sleep 0.1; i=$((i + 1))
    done
}
