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
