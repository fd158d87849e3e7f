/*
 * Whole-model checks of the CPU reference, in double precision:
 *  - gradient check by finite differences (the 4-point central stencil, error O(h^4), h = 1e-3) on
 *    sampled entries of every parameter tensor, scalar and diagonal A (max relative error 1e-6);
 *  - the same with a loss mask (every third target -1): the loss is the mean of the unmasked forward's
 *    per-token losses over the counted targets only, and its gradient passes the same finite-difference
 *    check; a batch where no target counts has loss 0 and zero gradients (no NaN);
 *  - gradient check of the SSD layer's inputs (x, delta, A, B, C, D) through the chunked form, from a zero
 *    and from a random (carried) initial state;
 *  - a diagonal model whose A_log rows are constant equals the scalar model (outputs, loss, every
 *    gradient; the scalar A_log gradient is the row sum of the diagonal one);
 *  - generation by the recurrence (prefill + token-by-token steps) gives the chunked forward's logits;
 *  - a prompted greedy sample (temperature 0, and top-k 1) is the argmax of a full forward over start
 *    token + prompt + continuation at every position; a seeded sample repeats exactly; a stop token ends it;
 *  - reference initialisation statistics;
 *  - the tiled matmuls (forward, dinp, dw) against plain triple loops, on shapes that leave partial
 *    tiles and span several cache chunks of the summed dimension.
 *
 * Relative error of a gradient entry: |analytic - numeric| / max(|analytic|, |numeric|, 1e-3 * the
 * largest |gradient| of its tensor). The floor keeps entries that are ~0 from dividing by rounding.
 */
#include "model/cpu_layers.h"
#include "model/cpu_model.h"
#include "model/cpu_sample.h"
#include "model/cpu_ssd.h"
#include "common/rng.h"
#include "tests/model_fixtures.h"
#include "tests/test.h"

#include <stdlib.h>
#include <string.h>

static void random_tokens(int *tokens, int n, int vocab, uint64_t seed) {
    uint64_t rng = rng_seed(seed);
    for (int i = 0; i < n; i++) tokens[i] = (int)(rng_next(&rng) % (uint64_t)vocab);
}

/* masked: every third target is -1 (a loss mask's 0) */
static void check_model_gradients(int diagonal, int masked) {
    ModelConfig c = fixture_config(diagonal);
    float *p = fixture_params(&c, 7 + diagonal);
    Mamba model;
    mamba_build(&model, &c, p);
    int B = 2, T = 11; /* T not a multiple of chunk_size 4 */
    int inputs[22], targets[22];
    random_tokens(inputs, B * T, c.vocab_size, 3);
    random_tokens(targets, B * T, c.vocab_size, 4);
    const char *label = masked ? (diagonal ? "diagonal,masked" : "scalar,masked") : (diagonal ? "diagonal" : "scalar");
    if (masked) {
        mamba_forward(&model, inputs, targets, B, T);
        double sum = 0;
        int counted = 0;
        for (int i = 0; i < B * T; i++) {
            if (i % 3 == 1) continue;
            sum += model.acts.losses[i];
            counted++;
        }
        for (int i = 1; i < B * T; i += 3) targets[i] = -1;
        mamba_forward(&model, inputs, targets, B, T);
        double err = fabs(model.mean_loss - sum / counted) / (sum / counted);
        char name[96];
        snprintf(name, sizeof(name), "masked_loss[%s]", label);
        test_report(err <= 1e-13 && model.counted_targets == counted, name,
                    "mean over %d counted targets %.15f, the unmasked losses there %.15f (rel %.1e, tol 1e-13)",
                    model.counted_targets, (double)model.mean_loss, sum / counted, err);
    }
    mamba_forward(&model, inputs, targets, B, T);
    mamba_zero_grad(&model);
    mamba_backward(&model, 1.0);
    real *grads = (real *)malloc(sizeof(real) * model.layout.total);
    memcpy(grads, model.grads, sizeof(real) * model.layout.total);
    const double h = 1e-3;
    uint64_t rng = rng_seed(5);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t off = model.layout.offsets[t], n = model.layout.sizes[t];
        double gmax = 0;
        for (size_t i = 0; i < n; i++) gmax = fabs(grads[off + i]) > gmax ? fabs(grads[off + i]) : gmax;
        double worst = 0;
        int samples = n < 12 ? (int)n : 12;
        for (int k = 0; k < samples; k++) {
            size_t i = off + (samples == (int)n ? (size_t)k : rng_next(&rng) % n);
            if (t == P_WTE) i = off + (size_t)inputs[k % (B * T)] * c.d_model + rng_next(&rng) % c.d_model;
            real saved = model.params[i];
            double loss_at[4], offsets[4] = {-2 * h, -h, h, 2 * h};
            for (int k2 = 0; k2 < 4; k2++) {
                model.params[i] = saved + offsets[k2];
                mamba_forward(&model, inputs, targets, B, T);
                loss_at[k2] = model.mean_loss;
            }
            model.params[i] = saved;
            double numeric = (8 * (loss_at[2] - loss_at[1]) - (loss_at[3] - loss_at[0])) / (12 * h);
            double analytic = grads[i];
            double denom = fmax(fmax(fabs(analytic), fabs(numeric)), 1e-3 * gmax);
            double err = denom > 0 ? fabs(analytic - numeric) / denom : 0;
            if (isnan(err) || isnan(analytic)) err = INFINITY;
            worst = err > worst ? err : worst;
        }
        char name[96];
        snprintf(name, sizeof(name), "gradcheck[%s,%s]", label, PARAM_NAMES[t]);
        test_report(worst <= 1e-6 && gmax > 0, name, "max rel error %.2e over %d entries (tol 1e-6), max |grad| %.2e",
                    worst, samples, gmax);
    }
    free(grads);
    free(p);
    mamba_free(&model);
}

/* A batch whose targets are all -1: loss 0, every gradient 0, nothing NaN. */
static void check_no_counted_target(void) {
    ModelConfig c = fixture_config(1);
    float *p = fixture_params(&c, 9);
    Mamba model;
    mamba_build(&model, &c, p);
    int inputs[16], targets[16];
    random_tokens(inputs, 16, c.vocab_size, 3);
    for (int i = 0; i < 16; i++) targets[i] = -1;
    mamba_forward(&model, inputs, targets, 2, 8);
    double loss = model.mean_loss;
    mamba_zero_grad(&model);
    mamba_backward(&model, 1.0);
    int zero = 1;
    for (size_t i = 0; i < model.layout.total; i++) zero &= model.grads[i] == 0;
    test_report(loss == 0 && zero, "no_counted_target", "loss %g, all %zu gradients zero: %d", loss,
                model.layout.total, zero);
    free(p);
    mamba_free(&model);
}

/* loss = sum(w . y) of the chunked SSD; checks every input's gradient by finite differences. with_init: the
 * forward starts from a random state (a carried one), a constant of the loss */
static void check_ssd_input_gradients(int diagonal, int with_init) {
    SSDShape s = {.T = 9, .H = 4, .P = 3, .G = 2, .N = 5, .diagonal = diagonal};
    s.x_stride = s.H * s.P;
    s.y_stride = s.H * s.P;
    s.bc_stride = s.G * s.N;
    s.dt_stride = s.H;
    int Q = 4, nA = diagonal ? s.H * s.N : s.H;
    size_t nx = (size_t)s.T * s.x_stride, nbc = (size_t)s.T * s.bc_stride, ndt = (size_t)s.T * s.H;
    uint64_t rng = rng_seed(17 + diagonal);
    real *x = malloc(sizeof(real) * nx), *dt = malloc(sizeof(real) * ndt), *A = malloc(sizeof(real) * nA);
    real *Bm = malloc(sizeof(real) * nbc), *Cm = malloc(sizeof(real) * nbc), *D = malloc(sizeof(real) * s.H);
    real *w = malloc(sizeof(real) * nx), *y = malloc(sizeof(real) * nx);
    for (size_t i = 0; i < nx; i++) { x[i] = rng_normal(&rng); w[i] = rng_normal(&rng); }
    for (size_t i = 0; i < ndt; i++) dt[i] = 0.05 + 0.5 * rng_uniform(&rng);
    for (int i = 0; i < nA; i++) A[i] = -(0.5 + 3 * rng_uniform(&rng));
    for (size_t i = 0; i < nbc; i++) { Bm[i] = rng_normal(&rng); Cm[i] = rng_normal(&rng); }
    for (int i = 0; i < s.H; i++) D[i] = rng_normal(&rng);
    size_t ninit = (size_t)s.H * s.P * s.N;
    real *init = NULL;
    if (with_init) {
        init = malloc(sizeof(real) * ninit);
        for (size_t i = 0; i < ninit; i++) init[i] = rng_normal(&rng);
    }
    real *dx = calloc(nx, sizeof(real)), *ddt = calloc(ndt, sizeof(real)), *dA = calloc(nA, sizeof(real));
    real *dB = calloc(nbc, sizeof(real)), *dC = calloc(nbc, sizeof(real)), *dD = calloc(s.H, sizeof(real));
    ssd_backward_chunked(&s, Q, x, dt, A, Bm, Cm, D, init, w, dx, ddt, dA, dB, dC, dD);
    real *inputs[6] = {x, dt, A, Bm, Cm, D};
    real *grads[6] = {dx, ddt, dA, dB, dC, dD};
    size_t sizes[6] = {nx, ndt, (size_t)nA, nbc, nbc, (size_t)s.H};
    const char *names[6] = {"x", "delta", "A", "B", "C", "D"};
    for (int k = 0; k < 6; k++) {
        double gmax = 0, worst = 0;
        for (size_t i = 0; i < sizes[k]; i++) gmax = fmax(gmax, fabs(grads[k][i]));
        for (size_t i = 0; i < sizes[k]; i++) {
            real saved = inputs[k][i];
            double loss_at[4], offsets[4] = {-2e-4, -1e-4, 1e-4, 2e-4};
            for (int k2 = 0; k2 < 4; k2++) {
                inputs[k][i] = saved + offsets[k2];
                ssd_forward_chunked(&s, Q, x, dt, A, Bm, Cm, D, init, y, NULL);
                loss_at[k2] = 0;
                for (size_t j = 0; j < nx; j++) loss_at[k2] += w[j] * y[j];
            }
            inputs[k][i] = saved;
            double numeric = (8 * (loss_at[2] - loss_at[1]) - (loss_at[3] - loss_at[0])) / 12e-4;
            double denom = fmax(fmax(fabs(grads[k][i]), fabs(numeric)), 1e-3 * gmax);
            double err = fabs(grads[k][i] - numeric) / denom;
            if (isnan(err)) err = INFINITY;
            worst = fmax(worst, err);
        }
        char name[96];
        snprintf(name, sizeof(name), "ssd_gradcheck[%s%s,d%s]", diagonal ? "diagonal" : "scalar",
                 with_init ? ",initial state" : "", names[k]);
        test_report(worst <= 1e-6 && gmax > 0, name, "max rel error %.2e over all %zu entries (tol 1e-6)", worst, sizes[k]);
    }
    free(x); free(dt); free(A); free(Bm); free(Cm); free(D); free(w); free(y); free(init);
    free(dx); free(ddt); free(dA); free(dB); free(dC); free(dD);
}

static void check_diagonal_equals_scalar(void) {
    ModelConfig cs = fixture_config(0), cd = fixture_config(1);
    ParamLayout ls, ld;
    param_layout_init(&ls, &cs);
    param_layout_init(&ld, &cd);
    float *ps = fixture_params(&cs, 21);
    float *pd = (float *)malloc(sizeof(float) * ld.total);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (t == P_A_LOG) continue;
        memcpy(pd + ld.offsets[t], ps + ls.offsets[t], sizeof(float) * ls.sizes[t]);
    }
    for (size_t lh = 0; lh < ls.sizes[P_A_LOG]; lh++)
        for (int n = 0; n < cd.d_state; n++) pd[ld.offsets[P_A_LOG] + lh * cd.d_state + n] = ps[ls.offsets[P_A_LOG] + lh];
    Mamba ms, md;
    mamba_build(&ms, &cs, ps);
    mamba_build(&md, &cd, pd);
    int B = 2, T = 10, inputs[20], targets[20];
    random_tokens(inputs, B * T, cs.vocab_size, 8);
    random_tokens(targets, B * T, cs.vocab_size, 9);
    mamba_forward(&ms, inputs, targets, B, T);
    mamba_forward(&md, inputs, targets, B, T);
    double loss_err = fabs(ms.mean_loss - md.mean_loss) / fabs(ms.mean_loss);
    double logit_err = test_rel_error(md.acts.logits, ms.acts.logits, (long)B * T * cs.padded_vocab);
    test_report(loss_err < 1e-12 && logit_err < 1e-12, "diagonal_equals_scalar[forward]",
                "loss rel diff %.2e, logits rel diff %.2e (tol 1e-12)", loss_err, logit_err);
    mamba_zero_grad(&ms);
    mamba_zero_grad(&md);
    mamba_backward(&ms, 1.0);
    mamba_backward(&md, 1.0);
    double worst = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        if (t == P_A_LOG) continue;
        worst = fmax(worst, test_rel_error(md.grad_tensors[t], ms.grad_tensors[t], (long)ls.sizes[t]));
    }
    real *summed = (real *)calloc(ls.sizes[P_A_LOG], sizeof(real));
    for (size_t lh = 0; lh < ls.sizes[P_A_LOG]; lh++)
        for (int n = 0; n < cd.d_state; n++) summed[lh] += md.grad_tensors[P_A_LOG][lh * cd.d_state + n];
    double a_err = test_rel_error(summed, ms.grad_tensors[P_A_LOG], (long)ls.sizes[P_A_LOG]);
    test_report(worst < 1e-12 && a_err < 1e-12, "diagonal_equals_scalar[gradients]",
                "other tensors %.2e, A_log (row sums) %.2e (tol 1e-12)", worst, a_err);
    free(summed);
    free(ps);
    free(pd);
    mamba_free(&ms);
    mamba_free(&md);
}

static void check_generation_matches_forward(int diagonal) {
    ModelConfig c = fixture_config(diagonal);
    float *p = fixture_params(&c, 31 + diagonal);
    Mamba model;
    mamba_build(&model, &c, p);
    int T = 13, prefix = 6, tokens[13];
    random_tokens(tokens, T, c.vocab_size, 12);
    mamba_forward(&model, tokens, NULL, 1, T);
    real *full = (real *)malloc(sizeof(real) * T * c.padded_vocab);
    memcpy(full, model.acts.logits, sizeof(real) * T * c.padded_vocab);
    MambaInferenceState state;
    inference_state_init(&state, &c);
    real *logits = (real *)malloc(sizeof(real) * c.padded_vocab);
    mamba_prefill(&model, tokens, prefix, &state, logits);
    double worst = test_rel_error(logits, full + (size_t)(prefix - 1) * c.padded_vocab, c.padded_vocab);
    for (int t = prefix; t < T; t++) {
        mamba_step(&model, tokens[t], &state, logits);
        worst = fmax(worst, test_rel_error(logits, full + (size_t)t * c.padded_vocab, c.padded_vocab));
    }
    /* and from an empty state: every position by stepping alone */
    MambaInferenceState fresh;
    inference_state_init(&fresh, &c);
    for (int t = 0; t < T; t++) {
        mamba_step(&model, tokens[t], &fresh, logits);
        worst = fmax(worst, test_rel_error(logits, full + (size_t)t * c.padded_vocab, c.padded_vocab));
    }
    char name[64];
    snprintf(name, sizeof(name), "generation_equals_forward[%s]", diagonal ? "diagonal" : "scalar");
    test_report(worst < 1e-12, name, "max rel diff of logits over %d positions %.2e (tol 1e-12)", T, worst);
    inference_state_free(&state);
    inference_state_free(&fresh);
    free(logits);
    free(full);
    free(p);
    mamba_free(&model);
}

static void check_init_statistics(void) {
    ModelConfig c;
    config_load(&c, "configs/mamba2-tiny.json");
    ParamLayout layout;
    param_layout_init(&layout, &c);
    float *p = (float *)malloc(sizeof(float) * layout.total);
    float *q = (float *)malloc(sizeof(float) * layout.total);
    params_init(&c, p, 42);
    params_init(&c, q, 42);
    int same = memcmp(p, q, sizeof(float) * layout.total) == 0;
    double sum = 0, sq = 0;
    size_t n = layout.sizes[P_WTE];
    for (size_t i = 0; i < n; i++) { sum += p[i]; sq += (double)p[i] * p[i]; }
    double std = sqrt(sq / n - (sum / n) * (sum / n));
    double bound = 1.0 / sqrt((double)c.d_model), maxabs = 0;
    for (size_t i = 0; i < layout.sizes[P_IN_PROJ_W]; i++) maxabs = fmax(maxabs, fabs(p[layout.offsets[P_IN_PROJ_W] + i]));
    double dt_lo = INFINITY, dt_hi = 0, alog_lo = INFINITY, alog_hi = -INFINITY;
    for (size_t i = 0; i < layout.sizes[P_DT_BIAS]; i++) {
        double v = p[layout.offsets[P_DT_BIAS] + i], dt = log1p(exp(v));
        dt_lo = fmin(dt_lo, dt);
        dt_hi = fmax(dt_hi, dt);
    }
    for (size_t i = 0; i < layout.sizes[P_A_LOG]; i++) {
        alog_lo = fmin(alog_lo, p[layout.offsets[P_A_LOG] + i]);
        alog_hi = fmax(alog_hi, p[layout.offsets[P_A_LOG] + i]);
    }
    int ok = same && fabs(std - 0.02) < 0.001 && maxabs <= bound && maxabs > 0.9 * bound && dt_lo >= 1e-3 * 0.999 &&
             dt_hi <= 0.1 * 1.001 && alog_lo >= 0 && alog_hi <= log(16.0);
    test_report(ok, "init_statistics", "reproducible %d, wte std %.4f (0.02), in_proj max %.4f (bound %.4f), "
                "softplus(dt_bias) in [%.2e, %.2e], A_log in [%.3f, %.3f]", same, std, maxabs, bound, dt_lo, dt_hi,
                alog_lo, alog_hi);
    free(p);
    free(q);
}

static double *random_array(size_t n, uint64_t *rng) {
    double *a = (double *)malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) a[i] = rng_normal(rng);
    return a;
}

/* matmul_forward writes out; matmul_backward ADDS to dinp and dw: both start from random values */
static void check_matmul(int M, int C, int OC) {
    uint64_t rng = rng_seed((uint64_t)M * 1000003 + C * 1009 + OC);
    double *inp = random_array((size_t)M * C, &rng), *w = random_array((size_t)OC * C, &rng);
    double *dout = random_array((size_t)M * OC, &rng), *out = random_array((size_t)M * OC, &rng);
    double *dinp = random_array((size_t)M * C, &rng), *dw = random_array((size_t)OC * C, &rng);
    double *out_ref = (double *)malloc(sizeof(double) * M * OC), *dinp_ref = (double *)malloc(sizeof(double) * M * C);
    double *dw_ref = (double *)malloc(sizeof(double) * OC * C);
    memcpy(dinp_ref, dinp, sizeof(double) * M * C);
    memcpy(dw_ref, dw, sizeof(double) * OC * C);
    for (int m = 0; m < M; m++)
        for (int o = 0; o < OC; o++) {
            double acc = 0;
            for (int c = 0; c < C; c++) acc += inp[(size_t)m * C + c] * w[(size_t)o * C + c];
            out_ref[(size_t)m * OC + o] = acc;
            for (int c = 0; c < C; c++) {
                dinp_ref[(size_t)m * C + c] += dout[(size_t)m * OC + o] * w[(size_t)o * C + c];
                dw_ref[(size_t)o * C + c] += dout[(size_t)m * OC + o] * inp[(size_t)m * C + c];
            }
        }
    matmul_forward(out, inp, w, M, C, OC);
    matmul_backward(dinp, dw, dout, inp, w, M, C, OC);
    double e_out = test_rel_error(out, out_ref, (long)M * OC), e_dinp = test_rel_error(dinp, dinp_ref, (long)M * C);
    double e_dw = test_rel_error(dw, dw_ref, (long)OC * C);
    char name[96];
    snprintf(name, sizeof(name), "matmul[M=%d C=%d OC=%d]", M, C, OC);
    test_report(e_out < 1e-12 && e_dinp < 1e-12 && e_dw < 1e-12, name,
                "rel error out %.1e, dinp %.1e, dw %.1e (tol 1e-12)", e_out, e_dinp, e_dw);
    double *arrays[] = {inp, w, dout, out, dinp, dw, out_ref, dinp_ref, dw_ref};
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) free(arrays[i]);
}

/* Draws gen_T tokens after start + prompt with the CPU feeder; returns how many. */
static int draw(Mamba *model, const SampleSettings *s, uint64_t seed, int *out) {
    CPUFeeder cpu;
    TokenFeeder feeder = sample_cpu_feeder_init(&cpu, model);
    uint64_t rng = rng_seed(seed);
    SampleStats stats = sample_generate(&feeder, &model->config, s, &rng, NULL, out);
    sample_cpu_feeder_free(&cpu);
    return stats.generated;
}

static void check_prompted_sampling(int diagonal) {
    ModelConfig c = fixture_config(diagonal);
    float *p = fixture_params(&c, 41 + diagonal);
    Mamba model;
    mamba_build(&model, &c, p);
    enum { PROMPT = 7, GEN = 12 };
    int prompt[PROMPT], greedy[GEN], top1[GEN], a[GEN], b[GEN], other[GEN];
    random_tokens(prompt, PROMPT, c.vocab_size, 17);
    SampleSettings s = {5, prompt, PROMPT, GEN, 0.0f, 0, -1};
    int n_greedy = draw(&model, &s, 1, greedy);
    /* the full forward over start, prompt and continuation: its argmax at each position is the next token */
    int seq[1 + PROMPT + GEN];
    seq[0] = s.start_token;
    memcpy(seq + 1, prompt, sizeof(prompt));
    memcpy(seq + 1 + PROMPT, greedy, sizeof(greedy));
    mamba_forward(&model, seq, NULL, 1, 1 + PROMPT + GEN);
    int agree = 0;
    for (int t = 0; t < GEN; t++) {
        const real *row = model.acts.logits + (size_t)(PROMPT + t) * c.padded_vocab;
        int best = 0;
        for (int v = 1; v < c.vocab_size; v++) if (row[v] > row[best]) best = v;
        agree += best == greedy[t];
    }
    char name[96];
    snprintf(name, sizeof(name), "greedy_sample_is_forward_argmax[%s]", diagonal ? "diagonal" : "scalar");
    test_report(n_greedy == GEN && agree == GEN, name, "%d of %d drawn tokens are the forward's argmax", agree, GEN);
    s.temperature = 1.0f;
    s.top_k = 1;
    draw(&model, &s, 2, top1);
    snprintf(name, sizeof(name), "top_k_1_is_greedy[%s]", diagonal ? "diagonal" : "scalar");
    test_report(!memcmp(top1, greedy, sizeof(greedy)), name, "top-k 1 at temperature 1 draws the greedy tokens");
    s.top_k = 0;
    draw(&model, &s, 3, a);
    draw(&model, &s, 3, b);
    draw(&model, &s, 4, other);
    snprintf(name, sizeof(name), "seeded_sample_repeats[%s]", diagonal ? "diagonal" : "scalar");
    test_report(!memcmp(a, b, sizeof(a)) && memcmp(a, other, sizeof(a)), name,
                "seed 3 twice: the same %d tokens; seed 4: others", GEN);
    int stop_at = 0; /* the first position of the greedy continuation's fifth token */
    while (greedy[stop_at] != greedy[4]) stop_at++;
    s.temperature = 0.0f;
    s.stop_token = greedy[4];
    int n_stopped = draw(&model, &s, 1, a);
    snprintf(name, sizeof(name), "stop_token_ends_sample[%s]", diagonal ? "diagonal" : "scalar");
    test_report(n_stopped == stop_at + 1 && a[stop_at] == greedy[4], name, "stopped after %d tokens (expected %d)",
                n_stopped, stop_at + 1);
    free(p);
    mamba_free(&model);
}

int main(void) {
    check_matmul(37, 50, 23);
    check_matmul(300, 33, 530);
    check_matmul(520, 64, 16);
    check_matmul(3, 5, 2);
    for (int with_init = 0; with_init < 2; with_init++) {
        check_ssd_input_gradients(0, with_init);
        check_ssd_input_gradients(1, with_init);
    }
    check_model_gradients(0, 0);
    check_model_gradients(1, 0);
    check_model_gradients(0, 1);
    check_model_gradients(1, 1);
    check_no_counted_target();
    check_diagonal_equals_scalar();
    check_generation_matches_forward(0);
    check_generation_matches_forward(1);
    check_prompted_sampling(0);
    check_prompted_sampling(1);
    check_init_statistics();
    return test_exit_code();
}
