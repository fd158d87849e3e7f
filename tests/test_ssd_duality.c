/*
 * The three forms of the SSD layer (recurrent, quadratic, chunked) compute the same function and
 * the same gradients: checked in double precision on random inputs to 1e-12 relative, for scalar
 * and diagonal A, T a multiple of Q, T not a multiple of Q, T < Q, and ngroups > 1. Also checks
 * that a chunked pass handing its final state to a second pass equals one pass over the whole.
 */
#include "model/cpu_ssd.h"
#include "common/rng.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    SSDShape s;
    real *x, *delta, *A, *B, *C, *D, *dy;
} SSDInputs;

static real *random_array(size_t n, double scale, double offset, uint64_t *rng) {
    real *a = (real *)malloc(sizeof(real) * n);
    for (size_t i = 0; i < n; i++) a[i] = offset + scale * rng_normal(rng);
    return a;
}

static SSDInputs make_inputs(int T, int H, int P, int G, int N, int diagonal, uint64_t seed) {
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
    for (int i = 0; i < T * in.s.dt_stride; i++) in.delta[i] = 0.01 + 0.3 * rng_uniform(&rng);
    int na = diagonal ? H * N : H;
    in.A = random_array(na, 0.0, 0.0, &rng);
    for (int i = 0; i < na; i++) in.A[i] = -(1.0 + 15.0 * rng_uniform(&rng));
    in.B = random_array((size_t)T * in.s.bc_stride, 1.0, 0.0, &rng);
    in.C = random_array((size_t)T * in.s.bc_stride, 1.0, 0.0, &rng);
    in.D = random_array(H, 1.0, 1.0, &rng);
    in.dy = random_array((size_t)T * in.s.y_stride, 1.0, 0.0, &rng);
    return in;
}

static void free_inputs(SSDInputs *in) {
    free(in->x); free(in->delta); free(in->A); free(in->B); free(in->C); free(in->D); free(in->dy);
}

typedef struct { real *dx, *ddelta, *dA, *dB, *dC, *dD; } SSDGrads;

static SSDGrads grads_alloc(const SSDInputs *in) {
    const SSDShape *s = &in->s;
    SSDGrads g;
    g.dx = (real *)calloc((size_t)s->T * s->x_stride, sizeof(real));
    g.ddelta = (real *)calloc((size_t)s->T * s->dt_stride, sizeof(real));
    g.dA = (real *)calloc(s->diagonal ? s->H * s->N : s->H, sizeof(real));
    g.dB = (real *)calloc((size_t)s->T * s->bc_stride, sizeof(real));
    g.dC = (real *)calloc((size_t)s->T * s->bc_stride, sizeof(real));
    g.dD = (real *)calloc(s->H, sizeof(real));
    return g;
}

static void grads_free(SSDGrads *g) { free(g->dx); free(g->ddelta); free(g->dA); free(g->dB); free(g->dC); free(g->dD); }

static double grads_error(const SSDInputs *in, const SSDGrads *a, const SSDGrads *b) {
    const SSDShape *s = &in->s;
    double errs[6] = {
        test_rel_error(a->dx, b->dx, (long)s->T * s->x_stride),
        test_rel_error(a->ddelta, b->ddelta, (long)s->T * s->dt_stride),
        test_rel_error(a->dA, b->dA, s->diagonal ? s->H * s->N : s->H),
        test_rel_error(a->dB, b->dB, (long)s->T * s->bc_stride),
        test_rel_error(a->dC, b->dC, (long)s->T * s->bc_stride),
        test_rel_error(a->dD, b->dD, s->H),
    };
    double worst = 0;
    for (int i = 0; i < 6; i++) worst = errs[i] > worst ? errs[i] : worst;
    return worst;
}

static void check_case(const char *label, int T, int Q, int H, int P, int G, int N, int diagonal, uint64_t seed) {
    SSDInputs in = make_inputs(T, H, P, G, N, diagonal, seed);
    const SSDShape *s = &in.s;
    size_t ny = (size_t)T * s->y_stride, PN = (size_t)H * P * N;
    real *y_rec = calloc(ny, sizeof(real)), *y_quad = calloc(ny, sizeof(real)), *y_chunk = calloc(ny, sizeof(real));
    real *f_rec = calloc(PN, sizeof(real)), *f_chunk = calloc(PN, sizeof(real));
    ssd_forward_recurrent(s, in.x, in.delta, in.A, in.B, in.C, in.D, NULL, y_rec, f_rec);
    ssd_forward_quadratic(s, in.x, in.delta, in.A, in.B, in.C, in.D, y_quad);
    ssd_forward_chunked(s, Q, in.x, in.delta, in.A, in.B, in.C, in.D, NULL, y_chunk, f_chunk);
    double e_quad = test_rel_error(y_quad, y_rec, (long)ny);
    double e_chunk = test_rel_error(y_chunk, y_rec, (long)ny);
    double e_state = test_rel_error(f_chunk, f_rec, (long)PN);
    char name[160];
    snprintf(name, sizeof(name), "ssd_forward_duality[%s]", label);
    test_report(e_quad < 1e-12 && e_chunk < 1e-12 && e_state < 1e-12, name,
                "quadratic %.2e, chunked %.2e, final state %.2e (tol 1e-12)", e_quad, e_chunk, e_state);

    SSDGrads g_rec = grads_alloc(&in), g_quad = grads_alloc(&in), g_chunk = grads_alloc(&in);
    ssd_backward_recurrent(s, in.x, in.delta, in.A, in.B, in.C, in.D, in.dy, g_rec.dx, g_rec.ddelta, g_rec.dA, g_rec.dB, g_rec.dC, g_rec.dD);
    ssd_backward_quadratic(s, in.x, in.delta, in.A, in.B, in.C, in.D, in.dy, g_quad.dx, g_quad.ddelta, g_quad.dA, g_quad.dB, g_quad.dC, g_quad.dD);
    ssd_backward_chunked(s, Q, in.x, in.delta, in.A, in.B, in.C, in.D, in.dy, g_chunk.dx, g_chunk.ddelta, g_chunk.dA, g_chunk.dB, g_chunk.dC, g_chunk.dD);
    double eg_quad = grads_error(&in, &g_quad, &g_rec), eg_chunk = grads_error(&in, &g_chunk, &g_rec);
    snprintf(name, sizeof(name), "ssd_backward_duality[%s]", label);
    test_report(eg_quad < 1e-12 && eg_chunk < 1e-12, name, "worst gradient: quadratic %.2e, chunked %.2e (tol 1e-12)",
                eg_quad, eg_chunk);

    /* state handover: the first T1 steps, then the rest from the handed-over state */
    int T1 = T / 3 + 1;
    SSDShape first = *s, second = *s;
    first.T = T1;
    second.T = T - T1;
    real *mid = calloc(PN, sizeof(real)), *f_split = calloc(PN, sizeof(real)), *y_split = calloc(ny, sizeof(real));
    ssd_forward_chunked(&first, Q, in.x, in.delta, in.A, in.B, in.C, in.D, NULL, y_split, mid);
    ssd_forward_chunked(&second, Q, in.x + (size_t)T1 * s->x_stride, in.delta + (size_t)T1 * s->dt_stride, in.A,
                        in.B + (size_t)T1 * s->bc_stride, in.C + (size_t)T1 * s->bc_stride, in.D, mid,
                        y_split + (size_t)T1 * s->y_stride, f_split);
    double e_split = test_rel_error(y_split, y_rec, (long)ny), e_fsplit = test_rel_error(f_split, f_rec, (long)PN);
    snprintf(name, sizeof(name), "ssd_state_handover[%s]", label);
    test_report(e_split < 1e-12 && e_fsplit < 1e-12, name, "outputs %.2e, final state %.2e (tol 1e-12)", e_split, e_fsplit);

    free(mid); free(f_split); free(y_split);
    grads_free(&g_rec); grads_free(&g_quad); grads_free(&g_chunk);
    free(y_rec); free(y_quad); free(y_chunk); free(f_rec); free(f_chunk);
    free_inputs(&in);
}

int main(void) {
    for (int diagonal = 0; diagonal <= 1; diagonal++) {
        const char *a = diagonal ? "diagonal" : "scalar";
        char label[96];
        snprintf(label, sizeof(label), "%s,T=64,Q=16", a);
        check_case(label, 64, 16, 4, 8, 1, 6, diagonal, 11 + diagonal);
        snprintf(label, sizeof(label), "%s,T=37,Q=8 (not a multiple)", a);
        check_case(label, 37, 8, 4, 5, 2, 7, diagonal, 21 + diagonal);
        snprintf(label, sizeof(label), "%s,T=13,Q=32 (T<Q)", a);
        check_case(label, 13, 32, 3, 4, 1, 5, diagonal, 31 + diagonal);
        snprintf(label, sizeof(label), "%s,T=50,Q=12,ngroups=3", a);
        check_case(label, 50, 12, 6, 4, 3, 8, diagonal, 41 + diagonal);
    }
    return test_exit_code();
}
