/*
 * A minimal test harness: each check prints "PASS name: detail" or "FAIL name: detail";
 * tests/run_tests.sh counts these lines over all test programs and scripts.
 */
#ifndef SSD_TESTS_TEST_H
#define SSD_TESTS_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static int test_failures = 0;

static inline void test_report(int ok, const char *name, const char *fmt, ...) {
    char detail[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(detail, sizeof(detail), fmt, args);
    va_end(args);
    printf("%s %s: %s\n", ok ? "PASS" : "FAIL", name, detail);
    fflush(stdout);
    if (!ok) test_failures++;
}

/* max |a-b| / max(|b|, floor) over n elements; NaN anywhere gives +inf so it never passes. */
static inline double test_rel_error(const double *a, const double *b, long n) {
    double max_diff = 0.0, max_ref = 0.0;
    for (long i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i]) || isinf(a[i]) || isinf(b[i])) return INFINITY;
        double d = fabs(a[i] - b[i]);
        if (d > max_diff) max_diff = d;
        if (fabs(b[i]) > max_ref) max_ref = fabs(b[i]);
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

static inline int test_exit_code(void) { return test_failures ? 1 : 0; }

#endif
