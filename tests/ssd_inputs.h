/*
 * Random inputs of one SSD layer (model/cpu_ssd.h) and its gradient buffers, in `real`: shared by the
 * duality test and the dev/ programs that measure the three forms. x, B, C, dy ~ N(0, 1),
 * delta ~ U[0.01, 0.31], A ~ -U[1, 16], D ~ 1 + N(0, 1); x and B/C sit in wider rows than they need,
 * as in the model's xBC buffer, so the strides are exercised.
 */
#ifndef SSD_TESTS_SSD_INPUTS_H
#define SSD_TESTS_SSD_INPUTS_H

#include "model/cpu_ssd.h"
#include "common/rng.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    SSDShape s;
    real *x, *delta, *A, *B, *C, *D, *dy;
} SSDInputs;

static inline real *random_array(size_t n, double scale, double offset, uint64_t *rng) {
    real *a = (real *)malloc(sizeof(real) * n);
    for (size_t i = 0; i < n; i++) a[i] = offset + scale * rng_normal(rng);
    return a;
}

static inline SSDInputs make_inputs(int T, int H, int P, int G, int N, int diagonal, uint64_t seed) {
    SSDInputs in;
    uint64_t rng = rng_seed(seed);
    in.s = (SSDShape){.T = T, .H = H, .P = P, .G = G, .N = N, .diagonal = diagonal};
    /* x and y interleaved with other columns, as in the model's xBC buffer */
    in.s.x_stride = H * P + 3;
    in.s.y_stride = H * P;
    in.s.bc_stride = G * N + 1;
    in.s.dt_stride = H + 2;
    in.x = random_array((size_t)T * in.s.x_stride, 1.0, 0.0, &rng);
    in.delta = random_array((size_t)T * in.s.dt_stride, 0.0, 0.0, &rng);
    for (long i = 0; i < (long)T * in.s.dt_stride; i++) in.delta[i] = 0.01 + 0.3 * rng_uniform(&rng);
    int na = diagonal ? H * N : H;
    in.A = random_array(na, 0.0, 0.0, &rng);
    for (int i = 0; i < na; i++) in.A[i] = -(1.0 + 15.0 * rng_uniform(&rng));
    in.B = random_array((size_t)T * in.s.bc_stride, 1.0, 0.0, &rng);
    in.C = random_array((size_t)T * in.s.bc_stride, 1.0, 0.0, &rng);
    in.D = random_array(H, 1.0, 1.0, &rng);
    in.dy = random_array((size_t)T * in.s.y_stride, 1.0, 0.0, &rng);
    return in;
}

static inline void free_inputs(SSDInputs *in) {
    free(in->x); free(in->delta); free(in->A); free(in->B); free(in->C); free(in->D); free(in->dy);
}

typedef struct { real *dx, *ddelta, *dA, *dB, *dC, *dD; } SSDGrads;

#define SSD_GRAD_TENSORS 6
static const char *const ssd_grad_names[SSD_GRAD_TENSORS] = {"dx", "ddelta", "dA", "dB", "dC", "dD"};

/* The gradient tensors of g in ssd_grad_names' order, with their lengths. */
static inline void grads_tensors(const SSDInputs *in, const SSDGrads *g, real *tensors[SSD_GRAD_TENSORS],
                                 long counts[SSD_GRAD_TENSORS]) {
    const SSDShape *s = &in->s;
    real *t[SSD_GRAD_TENSORS] = {g->dx, g->ddelta, g->dA, g->dB, g->dC, g->dD};
    long c[SSD_GRAD_TENSORS] = {(long)s->T * s->x_stride, (long)s->T * s->dt_stride, s->diagonal ? s->H * s->N : s->H,
                                (long)s->T * s->bc_stride, (long)s->T * s->bc_stride, s->H};
    for (int i = 0; i < SSD_GRAD_TENSORS; i++) {
        tensors[i] = t[i];
        counts[i] = c[i];
    }
}

static inline SSDGrads grads_alloc(const SSDInputs *in) {
    SSDGrads g = {0};
    real *tensors[SSD_GRAD_TENSORS];
    long counts[SSD_GRAD_TENSORS];
    grads_tensors(in, &g, tensors, counts);
    g.dx = (real *)calloc(counts[0], sizeof(real));
    g.ddelta = (real *)calloc(counts[1], sizeof(real));
    g.dA = (real *)calloc(counts[2], sizeof(real));
    g.dB = (real *)calloc(counts[3], sizeof(real));
    g.dC = (real *)calloc(counts[4], sizeof(real));
    g.dD = (real *)calloc(counts[5], sizeof(real));
    return g;
}

static inline void grads_free(SSDGrads *g) { free(g->dx); free(g->ddelta); free(g->dA); free(g->dB); free(g->dC); free(g->dD); }

/* The three backward passes on the inputs of in, accumulating into g. */
static inline void backward_recurrent(const SSDInputs *in, SSDGrads *g) {
    ssd_backward_recurrent(&in->s, in->x, in->delta, in->A, in->B, in->C, in->D, NULL, in->dy, g->dx, g->ddelta, g->dA,
                           g->dB, g->dC, g->dD);
}
static inline void backward_quadratic(const SSDInputs *in, SSDGrads *g) {
    ssd_backward_quadratic(&in->s, in->x, in->delta, in->A, in->B, in->C, in->D, in->dy, g->dx, g->ddelta, g->dA,
                           g->dB, g->dC, g->dD);
}
static inline void backward_chunked(const SSDInputs *in, int Q, SSDGrads *g) {
    ssd_backward_chunked(&in->s, Q, in->x, in->delta, in->A, in->B, in->C, in->D, NULL, in->dy, g->dx, g->ddelta, g->dA,
                         g->dB, g->dC, g->dD);
}

/* Largest |a - b| and that over max |b| (the relative difference of tests/test.h); NaN or inf: +inf. */
static inline void max_difference(const real *a, const real *b, long n, double *abs_diff, double *rel_diff) {
    double max_diff = 0.0, max_ref = 0.0;
    for (long i = 0; i < n; i++) {
        if (!isfinite((double)a[i]) || !isfinite((double)b[i])) {
            *abs_diff = *rel_diff = INFINITY;
            return;
        }
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > max_diff) max_diff = d;
        if (fabs((double)b[i]) > max_ref) max_ref = fabs((double)b[i]);
    }
    *abs_diff = max_diff;
    *rel_diff = max_ref > 0 ? max_diff / max_ref : max_diff;
}

#endif
