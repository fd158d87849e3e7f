# Sourced by the test scripts: strict unset variables, the repository root as working directory, a
# scratch directory $work removed on exit, and the PASS/FAIL lines that tests/run_tests.sh counts.
set -u
cd "$(dirname "$0")/.." || exit 1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pass() { echo "PASS $1: $2"; }
fail() { echo "FAIL $1: $2"; }
