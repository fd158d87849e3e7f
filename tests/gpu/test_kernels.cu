/*
 * Every kernel of train_ssdcu (except the SSD scan, tested in test_ssd_scan.cu) against a plain
 * double-precision reference written here, forward and backward, on fresh random inputs for
 * several shapes (odd T, ngroups > 1, rows and channels that fill no block exactly). Output
 * buffers are poisoned with NaN first, so an element a kernel fails to write fails the test.
 * Tolerance: 1e-5 in the FP32 build, 2e-2 in bf16 (max |error| over max |reference|).
 * conv1d with document boundaries and a carried state is checked against the CPU model's own conv
 * (model/cpu_layers.c, double) over the row with the carried inputs in front; the conv shapes cover its
 * vector kernels and scalar fallbacks in both precisions, and each name says which one ran.
 * The norms' shapes cover their vectorised kernels (1 and 2 vectors per thread, z rows 16-byte
 * aligned or not) and their scalar fallbacks in both precisions: each name says which one ran.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "kernels/adamw.cuh"
#include "kernels/classifier.cuh"
#include "kernels/conv1d.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gated_norm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/rmsnorm.cuh"
#include "tests/gpu/gpu_test.h"

extern "C" {
#include "model/cpu_layers.h"
}

static double sigmoid_d(double x) { return 1.0 / (1.0 + exp(-x)); }
static double silu_d(double x) { return x * sigmoid_d(x); }
static double silu_grad_d(double x) {
    double s = sigmoid_d(x);
    return s * (1.0 + x * (1.0 - s));
}

static void test_encoder(int N, int V, int C) {
    char name[96];
    int *tokens = (int *)malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) tokens[i] = (int)(rng_next(&test_rng) % (uint64_t)(V / 3));  /* repeats on purpose */
    double *wte = random_host((size_t)V * C, -1, 1, 0);
    double *dres = random_host((size_t)N * C, -1, 1, 0);
    double *dwte0 = random_host((size_t)V * C, -1, 1, 0);
    int *d_tokens;
    cudaCheck(cudaMalloc(&d_tokens, N * sizeof(int)));
    cudaCheck(cudaMemcpy(d_tokens, tokens, N * sizeof(int), cudaMemcpyHostToDevice));
    float *d_wte = upload_float(wte, (size_t)V * C), *d_dres = upload_float(dres, (size_t)N * C);
    float *d_dwte = upload_float(dwte0, (size_t)V * C);
    float *d_res = (float *)poisoned_alloc((size_t)N * C * sizeof(float));
    encoder_forward(d_res, d_tokens, d_wte, N, C, 0);
    double *want = (double *)malloc((size_t)V * C * sizeof(double));
    for (int i = 0; i < N; i++) memcpy(want + (size_t)i * C, wte + (size_t)tokens[i] * C, C * sizeof(double));
    snprintf(name, sizeof(name), "encoder_forward N=%d C=%d", N, C);
    check_close(name, download_float(d_res, (size_t)N * C), want, (size_t)N * C, 0.0);

    int *count = (int *)malloc(V * sizeof(int)), *bucket = (int *)malloc((3 * (size_t)N + 1) * sizeof(int));
    int nb = encoder_buckets_build(tokens, N, V, count, bucket, bucket + N, bucket + 2 * N + 1);
    int *d_bucket;
    cudaCheck(cudaMalloc(&d_bucket, (3 * (size_t)N + 1) * sizeof(int)));
    cudaCheck(cudaMemcpy(d_bucket, bucket, (3 * (size_t)N + 1) * sizeof(int), cudaMemcpyHostToDevice));
    encoder_backward(d_dwte, d_dres, d_bucket, d_bucket + N, d_bucket + 2 * N + 1, nb, C, 0);
    memcpy(want, dwte0, (size_t)V * C * sizeof(double));
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) want[(size_t)tokens[i] * C + c] += dres[(size_t)i * C + c];
    snprintf(name, sizeof(name), "encoder_backward N=%d C=%d (%d distinct tokens)", N, C, nb);
    check_close(name, download_float(d_dwte, (size_t)V * C), want, (size_t)V * C, 1e-6);
    free(tokens); free(wte); free(dres); free(dwte0); free(want); free(count); free(bucket);
    cudaCheck(cudaFree(d_tokens)); cudaCheck(cudaFree(d_wte)); cudaCheck(cudaFree(d_dres)); cudaCheck(cudaFree(d_dwte));
    cudaCheck(cudaFree(d_res)); cudaCheck(cudaFree(d_bucket));
}

/* which kernel of rmsnorm.cuh / gated_norm.cuh takes rows of n values (the buffers here are aligned) */
static const char *norm_path(int n) {
    int threads;
    int vecs = row_vec_plan(n, &threads);
    return vecs == 0 ? "scalar" : vecs == 1 ? "vec1" : "vec2";
}

static void test_rmsnorm(int N, int C, int with_add) {
    char name[128];
    double eps = 1e-5;
    double *prev = random_host((size_t)N * C, -2, 2, 0), *add = random_host((size_t)N * C, -1, 1, 1);
    double *w = random_host(C, 0.5, 1.5, 0), *dout = random_host((size_t)N * C, -1, 1, 1);
    double *dres0 = random_host((size_t)N * C, -1, 1, 0), *dw0 = random_host(C, -1, 1, 0);
    float *d_prev = upload_float(prev, (size_t)N * C), *d_w = upload_float(w, C);
    floatX *d_add = upload_floatX(add, (size_t)N * C), *d_dout = upload_floatX(dout, (size_t)N * C);
    float *d_res = with_add ? (float *)poisoned_alloc((size_t)N * C * sizeof(float)) : d_prev;
    floatX *d_out = (floatX *)poisoned_alloc((size_t)N * C * sizeof(floatX));
    float *d_rstd = (float *)poisoned_alloc(N * sizeof(float));
    rmsnorm_forward(d_res, d_out, d_rstd, d_prev, with_add ? d_add : NULL, d_w, N, C, (float)eps, 0);

    double *r = (double *)malloc((size_t)N * C * sizeof(double)), *out = (double *)malloc((size_t)N * C * sizeof(double));
    double *rstd = (double *)malloc(N * sizeof(double));
    for (int i = 0; i < N; i++) {
        double ss = 0;
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)i * C + c;
            r[k] = prev[k] + (with_add ? add[k] : 0.0);
            ss += r[k] * r[k];
        }
        rstd[i] = 1.0 / sqrt(ss / C + eps);
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = r[(size_t)i * C + c] * rstd[i] * w[c];
    }
    snprintf(name, sizeof(name), "rmsnorm_forward N=%d C=%d add=%d %s", N, C, with_add, norm_path(C));
    check_close(name, download_floatX(d_out, (size_t)N * C), out, (size_t)N * C, KERNEL_TOL);
    snprintf(name, sizeof(name), "rmsnorm_forward rstd N=%d C=%d add=%d %s", N, C, with_add, norm_path(C));
    check_close(name, download_float(d_rstd, N), rstd, N, 1e-5);
    if (with_add) {
        snprintf(name, sizeof(name), "rmsnorm_forward residual N=%d C=%d %s", N, C, norm_path(C));
        check_close(name, download_float(d_res, (size_t)N * C), r, (size_t)N * C, 1e-6);
    }

    /* backward from the reference residual and rstd (the kernel's inputs) */
    float *d_r = upload_float(r, (size_t)N * C), *d_rstd_ref = upload_float(rstd, N);
    float *d_dres = upload_float(dres0, (size_t)N * C), *d_dw = upload_float(dw0, C);
    floatX *d_dres_x = (floatX *)poisoned_alloc((size_t)N * C * sizeof(floatX));
    float *scratch = (float *)poisoned_alloc(rmsnorm_backward_scratch_floats(C) * sizeof(float));
    rmsnorm_backward(d_dres, d_dres_x, d_dw, scratch, d_dout, d_r, d_rstd_ref, d_w, N, C, 0);
    double *dres = (double *)malloc((size_t)N * C * sizeof(double)), *dw = (double *)malloc(C * sizeof(double));
    memcpy(dw, dw0, C * sizeof(double));
    for (int i = 0; i < N; i++) {
        double rs = (float)rstd[i], dot = 0;
        for (int c = 0; c < C; c++) dot += dout[(size_t)i * C + c] * w[c] * r[(size_t)i * C + c] * rs;
        dot /= C;
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)i * C + c;
            double xhat = r[k] * rs;
            dres[k] = dres0[k] + rs * (dout[k] * w[c] - xhat * dot);
            dw[c] += dout[k] * xhat;
        }
    }
    snprintf(name, sizeof(name), "rmsnorm_backward dres N=%d C=%d %s", N, C, norm_path(C));
    check_close(name, download_float(d_dres, (size_t)N * C), dres, (size_t)N * C, 1e-5);
    snprintf(name, sizeof(name), "rmsnorm_backward dres_x N=%d C=%d %s", N, C, norm_path(C));
    check_close(name, download_floatX(d_dres_x, (size_t)N * C), dres, (size_t)N * C, KERNEL_TOL);
    snprintf(name, sizeof(name), "rmsnorm_backward dweight N=%d C=%d %s", N, C, norm_path(C));
    check_close(name, download_float(d_dw, C), dw, C, 1e-5);
    free(prev); free(add); free(w); free(dout); free(dres0); free(dw0); free(r); free(out); free(rstd); free(dres); free(dw);
    void *bufs[] = {d_prev, d_w, d_add, d_dout, d_out, d_rstd, d_r, d_rstd_ref, d_dres, d_dw, d_dres_x, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
    if (with_add) cudaCheck(cudaFree(d_res));
}

/* which conv1d kernels a shape takes (the test buffers come from cudaMalloc: 16-byte aligned) */
static const char *conv_path(int C, int x_stride) { return conv1d_vec_ok(C, x_stride, NULL, NULL) ? "vec" : "scalar"; }

static void test_conv1d(int K, int B, int T, int C, int x_stride) {
    char name[96];
    size_t N = (size_t)B * T;
    double *x = random_host(N * x_stride, -1.5, 1.5, 1), *w = random_host((size_t)C * K, -0.5, 0.5, 0);
    double *bias = random_host(C, -0.3, 0.3, 0), *dout = random_host(N * C, -1, 1, 1);
    double *dw0 = random_host((size_t)C * K, -1, 1, 0), *db0 = random_host(C, -1, 1, 0);
    floatX *d_x = upload_floatX(x, N * x_stride), *d_dout = upload_floatX(dout, N * C);
    float *d_w = upload_float(w, (size_t)C * K), *d_b = upload_float(bias, C);
    float *d_dw = upload_float(dw0, (size_t)C * K), *d_db = upload_float(db0, C);
    floatX *d_out = (floatX *)poisoned_alloc(N * C * sizeof(floatX));
    /* dx is written into a strided buffer: the columns outside [0, C) must stay as they were */
    floatX *d_dx = upload_floatX(x, N * x_stride);
    float *scratch = (float *)poisoned_alloc(conv1d_backward_scratch_floats(B, T, C) * sizeof(float));
    conv1d_forward(d_out, d_x, x_stride, d_w, d_b, NULL, NULL, NULL, B, T, C, K, 0);
    conv1d_backward(d_dx, x_stride, d_dw, d_db, scratch, d_dout, d_x, x_stride, d_w, d_b, NULL, NULL, B, T, C, K, 0);

    double *pre = (double *)malloc(N * C * sizeof(double)), *out = (double *)malloc(N * C * sizeof(double));
    double *dx = (double *)malloc(N * x_stride * sizeof(double)), *dpre = (double *)malloc(N * C * sizeof(double));
    double *dw = (double *)malloc((size_t)C * K * sizeof(double)), *db = (double *)malloc(C * sizeof(double));
    memcpy(dx, x, N * x_stride * sizeof(double));
    memcpy(dw, dw0, (size_t)C * K * sizeof(double));
    memcpy(db, db0, C * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double s = bias[c];
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;
                    if (ts >= 0) s += w[c * K + k] * x[((size_t)b * T + ts) * x_stride + c];
                }
                size_t i = ((size_t)b * T + t) * C + c;
                pre[i] = s;
                out[i] = silu_d(s);
                dpre[i] = dout[i] * silu_grad_d(s);
                db[c] += dpre[i];
            }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int k = 0; k < K; k++) {
                    int ts = t - (K - 1) + k;  /* out[t] used x[ts] with weight k */
                    if (ts >= 0) dw[c * K + k] += dpre[((size_t)b * T + t) * C + c] * x[((size_t)b * T + ts) * x_stride + c];
                    int to = t + (K - 1) - k;  /* x[t] feeds out[to] with weight k */
                    if (to < T) s += w[c * K + k] * dpre[((size_t)b * T + to) * C + c];
                }
                dx[((size_t)b * T + t) * x_stride + c] = s;
            }
    snprintf(name, sizeof(name), "conv1d_forward K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_floatX(d_out, N * C), out, N * C, KERNEL_TOL);
    snprintf(name, sizeof(name), "conv1d_backward dx K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_floatX(d_dx, N * x_stride), dx, N * x_stride, KERNEL_TOL);
    snprintf(name, sizeof(name), "conv1d_backward dw K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_dw, (size_t)C * K), dw, (size_t)C * K, 1e-5);
    snprintf(name, sizeof(name), "conv1d_backward dbias K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_db, C), db, C, 1e-5);
    free(x); free(w); free(bias); free(dout); free(dw0); free(db0); free(pre); free(out); free(dx); free(dpre); free(dw); free(db);
    void *bufs[] = {d_x, d_dout, d_w, d_b, d_dw, d_db, d_out, d_dx, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

/* Forward with a carried state [B, K-1, C] updated in place (state_in = state_out, as the trainer carries
 * it): the inputs before t = 0 come from it, and it must then hold the last K-1 inputs (partly the old
 * state when T < K-1). */
static void test_conv1d_carry(int K, int B, int T, int C, int x_stride) {
    char name[96];
    size_t N = (size_t)B * T, S = (size_t)B * (K - 1) * C;
    double *x = random_host(N * x_stride, -1.5, 1.5, 1), *w = random_host((size_t)C * K, -0.5, 0.5, 0);
    double *bias = random_host(C, -0.3, 0.3, 0), *state0 = random_host(S, -1.5, 1.5, 0);
    floatX *d_x = upload_floatX(x, N * x_stride);
    float *d_w = upload_float(w, (size_t)C * K), *d_b = upload_float(bias, C), *d_state = upload_float(state0, S);
    floatX *d_out = (floatX *)poisoned_alloc(N * C * sizeof(floatX));
    conv1d_forward(d_out, d_x, x_stride, d_w, d_b, NULL, d_state, d_state, B, T, C, K, 0);
    double *out = (double *)malloc(N * C * sizeof(double)), *state = (double *)malloc(S * sizeof(double));
    /* input at time ts of row b, ts >= -(K-1): the carried state before t = 0 */
#define CARRY_INPUT(b, ts) ((ts) >= 0 ? x[((size_t)(b) * T + (ts)) * x_stride + c] \
                                      : state0[((size_t)(b) * (K - 1) + (ts) + K - 1) * C + c])
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            for (int t = 0; t < T; t++) {
                double s = bias[c];
                for (int k = 0; k < K; k++) s += w[c * K + k] * CARRY_INPUT(b, t - (K - 1) + k);
                out[((size_t)b * T + t) * C + c] = silu_d(s);
            }
            for (int j = 0; j < K - 1; j++) state[((size_t)b * (K - 1) + j) * C + c] = CARRY_INPUT(b, T - (K - 1) + j);
        }
#undef CARRY_INPUT
    snprintf(name, sizeof(name), "conv1d_forward_carry out K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_floatX(d_out, N * C), out, N * C, KERNEL_TOL);
    snprintf(name, sizeof(name), "conv1d_forward_carry state K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_state, S), state, S, 1e-6);
    free(x); free(w); free(bias); free(state0); free(out); free(state);
    void *bufs[] = {d_x, d_w, d_b, d_state, d_out};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

/* Document boundaries: row b's documents start at the steps of its list (row b % 3): 0 holds boundaries one
 * and two steps apart (1, 2), at a span edge (CONV_SPAN) and two before the end (so the last K-1 inputs hold
 * two documents); 1 starts a document at t = 0 (the carried inputs reach nothing); 2 has none. */
static std::vector<int> conv_segments(int B, int T) {
    std::vector<int> segment((size_t)B * T);
    for (int b = 0; b < B; b++) {
        std::vector<int> starts = b % 3 == 0 ? std::vector<int>{1, 2, 5, CONV_SPAN, CONV_SPAN + 2, T - 2}
                                  : b % 3 == 1 ? std::vector<int>{0, 30, CONV_SPAN - 1}
                                               : std::vector<int>{};
        for (int t = 0; t < T; t++) {
            int seg = 0;
            for (int start : starts) seg += start <= t;
            segment[(size_t)b * T + t] = seg;
        }
    }
    return segment;
}

/* conv1d with segments, forward and backward, with a carried state_in (state_out into a buffer of its own)
 * or without one (state_out still written: the inputs before t = 0 are then zeros), against the CPU
 * model's conv_forward / conv_backward with the same segments over each row with its K-1 carried inputs
 * in front (in document 0), and state_out against the rule of kernels/conv1d.cuh: the last K-1 inputs,
 * 0 where an input's document is not segment[T-1]'s. */
static void test_conv1d_segments(int K, int B, int T, int C, int x_stride, int with_state) {
    char name[128];
    const int Te = T + K - 1; /* a row with its carried inputs in front */
    size_t N = (size_t)B * T, S = (size_t)B * (K - 1) * C;
    double *x = random_host(N * x_stride, -1.5, 1.5, 1), *w = random_host((size_t)C * K, -0.5, 0.5, 0);
    double *bias = random_host(C, -0.3, 0.3, 0), *dout = random_host(N * C, -1, 1, 1);
    double *dw0 = random_host((size_t)C * K, -1, 1, 0), *db0 = random_host(C, -1, 1, 0);
    double *state0 = random_host(S, -1.5, 1.5, 0);
    if (!with_state) memset(state0, 0, S * sizeof(double)); /* what the kernels take for a NULL state_in */
    std::vector<int> segment = conv_segments(B, T);
    floatX *d_x = upload_floatX(x, N * x_stride), *d_dout = upload_floatX(dout, N * C);
    float *d_w = upload_float(w, (size_t)C * K), *d_b = upload_float(bias, C);
    float *d_dw = upload_float(dw0, (size_t)C * K), *d_db = upload_float(db0, C);
    float *d_state_in = with_state ? upload_float(state0, S) : NULL;
    float *d_state_out = (float *)poisoned_alloc(S * sizeof(float));
    int *d_segment;
    cudaCheck(cudaMalloc(&d_segment, N * sizeof(int)));
    cudaCheck(cudaMemcpy(d_segment, segment.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    floatX *d_out = (floatX *)poisoned_alloc(N * C * sizeof(floatX));
    floatX *d_dx = upload_floatX(x, N * x_stride); /* columns outside [0, C) must stay */
    float *scratch = (float *)poisoned_alloc(conv1d_backward_scratch_floats(B, T, C) * sizeof(float));
    conv1d_forward(d_out, d_x, x_stride, d_w, d_b, d_segment, d_state_in, d_state_out, B, T, C, K, 0);
    conv1d_backward(d_dx, x_stride, d_dw, d_db, scratch, d_dout, d_x, x_stride, d_w, d_b, d_segment, d_state_in, B, T,
                    C, K, 0);

    double *out = (double *)malloc(N * C * sizeof(double)), *dx = (double *)malloc(N * x_stride * sizeof(double));
    double *dw = (double *)malloc((size_t)C * K * sizeof(double)), *db = (double *)malloc(C * sizeof(double));
    double *state = (double *)malloc(S * sizeof(double));
    double *xe = (double *)malloc((size_t)Te * C * sizeof(double)), *pre = (double *)malloc((size_t)Te * C * sizeof(double));
    double *dpre = (double *)malloc((size_t)Te * C * sizeof(double)), *dxe = (double *)malloc((size_t)Te * C * sizeof(double));
    std::vector<int> seg_e(Te);
    memcpy(dx, x, N * x_stride * sizeof(double));
    memcpy(dw, dw0, (size_t)C * K * sizeof(double));
    memcpy(db, db0, C * sizeof(double));
    for (int b = 0; b < B; b++) {
        const int *seg = segment.data() + (size_t)b * T;
        for (int te = 0; te < Te; te++) {
            int t = te - (K - 1);
            seg_e[te] = t < 0 ? 0 : seg[t];
            for (int c = 0; c < C; c++)
                xe[(size_t)te * C + c] = t < 0 ? state0[((size_t)b * (K - 1) + te) * C + c] : x[((size_t)b * T + t) * x_stride + c];
        }
        conv_forward(pre, xe, C, w, bias, Te, C, K, seg_e.data());
        for (int te = 0; te < Te; te++)
            for (int c = 0; c < C; c++) {
                size_t i = (size_t)te * C + c, o = ((size_t)b * T + te - (K - 1)) * C + c;
                dpre[i] = te < K - 1 ? 0.0 : dout[o] * silu_grad_d(pre[i]);
                if (te >= K - 1) out[o] = silu_d(pre[i]);
            }
        conv_backward(dxe, C, dw, db, dpre, xe, w, Te, C, K, seg_e.data());
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) dx[((size_t)b * T + t) * x_stride + c] = dxe[(size_t)(t + K - 1) * C + c];
        for (int j = 0; j < K - 1; j++) /* input T - (K-1) + j is row te = T + j of xe */
            for (int c = 0; c < C; c++)
                state[((size_t)b * (K - 1) + j) * C + c] = seg_e[T + j] == seg[T - 1] ? xe[(size_t)(T + j) * C + c] : 0.0;
    }
    const char *kind = with_state ? "state_in" : "no_state_in";
    snprintf(name, sizeof(name), "conv1d_segments_forward %s K=%d B=%d T=%d C=%d %s", kind, K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_floatX(d_out, N * C), out, N * C, KERNEL_TOL);
    snprintf(name, sizeof(name), "conv1d_segments_state_out %s K=%d B=%d T=%d C=%d %s", kind, K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_state_out, S), state, S, 1e-6);
    snprintf(name, sizeof(name), "conv1d_segments_backward dx %s K=%d B=%d T=%d C=%d %s", kind, K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_floatX(d_dx, N * x_stride), dx, N * x_stride, KERNEL_TOL);
    snprintf(name, sizeof(name), "conv1d_segments_backward dw %s K=%d B=%d T=%d C=%d %s", kind, K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_dw, (size_t)C * K), dw, (size_t)C * K, 1e-5);
    snprintf(name, sizeof(name), "conv1d_segments_backward dbias %s K=%d B=%d T=%d C=%d %s", kind, K, B, T, C, conv_path(C, x_stride));
    check_close(name, download_float(d_db, C), db, C, 1e-5);
    free(x); free(w); free(bias); free(dout); free(dw0); free(db0); free(state0); free(out); free(dx); free(dw); free(db);
    free(state); free(xe); free(pre); free(dpre); free(dxe);
    void *bufs[] = {d_x, d_dout, d_w, d_b, d_dw, d_db, d_state_in, d_state_out, d_segment, d_out, d_dx, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

/* segment = NULL and an all-zero segment array give the same bits (forward, state_out, backward) */
static void test_conv1d_zero_segments(int K, int B, int T, int C, int x_stride) {
    char name[128];
    size_t N = (size_t)B * T, S = (size_t)B * (K - 1) * C;
    double *x = random_host(N * x_stride, -1.5, 1.5, 1), *w = random_host((size_t)C * K, -0.5, 0.5, 0);
    double *bias = random_host(C, -0.3, 0.3, 0), *dout = random_host(N * C, -1, 1, 1);
    double *state0 = random_host(S, -1.5, 1.5, 0);
    floatX *d_x = upload_floatX(x, N * x_stride), *d_dout = upload_floatX(dout, N * C);
    float *d_w = upload_float(w, (size_t)C * K), *d_b = upload_float(bias, C), *d_state_in = upload_float(state0, S);
    std::vector<int> zeros(N, 0);
    int *d_zeros;
    cudaCheck(cudaMalloc(&d_zeros, N * sizeof(int)));
    cudaCheck(cudaMemcpy(d_zeros, zeros.data(), N * sizeof(int), cudaMemcpyHostToDevice));
    std::vector<float> got[2][4]; /* [NULL, zeros][out, state_out, dx, dw and db] */
    for (int run = 0; run < 2; run++) {
        const int *seg = run ? d_zeros : NULL;
        floatX *d_out = (floatX *)poisoned_alloc(N * C * sizeof(floatX)), *d_dx = upload_floatX(x, N * x_stride);
        float *d_state_out = (float *)poisoned_alloc(S * sizeof(float)), *d_dwdb = (float *)poisoned_alloc((size_t)C * (K + 1) * sizeof(float));
        float *scratch = (float *)poisoned_alloc(conv1d_backward_scratch_floats(B, T, C) * sizeof(float));
        cudaCheck(cudaMemset(d_dwdb, 0, (size_t)C * (K + 1) * sizeof(float)));
        conv1d_forward(d_out, d_x, x_stride, d_w, d_b, seg, d_state_in, d_state_out, B, T, C, K, 0);
        conv1d_backward(d_dx, x_stride, d_dwdb, d_dwdb + (size_t)C * K, scratch, d_dout, d_x, x_stride, d_w, d_b, seg,
                        d_state_in, B, T, C, K, 0);
        double *o = download_floatX(d_out, N * C), *st = download_float(d_state_out, S);
        double *g = download_floatX(d_dx, N * x_stride), *p = download_float(d_dwdb, (size_t)C * (K + 1));
        got[run][0].assign(o, o + N * C);
        got[run][1].assign(st, st + S);
        got[run][2].assign(g, g + N * x_stride);
        got[run][3].assign(p, p + (size_t)C * (K + 1));
        free(o); free(st); free(g); free(p);
        void *bufs[] = {d_out, d_dx, d_state_out, d_dwdb, scratch};
        for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
    }
    int same = 1;
    for (int k = 0; k < 4; k++)
        same &= got[0][k].size() == got[1][k].size() &&
                memcmp(got[0][k].data(), got[1][k].data(), got[0][k].size() * sizeof(float)) == 0;
    snprintf(name, sizeof(name), "conv1d_zero_segments_as_null K=%d B=%d T=%d C=%d %s", K, B, T, C, conv_path(C, x_stride));
    test_report(same, name, "out, state_out, dx, dw, dbias %s", same ? "bitwise equal" : "differ");
    free(x); free(w); free(bias); free(dout); free(state0);
    void *bufs[] = {d_x, d_dout, d_w, d_b, d_state_in, d_zeros};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

/* z (and dz) start z_offset values into their buffer, row stride z_stride: either may break the
 * 16-byte alignment of the z rows */
static void test_gated_norm(int N, int E, int G, int z_stride, int z_offset) {
    char name[128], shape[96];
    double eps = 1e-5;
    int S = E / G;
    size_t z_values = (size_t)N * z_stride + z_offset;
    snprintf(shape, sizeof(shape), "N=%d E=%d G=%d z_stride=%d z_offset=%d %s", N, E, G, z_stride, z_offset,
             norm_path(S));
    double *y = random_host((size_t)N * E, -2, 2, 1), *zbuf = random_host(z_values, -3, 3, 1);
    const double *z = zbuf + z_offset;
    double *w = random_host(E, 0.5, 1.5, 0), *dout = random_host((size_t)N * E, -1, 1, 1), *dw0 = random_host(E, -1, 1, 0);
    floatX *d_y = upload_floatX(y, (size_t)N * E), *d_zbuf = upload_floatX(zbuf, z_values), *d_z = d_zbuf + z_offset;
    floatX *d_dout = upload_floatX(dout, (size_t)N * E);
    float *d_w = upload_float(w, E), *d_dw = upload_float(dw0, E);
    floatX *d_out = (floatX *)poisoned_alloc((size_t)N * E * sizeof(floatX));
    float *d_rstd = (float *)poisoned_alloc((size_t)N * G * sizeof(float));
    gated_norm_forward(d_out, d_rstd, d_y, d_z, z_stride, d_w, N, E, G, (float)eps, 0);
    floatX *d_dy = (floatX *)poisoned_alloc((size_t)N * E * sizeof(floatX));
    floatX *d_dzbuf = upload_floatX(zbuf, z_values), *d_dz = d_dzbuf + z_offset;  /* columns >= E must stay */
    float *scratch = (float *)poisoned_alloc(gated_norm_backward_scratch_floats(E) * sizeof(float));
    gated_norm_backward(d_dy, d_dz, d_dw, scratch, d_dout, d_y, d_z, z_stride, d_w, d_rstd, N, E, G, 0);

    double *out = (double *)malloc((size_t)N * E * sizeof(double)), *rstd = (double *)malloc((size_t)N * G * sizeof(double));
    double *dy = (double *)malloc((size_t)N * E * sizeof(double)), *dzbuf = (double *)malloc(z_values * sizeof(double));
    double *dw = (double *)malloc(E * sizeof(double));
    memcpy(dzbuf, zbuf, z_values * sizeof(double));
    double *dz = dzbuf + z_offset;
    memcpy(dw, dw0, E * sizeof(double));
    for (int i = 0; i < N; i++)
        for (int g = 0; g < G; g++) {
            double ss = 0, dot = 0;
            for (int c = g * S; c < (g + 1) * S; c++) {
                double gv = y[(size_t)i * E + c] * silu_d(z[(size_t)i * z_stride + c]);
                ss += gv * gv;
            }
            double rs = 1.0 / sqrt(ss / S + eps);
            rstd[(size_t)i * G + g] = rs;
            for (int c = g * S; c < (g + 1) * S; c++) {
                double gv = y[(size_t)i * E + c] * silu_d(z[(size_t)i * z_stride + c]);
                out[(size_t)i * E + c] = gv * rs * w[c];
                dot += dout[(size_t)i * E + c] * w[c] * gv * rs;
            }
            dot /= S;
            for (int c = g * S; c < (g + 1) * S; c++) {
                double yv = y[(size_t)i * E + c], zv = z[(size_t)i * z_stride + c], d = dout[(size_t)i * E + c];
                double ghat = yv * silu_d(zv) * rs;
                double dg = rs * (d * w[c] - ghat * dot);
                dy[(size_t)i * E + c] = dg * silu_d(zv);
                dz[(size_t)i * z_stride + c] = dg * yv * silu_grad_d(zv);
                dw[c] += d * ghat;
            }
        }
    snprintf(name, sizeof(name), "gated_norm_forward %s", shape);
    check_close(name, download_floatX(d_out, (size_t)N * E), out, (size_t)N * E, KERNEL_TOL);
    snprintf(name, sizeof(name), "gated_norm_forward rstd %s", shape);
    check_close(name, download_float(d_rstd, (size_t)N * G), rstd, (size_t)N * G, 1e-5);
    snprintf(name, sizeof(name), "gated_norm_backward dy %s", shape);
    check_close(name, download_floatX(d_dy, (size_t)N * E), dy, (size_t)N * E, KERNEL_TOL);
    snprintf(name, sizeof(name), "gated_norm_backward dz %s", shape);
    check_close(name, download_floatX(d_dzbuf, z_values), dzbuf, z_values, KERNEL_TOL);
    snprintf(name, sizeof(name), "gated_norm_backward dweight %s", shape);
    check_close(name, download_float(d_dw, E), dw, E, 1e-5);
    free(y); free(zbuf); free(w); free(dout); free(dw0); free(out); free(rstd); free(dy); free(dzbuf); free(dw);
    void *bufs[] = {d_y, d_zbuf, d_dout, d_w, d_dw, d_out, d_rstd, d_dy, d_dzbuf, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

/* out += column sums of partial [nrows, ncols]; two runs from the same out must give the same bits */
static void test_sum_rows(int nrows, int ncols) {
    char name[96];
    double *partial = random_host((size_t)nrows * ncols, -1, 1, 0), *out0 = random_host(ncols, -1, 1, 0);
    float *d_partial = upload_float(partial, (size_t)nrows * ncols);
    float *d_out = upload_float(out0, ncols), *d_again = upload_float(out0, ncols);
    sum_rows_accumulate(d_out, d_partial, nrows, ncols, 0);
    sum_rows_accumulate(d_again, d_partial, nrows, ncols, 0);
    double *want = (double *)malloc(ncols * sizeof(double));
    memcpy(want, out0, ncols * sizeof(double));
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) want[c] += partial[(size_t)r * ncols + c];
    double *got = download_float(d_out, ncols), *again = download_float(d_again, ncols);
    snprintf(name, sizeof(name), "sum_rows runs bit-identical nrows=%d ncols=%d", nrows, ncols);
    test_report(memcmp(got, again, ncols * sizeof(double)) == 0, name, "%d columns", ncols);
    free(again);
    snprintf(name, sizeof(name), "sum_rows nrows=%d ncols=%d", nrows, ncols);
    check_close(name, got, want, ncols, 1e-5);
    free(partial); free(out0); free(want);
    void *bufs[] = {d_partial, d_out, d_again};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

static void test_matmul(int N, int IC, int OC) {
    char name[96];
    double *inp = random_host((size_t)N * IC, -1, 1, 1), *w = random_host((size_t)OC * IC, -1, 1, 1);
    double *dout = random_host((size_t)N * OC, -1, 1, 1), *dw0 = random_host((size_t)OC * IC, -1, 1, 0);
    floatX *d_inp = upload_floatX(inp, (size_t)N * IC), *d_w = upload_floatX(w, (size_t)OC * IC);
    floatX *d_dout = upload_floatX(dout, (size_t)N * OC);
    float *d_dw = upload_float(dw0, (size_t)OC * IC);
    floatX *d_out = (floatX *)poisoned_alloc((size_t)N * OC * sizeof(floatX));
    floatX *d_dinp = (floatX *)poisoned_alloc((size_t)N * IC * sizeof(floatX));
    matmul_forward(d_out, d_inp, d_w, N, IC, OC, 0);
    matmul_backward_input(d_dinp, d_dout, d_w, N, IC, OC, 0);
    matmul_backward_weight(d_dw, d_dout, d_inp, N, IC, OC, 0);
    double *out = (double *)calloc((size_t)N * OC, sizeof(double)), *dinp = (double *)calloc((size_t)N * IC, sizeof(double));
    double *dw = (double *)malloc((size_t)OC * IC * sizeof(double));
    memcpy(dw, dw0, (size_t)OC * IC * sizeof(double));
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < IC; c++) {
                out[(size_t)i * OC + o] += inp[(size_t)i * IC + c] * w[(size_t)o * IC + c];
                dinp[(size_t)i * IC + c] += dout[(size_t)i * OC + o] * w[(size_t)o * IC + c];
                dw[(size_t)o * IC + c] += dout[(size_t)i * OC + o] * inp[(size_t)i * IC + c];
            }
    snprintf(name, sizeof(name), "matmul_forward N=%d IC=%d OC=%d", N, IC, OC);
    check_close(name, download_floatX(d_out, (size_t)N * OC), out, (size_t)N * OC, KERNEL_TOL);
    snprintf(name, sizeof(name), "matmul_backward_input N=%d IC=%d OC=%d", N, IC, OC);
    check_close(name, download_floatX(d_dinp, (size_t)N * IC), dinp, (size_t)N * IC, KERNEL_TOL);
    snprintf(name, sizeof(name), "matmul_backward_weight N=%d IC=%d OC=%d", N, IC, OC);
    check_close(name, download_float(d_dw, (size_t)OC * IC), dw, (size_t)OC * IC, 1e-5);
    free(inp); free(w); free(dout); free(dw0); free(out); free(dinp); free(dw);
    void *bufs[] = {d_inp, d_w, d_dout, d_dw, d_out, d_dinp};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

static void test_classifier(int N, int V, int Vp) {
    char name[96];
    double *logits = random_host((size_t)N * Vp, -4, 4, 1);
    int *targets = (int *)malloc(N * sizeof(int));
    for (int i = 0; i < N; i++) targets[i] = (int)(rng_next(&test_rng) % (uint64_t)V);
    targets[0] = V - 1;  /* the last real column */
    for (int i = 3; i < N; i += 4) targets[i] = -1;  /* a loss mask's 0: no loss, no gradient */
    int *d_targets;
    cudaCheck(cudaMalloc(&d_targets, N * sizeof(int)));
    cudaCheck(cudaMemcpy(d_targets, targets, N * sizeof(int), cudaMemcpyHostToDevice));
    floatX *d_logits = upload_floatX(logits, (size_t)N * Vp), *d_eval = upload_floatX(logits, (size_t)N * Vp);
    float *d_losses = (float *)poisoned_alloc(N * sizeof(float)), *d_eval_losses = (float *)poisoned_alloc(N * sizeof(float));
    float *d_mean = (float *)poisoned_alloc(sizeof(float));
    double dloss = 1.0 / N;
    fused_classifier(d_logits, d_losses, d_targets, (float)dloss, N, V, Vp, 0);
    fused_classifier(d_eval, d_eval_losses, d_targets, 0.0f, N, V, Vp, 0);
    mean_loss(d_mean, d_losses, d_targets, N, 0);
    double *losses = (double *)malloc(N * sizeof(double)), *dlogits = (double *)malloc((size_t)N * Vp * sizeof(double));
    double mean = 0;
    int counted = 0;
    for (int i = 0; i < N; i++) counted += targets[i] >= 0;
    for (int i = 0; i < N; i++) {
        const double *l = logits + (size_t)i * Vp;
        if (targets[i] < 0) {
            losses[i] = 0.0;
            for (int v = 0; v < Vp; v++) dlogits[(size_t)i * Vp + v] = 0.0;
            continue;
        }
        double m = -INFINITY, s = 0;
        for (int v = 0; v < V; v++) m = fmax(m, l[v]);
        for (int v = 0; v < V; v++) s += exp(l[v] - m);
        losses[i] = m + log(s) - l[targets[i]];
        mean += losses[i] / counted;
        for (int v = 0; v < Vp; v++)
            dlogits[(size_t)i * Vp + v] = v < V ? (exp(l[v] - m) / s - (v == targets[i])) * dloss : 0.0;
    }
    snprintf(name, sizeof(name), "classifier losses N=%d V=%d Vp=%d", N, V, Vp);
    check_close(name, download_float(d_losses, N), losses, N, 1e-5);
    snprintf(name, sizeof(name), "classifier mean loss N=%d V=%d", N, V);
    check_close(name, download_float(d_mean, 1), &mean, 1, 1e-5);
    snprintf(name, sizeof(name), "classifier dlogits N=%d V=%d Vp=%d", N, V, Vp);
    check_close(name, download_floatX(d_logits, (size_t)N * Vp), dlogits, (size_t)N * Vp, KERNEL_TOL);
    double *padding = download_floatX(d_logits, (size_t)N * Vp);
    int zero = 1;
    for (int i = 0; i < N; i++)
        for (int v = V; v < Vp; v++) zero &= padding[(size_t)i * Vp + v] == 0.0;
    free(padding);
    snprintf(name, sizeof(name), "classifier padded columns zero V=%d Vp=%d", V, Vp);
    test_report(zero, name, "%d padded columns per row", Vp - V);
    snprintf(name, sizeof(name), "classifier eval-only losses N=%d", N);
    check_close(name, download_float(d_eval_losses, N), losses, N, 1e-5);
    snprintf(name, sizeof(name), "classifier eval-only keeps logits N=%d", N);
    check_close(name, download_floatX(d_eval, (size_t)N * Vp), logits, (size_t)N * Vp, 0.0);
    free(logits); free(targets); free(losses); free(dlogits);
    void *bufs[] = {d_targets, d_logits, d_eval, d_losses, d_eval_losses, d_mean};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

static void test_norm_and_adamw(size_t n, float grad_clip) {
    char name[96];
    double *g = random_host(n, -0.2, 0.2, 0), *p = random_host(n, -1, 1, 0);
    double *m = random_host(n, -0.01, 0.01, 0), *v = random_host(n, 0, 1e-4, 0);
    float *d_g = upload_float(g, n), *d_p = upload_float(p, n), *d_m = upload_float(m, n), *d_v = upload_float(v, n);
    floatX *d_px = (floatX *)poisoned_alloc(n * sizeof(floatX));
    float *d_norm = (float *)poisoned_alloc(sizeof(float)), *scratch = (float *)poisoned_alloc(NORM_BLOCKS * sizeof(float));
    global_norm(d_norm, scratch, d_g, n, 0);
    double norm = 0;
    for (size_t i = 0; i < n; i++) norm += g[i] * g[i];
    norm = sqrt(norm);
    snprintf(name, sizeof(name), "global_norm n=%zu", n);
    check_close(name, download_float(d_norm, 1), &norm, 1, 1e-5);
    AdamWSettings h = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, grad_clip, 7};
    adamw_update(d_p, d_px, d_g, d_m, d_v, n, &h, h.weight_decay, d_norm, 0);
    double scale = (grad_clip > 0 && norm > grad_clip) ? grad_clip / norm : 1.0;
    double b1 = 0.9, b2 = 0.95, lr = 3e-3, wd = 0.1;
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * scale;
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        double mhat = m[i] / (1 - pow(b1, 7)), vhat = v[i] / (1 - pow(b2, 7));
        p[i] -= lr * (mhat / (sqrt(vhat) + 1e-8) + wd * p[i]);
    }
    snprintf(name, sizeof(name), "adamw master n=%zu clip=%g (scale %.3f)", n, grad_clip, scale);
    check_close(name, download_float(d_p, n), p, n, 1e-5);
    snprintf(name, sizeof(name), "adamw floatX params n=%zu", n);
    check_close(name, download_floatX(d_px, n), p, n, KERNEL_TOL);
    snprintf(name, sizeof(name), "adamw moments n=%zu", n);
    double *got_m = download_float(d_m, n), *got_v = download_float(d_v, n);
    double err = fmax(test_rel_error(got_m, m, (long)n), test_rel_error(got_v, v, (long)n));
    test_report(err <= 1e-5, name, "rel err %.3e (tol 1e-5)", err);
    free(got_m); free(got_v); free(g); free(p); free(m); free(v);
    void *bufs[] = {d_g, d_p, d_m, d_v, d_px, d_norm, scratch};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) cudaCheck(cudaFree(bufs[i]));
}

int main(void) {
    printf("precision %s\n", PRECISION_NAME);
    matmul_init();
    test_encoder(300, 1000, 96);
    test_encoder(37, 50, 130);
    /* rmsnorm paths (bf16 / fp32): vec1 / vec1, scalar / vec1, vec1 / vec1 with more rows than backward
     * blocks, vec2 / scalar, vec1 / vec2, scalar / scalar */
    test_rmsnorm(77, 64, 1);
    test_rmsnorm(33, 300, 0);
    test_rmsnorm(1037, 768, 1);
    test_rmsnorm(19, 5000, 1);
    test_rmsnorm(7, 3000, 0);
    test_rmsnorm(5, 9000, 1);
    /* d_conv 4 (every official Mamba-2 model), 3 and 2. conv1d paths (bf16 / fp32): C and x_stride 100, 130
     * scalar / scalar; 160, 160 vec / vec; 40, 50 scalar / scalar; 64, 64 vec / vec; 1792, 3352 (mamba2-130m's
     * xBC columns of in_proj) vec / vec; 100, 132 scalar / vec; 64, 72 vec / vec. T = 150 ends in a part span
     * and a part CONV_AHEAD chunk; T = 2 is shorter than K - 1. */
    for (int K = 4; K >= 2; K--) {
        test_conv1d(K, 2, 37, 100, 130);
        test_conv1d(K, 3, 130, 160, 160);
        test_conv1d(K, 1, 5, 40, 50);
        test_conv1d(K, 2, 150, 1792, 3352);
        test_conv1d(K, 2, 37, 100, 132);
        test_conv1d_carry(K, 2, 37, 100, 130);
        test_conv1d_carry(K, 1, 150, 64, 64);
        test_conv1d_carry(K, 2, 2, 40, 50);
        test_conv1d_carry(K, 2, 150, 1792, 3352);
        test_conv1d_carry(K, 2, 2, 64, 72);
        test_conv1d_segments(K, 3, 150, 100, 130, 1);
        test_conv1d_segments(K, 3, 150, 100, 130, 0);
        test_conv1d_segments(K, 3, 37, 64, 64, 1);
        test_conv1d_segments(K, 2, 2, 40, 50, 1);
        test_conv1d_segments(K, 2, 2, 40, 50, 0);
        test_conv1d_segments(K, 3, 150, 1792, 3352, 1);
        test_conv1d_segments(K, 3, 150, 1792, 3352, 0);
        test_conv1d_segments(K, 3, 150, 100, 132, 1);
        test_conv1d_segments(K, 2, 2, 64, 72, 1);
        test_conv1d_zero_segments(K, 2, 150, 100, 130);
        test_conv1d_zero_segments(K, 2, 150, 64, 136);
    }
    /* gated norm: z rows unaligned in bf16 by the stride (300, 3353) or in both precisions by the
     * offset; groups of 1536 (mamba2-130m, more rows than backward blocks), 5120 (vec2 in bf16, scalar
     * in fp32), 3000 (vec1 in bf16, vec2 in fp32), 36 (scalar in bf16), 30 and 9000 (scalar in both) */
    test_gated_norm(41, 128, 1, 300, 0);
    test_gated_norm(67, 96, 3, 200, 0);
    test_gated_norm(300, 1536, 2, 1600, 0);
    test_gated_norm(1037, 1536, 1, 3352, 0);
    test_gated_norm(77, 1536, 1, 3353, 0);
    test_gated_norm(50, 1536, 1, 3352, 3);
    test_gated_norm(1100, 192, 4, 200, 0);
    test_gated_norm(29, 5120, 1, 10584, 0);
    test_gated_norm(13, 3000, 1, 3008, 0);
    test_gated_norm(9, 36, 1, 40, 0);
    test_gated_norm(23, 60, 2, 70, 0);
    test_gated_norm(5, 9000, 1, 9000, 0);
    test_sum_rows(1500, 1000);
    test_sum_rows(1024, 1536);
    test_sum_rows(37, 7168);
    test_sum_rows(5, 33);
    test_sum_rows(1, 1);
    test_matmul(37, 48, 80);
    test_matmul(256, 128, 520);
    test_classifier(9, 1000, 1008);
    test_classifier(33, 50257, 50304);
    test_norm_and_adamw(100003, 1.0f);
    test_norm_and_adamw(5000, 0.0f);
    matmul_free();
    return test_exit_code();
}
