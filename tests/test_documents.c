/*
 * Document boundaries (mamba_set_document_end, model/cpu_ssd.h), in double precision:
 *  - the three SSD forms agree with a segment array, forward (outputs, final state) and backward (every
 *    input's gradient), scalar and diagonal A, with segment changes at a chunk edge, inside a chunk, twice in
 *    one chunk and at the first and last step (tolerance 1e-12: the forms are exact rewrites of each other);
 *  - a packed row of several documents (each ending with the end-of-text input) gives exactly the per-token
 *    losses and the gradients of its documents run one by one (each from a zero state): the packed row's
 *    gradient of the summed loss equals the sum of the documents' (relative 1e-12 against the largest entry of
 *    each tensor). Boundaries: a document of one token at the first position (its input is end of text),
 *    starts at a chunk edge, inside a chunk, two in one chunk, and an end of text at the last position;
 *  - without the end-of-text id set, the same row differs (the boundaries are what makes them equal).
 */
#include "model/cpu_model.h"
#include "model/cpu_ssd.h"
#include "common/rng.h"
#include "tests/model_fixtures.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

#define EOT 5

static double max_abs_diff(const real *a, const real *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        m = d > m ? d : m;
    }
    return m;
}

/* ---------------------------------------------------------------------------------------------- */
/* the three forms with segments */

static void check_forms(int diagonal) {
    /* T = 16, chunks of 4: starts at 0 (a reset of the initial state), 4 (chunk edge), 6 (inside), 9 and 11 (two in
     * one chunk) and 15 (the last step) */
    static const int starts[] = {0, 4, 6, 9, 11, 15};
    SSDShape s = {.T = 16, .H = 4, .P = 3, .G = 2, .N = 5, .diagonal = diagonal};
    s.x_stride = s.y_stride = s.H * s.P;
    s.bc_stride = s.G * s.N;
    s.dt_stride = s.H;
    int segment[16], seg = 0, si = 0;
    for (int t = 0; t < s.T; t++) {
        if (si < 6 && starts[si] == t) { seg++; si++; }
        segment[t] = seg;
    }
    s.segment = segment;
    int Q = 4, nA = diagonal ? s.H * s.N : s.H;
    size_t nx = (size_t)s.T * s.x_stride, nbc = (size_t)s.T * s.bc_stride, ndt = (size_t)s.T * s.H;
    size_t PN = (size_t)s.H * s.P * s.N;
    uint64_t rng = rng_seed(31 + diagonal);
    real *x = malloc(sizeof(real) * nx), *dt = malloc(sizeof(real) * ndt), *A = malloc(sizeof(real) * nA);
    real *Bm = malloc(sizeof(real) * nbc), *Cm = malloc(sizeof(real) * nbc), *D = malloc(sizeof(real) * s.H);
    real *dy = malloc(sizeof(real) * nx), *init = malloc(sizeof(real) * PN);
    for (size_t i = 0; i < nx; i++) { x[i] = rng_normal(&rng); dy[i] = rng_normal(&rng); }
    for (size_t i = 0; i < ndt; i++) dt[i] = 0.05 + 0.5 * rng_uniform(&rng);
    for (int i = 0; i < nA; i++) A[i] = -(0.2 + rng_uniform(&rng));
    for (size_t i = 0; i < nbc; i++) { Bm[i] = rng_normal(&rng); Cm[i] = rng_normal(&rng); }
    for (int i = 0; i < s.H; i++) D[i] = rng_normal(&rng);
    for (size_t i = 0; i < PN; i++) init[i] = rng_normal(&rng);

    real *y_rec = malloc(sizeof(real) * nx), *y_quad = malloc(sizeof(real) * nx), *y_chunk = malloc(sizeof(real) * nx);
    real *final_rec = malloc(sizeof(real) * PN), *final_chunk = malloc(sizeof(real) * PN);
    ssd_forward_recurrent(&s, x, dt, A, Bm, Cm, D, NULL, y_rec, final_rec);
    ssd_forward_quadratic(&s, x, dt, A, Bm, Cm, D, y_quad);
    ssd_forward_chunked(&s, Q, x, dt, A, Bm, Cm, D, NULL, y_chunk, final_chunk);
    double e_quad = max_abs_diff(y_quad, y_rec, nx), e_chunk = max_abs_diff(y_chunk, y_rec, nx);
    double e_final = max_abs_diff(final_chunk, final_rec, PN);
    /* a segment change at step 0 drops the initial state: the same outputs from any initial state */
    ssd_forward_chunked(&s, Q, x, dt, A, Bm, Cm, D, init, y_chunk, final_chunk);
    double e_init = max_abs_diff(y_chunk, y_rec, nx);
    /* and the state does restart: without segments the outputs differ */
    s.segment = NULL;
    ssd_forward_recurrent(&s, x, dt, A, Bm, Cm, D, NULL, y_quad, NULL);
    double gap = max_abs_diff(y_quad, y_rec, nx);
    s.segment = segment;
    char name[96];
    snprintf(name, sizeof(name), "ssd_forms_with_segments[%s]", diagonal ? "diagonal" : "scalar");
    test_report(e_quad <= 1e-12 && e_chunk <= 1e-12 && e_final <= 1e-12 && e_init <= 1e-12 && gap > 1e-3, name,
                "against the recurrence: quadratic %.1e, chunked %.1e, final state %.1e, from a random initial state "
                "%.1e (tol 1e-12); without segments the outputs move by %.2f", e_quad, e_chunk, e_final, e_init, gap);

    real *g[3][6];
    size_t sizes[6] = {nx, ndt, (size_t)nA, nbc, nbc, (size_t)s.H};
    for (int f = 0; f < 3; f++)
        for (int k = 0; k < 6; k++) g[f][k] = calloc(sizes[k], sizeof(real));
    ssd_backward_recurrent(&s, x, dt, A, Bm, Cm, D, NULL, dy, g[0][0], g[0][1], g[0][2], g[0][3], g[0][4], g[0][5]);
    ssd_backward_quadratic(&s, x, dt, A, Bm, Cm, D, dy, g[1][0], g[1][1], g[1][2], g[1][3], g[1][4], g[1][5]);
    ssd_backward_chunked(&s, Q, x, dt, A, Bm, Cm, D, NULL, dy, g[2][0], g[2][1], g[2][2], g[2][3], g[2][4], g[2][5]);
    double worst = 0;
    for (int f = 1; f < 3; f++)
        for (int k = 0; k < 6; k++) {
            double scale = 0;
            for (size_t i = 0; i < sizes[k]; i++) scale = fmax(scale, fabs(g[0][k][i]));
            double e = max_abs_diff(g[f][k], g[0][k], sizes[k]) / fmax(scale, 1e-30);
            worst = e > worst ? e : worst;
        }
    snprintf(name, sizeof(name), "ssd_backward_forms_with_segments[%s]", diagonal ? "diagonal" : "scalar");
    test_report(worst <= 1e-12, name, "worst relative gradient difference from the recurrence %.1e (tol 1e-12)", worst);
    for (int f = 0; f < 3; f++)
        for (int k = 0; k < 6; k++) free(g[f][k]);
    free(x); free(dt); free(A); free(Bm); free(Cm); free(D); free(dy); free(init);
    free(y_rec); free(y_quad); free(y_chunk); free(final_rec); free(final_chunk);
}

/* ---------------------------------------------------------------------------------------------- */
/* packed rows against their documents */

/* forward and backward of the summed loss of one row; losses[T] and grads (layout.total) written */
static void row_losses_grads(Mamba *model, const int *inputs, const int *targets, int T, real *losses, real *grads) {
    mamba_forward(model, inputs, targets, 1, T);
    memcpy(losses, model->acts.losses, sizeof(real) * T);
    mamba_zero_grad(model);
    mamba_backward(model, (real)model->counted_targets); /* d(sum of losses) */
    memcpy(grads, model->grads, sizeof(real) * model->layout.total);
}

static void check_packed(int diagonal) {
    /* T = 20 with chunks of 4: documents [0], [1..3], [4..5], [6..8], [9..10], [11..19]: input 0 is end of text (a
     * one-token document), starts at 4 (chunk edge), 6 (inside a chunk), 9 and 11 (two in one chunk), and the last
     * input 19 is end of text too */
    enum { T = 20 };
    static const int ends[] = {0, 3, 5, 8, 10, 19};
    ModelConfig c = fixture_config(diagonal);
    float *p = fixture_params(&c, 21 + diagonal);
    Mamba model;
    mamba_build(&model, &c, p);
    size_t n = model.layout.total;
    int inputs[T], targets[T];
    uint64_t rng = rng_seed(13 + diagonal);
    for (int t = 0; t < T; t++) {
        do inputs[t] = (int)(rng_next(&rng) % (uint64_t)c.vocab_size); while (inputs[t] == EOT);
        targets[t] = (int)(rng_next(&rng) % (uint64_t)c.vocab_size);
    }
    for (int d = 0; d < 6; d++) inputs[ends[d]] = EOT;
    real packed_losses[T], doc_losses[T];
    real *packed_grads = malloc(sizeof(real) * n), *doc_grads = calloc(n, sizeof(real)), *one = malloc(sizeof(real) * n);
    mamba_set_document_end(&model, EOT);
    row_losses_grads(&model, inputs, targets, T, packed_losses, packed_grads);
    for (int d = 0, start = 0; d < 6; start = ends[d] + 1, d++) {
        int len = ends[d] - start + 1;
        row_losses_grads(&model, inputs + start, targets + start, len, doc_losses + start, one);
        for (size_t i = 0; i < n; i++) doc_grads[i] += one[i];
    }
    double loss_err = max_abs_diff(packed_losses, doc_losses, T);
    double worst = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t off = model.layout.offsets[t], sz = model.layout.sizes[t];
        double scale = 0;
        for (size_t i = 0; i < sz; i++) scale = fmax(scale, fabs(doc_grads[off + i]));
        double e = max_abs_diff(packed_grads + off, doc_grads + off, sz) / fmax(scale, 1e-30);
        worst = e > worst ? e : worst;
    }
    char name[96];
    snprintf(name, sizeof(name), "packed_equals_documents[%s]", diagonal ? "diagonal" : "scalar");
    test_report(loss_err <= 1e-12 && worst <= 1e-12, name,
                "6 documents in T=%d (chunks of 4): per-token losses %.1e, gradients %.1e relative (tol 1e-12)", T,
                loss_err, worst);
    mamba_set_document_end(&model, -1);
    row_losses_grads(&model, inputs, targets, T, packed_losses, packed_grads);
    double gap = max_abs_diff(packed_losses, doc_losses, T);
    snprintf(name, sizeof(name), "packed_without_boundaries_differs[%s]", diagonal ? "diagonal" : "scalar");
    test_report(gap > 1e-3, name, "boundaries off: per-token losses move by %.3f", gap);
    free(packed_grads);
    free(doc_grads);
    free(one);
    free(p);
    mamba_free(&model);
}

int main(void) {
    check_forms(0);
    check_forms(1);
    check_packed(0);
    check_packed(1);
    return test_exit_code();
}
