/*
 * The three forms of the SSD layer (recurrent, quadratic, chunked) compute the same function and
 * the same gradients: checked in double precision on random inputs to 1e-12 relative, for scalar
 * and diagonal A, T a multiple of Q, T not a multiple of Q, T < Q, and ngroups > 1. Also checks
 * that a chunked pass handing its final state to a second pass equals one pass over the whole.
 */
#include "tests/ssd_inputs.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

/* worst relative error over the six gradient tensors */
static double grads_error(const SSDInputs *in, const SSDGrads *a, const SSDGrads *b) {
    real *ta[SSD_GRAD_TENSORS], *tb[SSD_GRAD_TENSORS];
    long counts[SSD_GRAD_TENSORS];
    grads_tensors(in, a, ta, counts);
    grads_tensors(in, b, tb, counts);
    double worst = 0;
    for (int i = 0; i < SSD_GRAD_TENSORS; i++) {
        double e = test_rel_error(ta[i], tb[i], counts[i]);
        worst = e > worst ? e : worst;
    }
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
    backward_recurrent(&in, &g_rec);
    backward_quadratic(&in, &g_quad);
    backward_chunked(&in, Q, &g_chunk);
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
