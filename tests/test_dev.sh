#!/usr/bin/env bash
# The dev/ programs behind results/ check themselves in seconds: the SSD forms' equivalence table at
# its tiny sweep (every row within the precision's stated tolerances, fp64 and fp32 builds) and the
# mixture fit's parameter gradients against central differences.
source "$(dirname "$0")/common.sh"
for bin in build/dev/ssd_equivalence_f64 build/dev/ssd_equivalence_f32; do
    "$bin" --sweep tiny --check || echo "FAIL $(basename "$bin"): exited with status $?"
done
build/dev/ssd_mixture_f64 --check || echo "FAIL ssd_mixture --check: exited with status $?"
# a bad flag is refused with a message naming it
if build/dev/ssd_equivalence_f64 --sweep huge > "$work/err" 2>&1; then
    fail ssd_equivalence_bad_flag "--sweep huge was accepted"
elif grep -q -- "--sweep takes tiny or full" "$work/err"; then
    pass ssd_equivalence_bad_flag "--sweep huge refused: $(head -n 1 "$work/err")"
else
    fail ssd_equivalence_bad_flag "unexpected message: $(head -n 1 "$work/err")"
fi
