/*
 * Can one SSD layer learn a mixture of two exponential memories? (arXiv 2510.04944, experiment 2)
 *
 * Target: y_t = sum_{s<=t} (a1 l1^(t-s) + a2 l2^(t-s)) x_s, with x_t ~ N(0, 1), l1 = 0.5, l2 = 0.95,
 * a1 = 1, a2 = 0.5. Model: one head of width 1 of the SSD layer (model/cpu_ssd.c, chunked form, forward
 * and backward) with input-independent parameters, as in a linear time-invariant SSM:
 *     delta = softplus(dt_raw),  A = -exp(A_log),  B_t = B, C_t = C (N values each),  D
 *     kernel k(tau) = sum_n C_n B_n delta exp(delta A_n)^tau  (+ D at tau = 0)
 * A diagonal A has N rates r_n = exp(delta A_n); a scalar A one rate for all N states, so its kernel
 * is a single exponential whatever N is. Variants: diagonal N = 1, diagonal N = 2, scalar N = 2.
 * Trained with AdamW on the mean squared error over fresh random batches; every run reports its
 * learned rates, its impulse response (the layer's output for x = a unit impulse) and its relative
 * error, MSE / mean(target^2), on a fixed held-out batch.
 *
 *   ssd_mixture_f64 [--seeds K] [--steps S] [--out FILE.json]     the experiment
 *   ssd_mixture_f64 --check                                       the parameter gradients against
 *                                                                 central finite differences
 */
#include "model/cpu_ssd.h"
#include "common/rng.h"
#include "common/fileio.h"
#include "common/utils.h"
#include "tests/test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_1 0.5
#define RATE_2 0.95
#define WEIGHT_1 1.0
#define WEIGHT_2 0.5
#define SEQ_LEN 256      /* a sequence: 20 time constants of the slow memory (1 / (1 - 0.95)) */
#define BATCH 8
#define CHUNK 64
#define KERNEL_LEN 128   /* lags of the reported impulse response */
#define EVAL_EVERY 25
#define MAX_N 2

/* Parameters in one flat array: dt_raw, D, A_log[nk], B[N], C[N]; their gradients alike. */
typedef struct {
    int N, diagonal, nk, count;
    double p[3 + 3 * MAX_N];
} Model;

enum { P_DT = 0, P_D = 1, P_ALOG = 2 };
static int off_B(const Model *m) { return P_ALOG + m->nk; }
static int off_C(const Model *m) { return P_ALOG + m->nk + m->N; }

static double softplus(double v) { return v > 30 ? v : log1p(exp(v)); }
static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }

/* delta = 0.1 as Mamba's dt initialisation range tops out; A_log ~ log U(1, 16) as model/params.c */
static Model model_init(int N, int diagonal, uint64_t seed) {
    Model m;
    memset(&m, 0, sizeof(m));
    m.N = N;
    m.diagonal = diagonal;
    m.nk = diagonal ? N : 1;
    m.count = 2 + m.nk + 2 * N;
    uint64_t rng = rng_seed(seed);
    m.p[P_DT] = log(expm1(0.1));
    m.p[P_D] = 0.0;
    for (int k = 0; k < m.nk; k++) m.p[P_ALOG + k] = log(1.0 + 15.0 * rng_uniform(&rng));
    for (int n = 0; n < N; n++) {
        m.p[off_B(&m) + n] = 0.5 * rng_normal(&rng);
        m.p[off_C(&m) + n] = 0.5 * rng_normal(&rng);
    }
    return m;
}

static double model_rate(const Model *m, int n) {
    return exp(-softplus(m->p[P_DT]) * exp(m->p[P_ALOG + (m->diagonal ? n : 0)]));
}

/* The layer's inputs and outputs for one sequence of length T (per-step copies of B, C, delta). */
typedef struct {
    SSDShape s;
    real *delta, *A, *B, *C, *D, *y, *dy, *dx, *ddelta, *dA, *dB, *dC, *dD;
} Layer;

static Layer layer_alloc(const Model *m, int T) {
    Layer L;
    L.s = (SSDShape){.T = T, .H = 1, .P = 1, .G = 1, .N = m->N, .diagonal = m->diagonal,
                     .x_stride = 1, .y_stride = 1, .bc_stride = m->N, .dt_stride = 1};
    L.delta = (real *)callocCheck(T, sizeof(real));
    L.A = (real *)callocCheck(m->nk, sizeof(real));
    L.B = (real *)callocCheck((size_t)T * m->N, sizeof(real));
    L.C = (real *)callocCheck((size_t)T * m->N, sizeof(real));
    L.D = (real *)callocCheck(1, sizeof(real));
    L.y = (real *)callocCheck(T, sizeof(real));
    L.dy = (real *)callocCheck(T, sizeof(real));
    L.dx = (real *)callocCheck(T, sizeof(real));
    L.ddelta = (real *)callocCheck(T, sizeof(real));
    L.dA = (real *)callocCheck(m->nk, sizeof(real));
    L.dB = (real *)callocCheck((size_t)T * m->N, sizeof(real));
    L.dC = (real *)callocCheck((size_t)T * m->N, sizeof(real));
    L.dD = (real *)callocCheck(1, sizeof(real));
    return L;
}

static void layer_free(Layer *L) {
    real *bufs[] = {L->delta, L->A, L->B, L->C, L->D, L->y, L->dy, L->dx, L->ddelta, L->dA, L->dB, L->dC, L->dD};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) free(bufs[i]);
}

/* The model's parameters broadcast over the steps, as the layer takes them. */
static void layer_load(Layer *L, const Model *m) {
    int T = L->s.T, N = m->N;
    double delta = softplus(m->p[P_DT]);
    for (int t = 0; t < T; t++) {
        L->delta[t] = delta;
        for (int n = 0; n < N; n++) {
            L->B[t * N + n] = m->p[off_B(m) + n];
            L->C[t * N + n] = m->p[off_C(m) + n];
        }
    }
    for (int k = 0; k < m->nk; k++) L->A[k] = -exp(m->p[P_ALOG + k]);
    L->D[0] = m->p[P_D];
}

/* Targets of x by the two-exponential recurrence h_t = l h_{t-1} + x_t, y_t = a1 h1_t + a2 h2_t. */
static void target(const real *x, int T, real *y) {
    double h1 = 0, h2 = 0;
    for (int t = 0; t < T; t++) {
        h1 = RATE_1 * h1 + x[t];
        h2 = RATE_2 * h2 + x[t];
        y[t] = WEIGHT_1 * h1 + WEIGHT_2 * h2;
    }
}

typedef struct {
    int nseq;
    real *x, *y; /* [nseq, SEQ_LEN] */
} Batch;

static Batch batch_make(int nseq, uint64_t *rng) {
    Batch b = {nseq, (real *)mallocCheck(sizeof(real) * nseq * SEQ_LEN), (real *)mallocCheck(sizeof(real) * nseq * SEQ_LEN)};
    for (int i = 0; i < nseq * SEQ_LEN; i++) b.x[i] = rng_normal(rng);
    for (int i = 0; i < nseq; i++) target(b.x + i * SEQ_LEN, SEQ_LEN, b.y + i * SEQ_LEN);
    return b;
}

static void batch_free(Batch *b) { free(b->x); free(b->y); }

/* Mean squared error over the batch; with grad non-NULL also its gradient w.r.t. the parameters. */
static double loss(const Model *m, Layer *L, const Batch *b, double *grad) {
    const SSDShape *s = &L->s;
    int T = s->T, N = m->N;
    double sum = 0, scale = 1.0 / ((double)b->nseq * T);
    layer_load(L, m);
    if (grad) memset(grad, 0, sizeof(double) * m->count);
    for (int i = 0; i < b->nseq; i++) {
        const real *x = b->x + i * T, *y = b->y + i * T;
        ssd_forward_chunked(s, CHUNK, x, L->delta, L->A, L->B, L->C, L->D, NULL, L->y, NULL);
        for (int t = 0; t < T; t++) {
            double e = L->y[t] - y[t];
            sum += e * e;
            L->dy[t] = 2.0 * e * scale;
        }
        if (!grad) continue;
        memset(L->ddelta, 0, sizeof(real) * T);
        memset(L->dA, 0, sizeof(real) * m->nk);
        memset(L->dB, 0, sizeof(real) * T * N);
        memset(L->dC, 0, sizeof(real) * T * N);
        L->dD[0] = 0;
        ssd_backward_chunked(s, CHUNK, x, L->delta, L->A, L->B, L->C, L->D, NULL, L->dy, L->dx, L->ddelta, L->dA, L->dB,
                             L->dC, L->dD);
        /* chain rules: B_t = B, C_t = C, delta_t = softplus(dt_raw), A = -exp(A_log) */
        for (int t = 0; t < T; t++) {
            grad[P_DT] += L->ddelta[t] * sigmoid(m->p[P_DT]);
            for (int n = 0; n < N; n++) {
                grad[off_B(m) + n] += L->dB[t * N + n];
                grad[off_C(m) + n] += L->dC[t * N + n];
            }
        }
        for (int k = 0; k < m->nk; k++) grad[P_ALOG + k] += L->dA[k] * L->A[k];
        grad[P_D] += L->dD[0];
    }
    return sum * scale;
}

static double mean_square(const real *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)v[i] * v[i];
    return s / n;
}

/* The layer's output for a unit impulse at t = 0: k(0 .. KERNEL_LEN-1). */
static void impulse_response(const Model *m, double *k) {
    Layer L = layer_alloc(m, KERNEL_LEN);
    real *x = (real *)callocCheck(KERNEL_LEN, sizeof(real));
    x[0] = 1;
    layer_load(&L, m);
    ssd_forward_recurrent(&L.s, x, L.delta, L.A, L.B, L.C, L.D, NULL, L.y, NULL);
    for (int t = 0; t < KERNEL_LEN; t++) k[t] = L.y[t];
    free(x);
    layer_free(&L);
}

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double m[3 + 3 * MAX_N], v[3 + 3 * MAX_N];
    int step;
} AdamW;

static void adamw_step(AdamW *opt, Model *model, const double *grad, double lr) {
    opt->step++;
    double c1 = 1.0 - pow(opt->beta1, opt->step), c2 = 1.0 - pow(opt->beta2, opt->step);
    for (int i = 0; i < model->count; i++) {
        opt->m[i] = opt->beta1 * opt->m[i] + (1 - opt->beta1) * grad[i];
        opt->v[i] = opt->beta2 * opt->v[i] + (1 - opt->beta2) * grad[i] * grad[i];
        double update = (opt->m[i] / c1) / (sqrt(opt->v[i] / c2) + opt->eps);
        model->p[i] -= lr * (update + opt->weight_decay * model->p[i]);
    }
}

typedef struct {
    const char *name;
    int N, diagonal;
} Variant;

static const Variant VARIANTS[] = {{"diagonal N=1", 1, 1}, {"diagonal N=2", 2, 1}, {"scalar N=2", 2, 0}};

/* One training run; writes its JSON object (no trailing comma) to out and a line to stdout. */
static void train_run(FILE *out, const Variant *v, int seed, int steps, double lr) {
    Model m = model_init(v->N, v->diagonal, 1000 + seed);
    AdamW opt = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    uint64_t data_rng = rng_seed(2000 + seed), eval_rng = rng_seed(99);
    Batch eval = batch_make(4 * BATCH, &eval_rng);
    double eval_power = mean_square(eval.y, eval.nseq * SEQ_LEN);
    Layer L = layer_alloc(&m, SEQ_LEN);
    double grad[3 + 3 * MAX_N];
    fprintf(out, "    {\"variant\": \"%s\", \"N\": %d, \"diagonal\": %d, \"seed\": %d,\n     \"curve\": [", v->name, v->N,
            v->diagonal, seed);
    double rel = 0;
    for (int step = 0; step <= steps; step++) {
        if (step % EVAL_EVERY == 0 || step == steps) {
            rel = loss(&m, &L, &eval, NULL) / eval_power;
            fprintf(out, "%s[%d, %.6e]", step ? ", " : "", step, rel);
        }
        if (step == steps) break;
        Batch b = batch_make(BATCH, &data_rng);
        loss(&m, &L, &b, grad);
        batch_free(&b);
        /* cosine from lr to lr / 100 */
        double frac = (double)step / steps;
        adamw_step(&opt, &m, grad, lr * (0.01 + 0.99 * 0.5 * (1 + cos(M_PI * frac))));
    }
    double k[KERNEL_LEN], kmax = 0, kerr = 0;
    impulse_response(&m, k);
    fprintf(out, "],\n     \"rates\": [");
    for (int n = 0; n < v->N; n++) fprintf(out, "%s%.8f", n ? ", " : "", model_rate(&m, n));
    fprintf(out, "],\n     \"weights\": [");
    double delta = softplus(m.p[P_DT]);
    for (int n = 0; n < v->N; n++) fprintf(out, "%s%.8f", n ? ", " : "", m.p[off_B(&m) + n] * m.p[off_C(&m) + n] * delta);
    fprintf(out, "],\n     \"D\": %.8f,\n     \"kernel\": [", m.p[P_D]);
    for (int t = 0; t < KERNEL_LEN; t++) {
        double want = WEIGHT_1 * pow(RATE_1, t) + WEIGHT_2 * pow(RATE_2, t);
        kmax = fmax(kmax, fabs(want));
        kerr = fmax(kerr, fabs(k[t] - want));
        fprintf(out, "%s%.8e", t ? ", " : "", k[t]);
    }
    fprintf(out, "],\n     \"final_rel_mse\": %.6e, \"kernel_max_error\": %.6e}", rel, kerr / kmax);
    printf("%-13s seed %d: rel MSE %.3e, kernel max error %.3e of max |k|, rates", v->name, seed, rel, kerr / kmax);
    for (int n = 0; n < v->N; n++) printf(" %.4f", model_rate(&m, n));
    printf("\n");
    fflush(stdout);
    layer_free(&L);
    batch_free(&eval);
}

/* The parameter gradients of loss() against central differences, for every variant. */
static void check_gradients(void) {
    for (size_t iv = 0; iv < sizeof(VARIANTS) / sizeof(VARIANTS[0]); iv++) {
        const Variant *v = &VARIANTS[iv];
        Model m = model_init(v->N, v->diagonal, 7 + iv);
        uint64_t rng = rng_seed(5);
        Batch b = batch_make(2, &rng);
        Layer L = layer_alloc(&m, SEQ_LEN);
        double grad[3 + 3 * MAX_N], fd[3 + 3 * MAX_N];
        loss(&m, &L, &b, grad);
        for (int i = 0; i < m.count; i++) {
            Model plus = m, minus = m;
            double h = 1e-6;
            plus.p[i] += h;
            minus.p[i] -= h;
            fd[i] = (loss(&plus, &L, &b, NULL) - loss(&minus, &L, &b, NULL)) / (2 * h);
        }
        double err = test_rel_error(grad, fd, m.count);
        char name[96];
        snprintf(name, sizeof(name), "ssd_mixture_gradients[%s]", v->name);
        /* central differences with h = 1e-6 carry ~1e-10 truncation and ~1e-10 rounding error */
        test_report(err < 1e-6, name, "rel error %.2e against central differences (tol 1e-6)", err);
        layer_free(&L);
        batch_free(&b);
    }
}

static void usage_exit(const char *msg) {
    fprintf(stderr, "ssd_mixture: %s\nusage: ssd_mixture [--seeds K] [--steps S] [--lr LR] [--out FILE.json] | --check\n",
            msg);
    exit(EXIT_FAILURE);
}

static int parse_positive(const char *flag, const char *v) {
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 1 || n > 1000000) {
        fprintf(stderr, "ssd_mixture: %s must be a positive integer, got '%s'\n", flag, v);
        exit(EXIT_FAILURE);
    }
    return (int)n;
}

int main(int argc, char **argv) {
    int seeds = 5, steps = 3000;
    double lr = 0.05;
    const char *out_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) {
            check_gradients();
            return test_exit_code();
        } else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) seeds = parse_positive("--seeds", argv[++i]);
        else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = parse_positive("--steps", argv[++i]);
        else if (strcmp(argv[i], "--lr") == 0 && i + 1 < argc) {
            char *end;
            lr = strtod(argv[++i], &end);
            if (*end || !(lr > 0 && lr < 1)) usage_exit("--lr must be a number in (0, 1)");
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out_path = argv[++i];
        else usage_exit("unknown or incomplete argument");
    }
    AtomicFile file;
    FILE *out = stdout;
    if (out_path) {
        atomic_file_open(&file, out_path);
        out = file.fp;
    }
    fprintf(out, "{\"target\": {\"rates\": [%g, %g], \"weights\": [%g, %g]},\n", RATE_1, RATE_2, WEIGHT_1, WEIGHT_2);
    fprintf(out, " \"setup\": {\"seq_len\": %d, \"batch\": %d, \"chunk\": %d, \"steps\": %d, \"lr\": %g, "
                 "\"schedule\": \"cosine to lr/100\", \"eval_every\": %d, \"kernel_len\": %d},\n \"runs\": [\n",
            SEQ_LEN, BATCH, CHUNK, steps, lr, EVAL_EVERY, KERNEL_LEN);
    int first = 1;
    for (size_t iv = 0; iv < sizeof(VARIANTS) / sizeof(VARIANTS[0]); iv++)
        for (int seed = 0; seed < seeds; seed++) {
            if (!first) fprintf(out, ",\n");
            first = 0;
            train_run(out, &VARIANTS[iv], seed, steps, lr);
        }
    fprintf(out, "\n ]}\n");
    if (out_path) atomic_file_commit(&file);
    return 0;
}
