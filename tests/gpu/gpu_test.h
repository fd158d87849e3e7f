/*
 * Helpers of the GPU tests: random host data rounded to floatX (so that the double reference sees
 * exactly the values the kernels see), uploads, downloads, and the tolerance of the build.
 */
#ifndef SSD_TESTS_GPU_TEST_H
#define SSD_TESTS_GPU_TEST_H

#include <stdint.h>
#include <stdlib.h>

#include "kernels/common.cuh"
#include "train/checkpoint.h"
#include "common/rng.h"
#include "tests/test.h"

#if defined(ENABLE_FP32)
#define KERNEL_TOL 1e-5
#else
#define KERNEL_TOL 2e-2
#endif

static uint64_t test_rng = 0x5eed5eedULL;

static double round_floatX(double x) {
#if defined(ENABLE_FP32)
    return (double)(float)x;
#else
    return (double)bf16_to_float(float_to_bf16((float)x));
#endif
}

/* n values uniform in [lo, hi), rounded to floatX (fp32 values for fp32 tensors use round_to = 0) */
static double *random_host(size_t n, double lo, double hi, int round_to_floatX) {
    double *x = (double *)malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        double v = lo + (hi - lo) * rng_uniform(&test_rng);
        x[i] = round_to_floatX ? round_floatX(v) : (double)(float)v;
    }
    return x;
}

static floatX *upload_floatX(const double *x, size_t n) {
    floatX *h = (floatX *)malloc(n * sizeof(floatX)), *d;
    for (size_t i = 0; i < n; i++) h[i] = (floatX)(float)x[i];
    cudaCheck(cudaMalloc(&d, n * sizeof(floatX)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(floatX), cudaMemcpyHostToDevice));
    free(h);
    return d;
}

static float *upload_float(const double *x, size_t n) {
    float *h = (float *)malloc(n * sizeof(float)), *d;
    for (size_t i = 0; i < n; i++) h[i] = (float)x[i];
    cudaCheck(cudaMalloc(&d, n * sizeof(float)));
    cudaCheck(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    free(h);
    return d;
}

/* A device buffer filled with NaN bytes (0xFF): any element a kernel fails to write shows up. */
static void *poisoned_alloc(size_t bytes) {
    void *d;
    cudaCheck(cudaMalloc(&d, bytes));
    cudaCheck(cudaMemset(d, 0xFF, bytes));
    return d;
}

static double *download_floatX(const floatX *d, size_t n) {
    cudaCheck(cudaDeviceSynchronize());
    floatX *h = (floatX *)malloc(n * sizeof(floatX));
    cudaCheck(cudaMemcpy(h, d, n * sizeof(floatX), cudaMemcpyDeviceToHost));
    double *x = (double *)malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)h[i];
    free(h);
    return x;
}

static double *download_float(const float *d, size_t n) {
    cudaCheck(cudaDeviceSynchronize());
    float *h = (float *)malloc(n * sizeof(float));
    cudaCheck(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    double *x = (double *)malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = h[i];
    free(h);
    return x;
}

/* Reports PASS/FAIL for got vs want (max abs difference over max |want|) and frees got. */
static void check_close(const char *name, double *got, const double *want, size_t n, double tol) {
    double err = test_rel_error(got, want, (long)n);
    test_report(err <= tol, name, "rel err %.3e (tol %.0e, %zu values)", err, tol, n);
    free(got);
}

#endif
