"""The PASS/FAIL lines of the Python tests (tests/run_tests.sh counts them) and their exit status."""

failures = 0


def report(ok, name, detail):
    """Prints one PASS or FAIL line; returns ok."""
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    failures += 0 if ok else 1
    return ok


def exit_status():
    """1 if any check failed, else 0."""
    return 1 if failures else 0
