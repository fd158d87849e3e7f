/*
 * How far apart the three forms of one SSD layer (model/cpu_ssd.c: recurrent, quadratic, chunked)
 * are in practice: the largest absolute and relative differences of the outputs y (and the final
 * state, chunked against recurrent) and of the six gradients of sum(dy . y), pair by pair, over T,
 * d_state N and chunk size Q, for scalar and diagonal A. Built in double (ssd_equivalence_f64) and
 * float (ssd_equivalence_f32): the precision is model/real.h's, chosen at build time.
 *
 * The relative difference of two tensors is max |a - b| / max |b| (tests/test.h); a gradient row
 * gives the worst of the six tensors and names it, and apart the worst of the per-step gradients
 * (dx, ddelta, dB, dC) and of the parameter gradients (dA, dD: sums over all steps).
 *
 *   ssd_equivalence_f64 [--sweep tiny|full] [--check] [--out FILE.csv]
 * --check prints a PASS/FAIL line per row against the precision's tolerances (make test runs the tiny
 * sweep so: tests/test_dev.sh); --out writes the rows as CSV (to FILE.tmp, renamed into place).
 */
#include "tests/ssd_inputs.h"
#include "tests/test.h"
#include "common/fileio.h"
#include "common/utils.h"

#include <stdio.h>
#include <string.h>

#ifdef SSD_DOUBLE
#define PRECISION "fp64"
/* The forms add the same terms in other orders: 1e-12 leaves ~1e3 ulps of room at the tiny sweep. */
#define OUTPUT_TOLERANCE 1e-12
#define GRAD_TOLERANCE 1e-12
#else
#define PRECISION "fp32"
/* y and the state: a few ulps of fp32 (6e-8) times the terms of a sum, ~1e-6 at the tiny sweep.
 * The gradient of a scalar A is one sum over T*N*P terms of both signs that cancel: relative to
 * its small result the rounding of the terms reaches 1e-4 at T = 37 (1e-3 at T = 2048). */
#define OUTPUT_TOLERANCE 1e-5
#define GRAD_TOLERANCE 1e-3
#endif

typedef struct {
    const int *T, *N, *Q;
    int nT, nN, nQ;
} Sweep;

static const int TINY_T[] = {37, 64}, TINY_N[] = {1, 4}, TINY_Q[] = {16, 64};
static const int FULL_T[] = {37, 128, 500, 2048}, FULL_N[] = {1, 16, 64}, FULL_Q[] = {16, 64, 256};
enum { HEADS = 2, HEADDIM = 16, GROUPS = 1 };

typedef struct {
    double y_abs, y_rel, state_abs, state_rel, grad_abs, grad_rel;
    double step_grad_rel, param_grad_rel; /* dx, ddelta, dB, dC (per step) and dA, dD (sums over steps) */
    const char *worst_grad;
} Difference;

/* The outputs of one form: y, final state (NULL for the quadratic form, which has none) and gradients. */
typedef struct {
    real *y, *state;
    SSDGrads g;
} FormResult;

static void compare(const SSDInputs *in, const FormResult *a, const FormResult *b, Difference *d) {
    const SSDShape *s = &in->s;
    memset(d, 0, sizeof(*d));
    max_difference(a->y, b->y, (long)s->T * s->y_stride, &d->y_abs, &d->y_rel);
    d->state_abs = d->state_rel = NAN;
    if (a->state && b->state)
        max_difference(a->state, b->state, (long)s->H * s->P * s->N, &d->state_abs, &d->state_rel);
    real *ta[SSD_GRAD_TENSORS], *tb[SSD_GRAD_TENSORS];
    long counts[SSD_GRAD_TENSORS];
    grads_tensors(in, &a->g, ta, counts);
    grads_tensors(in, &b->g, tb, counts);
    d->worst_grad = ssd_grad_names[0];
    for (int i = 0; i < SSD_GRAD_TENSORS; i++) {
        double ab, rel;
        max_difference(ta[i], tb[i], counts[i], &ab, &rel);
        if (ab > d->grad_abs) d->grad_abs = ab;
        int is_param = i == 2 || i == 5; /* dA, dD */
        double *group = is_param ? &d->param_grad_rel : &d->step_grad_rel;
        if (rel > *group || isinf(rel)) *group = rel;
        if (rel > d->grad_rel || isinf(rel)) {
            d->grad_rel = rel;
            d->worst_grad = ssd_grad_names[i];
        }
    }
}

static FormResult form_alloc(const SSDInputs *in, int with_state) {
    const SSDShape *s = &in->s;
    FormResult r;
    r.y = (real *)callocCheck((size_t)s->T * s->y_stride, sizeof(real));
    r.state = with_state ? (real *)callocCheck((size_t)s->H * s->P * s->N, sizeof(real)) : NULL;
    r.g = grads_alloc(in);
    return r;
}

static void form_free(FormResult *r) {
    free(r->y);
    free(r->state);
    grads_free(&r->g);
}

static int report_row(FILE *csv, int check, const char *a_kind, int T, int N, int Q, const char *pair,
                      const Difference *d) {
    int ok = d->y_rel <= OUTPUT_TOLERANCE && d->grad_rel <= GRAD_TOLERANCE && !(d->state_rel > OUTPUT_TOLERANCE);
    /* the quadratic form has no final state: its state columns stay empty */
    char state_abs[32] = "", state_rel[32] = "";
    if (!isnan(d->state_rel)) {
        snprintf(state_abs, sizeof(state_abs), "%.3e", d->state_abs);
        snprintf(state_rel, sizeof(state_rel), "%.3e", d->state_rel);
    }
    if (csv)
        fprintf(csv, "%s,%s,%d,%d,%d,%s,%.3e,%.3e,%s,%s,%.3e,%.3e,%s,%.3e,%.3e\n", PRECISION, a_kind, T, N, Q, pair,
                d->y_abs, d->y_rel, state_abs, state_rel, d->grad_abs, d->grad_rel, d->worst_grad, d->step_grad_rel,
                d->param_grad_rel);
    char name[160];
    snprintf(name, sizeof(name), "ssd_equivalence[%s,%s,T=%d,N=%d,Q=%d,%s]", PRECISION, a_kind, T, N, Q, pair);
    if (check)
        test_report(ok, name, "y rel %.2e, state rel %s (tol %.0e), gradients rel %.2e (%s) (tol %.0e)",
                    d->y_rel, state_rel[0] ? state_rel : "-", OUTPUT_TOLERANCE, d->grad_rel, d->worst_grad, GRAD_TOLERANCE);
    else
        printf("%-66s y %.2e  state %-9s  grad %.2e (%s)\n", name, d->y_rel, state_rel[0] ? state_rel : "-",
               d->grad_rel, d->worst_grad);
    return ok;
}

/* All rows of one (A, T, N): quadratic against recurrent once, then the chunked form per Q. */
static void run_shape(FILE *csv, int check, int diagonal, int T, int N, const Sweep *sw, uint64_t seed) {
    const char *a_kind = diagonal ? "diagonal" : "scalar";
    SSDInputs in = make_inputs(T, HEADS, HEADDIM, GROUPS, N, diagonal, seed);
    const SSDShape *s = &in.s;
    FormResult rec = form_alloc(&in, 1), quad = form_alloc(&in, 0);
    ssd_forward_recurrent(s, in.x, in.delta, in.A, in.B, in.C, in.D, NULL, rec.y, rec.state);
    backward_recurrent(&in, &rec.g);
    ssd_forward_quadratic(s, in.x, in.delta, in.A, in.B, in.C, in.D, quad.y);
    backward_quadratic(&in, &quad.g);
    Difference d;
    compare(&in, &quad, &rec, &d);
    report_row(csv, check, a_kind, T, N, 0, "quadratic-recurrent", &d);
    for (int iq = 0; iq < sw->nQ; iq++) {
        int Q = sw->Q[iq];
        FormResult chunk = form_alloc(&in, 1);
        ssd_forward_chunked(s, Q, in.x, in.delta, in.A, in.B, in.C, in.D, NULL, chunk.y, chunk.state);
        backward_chunked(&in, Q, &chunk.g);
        compare(&in, &chunk, &rec, &d);
        report_row(csv, check, a_kind, T, N, Q, "chunked-recurrent", &d);
        compare(&in, &chunk, &quad, &d);
        report_row(csv, check, a_kind, T, N, Q, "chunked-quadratic", &d);
        form_free(&chunk);
    }
    form_free(&rec);
    form_free(&quad);
    free_inputs(&in);
}

static void usage_exit(const char *msg) {
    fprintf(stderr, "ssd_equivalence: %s\nusage: ssd_equivalence [--sweep tiny|full] [--check] [--out FILE.csv]\n", msg);
    exit(EXIT_FAILURE);
}

int main(int argc, char **argv) {
    Sweep sw = {FULL_T, FULL_N, FULL_Q, 4, 3, 3};
    int check = 0;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) check = 1;
        else if (strcmp(argv[i], "--sweep") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "tiny") == 0) sw = (Sweep){TINY_T, TINY_N, TINY_Q, 2, 2, 2};
            else if (strcmp(v, "full") != 0) usage_exit("--sweep takes tiny or full");
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else usage_exit("unknown or incomplete argument");
    }
    AtomicFile file;
    FILE *csv = NULL;
    if (out) {
        atomic_file_open(&file, out);
        csv = file.fp;
        fprintf(csv, "precision,a,T,N,Q,pair,y_abs,y_rel,state_abs,state_rel,grad_abs,grad_rel,worst_grad,step_grad_rel,param_grad_rel\n");
    }
    uint64_t seed = 1;
    for (int diagonal = 0; diagonal <= 1; diagonal++)
        for (int it = 0; it < sw.nT; it++)
            for (int in = 0; in < sw.nN; in++) run_shape(csv, check, diagonal, sw.T[it], sw.N[in], &sw, seed++);
    if (csv) atomic_file_commit(&file);
    return test_exit_code();
}
