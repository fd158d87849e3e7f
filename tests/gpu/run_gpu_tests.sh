#!/usr/bin/env bash
# GPU test runner (make test_gpu): runs each test program given as an argument, then every
# tests/gpu/test_*.sh, counts their PASS/FAIL lines and ends with "N passed, N failed". A program
# that exits non-zero without reporting a failure counts as one failure.
cd "$(dirname "$0")/../.." || exit 1
passed=0
failed=0
run_one() {
    local name="$1"; shift
    local log start=$SECONDS status p f
    log=$(mktemp)
    "$@" > "$log" 2>&1
    status=$?
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^(PASS|FAIL) ' "$log"
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $status; last lines:"
        tail -n 15 "$log" | sed 's/^/    /'
        f=1
    fi
    echo "# $name: $p passed, $f failed ($((SECONDS - start)) s)"
    passed=$((passed + p))
    failed=$((failed + f))
    rm -f "$log"
}
for bin in "$@"; do
    run_one "$bin" "$bin"
done
for script in tests/gpu/test_*.sh; do
    [ -e "$script" ] && run_one "$script" bash "$script"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
