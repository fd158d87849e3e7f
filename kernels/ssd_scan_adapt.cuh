/*
 * The shape adapter of the SSD scan: heads of any width P <= SSD_MAX_HEADDIM and any d_state N <=
 * SSD_MAX_STATE run as a native shape, one that the kernels run directly (ssd_scan.cuh picks it:
 * ssd_scan_native). Two exact identities:
 *   Sub-heads. Given (delta, B, C, A) a head's channels are independent: y_t[p] reads x[p] and no other
 *   channel of x. So a head of P channels is k sub-heads of P' channels (k P' >= P, P' a multiple of 16
 *   and at most SSD_MAX_P) that share the head's dt_raw, dt_bias, A_log and D; the channels past P are
 *   zero x. A zero channel has y = 0 and, with dy = 0 there, adds nothing to dB, dC, d delta, dA_log or
 *   dD. Sub-head j of head h is native head h k + j, in group (h k + j) / (k H / G) = h / (H / G): its own.
 *   Padded states. N is padded to N' (16, 32, 64, 128 or 256) with zero columns of B and C: a zero column
 *   of B puts nothing into the state and one of C reads nothing from it, so the padded state columns stay
 *   0 (the entering state is padded with 0 too), their dB, dC, dA_log are 0, and the padded rates of a
 *   diagonal A (A_log 0: a finite rate) change nothing.
 * So:
 *   forward:  gather x, B, C (zero padded), dt_raw, dt_bias, A_log, D (per sub-head) and the entering state,
 *             run the native forward, scatter y and the leaving state back (the padding dropped)
 *   backward: the same gathers and dy (zero padded), the native backward into zeroed parameter gradients,
 *             then scatter dx, dB, dC (padding dropped); a head's d dt_raw, ddt_bias, dA_log and dD are the
 *             sums over its sub-heads in sub-head order (no atomics: deterministic), the parameter
 *             gradients added to the caller's.
 * With one sub-head per head (k = 1) the per-head tensors are the caller's own (no copies, and d dt_raw is
 * written by the native kernels as for a native shape); y and dy are the caller's when P' = P.
 * The copies live in the workspace after the native scan's arrays, as scratch: the backward gathers again
 * from the caller's inputs, so the forward keeps for the backward only the native scan's saved part.
 * The gathers and scatters are memory-bound element maps, one thread per value.
 */
#ifndef SSD_KERNELS_SSD_SCAN_ADAPT_CUH
#define SSD_KERNELS_SSD_SCAN_ADAPT_CUH

#include "ssd_scan_common.cuh"

/* Where a row's values go. The caller's row holds heads x width x n values, the native row heads x split x
 * sub x n2 (sub-head j of head h at h split + j). Native value (h, j, q, e) is the caller's (h, p, e) with
 * p = j sub + q (the sub-head's slice of its head) or p = q (replicate: every sub-head holds its head's
 * values), and 0 where p >= width or e >= n (the padding). */
typedef struct {
    int heads, width, n;
    int split, sub, n2;
    int replicate;
} SSDAdaptMap;

__host__ __device__ static inline size_t ssd_adapt_native_cols(SSDAdaptMap m) {
    return (size_t)m.heads * m.split * m.sub * m.n2;
}
__host__ __device__ static inline size_t ssd_adapt_caller_cols(SSDAdaptMap m) { return (size_t)m.heads * m.width * m.n; }

#define SSD_ADAPT_THREADS 256
#define SSD_ADAPT_MAX_BLOCKS 65535

/* out[r][((h split + j) sub + q) n2 + e] = in[r][(h width + p) n + e] (p as in SSDAdaptMap), 0 in the padding */
template <typename T>
__global__ void ssd_adapt_gather_kernel(T *out, size_t out_stride, const T *in, size_t in_stride, SSDAdaptMap m,
                                        size_t rows) {
    size_t cols = ssd_adapt_native_cols(m), total = rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        int e = (int)(c % m.n2), q = (int)(c / m.n2 % m.sub), hj = (int)(c / ((size_t)m.n2 * m.sub));
        int h = hj / m.split, p = m.replicate ? q : hj % m.split * m.sub + q;
        float v = p < m.width && e < m.n ? to_float(in[r * in_stride + ((size_t)h * m.width + p) * m.n + e]) : 0.0f;
        out[r * out_stride + c] = from_float<T>(v);
    }
}

/* in[r][(h width + p) n + e] (+)= the sum over the sub-heads j that hold (h, p, e), in order j = 0, 1, ...: the
 * one sub-head of its slice, or every sub-head (replicate: a shared value's gradient) */
template <typename T, bool ADD>
__global__ void ssd_adapt_scatter_kernel(T *in, size_t in_stride, const T *out, size_t out_stride, SSDAdaptMap m,
                                         size_t rows) {
    size_t cols = ssd_adapt_caller_cols(m), total = rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        int e = (int)(c % m.n), p = (int)(c / m.n % m.width), h = (int)(c / ((size_t)m.n * m.width));
        int j0 = m.replicate ? 0 : p / m.sub, j1 = m.replicate ? m.split : j0 + 1, q = m.replicate ? p : p % m.sub;
        float sum = ADD ? to_float(in[r * in_stride + c]) : 0.0f;
        for (int j = j0; j < j1; j++)
            sum += to_float(out[r * out_stride + (((size_t)h * m.split + j) * m.sub + q) * m.n2 + e]);
        in[r * in_stride + c] = from_float<T>(sum);
    }
}

static inline int ssd_adapt_blocks(size_t total) {
    size_t blocks = (total + SSD_ADAPT_THREADS - 1) / SSD_ADAPT_THREADS;
    return (int)(blocks < SSD_ADAPT_MAX_BLOCKS ? blocks : SSD_ADAPT_MAX_BLOCKS);
}

/* rows of the caller's layout (in, row stride in_stride) into the native layout (out, out_stride) */
template <typename T>
static void ssd_adapt_gather(T *out, size_t out_stride, const T *in, size_t in_stride, SSDAdaptMap m, size_t rows,
                             cudaStream_t stream) {
    size_t total = rows * ssd_adapt_native_cols(m);
    if (total == 0) return;
    ssd_adapt_gather_kernel<T><<<ssd_adapt_blocks(total), SSD_ADAPT_THREADS, 0, stream>>>(out, out_stride, in, in_stride,
                                                                                          m, rows);
    cudaCheckLaunch();
}

/* rows of the native layout back into the caller's: written, or added to (add, the parameter gradients) */
template <typename T>
static void ssd_adapt_scatter(T *in, size_t in_stride, const T *out, size_t out_stride, SSDAdaptMap m, size_t rows,
                              bool add, cudaStream_t stream) {
    size_t total = rows * ssd_adapt_caller_cols(m);
    if (total == 0) return;
    auto kernel = add ? ssd_adapt_scatter_kernel<T, true> : ssd_adapt_scatter_kernel<T, false>;
    kernel<<<ssd_adapt_blocks(total), SSD_ADAPT_THREADS, 0, stream>>>(in, in_stride, out, out_stride, m, rows);
    cudaCheckLaunch();
}

/* ------------------------------------------------------------------------------------------------
 * One adapted shape: the caller's shape s, the native shape ns it runs as, their maps, and the copies in
 * the workspace.
 */
typedef struct {
    SSDScanShape s, ns;
    int split;                  /* sub-heads per head (ns.H = split * s.H) */
    SSDAdaptMap x, bc, head, a, state_map; /* x channels, B and C, per-head values, A_log, state */
    floatX *xBC, *dxBC;         /* [B*T][ns.conv_dim] */
    floatX *xy;                 /* [B*T][ns.H ns.P] y (forward) or dy (backward); unused when P' = P, k = 1 */
    floatX *dt, *ddt;           /* [B*T][ns.H] dt_raw per sub-head and its gradient; unused when k = 1 */
    float *dt_bias, *A_log, *D; /* [ns.H], [ns.H][NA'], [ns.H] */
    float *ddt_bias, *dA_log, *dD;
    float *state;               /* [B][ns.H][ns.P][ns.N] the entering and leaving state */
} SSDAdapt;

static inline bool ssd_adapt_same_x(const SSDAdapt *a) { return a->split == 1 && a->ns.P == a->s.P; }
static inline bool ssd_adapt_same_a(const SSDAdapt *a) { return a->split == 1 && (!a->s.diagonal || a->ns.N == a->s.N); }

/* The maps of s as ns, and the copies laid out from base (NULL: only counts); *bytes: their size. */
static SSDAdapt ssd_adapt_view(const SSDScanShape *s, const SSDScanShape *ns, void *base, size_t *bytes) {
    SSDAdapt a;
    memset(&a, 0, sizeof(a));
    a.s = *s;
    a.ns = *ns;
    a.split = ns->H / s->H;
    int na = s->diagonal ? s->N : 1, na2 = s->diagonal ? ns->N : 1;
    a.x = {s->H, s->P, 1, a.split, ns->P, 1, 0};
    a.bc = {2 * s->G, 1, s->N, 1, 1, ns->N, 0}; /* B then C: 2G rows of N values each */
    a.head = {s->H, 1, 1, a.split, 1, 1, 1};
    a.a = {s->H, 1, na, a.split, 1, na2, 1};
    a.state_map = {s->H, s->P, s->N, a.split, ns->P, ns->N, 0};
    size_t rows = (size_t)s->B * s->T, X = sizeof(floatX), F = sizeof(float);
    size_t xy = ssd_adapt_same_x(&a) ? 0 : rows * ns->H * ns->P * X, dt = a.split == 1 ? 0 : rows * ns->H * X;
    size_t pa = ssd_adapt_same_a(&a) ? 0 : (size_t)ns->H * na2 * F, ph = a.split == 1 ? 0 : (size_t)ns->H * F;
    struct {
        void **ptr;
        size_t bytes;
    } arrays[] = {{(void **)&a.xBC, rows * ns->conv_dim * X},
                  {(void **)&a.dxBC, rows * ns->conv_dim * X},
                  {(void **)&a.xy, xy},
                  {(void **)&a.dt, dt},
                  {(void **)&a.ddt, dt},
                  {(void **)&a.dt_bias, ph},
                  {(void **)&a.A_log, pa},
                  {(void **)&a.D, ph},
                  {(void **)&a.ddt_bias, ph},
                  {(void **)&a.dA_log, pa},
                  {(void **)&a.dD, ph},
                  {(void **)&a.state, (size_t)ns->B * ns->H * ns->P * ns->N * F}};
    size_t offset = 0;
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        *arrays[i].ptr = base && arrays[i].bytes ? (char *)base + offset : NULL;
        offset += ssd_align(arrays[i].bytes);
    }
    if (bytes) *bytes = offset;
    return a;
}

/* The native inputs that forward and backward share, replacing the caller's in c where the layouts differ:
 * x, B, C always; dt_raw, dt_bias, D with sub-heads; A_log with sub-heads or a padded diagonal A. The caller's
 * dt_raw has row stride d_in_proj; the copy is compact (ns.d_in_proj = ns.H). */
static void ssd_adapt_gather_inputs(SSDAdapt *a, SSDScanCall *c) {
    const SSDScanShape *s = &a->s, *ns = &a->ns;
    size_t rows = (size_t)s->B * s->T;
    ssd_adapt_gather(a->xBC, ns->conv_dim, c->xBC, s->conv_dim, a->x, rows, c->stream);
    ssd_adapt_gather(a->xBC + (size_t)ns->H * ns->P, ns->conv_dim, c->xBC + (size_t)s->H * s->P, s->conv_dim, a->bc,
                     rows, c->stream);
    c->xBC = a->xBC;
    if (a->split > 1) {
        ssd_adapt_gather(a->dt, ns->H, c->dt_raw, s->d_in_proj, a->head, rows, c->stream);
        ssd_adapt_gather(a->dt_bias, 0, c->dt_bias, 0, a->head, 1, c->stream);
        ssd_adapt_gather(a->D, 0, c->D, 0, a->head, 1, c->stream);
        c->dt_raw = a->dt;
        c->dt_bias = a->dt_bias;
        c->D = a->D;
    }
    if (!ssd_adapt_same_a(a)) {
        ssd_adapt_gather(a->A_log, 0, c->A_log, 0, a->a, 1, c->stream);
        c->A_log = a->A_log;
    }
}

static size_t ssd_adapt_state_stride(const SSDScanShape *s) { return (size_t)s->H * s->P * s->N; }

/* Forward, before the native scan: y into the copy (unless the layouts agree), the entering state gathered
 * (the leaving state goes to the same copy: in place, as the native scan allows) */
static void ssd_adapt_forward_in(SSDAdapt *a, SSDScanCall *c) {
    if (!ssd_adapt_same_x(a)) c->y = a->xy;
    if (c->state_in) {
        ssd_adapt_gather(a->state, ssd_adapt_state_stride(&a->ns), c->state_in, ssd_adapt_state_stride(&a->s), a->state_map,
                         a->s.B, c->stream);
        c->state_in = a->state;
    }
    if (c->state_out) c->state_out = a->state;
}

/* Forward, after it: y and the leaving state back to the caller's (padding dropped) */
static void ssd_adapt_forward_out(const SSDAdapt *a, floatX *y, float *state_out, cudaStream_t stream) {
    size_t rows = (size_t)a->s.B * a->s.T;
    if (!ssd_adapt_same_x(a))
        ssd_adapt_scatter(y, (size_t)a->s.H * a->s.P, a->xy, (size_t)a->ns.H * a->ns.P, a->x, rows, false, stream);
    if (state_out)
        ssd_adapt_scatter(state_out, ssd_adapt_state_stride(&a->s), a->state, ssd_adapt_state_stride(&a->ns), a->state_map,
                          a->s.B, false, stream);
}

/* Backward, before the native scan: dy gathered (zero padded), the gradients into the copies, the parameter
 * gradients' copies zeroed (the native scan adds into them) */
static void ssd_adapt_backward_in(SSDAdapt *a, SSDScanCall *c) {
    const SSDScanShape *s = &a->s, *ns = &a->ns;
    if (!ssd_adapt_same_x(a)) {
        ssd_adapt_gather(a->xy, (size_t)ns->H * ns->P, c->dy, (size_t)s->H * s->P, a->x, (size_t)s->B * s->T, c->stream);
        c->dy = a->xy;
    }
    c->dxBC = a->dxBC;
    if (a->split > 1) {
        cudaCheck(cudaMemsetAsync(a->ddt_bias, 0, ns->H * sizeof(float), c->stream));
        cudaCheck(cudaMemsetAsync(a->dD, 0, ns->H * sizeof(float), c->stream));
        c->ddt_raw = a->ddt;
        c->ddt_bias = a->ddt_bias;
        c->dD = a->dD;
    }
    if (!ssd_adapt_same_a(a)) {
        cudaCheck(cudaMemsetAsync(a->dA_log, 0, ssd_adapt_native_cols(a->a) * sizeof(float), c->stream));
        c->dA_log = a->dA_log;
    }
}

/* Backward, after it: dx, dB, dC back (padding dropped); d dt_raw the sum over a head's sub-heads; ddt_bias,
 * dA_log, dD those sums added to the caller's */
static void ssd_adapt_backward_out(const SSDAdapt *a, floatX *dxBC, floatX *ddt_raw, float *ddt_bias, float *dA_log,
                                   float *dD, cudaStream_t stream) {
    const SSDScanShape *s = &a->s, *ns = &a->ns;
    size_t rows = (size_t)s->B * s->T;
    ssd_adapt_scatter(dxBC, s->conv_dim, a->dxBC, ns->conv_dim, a->x, rows, false, stream);
    ssd_adapt_scatter(dxBC + (size_t)s->H * s->P, s->conv_dim, a->dxBC + (size_t)ns->H * ns->P, ns->conv_dim, a->bc, rows,
                      false, stream);
    if (a->split > 1) {
        ssd_adapt_scatter(ddt_raw, s->d_in_proj, a->ddt, ns->H, a->head, rows, false, stream);
        ssd_adapt_scatter(ddt_bias, 0, a->ddt_bias, 0, a->head, 1, true, stream);
        ssd_adapt_scatter(dD, 0, a->dD, 0, a->head, 1, true, stream);
    }
    if (!ssd_adapt_same_a(a)) ssd_adapt_scatter(dA_log, 0, a->dA_log, 0, a->a, 1, true, stream);
}

#endif
