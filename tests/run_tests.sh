#!/usr/bin/env bash
# Runs every test program given as arguments and every test_*.sh and test_*.py of the script
# folder (tests/, or the one named by --scripts DIR: make test_gpu uses tests/gpu), counts their
# PASS/FAIL lines, and ends with "N passed, N failed". A program that exits non-zero without
# reporting a failure counts as one failure.
cd "$(dirname "$0")/.." || exit 1
script_dir=tests
if [ "${1:-}" = "--scripts" ]; then
    script_dir="$2"
    shift 2
fi
passed=0
failed=0
run_one() {
    local name="$1"; shift
    local log
    log=$(mktemp)
    local start=$SECONDS
    "$@" > "$log" 2>&1
    local status=$?
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^(PASS|FAIL) ' "$log"
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $status; last lines:"
        tail -n 15 "$log" | sed 's/^/    /'
        f=1
    elif [ "$f" -ne 0 ]; then
        echo "---- $name output (last 30 lines) ----"
        tail -n 30 "$log" | sed 's/^/    /'
    fi
    echo "# $name: $p passed, $f failed ($((SECONDS - start)) s)"
    passed=$((passed + p))
    failed=$((failed + f))
    rm -f "$log"
}
for bin in "$@"; do
    run_one "${bin#build/}" "$bin"  # gpu/BF16/test_model and gpu/FP32/test_model apart
done
for script in "$script_dir"/test_*.sh; do
    [ -e "$script" ] && run_one "$(basename "$script")" bash "$script"
done
for script in "$script_dir"/test_*.py; do
    [ -e "$script" ] && run_one "$(basename "$script")" python3 "$script"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
