/*
 * Training with a carried state (-cs 1): the backward from a nonzero starting state, in double.
 *   - the SSD backward from a random initial state: the recurrence and the chunked form give the same
 *     gradients (1e-12 relative), with and without document segments, scalar and diagonal A (the
 *     chunked form's finite-difference check from an initial state is in test_model.c);
 *   - two windows of T with the state carried from the first to the second give the per-token losses of
 *     one window of 2T (1e-12), for T a multiple of the chunk size, not, and shorter than the conv's
 *     d_conv-1 = 3 inputs; also with document boundaries, a document ending inside a window, one ending
 *     exactly at the first window's last input, and one ending at its last input but one (the carried conv
 *     inputs then span two documents: the older one's must not reach the next window);
 *   - the model's gradient after a carried forward passes the finite-difference check (4-point stencil,
 *     h = 1e-3, relative error 1e-6 as in test_model.c) on sampled entries of every parameter tensor, with
 *     the starting states held constant (the gradient stop), with and without document boundaries.
 */
#include "model/cpu_model.h"
#include "model/cpu_ssd.h"
#include "common/rng.h"
#include "common/utils.h"
#include "tests/model_fixtures.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

static void random_tokens(int *tokens, int n, int vocab, uint64_t seed) {
    uint64_t rng = rng_seed(seed);
    for (int i = 0; i < n; i++) tokens[i] = (int)(rng_next(&rng) % (uint64_t)vocab);
}

static double max_rel(const real *a, const real *b, size_t n) {
    double diff = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs(a[i] - b[i]));
        ref = fmax(ref, fabs(b[i]));
    }
    double r = ref > 0 ? diff / ref : diff;
    return isnan(r) ? INFINITY : r;
}

static void check_ssd_backward_forms(int diagonal, int segmented) {
    SSDShape s = {.T = 11, .H = 4, .P = 3, .G = 2, .N = 5, .diagonal = diagonal};
    s.x_stride = s.y_stride = s.H * s.P;
    s.bc_stride = s.G * s.N;
    s.dt_stride = s.H;
    int segment[11] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2}; /* the first boundary inside the second chunk */
    if (segmented) s.segment = segment;
    int nA = diagonal ? s.H * s.N : s.H;
    size_t n[6] = {(size_t)s.T * s.x_stride, (size_t)s.T * s.H, (size_t)nA, (size_t)s.T * s.bc_stride,
                   (size_t)s.T * s.bc_stride, (size_t)s.H};
    size_t ninit = (size_t)s.H * s.P * s.N;
    uint64_t rng = rng_seed(41 + diagonal + 2 * segmented);
    real *in[6], *g[2][6];
    for (int k = 0; k < 6; k++) {
        in[k] = (real *)mallocCheck(sizeof(real) * n[k]);
        for (int f = 0; f < 2; f++) g[f][k] = (real *)callocCheck(n[k], sizeof(real));
        for (size_t i = 0; i < n[k]; i++) in[k][i] = rng_normal(&rng);
    }
    for (size_t i = 0; i < n[1]; i++) in[1][i] = 0.05 + 0.5 * rng_uniform(&rng);
    for (size_t i = 0; i < n[2]; i++) in[2][i] = -(0.2 + rng_uniform(&rng));
    real *init = (real *)mallocCheck(sizeof(real) * ninit), *dy = (real *)mallocCheck(sizeof(real) * n[0]);
    for (size_t i = 0; i < ninit; i++) init[i] = rng_normal(&rng);
    for (size_t i = 0; i < n[0]; i++) dy[i] = rng_normal(&rng);
    ssd_backward_recurrent(&s, in[0], in[1], in[2], in[3], in[4], in[5], init, dy, g[0][0], g[0][1], g[0][2], g[0][3],
                           g[0][4], g[0][5]);
    ssd_backward_chunked(&s, 4, in[0], in[1], in[2], in[3], in[4], in[5], init, dy, g[1][0], g[1][1], g[1][2], g[1][3],
                         g[1][4], g[1][5]);
    double worst = 0;
    for (int k = 0; k < 6; k++) worst = fmax(worst, max_rel(g[1][k], g[0][k], n[k]));
    char name[96];
    snprintf(name, sizeof(name), "ssd_backward_initial_state[%s%s]", diagonal ? "diagonal" : "scalar",
             segmented ? ",segments" : "");
    test_report(worst <= 1e-12, name, "chunked vs recurrent, worst relative gradient difference %.1e (tol 1e-12)", worst);
    for (int k = 0; k < 6; k++) {
        free(in[k]);
        free(g[0][k]);
        free(g[1][k]);
    }
    free(init);
    free(dy);
}

/* rows of 2T tokens (row b at tokens + b*2T); inputs [B, 2T] and targets [B, 2T] */
static void split_windows(const int *full, int B, int T, int half, int *out) {
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * T, full + (size_t)b * 2 * T + half * T, sizeof(int) * T);
}

/* the fixture model of model_fixtures.h with params from seed; eot >= 0: documents end at that token */
static ModelConfig fixture_model(Mamba *model, int diagonal, uint64_t seed, int eot) {
    ModelConfig c = fixture_config(diagonal);
    float *p = fixture_params(&c, seed);
    mamba_build(model, &c, p);
    free(p);
    mamba_set_document_end(model, eot);
    return c;
}

/* eot >= 0: row 1's first window ends a document at its input first_end */
static void check_two_windows(int diagonal, int T, int eot, int first_end) {
    Mamba model;
    ModelConfig c = fixture_model(&model, diagonal, 51 + diagonal, eot);
    int B = 2, n = B * 2 * T;
    int *inputs = (int *)mallocCheck(sizeof(int) * n), *targets = (int *)mallocCheck(sizeof(int) * n);
    random_tokens(inputs, n, c.vocab_size, 5 + T);
    random_tokens(targets, n, c.vocab_size, 6 + T);
    if (eot >= 0) {
        for (int i = 0; i < n; i++) inputs[i] = inputs[i] == eot ? (eot + 1) % c.vocab_size : inputs[i];
        inputs[T - 1] = eot;                         /* row 0: a document ends at the first window's last input */
        inputs[2 * T + first_end] = eot;             /* row 1: one ends inside the first window */
        if (T > 2) inputs[2 * T + T + 1] = eot;      /* and one inside the second */
    }
    mamba_forward(&model, inputs, targets, B, 2 * T);
    real *full = (real *)mallocCheck(sizeof(real) * n);
    memcpy(full, model.acts.losses, sizeof(real) * n);
    MambaInferenceState states[2];
    for (int b = 0; b < B; b++) inference_state_init(&states[b], &c);
    int *win_in = (int *)mallocCheck(sizeof(int) * B * T), *win_tg = (int *)mallocCheck(sizeof(int) * B * T);
    double worst = 0;
    for (int half = 0; half < 2; half++) {
        split_windows(inputs, B, T, half, win_in);
        split_windows(targets, B, T, half, win_tg);
        mamba_forward_carry(&model, win_in, win_tg, B, T, states);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                worst = fmax(worst, fabs(model.acts.losses[(size_t)b * T + t] - full[(size_t)b * 2 * T + half * T + t]));
    }
    if (isnan(worst)) worst = INFINITY;
    char name[96];
    char docs[32] = "";
    if (eot >= 0) snprintf(docs, sizeof(docs), ",documents,end %d", first_end);
    snprintf(name, sizeof(name), "two_windows_equal_one[%s,T=%d%s]", diagonal ? "diagonal" : "scalar", T, docs);
    test_report(worst <= 1e-12, name, "max |loss diff| %.2e of 2 windows of T carried vs one of 2T (tol 1e-12)", worst);
    for (int b = 0; b < B; b++) inference_state_free(&states[b]);
    free(inputs);
    free(targets);
    free(full);
    free(win_in);
    free(win_tg);
    mamba_free(&model);
}

/* the loss of a carried forward from copies of the starting states (the forward replaces what it reads) */
static double carried_loss(Mamba *model, const int *inputs, const int *targets, int B, int T,
                           const MambaInferenceState *start, MambaInferenceState *work) {
    const ModelConfig *c = &model->config;
    size_t conv = (size_t)c->n_layer * (c->d_conv - 1) * c->conv_dim;
    size_t ssm = (size_t)c->n_layer * c->nheads * c->headdim * c->d_state;
    for (int b = 0; b < B; b++) {
        memcpy(work[b].conv_state, start[b].conv_state, sizeof(real) * conv);
        memcpy(work[b].ssm_state, start[b].ssm_state, sizeof(real) * ssm);
    }
    mamba_forward_carry(model, inputs, targets, B, T, work);
    return model->mean_loss;
}

static void check_carried_gradients(int diagonal, int eot) {
    Mamba model;
    ModelConfig c = fixture_model(&model, diagonal, 61 + diagonal, eot);
    int B = 2, T = 7, inputs[14], targets[14], prefix[14];
    random_tokens(prefix, B * T, c.vocab_size, 71);
    random_tokens(inputs, B * T, c.vocab_size, 72);
    random_tokens(targets, B * T, c.vocab_size, 73);
    if (eot >= 0) {
        for (int i = 0; i < B * T; i++) {
            inputs[i] = inputs[i] == eot ? (eot + 1) % c.vocab_size : inputs[i];
            prefix[i] = prefix[i] == eot ? (eot + 1) % c.vocab_size : prefix[i];
        }
        inputs[T + 3] = eot; /* row 1's carried state stops at step 4 */
    }
    /* nonzero starting states: those after a window of other tokens */
    MambaInferenceState start[2], work[2];
    for (int b = 0; b < B; b++) {
        inference_state_init(&start[b], &c);
        inference_state_init(&work[b], &c);
    }
    mamba_forward_carry(&model, prefix, NULL, B, T, start);
    carried_loss(&model, inputs, targets, B, T, start, work);
    mamba_zero_grad(&model);
    mamba_backward(&model, 1.0);
    uint64_t rng = rng_seed(81);
    for (int tensor = 0; tensor < NUM_PARAM_TENSORS; tensor++) {
        size_t size = model.layout.sizes[tensor], off = model.layout.offsets[tensor];
        double gmax = 0, worst = 0;
        for (size_t i = 0; i < size; i++) gmax = fmax(gmax, fabs(model.grads[off + i]));
        int samples = size < 12 ? (int)size : 12;
        for (int k = 0; k < samples; k++) {
            size_t i = off + (size < 12 ? (size_t)k : rng_next(&rng) % size);
            real saved = model.params[i];
            double loss_at[4], offsets[4] = {-2e-3, -1e-3, 1e-3, 2e-3};
            for (int j = 0; j < 4; j++) {
                model.params[i] = saved + offsets[j];
                loss_at[j] = carried_loss(&model, inputs, targets, B, T, start, work);
            }
            model.params[i] = saved;
            double numeric = (8 * (loss_at[2] - loss_at[1]) - (loss_at[3] - loss_at[0])) / 12e-3;
            double denom = fmax(fmax(fabs(model.grads[i]), fabs(numeric)), 1e-3 * gmax);
            double err = fabs(model.grads[i] - numeric) / denom;
            worst = fmax(worst, isnan(err) ? INFINITY : err);
        }
        char name[96];
        snprintf(name, sizeof(name), "carried_gradcheck[%s%s,%s]", diagonal ? "diagonal" : "scalar",
                 eot >= 0 ? ",documents" : "", PARAM_NAMES[tensor]);
        test_report(worst <= 1e-6 && gmax > 0, name, "max rel error %.2e over %d sampled entries (tol 1e-6)", worst,
                    samples);
    }
    for (int b = 0; b < B; b++) {
        inference_state_free(&start[b]);
        inference_state_free(&work[b]);
    }
    mamba_free(&model);
}

int main(void) {
    for (int diagonal = 0; diagonal <= 1; diagonal++) {
        for (int segmented = 0; segmented <= 1; segmented++) check_ssd_backward_forms(diagonal, segmented);
        const int windows[] = {8, 7, 2};
        for (int k = 0; k < 3; k++) check_two_windows(diagonal, windows[k], -1, 0);
        check_two_windows(diagonal, 7, 5, 7 / 2);
        check_two_windows(diagonal, 7, 5, 7 - 2);
        check_two_windows(diagonal, 8, 5, 8 - 2);
        check_two_windows(diagonal, 2, 5, 2 / 2);
        check_two_windows(diagonal, 2, 5, 2 - 2);
        check_carried_gradients(diagonal, -1);
        check_carried_gradients(diagonal, 5);
    }
    return test_exit_code();
}
