/*
 * Tests the CUDA SSD scan (kernels/ssd_scan.cuh), forward and backward, against the double-precision
 * recurrent CPU reference (model/cpu_ssd.c) on fresh random inputs of realistic magnitude, over
 * shapes with odd T, T < Q, Q not a multiple of 16, several groups, B > 1, P up to 256, scalar and
 * diagonal A, and stress cases with delta |A| of 1 to 60 per step (delta ~ softplus(1 + N(0,1))), where any
 * factor of the form exp(+|A| (dc_t - dc_s)) would overflow.
 * Adapted shapes (kernels/ssd_scan_adapt.cuh): headdims that are no multiple of 16 (8, 13, 40, 200), heads
 * wider than 128 (200, 256: sub-heads), d_states that the kernels do not run (5, 48, 100), P 128 at
 * N 256 (split for shared memory) and d_state 200 and 256 in two slices of 128 (the tensor-core path), with
 * groups, segments, an entering state and stress decays.
 * Outputs are poisoned with NaN first, so an element left unwritten fails; the columns of the
 * in_proj gradient outside dt must stay untouched. Parameter gradients must be ACCUMULATED.
 * Determinism: a second forward + backward on the same inputs (outputs, gradients and workspace
 * poisoned with other bytes) must give bitwise-equal outputs and gradients.
 * Carried state: a forward from a random entering state (state_in) must give the reference's y and final
 * state (state_out, in place as the trainer passes it), and the backward after it the reference's
 * gradients with that initial state (no gradient into the state).
 * Document boundaries (segment [B][T]): cases whose rows hold boundaries at a chunk edge, inside a chunk,
 * two in one chunk (and one 16-step sub-block), at the first step (segment[0] = 1: the entering state
 * reaches nothing) and at the last, a 64-step tile edge inside a chunk, T not a multiple of Q, with and
 * without a random entering state, scalar and diagonal A, N 16 to 256: y, state_out and every gradient
 * against the reference with the same segments; and cases at Q = 256 whose chunks hold tile pairs of all
 * three relations that the tensor-core path tells apart (skipped, unmasked, masked: tile_starts). Every
 * case without segments runs once more with an all-zero segment array, which must give the same bits as
 * segment = NULL (the masks are exact selects).
 * Paths: every case runs on the path the trainer takes (SSD_PATH_AUTO); the cases that run on the
 * tensor-core path run once more with the sub-block path forced (names ending in _sub), and the diagonal
 * ones at chunks above 64 (which auto runs at 64) once more on the tensor-core path at their own chunk
 * (_mma), to the same tolerances.
 *
 *   test_ssd_scan                      run the tests
 *   test_ssd_scan --path P             run the tests with path P (auto, sub, mma) forced, skipping the
 *                                      cases it cannot run: the check of a scan variant
 *   test_ssd_scan --bench [--path P]   time forward and forward+backward at B=8 T=2048 H=24 P=64 N=128
 *                                      Q=256 (scalar and diagonal A) on path P (default auto)
 *   test_ssd_scan --table    the differences to the CPU reference over results/equivalence's sweep (CSV)
 *   test_ssd_scan --lengths  forward and forward+backward times for T = 128 ... 65536 (CSV, results/runtime)
 *   test_ssd_scan --sweep [--path P]   scalar against diagonal A over T = 512 ... 65536 and d_state 16 ... 256:
 *                                      time, TFLOP/s, GB/s (CSV, results/scan-sweep; see bench_sweep)
 */
#include "kernels/ssd_scan.cuh"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/test.h"
extern "C" {
#include "model/cpu_ssd.h"
}
#include "common/rng.h"

/* The parameter gradients dt_bias, A_log, D are sums over all B*T steps (and N states) of terms that
 * largely cancel; each term carries the fp32 rounding of the per-step gradients (about 3e-6 of their
 * largest value), so in fp32 their relative error grows with the number of terms: they get 1e-4. */
#ifdef ENABLE_FP32
static const double TOLERANCE = 1e-5;
static const double REDUCED_TOLERANCE = 1e-4;
#else
static const double TOLERANCE = 2e-2;
static const double REDUCED_TOLERANCE = 2e-2;
#endif
/* The stress cases (delta ~ 1.3, |A| up to 16) carry chunk sums dc of delta up to ~100: every decay
 * exp(A (dc_t - dc_s)) formed from them has a relative error of about |A| eps_fp32 dc ~ 1e-4, the
 * conditioning of the chunked form itself (the CPU reference multiplies step decays instead). In fp32
 * they get 10x the tolerances; in bf16 the output rounding still dominates. */
#ifdef ENABLE_FP32
static const double STRESS_FACTOR = 10.0;
#else
static const double STRESS_FACTOR = 1.0;
#endif
/* The parameter gradients of the bf16 tensor-core path at the stress decays: its products take single bf16
 * operands and these sums cancel, so their relative error is far above the per-step gradients' (measured on
 * an H200: dA_log 7.1e-3 without segments and 2.6e-2 with segments and an entering state, where the sub-block
 * path gives 1.6e-4 and 1.1e-3 on the same inputs, and every per-step gradient stays under 5e-3): 3x. */
static double reduced_stress_factor(const SSDScanShape *s) {
    return ssd_scan_path(s) == SSD_PATH_MMA && !s->diagonal ? 3.0 : STRESS_FACTOR;
}

static int checks = 0; /* PASS/FAIL lines printed */
static SSDScanPath forced_path = SSD_PATH_AUTO; /* --path: the path of every shape from make_shape */

static float to_host_float(floatX v) { return (float)v; }
static floatX to_floatX(float v) { return (floatX)v; }

/* Inputs of one test case on the host: floatX tensors as the GPU sees them, parameters in fp32. */
typedef struct {
    SSDScanShape s;
    std::vector<floatX> xBC, in_proj, dy;     /* in_proj: [B*T, d_in_proj], dt in the last H columns */
    std::vector<float> dt_bias, A_log, D;
    std::vector<float> ddt_bias0, dA_log0, dD0; /* parameter gradients before the backward */
    std::vector<int> segment;                   /* [B][T], or empty: segment = NULL */
    std::vector<float> state0;                  /* [B][H][P][N] entering state, or empty: none (zero) */
} Inputs;

static int a_count(const SSDScanShape *s) { return s->diagonal ? s->H * s->N : s->H; }
static int dt_col(const SSDScanShape *s) { return s->d_in_proj - s->H; }

/* dt_raw ~ dt_mean + N(0, 1): -4 gives delta ~ 0.02 (typical), +1 gives delta ~ 1.3 (stress) */
static void make_inputs(Inputs *in, const SSDScanShape *s, uint64_t seed, double dt_mean) {
    uint64_t rng = rng_seed(seed);
    size_t rows = (size_t)s->B * s->T;
    in->s = *s;
    in->xBC.resize(rows * s->conv_dim);
    in->in_proj.resize(rows * s->d_in_proj);
    in->dy.resize(rows * s->H * s->P);
    for (auto &v : in->xBC) v = to_floatX((float)rng_normal(&rng));
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < s->d_in_proj; c++) {
            double v = c >= dt_col(s) ? dt_mean + rng_normal(&rng) : rng_normal(&rng);
            in->in_proj[r * s->d_in_proj + c] = to_floatX((float)v);
        }
    for (auto &v : in->dy) v = to_floatX((float)rng_normal(&rng));
    in->dt_bias.resize(s->H);
    in->D.resize(s->H);
    in->ddt_bias0.resize(s->H);
    in->dD0.resize(s->H);
    in->A_log.resize(a_count(s));
    in->dA_log0.resize(a_count(s));
    for (int h = 0; h < s->H; h++) {
        in->dt_bias[h] = (float)(rng_uniform(&rng) - 0.5);
        in->D[h] = (float)(1.0 + 0.5 * rng_normal(&rng));
        in->ddt_bias0[h] = (float)(1e-3 * rng_normal(&rng));
        in->dD0[h] = (float)(1e-3 * rng_normal(&rng));
    }
    for (int i = 0; i < a_count(s); i++) {
        in->A_log[i] = (float)log(1.0 + 15.0 * rng_uniform(&rng));
        in->dA_log0[i] = (float)(1e-3 * rng_normal(&rng));
    }
    in->segment.clear();
    in->state0.clear();
}

/* A random entering state [B][H][P][N] of unit scale (the states of the typical inputs are of that order) */
static void make_state(Inputs *in, uint64_t seed) {
    uint64_t rng = rng_seed(seed);
    in->state0.resize((size_t)in->s.B * in->s.H * in->s.P * in->s.N);
    for (auto &v : in->state0) v = (float)rng_normal(&rng);
}

/* Document boundaries: row b's documents start at the steps in starts(b) (segment[t] = how many of them
 * are <= t). */
static void set_segments(Inputs *in, std::vector<int> (*starts)(const SSDScanShape &, int)) {
    const SSDScanShape &s = in->s;
    in->segment.assign((size_t)s.B * s.T, 0);
    for (int b = 0; b < s.B; b++) {
        std::vector<int> row_starts = starts(s, b);
        for (int t = 0; t < s.T; t++) {
            int seg = 0;
            for (int start : row_starts) seg += start <= t;
            in->segment[(size_t)b * s.T + t] = seg;
        }
    }
}

/* Even rows: inside the first chunk (20), at the second chunk's first step (Q), two inside the second chunk
 * 10 steps apart (Q + 36, Q + 46: one 16-step sub-block when Q = 64) and at the last step. Odd rows: at the
 * first step (0: the entering state reaches nothing), inside a chunk (37), at half a chunk (Q / 2: a
 * sub-block or a 64-step tile edge), at the third chunk's start and right after it. */
static std::vector<int> mixed_starts(const SSDScanShape &s, int b) {
    return b % 2 == 0 ? std::vector<int>{20, s.Q, s.Q + 36, s.Q + 46, s.T - 1}
                      : std::vector<int>{0, 37, s.Q / 2, 2 * s.Q, 2 * s.Q + 1};
}

/* Every chunk (Q = 256: four 64-step tiles 0..3) the same way, so the tensor-core path meets each relation of
 * a tile pair (ssdm_tile_pairs) in one chunk. Even rows: a document starts at step 10 of each chunk (tile 0
 * holds two documents: its pairs with every tile are masked; tiles 1..3 share one). Odd rows: at steps 64 (a
 * tile edge) and 150 of each chunk: tile 0 is apart from tiles 1..3 and tile 1 from tile 3, tiles 1, 2 and 2, 3
 * and 2 with itself are masked, 0, 1 and 3 with themselves in one document; the chunk states take steps
 * 150.. only (its first two tiles skipped), dstates steps ..63 only. */
static std::vector<int> tile_starts(const SSDScanShape &s, int b) {
    std::vector<int> starts;
    for (int t0 = 0; t0 < s.T; t0 += s.Q) {
        std::vector<int> in_chunk = b % 2 == 0 ? std::vector<int>{10} : std::vector<int>{64, 150};
        for (int step : in_chunk)
            if (t0 + step < s.T) starts.push_back(t0 + step);
    }
    return starts;
}

/* Reference outputs in double, from the recurrent CPU form plus the softplus and A_log chain rules. */
typedef struct {
    std::vector<double> y, dxBC, ddt_raw, ddt_bias, dA_log, dD; /* ddt_raw: [B*T, H] */
    std::vector<double> state_out;                              /* [B][H][P][N] the state after step T - 1 */
} Reference;

static void reference(Reference *ref, const Inputs *in) {
    const SSDScanShape *s = &in->s;
    size_t rows = (size_t)s->B * s->T;
    int HP = s->H * s->P, GN = s->G * s->N, na = a_count(s);
    std::vector<double> xBC(in->xBC.size()), dy(in->dy.size()), delta(rows * s->H), sig(rows * s->H);
    std::vector<double> A(na), D(s->H), ddelta(rows * s->H, 0.0), dA(na, 0.0);
    for (size_t i = 0; i < xBC.size(); i++) xBC[i] = to_host_float(in->xBC[i]);
    for (size_t i = 0; i < dy.size(); i++) dy[i] = to_host_float(in->dy[i]);
    for (size_t r = 0; r < rows; r++)
        for (int h = 0; h < s->H; h++) {
            double v = (double)to_host_float(in->in_proj[r * s->d_in_proj + dt_col(s) + h]) + in->dt_bias[h];
            delta[r * s->H + h] = log1p(exp(v));
            sig[r * s->H + h] = 1.0 / (1.0 + exp(-v));
        }
    for (int i = 0; i < na; i++) A[i] = -exp((double)in->A_log[i]);
    for (int h = 0; h < s->H; h++) D[h] = in->D[h];
    ref->y.assign(rows * HP, 0.0);
    ref->dxBC.assign(xBC.size(), 0.0);
    ref->dD.assign(s->H, 0.0);
    size_t state_size = (size_t)s->H * s->P * s->N;
    std::vector<double> state0(in->state0.begin(), in->state0.end());
    ref->state_out.assign(s->B * state_size, 0.0);
    for (int b = 0; b < s->B; b++) {
        SSDShape cs = {s->T, s->H, s->P, s->G, s->N, s->diagonal, s->conv_dim, HP, s->conv_dim, s->H,
                       in->segment.empty() ? NULL : in->segment.data() + (size_t)b * s->T};
        const double *x = xBC.data() + (size_t)b * s->T * s->conv_dim;
        double *dx = ref->dxBC.data() + (size_t)b * s->T * s->conv_dim;
        const double *dl = delta.data() + (size_t)b * s->T * s->H;
        const double *init = state0.empty() ? NULL : state0.data() + b * state_size;
        ssd_forward_recurrent(&cs, x, dl, A.data(), x + HP, x + HP + GN, D.data(), init,
                              ref->y.data() + (size_t)b * s->T * HP, ref->state_out.data() + b * state_size);
        ssd_backward_recurrent(&cs, x, dl, A.data(), x + HP, x + HP + GN, D.data(), init, dy.data() + (size_t)b * s->T * HP,
                               dx, ddelta.data() + (size_t)b * s->T * s->H, dA.data(), dx + HP, dx + HP + GN,
                               ref->dD.data());
    }
    ref->ddt_raw.resize(rows * s->H);
    ref->ddt_bias.assign(s->H, 0.0);
    for (size_t i = 0; i < rows * s->H; i++) {
        ref->ddt_raw[i] = ddelta[i] * sig[i];
        ref->ddt_bias[i % s->H] += ref->ddt_raw[i];
    }
    ref->dA_log.resize(na);
    for (int i = 0; i < na; i++) ref->dA_log[i] = dA[i] * A[i];
}

/* count elements on the device: host's values, repeated from the start as often as it takes (doubling
 * device copies) */
template <typename T>
static T *to_device_repeated(const std::vector<T> &host, size_t count) {
    if (host.empty() && count > 0) {
        fprintf(stderr, "test_ssd_scan: cannot fill %zu device elements from an empty array\n", count);
        exit(EXIT_FAILURE);
    }
    T *d;
    cudaCheck(cudaMalloc(&d, count * sizeof(T)));
    size_t filled = std::min(count, host.size());
    cudaCheck(cudaMemcpy(d, host.data(), filled * sizeof(T), cudaMemcpyHostToDevice));
    while (filled < count) {
        size_t n = std::min(filled, count - filled);
        cudaCheck(cudaMemcpy(d + filled, d, n * sizeof(T), cudaMemcpyDeviceToDevice));
        filled += n;
    }
    return d;
}

template <typename T>
static T *to_device(const std::vector<T> &host) {
    return to_device_repeated(host, host.size());
}

template <typename T>
static std::vector<T> to_host(const T *d, size_t n) {
    std::vector<T> host(n);
    cudaCheck(cudaMemcpy(host.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}

/* Columns [c0, c0+nc) of a [rows, stride] floatX matrix, as doubles. */
static std::vector<double> columns(const std::vector<floatX> &m, size_t rows, int stride, int c0, int nc) {
    std::vector<double> out(rows * nc);
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < nc; c++) out[r * nc + c] = to_host_float(m[r * stride + c0 + c]);
    return out;
}

static std::vector<double> ref_columns(const std::vector<double> &m, size_t rows, int stride, int c0, int nc) {
    std::vector<double> out(rows * nc);
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < nc; c++) out[r * nc + c] = m[r * stride + c0 + c];
    return out;
}

static void check(const char *cname, const char *tensor, const std::vector<double> &got, const std::vector<double> &want,
                  double tolerance) {
    char name[128];
    snprintf(name, sizeof(name), "ssd_scan_%s_%s_%s", PRECISION_NAME, cname, tensor);
    double err = test_rel_error(got.data(), want.data(), (long)got.size());
    checks++;
    test_report(err <= tolerance, name, "rel error %.3e (tolerance %.0e, %zu values)", err, tolerance, got.size());
}

/* Parameter gradient increments (after - before) as doubles */
static std::vector<double> increments(const std::vector<float> &after, const std::vector<float> &before) {
    std::vector<double> out(after.size());
    for (size_t i = 0; i < after.size(); i++) out[i] = (double)after[i] - (double)before[i];
    return out;
}

/* Device copies of one case's inputs, outputs and workspace. segment: NULL or [B][T]; state_in: NULL or
 * the entering state (reloaded from the inputs before each forward); state_out: NULL, state_in (in place)
 * or a buffer of its own. */
typedef struct {
    SSDScanShape s;
    floatX *xBC, *in_proj, *dy, *y, *dxBC, *din_proj;
    float *dt_bias, *A_log, *D, *ddt_bias, *dA_log, *dD;
    int *segment;
    float *state_in, *state_out;
    void *workspace;
} DeviceCase;

/* The device case of shape s (B and T may differ from the inputs' own: the same layer otherwise), the inputs'
 * rows of xBC, in_proj and dy repeated to fill s's B*T rows: timing inputs at long T without drawing every
 * value on the host. Segments and an entering state need the inputs' own B and T. */
static DeviceCase device_case_alloc_shape(const Inputs *in, const SSDScanShape &s) {
    const SSDScanShape &is = in->s;
    if (s.H != is.H || s.P != is.P || s.G != is.G || s.N != is.N || s.diagonal != is.diagonal ||
        ((!in->segment.empty() || !in->state0.empty()) && (s.B != is.B || s.T != is.T))) {
        fprintf(stderr, "test_ssd_scan: a device case must keep its inputs' layer (H, P, G, N, A), and B and T with "
                        "segments or an entering state\n");
        exit(EXIT_FAILURE);
    }
    DeviceCase d;
    d.s = s;
    size_t rows = (size_t)d.s.B * d.s.T;
    d.xBC = to_device_repeated(in->xBC, rows * s.conv_dim);
    d.in_proj = to_device_repeated(in->in_proj, rows * s.d_in_proj);
    d.dy = to_device_repeated(in->dy, rows * s.H * s.P);
    d.dt_bias = to_device(in->dt_bias);
    d.A_log = to_device(in->A_log);
    d.D = to_device(in->D);
    d.ddt_bias = to_device(in->ddt_bias0);
    d.dA_log = to_device(in->dA_log0);
    d.dD = to_device(in->dD0);
    cudaCheck(cudaMalloc(&d.y, rows * d.s.H * d.s.P * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.dxBC, rows * d.s.conv_dim * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.din_proj, rows * d.s.d_in_proj * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.workspace, ssd_scan_workspace_bytes(&d.s)));
    d.segment = in->segment.empty() ? NULL : to_device(in->segment);
    d.state_in = in->state0.empty() ? NULL : to_device(in->state0);
    d.state_out = NULL;
    return d;
}

static DeviceCase device_case_alloc(const Inputs *in) { return device_case_alloc_shape(in, in->s); }

static size_t state_count(const SSDScanShape *s) { return (size_t)s->B * s->H * s->P * s->N; }

/* state_out: in place (into state_in, as the trainer carries it) or a buffer of its own */
static void device_case_want_state(DeviceCase *d, bool in_place) {
    if (in_place && d->state_in) d->state_out = d->state_in;
    else cudaCheck(cudaMalloc(&d->state_out, state_count(&d->s) * sizeof(float)));
}

static void device_case_free(DeviceCase *d) {
    void *bufs[] = {d->xBC, d->in_proj, d->dy, d->y, d->dxBC, d->din_proj, d->dt_bias, d->A_log, d->D,
                    d->ddt_bias, d->dA_log, d->dD, d->workspace, d->segment, d->state_in};
    for (void *p : bufs) cudaCheck(cudaFree(p));
    if (d->state_out != d->state_in) cudaCheck(cudaFree(d->state_out));
}

static void device_forward(DeviceCase *d) {
    ssd_scan_forward(&d->s, d->y, d->xBC, d->in_proj + dt_col(&d->s), d->dt_bias, d->A_log, d->D, d->segment,
                     d->state_in, d->state_out, d->workspace, 0);
}

static void device_backward(DeviceCase *d) {
    ssd_scan_backward(&d->s, d->dxBC, d->din_proj + dt_col(&d->s), d->ddt_bias, d->dA_log, d->dD, d->dy, d->xBC,
                      d->in_proj + dt_col(&d->s), d->dt_bias, d->A_log, d->D, d->segment, d->workspace, 0);
}

/* What one forward + backward gives, copied to the host (state_out empty when not wanted) */
typedef struct {
    std::vector<floatX> y, dxBC, din_proj;
    std::vector<float> ddt_bias, dA_log, dD, state_out;
} Outputs;

template <typename T>
static bool same_bits(const std::vector<T> &a, const std::vector<T> &b) {
    return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

/* One forward + backward with outputs and workspace filled with the byte poison first and the
 * parameter gradients reset to in's, copied to the host. */
static Outputs device_case_run(DeviceCase *d, const Inputs *in, int poison) {
    const SSDScanShape &s = d->s;
    size_t rows = (size_t)s.B * s.T;
    cudaCheck(cudaMemset(d->y, poison, rows * s.H * s.P * sizeof(floatX)));
    cudaCheck(cudaMemset(d->dxBC, poison, rows * s.conv_dim * sizeof(floatX)));
    cudaCheck(cudaMemset(d->din_proj, poison, rows * s.d_in_proj * sizeof(floatX)));
    cudaCheck(cudaMemset(d->workspace, poison, ssd_scan_workspace_bytes(&s)));
    cudaCheck(cudaMemcpy(d->ddt_bias, in->ddt_bias0.data(), s.H * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d->dA_log, in->dA_log0.data(), in->dA_log0.size() * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d->dD, in->dD0.data(), s.H * sizeof(float), cudaMemcpyHostToDevice));
    if (d->state_in) /* a forward in place replaced it */
        cudaCheck(cudaMemcpy(d->state_in, in->state0.data(), in->state0.size() * sizeof(float), cudaMemcpyHostToDevice));
    if (d->state_out && d->state_out != d->state_in)
        cudaCheck(cudaMemset(d->state_out, poison, state_count(&s) * sizeof(float)));
    device_forward(d);
    device_backward(d);
    cudaCheck(cudaDeviceSynchronize());
    Outputs out = {to_host(d->y, rows * s.H * s.P), to_host(d->dxBC, rows * s.conv_dim),
                   to_host(d->din_proj, rows * s.d_in_proj), to_host(d->ddt_bias, s.H),
                   to_host(d->dA_log, in->dA_log0.size()), to_host(d->dD, s.H),
                   d->state_out ? to_host(d->state_out, state_count(&s)) : std::vector<float>()};
    return out;
}

/* The GPU's outputs and gradients against the reference's, tensor by tensor, in check()'s order. */
typedef struct {
    const char *name;
    std::vector<double> got, want;
    bool reduced; /* a parameter gradient summed over all steps (REDUCED_TOLERANCE) */
} Compared;

static std::vector<Compared> compare_outputs(const Inputs *in, const Reference *ref, const Outputs *out) {
    const SSDScanShape &s = in->s;
    size_t rows = (size_t)s.B * s.T;
    int HP = s.H * s.P, GN = s.G * s.N;
    std::vector<Compared> c;
    c.push_back({"y", columns(out->y, rows, HP, 0, HP), ref->y, false});
    c.push_back({"dx", columns(out->dxBC, rows, s.conv_dim, 0, HP), ref_columns(ref->dxBC, rows, s.conv_dim, 0, HP), false});
    c.push_back({"dB", columns(out->dxBC, rows, s.conv_dim, HP, GN), ref_columns(ref->dxBC, rows, s.conv_dim, HP, GN), false});
    c.push_back({"dC", columns(out->dxBC, rows, s.conv_dim, HP + GN, GN),
                 ref_columns(ref->dxBC, rows, s.conv_dim, HP + GN, GN), false});
    c.push_back({"ddt_raw", columns(out->din_proj, rows, s.d_in_proj, dt_col(&s), s.H), ref->ddt_raw, false});
    c.push_back({"ddt_bias", increments(out->ddt_bias, in->ddt_bias0), ref->ddt_bias, true});
    c.push_back({"dA_log", increments(out->dA_log, in->dA_log0), ref->dA_log, true});
    c.push_back({"dD", increments(out->dD, in->dD0), ref->dD, true});
    if (!out->state_out.empty())
        c.push_back({"state_out", std::vector<double>(out->state_out.begin(), out->state_out.end()), ref->state_out, false});
    return c;
}

/* What a case runs with besides its shape: stress (dt_raw ~ 1 + N(0, 1) instead of -4 + N(0, 1), with the
 * tolerances scaled by STRESS_FACTOR), document boundaries (set_segments), an entering state. With
 * either of the last two state_out is checked too: in place without segments (as the trainer carries
 * it), else into a buffer of its own. */
typedef struct {
    bool stress, segments, carry;
    bool tile_segments; /* with segments: the boundaries of tile_starts instead of mixed_starts */
} Options;

/* A check that two runs gave bitwise-equal outputs and gradients (check: the test's name, runs: which) */
static void check_same_outputs(const char *cname, const char *check, const char *runs, const Outputs &a,
                               const Outputs &b, const SSDScanShape &s) {
    size_t rows = (size_t)s.B * s.T;
    std::string differ;
    if (!same_bits(a.y, b.y)) differ += " y";
    if (!same_bits(a.dxBC, b.dxBC)) differ += " dxBC";
    /* (exact conversions to double; the other in_proj columns hold the two poisons) */
    if (!same_bits(columns(a.din_proj, rows, s.d_in_proj, dt_col(&s), s.H),
                   columns(b.din_proj, rows, s.d_in_proj, dt_col(&s), s.H)))
        differ += " ddt_raw";
    if (!same_bits(a.ddt_bias, b.ddt_bias)) differ += " ddt_bias";
    if (!same_bits(a.dA_log, b.dA_log)) differ += " dA_log";
    if (!same_bits(a.dD, b.dD)) differ += " dD";
    if (!same_bits(a.state_out, b.state_out)) differ += " state_out";
    char name[128];
    snprintf(name, sizeof(name), "ssd_scan_%s_%s_%s", PRECISION_NAME, cname, check);
    checks++;
    test_report(differ.empty(), name, "%s: %s", runs,
                differ.empty() ? "all outputs and gradients bitwise equal" : ("differ in" + differ).c_str());
}

static void run_case(const char *cname, SSDScanShape s, uint64_t seed, Options opt) {
    bool stress = opt.stress;
    Inputs in;
    make_inputs(&in, &s, seed, stress ? 1.0 : -4.0);
    if (opt.segments) set_segments(&in, opt.tile_segments ? tile_starts : mixed_starts);
    if (opt.carry) make_state(&in, seed + 100);
    double tol = stress ? STRESS_FACTOR * TOLERANCE : TOLERANCE;
    double reduced_tol = stress ? reduced_stress_factor(&s) * REDUCED_TOLERANCE : REDUCED_TOLERANCE;
    Reference ref;
    reference(&ref, &in);
    size_t rows = (size_t)s.B * s.T;
    DeviceCase dev = device_case_alloc(&in);
    if (opt.carry || opt.segments) device_case_want_state(&dev, !opt.segments);

    /* all-ones bytes are NaN in fp32 and bf16: an unwritten element fails */
    Outputs first = device_case_run(&dev, &in, 0xff);
    const std::vector<floatX> &din_h = first.din_proj;
    for (const Compared &c : compare_outputs(&in, &ref, &first)) check(cname, c.name, c.got, c.want, c.reduced ? reduced_tol : tol);

    size_t touched = 0;
    unsigned char poison[sizeof(floatX)];
    memset(poison, 0xff, sizeof(poison));
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < dt_col(&s); c++)
            if (memcmp(&din_h[r * s.d_in_proj + c], poison, sizeof(floatX)) != 0) touched++;
    char name[128];
    snprintf(name, sizeof(name), "ssd_scan_%s_%s_in_proj_columns_untouched", PRECISION_NAME, cname);
    checks++;
    test_report(touched == 0, name, "%zu of %zu values outside the dt columns were written", touched,
                rows * dt_col(&s));

    /* zero bytes this time: a value that depended on unwritten workspace would differ */
    Outputs second = device_case_run(&dev, &in, 0x00);
    check_same_outputs(cname, "deterministic", "two runs on the same inputs", first, second, s);
    if (!opt.segments) { /* an all-zero segment array: every mask is 1, so the same bits as segment = NULL */
        in.segment.assign(rows, 0);
        dev.segment = to_device(in.segment);
        Outputs zeros = device_case_run(&dev, &in, 0xff);
        check_same_outputs(cname, "zero_segments_as_null", "segment all 0 against NULL", first, zeros, s);
    }
    device_case_free(&dev);
}

static SSDScanShape make_shape(int B, int T, int H, int P, int G, int N, int Q, int diagonal) {
    SSDScanShape s;
    s.B = B;
    s.T = T;
    s.H = H;
    s.P = P;
    s.G = G;
    s.N = N;
    s.Q = Q;
    s.diagonal = diagonal;
    s.conv_dim = H * P + 2 * G * N;
    s.d_in_proj = 2 * H * P + 2 * G * N + H;
    s.path = forced_path;
    return s;
}

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

/* Median milliseconds of forward and of forward+backward of a device case over `iters` timed runs after a
 * warm-up, timed with events. */
static void time_device_case(DeviceCase *dev, int iters, double *fwd_ms, double *both_ms) {
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    std::vector<float> fwd, both;
    int warmup = std::max(2, iters / 5);
    for (int it = 0; it < warmup + iters; it++) {
        float ms;
        cudaCheck(cudaEventRecord(start));
        device_forward(dev);
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        if (it >= warmup) fwd.push_back(ms);
        cudaCheck(cudaEventRecord(start));
        device_forward(dev);
        device_backward(dev);
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        if (it >= warmup) both.push_back(ms);
    }
    *fwd_ms = median(fwd);
    *both_ms = median(both);
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
}

/* time_device_case on fresh random inputs of the shape */
static void time_scan(const SSDScanShape &shape, uint64_t seed, int iters, double *fwd_ms, double *both_ms) {
    SSDScanShape s = shape;
    Inputs in;
    make_inputs(&in, &s, seed, -4.0);
    DeviceCase dev = device_case_alloc(&in);
    time_device_case(&dev, iters, fwd_ms, both_ms);
    device_case_free(&dev);
}

static void bench(int diagonal) {
    SSDScanShape s = make_shape(8, 2048, 24, 64, 1, 128, 256, diagonal);
    const char *a = diagonal ? "diagonal" : "scalar";
    if (!ssd_scan_path_applies(&s, s.path)) {
        printf("bench %s %s: path %s does not run this shape in this build\n", PRECISION_NAME, a,
               ssd_scan_path_name(s.path));
        return;
    }
    double fwd, both;
    time_scan(s, 1234 + diagonal, 50, &fwd, &both);
    printf("bench %s %s path %s (runs %s at chunk %d) B=%d T=%d H=%d P=%d N=%d Q=%d G=%d: forward %.3f ms, "
           "forward+backward %.3f ms (median of %d)\n",
           PRECISION_NAME, a, ssd_scan_path_name(s.path), ssd_scan_path_name(ssd_scan_path(&s)), ssd_scan_native(&s).Q,
           s.B, s.T, s.H, s.P, s.N, s.Q, s.G, fwd, both, 50);
}

/* --lengths: the scan's time against T (results/runtime), CSV on stdout, at one sequence (B = 1) of
 * two layer shapes: the CPU runtime program's (H 1, P 16, N 16, Q 64) and a Mamba-2 130M layer's
 * (H 24, P 64, N 128, Q 256). */
static void bench_lengths(void) {
    const int shapes[2][4] = {{1, 16, 16, 64}, {24, 64, 128, 256}}; /* H, P, N, Q */
    printf("device,precision,a,form,T,H,P,N,Q,forward_ms,forward_backward_ms\n");
    for (const auto &sh : shapes)
        for (int diagonal = 0; diagonal <= 1; diagonal++)
            for (int T = 128; T <= 65536; T *= 2) {
                double fwd, both;
                time_scan(make_shape(1, T, sh[0], sh[1], 1, sh[2], sh[3], diagonal), T + diagonal, 20, &fwd, &both);
                printf("gpu,%s,%s,chunked,%d,%d,%d,%d,%d,%.6f,%.6f\n", PRECISION_NAME, diagonal ? "diagonal" : "scalar",
                       T, sh[0], sh[1], sh[2], sh[3], fwd, both);
                fflush(stdout);
            }
}

/* --sweep: the hardware-aware comparison of issue #14, CSV on stdout: forward and forward+backward time of
 * scalar and diagonal A at the Mamba-2 130M layer shape (H 24, P 64, G 1, Q 256) for d_state N = 16, 64,
 * 128, 256 and T = 512 ... 65536, with B = max(1, 16384 / T) sequences so that every point holds at least
 * 16K tokens (B T = 16384 up to T = 16384, then T), each on the path and at the chunk the trainer's scan
 * takes (the Q column: a diagonal A runs at SSDD_CHUNK); then the diagonal A at N 128, T 2048, B 8 with the
 * chunk size Q = 64, 128, 256 on the tensor-core path (series chunk_size). scripts/bench_scan_fla.py writes
 * the same columns for flash-linear-attention's kernels, and scripts/scan_sweep_report.py makes
 * results/scan-sweep from both.
 *
 * Achieved rates come from a model of the chunked algorithm (the same for every path and A, and for the
 * fla rows with their chunk size: a rate is a time in other units, not a count of what a kernel executes).
 * FLOPs per (batch, head), 2 per multiply-add, L = the chunks' lengths (Q, the last one shorter),
 * pairs = sum over chunks of L (L + 1) / 2 (the causal (t, s) pairs inside a chunk):
 *   chunk states     Z = (delta x)^T (B decayed)            2 T P N
 *   state passing    in[c+1] = decay in[c] + Z              2 P N (chunks)
 *   state to output  y += (C decayed) S^T                   2 T P N
 *   intra-chunk      C B^T over the causal pairs            2 N pairs
 *                    its product with delta x               2 P pairs
 *   forward = the sum; backward = 2 x forward (the gradients of each product with respect to both its
 *   operands); what a backward recomputes (chunk states, C B^T) is not counted, since the paths and fla
 *   recompute different parts. The decays' exps and the diagonal A's per-state decay of C B^T count nothing.
 * Bytes: the inputs read and outputs written once, in the build's floatX (bf16: 2 bytes), per token:
 *   forward          xBC (H P + 2 G N) and dt (H) read, y (H P) written
 *   backward         xBC, dt, dy (H P) read, dxBC (H P + 2 G N) and ddt (H) written
 *   forward+backward both of those.
 * Iterations: 30 timed runs up to T = 8192, 20 at 16384, 10 beyond (plus a warm-up of a fifth, at least 2):
 * the sweep takes well under two minutes on an H200. A point that cannot run here (a path that does not
 * take the shape, more shared memory per block or device memory than the GPU has) gets a row saying why
 * instead of its numbers. */
typedef struct {
    double fwd_flops, bwd_flops, fwd_bytes, bwd_bytes;
} ScanCost;

static ScanCost scan_cost(const SSDScanShape *s) {
    double T = s->T, P = s->P, N = s->N, bh = (double)s->B * s->H, rows = (double)s->B * s->T;
    int full = s->T / s->Q, rest = s->T % s->Q;
    double chunks = full + (rest > 0), pairs = full * (s->Q * (s->Q + 1.0) / 2) + rest * (rest + 1.0) / 2;
    double fwd = 2 * T * P * N + 2 * P * N * chunks + 2 * T * P * N + 2 * N * pairs + 2 * P * pairs;
    double xbc = s->H * s->P + 2.0 * s->G * s->N, y = (double)s->H * s->P, e = sizeof(floatX);
    ScanCost c = {bh * fwd, 2 * bh * fwd, rows * (xbc + s->H + y) * e, rows * (xbc + s->H + y + xbc + s->H) * e};
    return c;
}

/* Why shape s cannot run on this GPU, or NULL: the shared memory its blocks take (ssd_scan_smem_need: the
 * sub-block kernels hold P x N and sub-block x N arrays), which ssd_set_smem would refuse by ending the
 * process when the GPU has less; the case's buffers and workspace must fit in free device memory. */
static const char *scan_cannot_run(const SSDScanShape *s, char *why, size_t size) {
    SSDScanShape ns = ssd_scan_native(s);
    size_t smem = ssd_scan_smem_need(&ns);
    if (smem > (size_t)ssd_smem_optin_limit()) {
        snprintf(why, size, "needs %zu bytes of shared memory per block; this GPU allows %d", smem,
                 ssd_smem_optin_limit());
        return why;
    }
    size_t rows = (size_t)s->B * s->T, free_bytes, total_bytes;
    size_t need = ssd_scan_workspace_bytes(s) + rows * 2 * (s->conv_dim + s->d_in_proj + s->H * s->P) * sizeof(floatX);
    cudaCheck(cudaMemGetInfo(&free_bytes, &total_bytes));
    if (need > free_bytes) {
        snprintf(why, size, "needs %.1f GiB of device memory; %.1f GiB free", need / 1073741824.0,
                 free_bytes / 1073741824.0);
        return why;
    }
    return NULL;
}

/* One CSV row of --sweep: the point's times and rates, or why it did not run. `in` holds the layer's inputs
 * for any B and T (device_case_alloc_shape repeats its rows). */
static void sweep_point(const char *series, const SSDScanShape &s, const Inputs *in) {
    char why[160];
    const char *skip = why;
    bool applies = ssd_scan_path_applies(&s, s.path);
    if (applies) skip = scan_cannot_run(&s, why, sizeof(why));
    else snprintf(why, sizeof(why), "path %s does not run this shape in this build", ssd_scan_path_name(s.path));
    int iters = s.T <= 8192 ? 30 : s.T <= 16384 ? 20 : 10;
    SSDScanShape run = s; /* Q: the chunk the scan runs at (ssd_scan_native: a diagonal A's own under auto) */
    if (applies) run.Q = ssd_scan_native(&s).Q;
    printf("%s,%s,%s,%s,%d,%d,%d,%d,%d,%d,%d,", PRECISION_NAME, series,
           ssd_scan_path_name(applies ? ssd_scan_path(&s) : s.path), s.diagonal ? "diagonal" : "scalar", s.B, s.T,
           s.H, s.P, s.N, run.Q, skip ? 0 : iters);
    if (skip) {
        printf(",,,,,,%s\n", skip);
    } else {
        DeviceCase dev = device_case_alloc_shape(in, s);
        double fwd, both;
        time_device_case(&dev, iters, &fwd, &both);
        device_case_free(&dev);
        ScanCost c = scan_cost(&run);
        printf("%.4f,%.4f,%.2f,%.2f,%.1f,%.1f,ok\n", fwd, both, c.fwd_flops / fwd * 1e-9,
               (c.fwd_flops + c.bwd_flops) / both * 1e-9, c.fwd_bytes / fwd * 1e-6, (c.fwd_bytes + c.bwd_bytes) / both * 1e-6);
    }
    fflush(stdout);
}

/* The inputs of one layer (scalar or diagonal A, d_state N) over 4096 rows, drawn once and repeated to
 * every B and T of the sweep */
static void sweep_inputs(Inputs *in, int N, int diagonal) {
    SSDScanShape tile = make_shape(1, 4096, 24, 64, 1, N, 256, diagonal);
    make_inputs(in, &tile, 1400 + 2 * N + diagonal, -4.0);
}

static void bench_sweep(void) {
    const int Ns[] = {16, 64, 128, 256}, Qs[] = {64, 128, 256};
    printf("precision,series,path,a,B,T,H,P,N,Q,iters,fwd_ms,fwd_bwd_ms,fwd_tflops,fwd_bwd_tflops,fwd_gbps,"
           "fwd_bwd_gbps,status\n");
    Inputs in;
    for (int diagonal = 0; diagonal <= 1; diagonal++)
        for (int N : Ns) {
            sweep_inputs(&in, N, diagonal);
            for (int T = 512; T <= 65536; T *= 2)
                sweep_point("sweep", make_shape(std::max(1, 16384 / T), T, 24, 64, 1, N, 256, diagonal), &in);
        }
    sweep_inputs(&in, 128, 1);
    for (int Q : Qs) { /* the tensor-core path forced, at chunk Q (auto would run each at SSDD_CHUNK) */
        SSDScanShape s = make_shape(8, 2048, 24, 64, 1, 128, Q, 1);
        s.path = ssd_scan_path_applies(&s, SSD_PATH_MMA) ? SSD_PATH_MMA : s.path;
        sweep_point("chunk_size", s, &in);
    }
}

/* --table: the scan against the double recurrent CPU reference over the sweep of results/equivalence
 * (dev/ssd_equivalence.c, at the N the kernels take), CSV on stdout with that program's columns: the
 * largest absolute and relative differences of y and of the gradients (the worst tensor named), and
 * apart the worst of the per-step gradients (dx, dB, dC, ddt_raw) and of the parameter gradients. */
static void equivalence_table(void) {
    const int Ts[] = {37, 128, 500, 2048}, Ns[] = {16, 64}, Qs[] = {16, 64, 256};
    printf("precision,a,T,N,Q,pair,y_abs,y_rel,state_abs,state_rel,grad_abs,grad_rel,worst_grad,step_grad_rel,param_grad_rel\n");
    uint64_t seed = 1;
    for (int diagonal = 0; diagonal <= 1; diagonal++)
        for (int T : Ts)
            for (int N : Ns)
                for (int Q : Qs) {
                    SSDScanShape s = make_shape(1, T, 2, 16, 1, N, Q, diagonal);
                    Inputs in;
                    make_inputs(&in, &s, seed++, -4.0);
                    Reference ref;
                    reference(&ref, &in);
                    DeviceCase dev = device_case_alloc(&in);
                    Outputs out = device_case_run(&dev, &in, 0xff);
                    double y_abs = 0, y_rel = 0, g_abs = 0, g_rel = 0, step_rel = 0, param_rel = 0;
                    const char *worst = "dx";
                    for (const Compared &c : compare_outputs(&in, &ref, &out)) {
                        double rel = test_rel_error(c.got.data(), c.want.data(), (long)c.got.size()), ab = 0;
                        for (size_t i = 0; i < c.got.size(); i++) ab = std::max(ab, fabs(c.got[i] - c.want[i]));
                        if (isinf(rel)) ab = INFINITY;
                        if (strcmp(c.name, "y") == 0) {
                            y_abs = ab;
                            y_rel = rel;
                        } else {
                            g_abs = std::max(g_abs, ab);
                            double &group = c.reduced ? param_rel : step_rel;
                            if (rel > group || isinf(rel)) group = rel;
                            if (rel > g_rel || isinf(rel)) {
                                g_rel = rel;
                                worst = c.name;
                            }
                        }
                    }
                    printf("%s,%s,%d,%d,%d,gpu-cpu_fp64_recurrent,%.3e,%.3e,,,%.3e,%.3e,%s,%.3e,%.3e\n", PRECISION_NAME,
                           diagonal ? "diagonal" : "scalar", T, N, Q, y_abs, y_rel, g_abs, g_rel, worst, step_rel,
                           param_rel);
                    fflush(stdout);
                    device_case_free(&dev);
                }
}

/* The test cases: shape, seed, options */
typedef struct {
    const char *name;
    SSDScanShape s;
    uint64_t seed;
    Options opt;
} Case;

/* Runs the cases on their shapes' path; with forced_path AUTO, those on the tensor-core path once more
 * with the sub-block path forced, and those that AUTO runs at a chunk of its own (a diagonal A at
 * SSDD_CHUNK) once more with the tensor-core path forced, at the shape's chunk (its tile pairs inside a
 * chunk). A forced path skips the cases it cannot run. */
static void run_cases(const Case *cases, int count) {
    for (int i = 0; i < count; i++) {
        Case c = cases[i];
        std::string name = c.name;
        if (forced_path != SSD_PATH_AUTO) {
            if (!ssd_scan_path_applies(&c.s, forced_path)) {
                printf("skip %s: path %s does not run it\n", c.name, ssd_scan_path_name(forced_path));
                continue;
            }
            name += std::string("_") + ssd_scan_path_name(forced_path);
        }
        run_case(name.c_str(), c.s, c.seed, c.opt);
        if (forced_path == SSD_PATH_AUTO && ssd_scan_path(&c.s) == SSD_PATH_MMA) {
            if (ssd_scan_native(&c.s).Q != c.s.Q) {
                Case own = c;
                own.s.path = SSD_PATH_MMA;
                run_case((name + "_mma").c_str(), own.s, own.seed, own.opt);
            }
            c.s.path = SSD_PATH_SUB;
            name += "_sub";
            run_case(name.c_str(), c.s, c.seed, c.opt);
        }
    }
}

int main(int argc, char **argv) {
    const char *mode = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--path") == 0 && i + 1 < argc) {
            const char *p = argv[++i];
            if (strcmp(p, "auto") == 0) forced_path = SSD_PATH_AUTO;
            else if (strcmp(p, "sub") == 0) forced_path = SSD_PATH_SUB;
            else if (strcmp(p, "mma") == 0) forced_path = SSD_PATH_MMA;
            else {
                fprintf(stderr, "test_ssd_scan: --path takes auto, sub or mma, not '%s'\n", p);
                return 1;
            }
        } else if (!mode && (strcmp(argv[i], "--bench") == 0 || strcmp(argv[i], "--lengths") == 0 ||
                             strcmp(argv[i], "--table") == 0 || strcmp(argv[i], "--sweep") == 0)) {
            mode = argv[i];
        } else {
            fprintf(stderr, "usage: test_ssd_scan [--bench | --lengths | --table | --sweep] [--path auto|sub|mma]\n");
            return 1;
        }
    }
    if (mode && strcmp(mode, "--bench") == 0) {
        bench(0);
        bench(1);
        return 0;
    }
    if (mode && strcmp(mode, "--lengths") == 0) {
        bench_lengths();
        return 0;
    }
    if (mode && strcmp(mode, "--table") == 0) {
        equivalence_table();
        return 0;
    }
    if (mode && strcmp(mode, "--sweep") == 0) {
        bench_sweep();
        return 0;
    }
    const Options plain = {false, false, false, false}, stress = {true, false, false, false};
    const Options carry = {false, false, true, false};
    const Options segments = {false, true, false, false}, segments_carry = {false, true, true, false};
    const Options segments_stress = {true, true, true, false};
    const Options tile_segments = {false, true, false, true}, tile_segments_carry = {false, true, true, true};
    const Case cases[] = {
        /*  name                           B    T  H   P  G    N    Q  diagonal   seed */
        {"scalar_oddT_groups", make_shape(2, 203, 4, 32, 2, 16, 64, 0), 1, plain},
        {"diag_oddT_groups", make_shape(2, 203, 4, 32, 2, 16, 64, 1), 2, plain},
        {"diag_T_below_Q", make_shape(1, 37, 2, 16, 1, 32, 64, 1), 3, plain},
        {"scalar_Q50_head_groups", make_shape(2, 101, 6, 64, 3, 64, 50, 0), 4, plain},
        {"diag_Q7", make_shape(2, 45, 2, 16, 1, 16, 7, 1), 5, plain},
        {"scalar_N128_Q256", make_shape(2, 300, 2, 64, 1, 128, 256, 0), 6, plain},
        {"diag_N128_Q256", make_shape(1, 300, 2, 64, 1, 128, 256, 1), 7, plain},
        {"scalar_P128_Q100", make_shape(1, 250, 2, 128, 1, 128, 100, 0), 8, plain},
        {"diag_P128_N32_Q48", make_shape(2, 131, 2, 128, 2, 32, 48, 1), 9, plain},
        {"diag_stress_large_decay", make_shape(2, 150, 4, 32, 2, 64, 64, 1), 10, stress},
        {"scalar_stress_large_decay", make_shape(1, 150, 2, 32, 1, 64, 64, 0), 11, stress},
        /* more heads per group (8, 12, 3) for the sums of dB, dC over heads */
        {"scalar_8heads_per_group", make_shape(2, 150, 16, 32, 2, 32, 64, 0), 15, plain},
        {"scalar_12heads_Q128", make_shape(1, 130, 12, 64, 1, 16, 128, 0), 16, plain},
        {"scalar_3heads_Q32", make_shape(1, 90, 3, 16, 1, 16, 32, 0), 17, plain},
        /* d_state 256, both A structures: two slices of 128 on the tensor-core path (auto), one scan on the
         * sub-block path (the _sub reruns) */
        {"scalar_N256_Q100", make_shape(1, 230, 2, 64, 1, 256, 100, 0), 18, plain},
        {"diag_N256_groups", make_shape(2, 150, 4, 32, 2, 256, 64, 1), 19, plain},
        /* an entering state (in place), forward and backward */
        {"carry_scalar_oddT_groups", make_shape(2, 203, 4, 32, 2, 16, 64, 0), 12, carry},
        {"carry_diag_Q50_head_groups", make_shape(2, 101, 6, 64, 3, 64, 50, 1), 13, carry},
        {"carry_diag_T_below_Q", make_shape(1, 37, 2, 16, 1, 32, 64, 1), 14, carry},
        {"carry_diag_N256", make_shape(1, 140, 2, 32, 1, 256, 64, 1), 20, carry},
        {"carry_scalar_N128_Q128", make_shape(1, 200, 2, 64, 1, 128, 128, 0), 21, carry},
        /* document boundaries (mixed_starts), without and with an entering state */
        {"seg_scalar_N16", make_shape(2, 203, 4, 32, 2, 16, 64, 0), 30, segments},
        {"seg_carry_scalar_N16", make_shape(2, 203, 4, 32, 2, 16, 64, 0), 31, segments_carry},
        {"seg_diag_N16", make_shape(2, 203, 4, 32, 2, 16, 64, 1), 32, segments},
        {"seg_carry_diag_N16", make_shape(2, 203, 4, 32, 2, 16, 64, 1), 33, segments_carry},
        {"seg_scalar_N64_Q50", make_shape(2, 181, 6, 64, 3, 64, 50, 0), 34, segments},
        {"seg_carry_scalar_N64_Q50", make_shape(2, 181, 6, 64, 3, 64, 50, 0), 35, segments_carry},
        {"seg_carry_diag_N64", make_shape(2, 203, 4, 32, 2, 64, 64, 1), 36, segments_carry},
        {"seg_scalar_N128_Q128", make_shape(2, 300, 2, 64, 1, 128, 128, 0), 37, segments},
        {"seg_carry_scalar_N128_Q128", make_shape(2, 300, 2, 64, 1, 128, 128, 0), 38, segments_carry},
        {"seg_carry_diag_N128_Q100", make_shape(2, 250, 2, 64, 1, 128, 100, 1), 39, segments_carry},
        {"seg_carry_scalar_P128_N32_Q48", make_shape(2, 200, 2, 128, 1, 32, 48, 0), 40, segments_carry},
        {"seg_scalar_N256", make_shape(2, 203, 2, 64, 1, 256, 64, 0), 41, segments},
        {"seg_carry_scalar_N256", make_shape(2, 203, 2, 64, 1, 256, 64, 0), 42, segments_carry},
        {"seg_carry_diag_N256", make_shape(2, 150, 4, 32, 2, 256, 64, 1), 43, segments_carry},
        {"seg_carry_diag_stress", make_shape(2, 150, 4, 32, 2, 64, 64, 1), 44, segments_stress},
        {"seg_carry_scalar_stress", make_shape(2, 150, 2, 32, 1, 64, 64, 0), 45, segments_stress},
        /* boundaries at the tile pairs' three relations (tile_starts), T = 2 Q + 100: a short last chunk */
        {"segtiles_scalar_N128_Q256", make_shape(2, 612, 2, 64, 1, 128, 256, 0), 46, tile_segments},
        {"segtiles_carry_scalar_N128_Q256", make_shape(2, 612, 2, 64, 1, 128, 256, 0), 47, tile_segments_carry},
        {"segtiles_carry_scalar_N64_Q256", make_shape(2, 612, 4, 32, 2, 64, 256, 0), 48, tile_segments_carry},
        /* adapted shapes: headdim padded to a multiple of 16, wide heads as sub-heads (200: two of 112, 256 at
         * N 128: two of 128, at N 256: four of 64; 128 at N 256: two of 64), d_state padded to 16 ... 256 */
        {"scalar_P8_groups", make_shape(2, 150, 4, 8, 2, 16, 64, 0), 50, plain},
        {"scalar_P13_N5", make_shape(1, 97, 2, 13, 1, 5, 32, 0), 51, plain},
        {"scalar_P40_N48_groups", make_shape(2, 203, 4, 40, 2, 48, 64, 0), 52, plain},
        {"diag_P40_N48_groups", make_shape(2, 203, 4, 40, 2, 48, 64, 1), 53, plain},
        {"diag_P200_N100_groups", make_shape(2, 150, 2, 200, 2, 100, 64, 1), 54, plain},
        {"scalar_P256_N128", make_shape(1, 170, 2, 256, 1, 128, 64, 0), 55, plain},
        {"diag_P256_N256", make_shape(1, 100, 2, 256, 1, 256, 64, 1), 56, plain},
        {"scalar_P128_N256_Q256", make_shape(1, 300, 2, 128, 1, 256, 256, 0), 57, plain},
        {"diag_stress_P40_N48", make_shape(2, 150, 4, 40, 2, 48, 64, 1), 58, stress},
        {"carry_scalar_P200_N100", make_shape(2, 150, 4, 200, 2, 100, 64, 0), 59, carry},
        {"carry_diag_P256_N256", make_shape(1, 100, 2, 256, 1, 256, 64, 1), 60, carry},
        {"seg_carry_scalar_P40_N48", make_shape(2, 203, 4, 40, 2, 48, 64, 0), 61, segments_carry},
        {"seg_carry_diag_P40_N48", make_shape(2, 203, 4, 40, 2, 48, 64, 1), 62, segments_carry},
        {"seg_diag_P200_N100_groups", make_shape(2, 203, 2, 200, 2, 100, 64, 1), 63, segments},
        {"seg_carry_scalar_P256_N128", make_shape(2, 203, 2, 256, 1, 128, 64, 0), 64, segments_carry},
        /* d_state above 128 in slices of 128 on the tensor-core path (the sub-block path reruns them unsliced):
         * several heads per group, the second slice padded (200), steep decays, segments with a carried state */
        {"scalar_N256_head_groups_Q256", make_shape(2, 300, 6, 64, 3, 256, 256, 0), 65, plain},
        {"diag_N200_head_groups", make_shape(2, 150, 4, 32, 2, 200, 64, 1), 66, plain},
        {"diag_stress_N256_groups", make_shape(2, 150, 4, 32, 2, 256, 64, 1), 67, stress},
        {"seg_carry_diag_P48_N200_groups", make_shape(2, 203, 4, 48, 2, 200, 64, 1), 68, segments_carry},
    };
    run_cases(cases, sizeof(cases) / sizeof(cases[0]));
    printf("%d passed, %d failed\n", checks - test_failures, test_failures);
    return test_exit_code();
}
