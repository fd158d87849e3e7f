/*
 * The shape adapter of the SSD scan: heads of any width P <= SSD_MAX_HEADDIM and any d_state N <=
 * SSD_MAX_STATE run as a native shape, one that the kernels run directly (ssd_scan.cuh picks it:
 * ssd_scan_native). Three exact identities:
 *   Sub-heads. Given (delta, B, C, A) a head's channels are independent: y_t[p] reads x[p] and no other
 *   channel of x. So a head of P channels is kp sub-heads of P' channels (kp P' >= P, P' a multiple of 16
 *   and at most SSD_MAX_P) that share the head's dt_raw, dt_bias, A_log and D; the channels past P are
 *   zero x. A zero channel has y = 0 and, with dy = 0 there, adds nothing to dB, dC, d delta, dA_log or dD.
 *   State slices. y_t = sum_n C_t[n] S_t[:, n] + D x_t, and S_t[:, n] is driven by B_t[n] and A_n alone (every
 *   state column decays on its own). So a scan of N states is kn scans of N' = N / kn states (the slices
 *   n = jn N' + e of B, C, A_log and the state) that share x, dt_raw, dt_bias, whose y add up, with D in slice 0
 *   alone (0 in the others). Their gradients of x, dt_raw, dt_bias and (scalar A) A_log add up; dB, dC, a
 *   diagonal A's dA_log and the state are each slice's own; dD is slice 0's. The tensor-core kernels take
 *   N <= 128, so d_state 256 runs there as two slices of 128.
 *   Padded states. N is padded to kn N' (N' 16, 32, 64 or 128, or 256 unsliced) with zero columns of B and C:
 *   a zero column of B puts nothing into the state and one of C reads nothing from it, so the padded state
 *   columns stay 0 (the entering state is padded with 0 too), their dB, dC, dA_log are 0, and the padded rates
 *   of a diagonal A (A_log 0: a finite rate) change nothing.
 * Native heads: head h = g (H / G) + l of group g becomes kn kp heads (slice jn, sub-head jp) numbered
 * ((g kn + jn) (H / G) + l) kp + jp, so slice jn of group g is native group g kn + jn and holds its heads, in
 * order, each as its kp sub-heads (groups are runs of consecutive heads, as the kernels take them).
 * So:
 *   forward:  gather x, B, C (sliced, zero padded), dt_raw, dt_bias, A_log, D (per native head) and the
 *             entering state, run the native forward, scatter y (the sum over slices) and the leaving state back
 *   backward: the same gathers and dy (zero padded), the native backward into zeroed parameter gradients,
 *             then scatter dx (the sum over slices), dB, dC (padding dropped); a head's d dt_raw, ddt_bias,
 *             dA_log and dD are the sums over its native heads that hold them, in a fixed order (no atomics:
 *             deterministic), the parameter gradients added to the caller's.
 * With one native head per head the per-head tensors are the caller's own (no copies, and d dt_raw is
 * written by the native kernels as for a native shape); y and dy are the caller's when P' = P as well.
 * The copies live in the workspace after the native scan's arrays, as scratch: the backward gathers again
 * from the caller's inputs, so the forward keeps for the backward only the native scan's saved part.
 * The gathers and scatters are memory-bound element maps: a thread per column (its map worked out once), walking
 * the rows 8 at a time (their loads in flight together).
 */
#ifndef SSD_KERNELS_SSD_SCAN_ADAPT_CUH
#define SSD_KERNELS_SSD_SCAN_ADAPT_CUH

#include "ssd_scan_common.cuh"

/* Where a row's values go. The caller's row holds heads x width x n values (heads in groups of heads / groups),
 * the native row the native heads (numbered as above from head h, slice jn < kn and sub-head jp < kp) x sub x
 * n2. Native value (head, jn, jp, q, e) is the caller's (h, p, v) with p = jp sub + q (p_shared: p = q, every
 * sub-head holds the head's values) and v by n_mode: jn n2 + e (SSD_ADAPT_SLICE), e (SSD_ADAPT_SHARED: every
 * slice holds them), or e in slice 0 alone (SSD_ADAPT_FIRST: the other slices hold 0); 0 where p >= width or
 * v >= n (the padding). */
enum { SSD_ADAPT_SLICE, SSD_ADAPT_SHARED, SSD_ADAPT_FIRST };
typedef struct {
    int heads, groups, width, n;
    int kp, sub, kn, n2;
    int p_shared, n_mode;
} SSDAdaptMap;

__host__ __device__ static inline size_t ssd_adapt_native_cols(SSDAdaptMap m) {
    return (size_t)m.heads * m.kn * m.kp * m.sub * m.n2;
}
__host__ __device__ static inline size_t ssd_adapt_caller_cols(SSDAdaptMap m) { return (size_t)m.heads * m.width * m.n; }

/* the native head of caller head h, slice jn, sub-head jp */
__host__ __device__ static inline size_t ssd_adapt_native_head(SSDAdaptMap m, int h, int jn, int jp) {
    int per_group = m.heads / m.groups;
    return (((size_t)(h / per_group) * m.kn + jn) * per_group + h % per_group) * m.kp + jp;
}

#define SSD_ADAPT_THREADS 256
#define SSD_ADAPT_ROWS 8          /* rows a thread moves at once: their loads in flight together */
#define SSD_ADAPT_MAX_GRID_Y 4096 /* grid rows; each walks batches of SSD_ADAPT_ROWS rows */

/* out[r][native (h, jn, jp, q, e)] = in[r][(h width + p) n + v] (p, v as in SSDAdaptMap), 0 in the padding. A
 * thread per native column (its source column found once), walking the rows in batches: grid (columns /
 * threads, row batches) */
template <typename T>
__global__ void ssd_adapt_gather_kernel(T *__restrict__ out, size_t out_stride, const T *__restrict__ in,
                                        size_t in_stride, SSDAdaptMap m, size_t rows) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= (int)ssd_adapt_native_cols(m)) return;
    int per_group = m.heads / m.groups, head = c / (m.n2 * m.sub);
    int e = c % m.n2, q = c / m.n2 % m.sub, jp = head % m.kp;
    int l = head / m.kp % per_group, jn = head / m.kp / per_group % m.kn;
    int h = head / m.kp / per_group / m.kn * per_group + l;
    int p = m.p_shared ? q : jp * m.sub + q;
    int v = m.n_mode == SSD_ADAPT_SLICE ? jn * m.n2 + e : m.n_mode == SSD_ADAPT_FIRST && jn > 0 ? m.n : e;
    bool inside = p < m.width && v < m.n;
    size_t src = ((size_t)h * m.width + p) * m.n + v;
    for (size_t r0 = (size_t)blockIdx.y * SSD_ADAPT_ROWS; r0 < rows; r0 += (size_t)gridDim.y * SSD_ADAPT_ROWS) {
        T x[SSD_ADAPT_ROWS];
#pragma unroll
        for (int k = 0; k < SSD_ADAPT_ROWS; k++)
            x[k] = inside && r0 + k < rows ? in[(r0 + k) * in_stride + src] : from_float<T>(0.0f);
#pragma unroll
        for (int k = 0; k < SSD_ADAPT_ROWS; k++)
            if (r0 + k < rows) out[(r0 + k) * out_stride + c] = x[k];
    }
}

/* in[r][(h width + p) n + v] (+)= the sum over the native values that hold (h, p, v), slices jn and sub-heads jp
 * in order: one (sliced), every one (shared: a shared value's gradient) or slice 0's (first). A thread per
 * caller column, walking the rows in batches. */
template <typename T, bool ADD>
__global__ void ssd_adapt_scatter_kernel(T *__restrict__ in, size_t in_stride, const T *__restrict__ out,
                                         size_t out_stride, SSDAdaptMap m, size_t rows) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= (int)ssd_adapt_caller_cols(m)) return;
    int v = c % m.n, p = c / m.n % m.width, h = c / (m.n * m.width);
    int jp0 = m.p_shared ? 0 : p / m.sub, jp1 = m.p_shared ? m.kp : jp0 + 1, q = m.p_shared ? p : p % m.sub;
    bool sliced = m.n_mode == SSD_ADAPT_SLICE;
    int jn0 = sliced ? v / m.n2 : 0, jn1 = m.n_mode == SSD_ADAPT_SHARED ? m.kn : jn0 + 1, e = sliced ? v % m.n2 : v;
    for (size_t r0 = (size_t)blockIdx.y * SSD_ADAPT_ROWS; r0 < rows; r0 += (size_t)gridDim.y * SSD_ADAPT_ROWS) {
        float sum[SSD_ADAPT_ROWS];
#pragma unroll
        for (int k = 0; k < SSD_ADAPT_ROWS; k++) sum[k] = ADD && r0 + k < rows ? to_float(in[(r0 + k) * in_stride + c]) : 0.0f;
        for (int jn = jn0; jn < jn1; jn++)
            for (int jp = jp0; jp < jp1; jp++) {
                size_t col = (ssd_adapt_native_head(m, h, jn, jp) * m.sub + q) * m.n2 + e;
#pragma unroll
                for (int k = 0; k < SSD_ADAPT_ROWS; k++)
                    if (r0 + k < rows) sum[k] += to_float(out[(r0 + k) * out_stride + col]);
            }
#pragma unroll
        for (int k = 0; k < SSD_ADAPT_ROWS; k++)
            if (r0 + k < rows) in[(r0 + k) * in_stride + c] = from_float<T>(sum[k]);
    }
}

static inline dim3 ssd_adapt_grid(size_t cols, size_t rows) {
    size_t batches = (rows + SSD_ADAPT_ROWS - 1) / SSD_ADAPT_ROWS;
    return dim3((unsigned)((cols + SSD_ADAPT_THREADS - 1) / SSD_ADAPT_THREADS),
                (unsigned)(batches < SSD_ADAPT_MAX_GRID_Y ? batches : SSD_ADAPT_MAX_GRID_Y));
}

/* rows of the caller's layout (in, row stride in_stride) into the native layout (out, out_stride) */
template <typename T>
static void ssd_adapt_gather(T *out, size_t out_stride, const T *in, size_t in_stride, SSDAdaptMap m, size_t rows,
                             cudaStream_t stream) {
    size_t cols = ssd_adapt_native_cols(m);
    if (rows * cols == 0) return;
    ssd_adapt_gather_kernel<T><<<ssd_adapt_grid(cols, rows), SSD_ADAPT_THREADS, 0, stream>>>(out, out_stride, in,
                                                                                             in_stride, m, rows);
    cudaCheckLaunch();
}

/* rows of the native layout back into the caller's: written, or added to (add, the parameter gradients) */
template <typename T>
static void ssd_adapt_scatter(T *in, size_t in_stride, const T *out, size_t out_stride, SSDAdaptMap m, size_t rows,
                              bool add, cudaStream_t stream) {
    size_t cols = ssd_adapt_caller_cols(m);
    if (rows * cols == 0) return;
    auto kernel = add ? ssd_adapt_scatter_kernel<T, true> : ssd_adapt_scatter_kernel<T, false>;
    kernel<<<ssd_adapt_grid(cols, rows), SSD_ADAPT_THREADS, 0, stream>>>(in, in_stride, out, out_stride, m, rows);
    cudaCheckLaunch();
}

/* ------------------------------------------------------------------------------------------------
 * One adapted shape: the caller's shape s, the native shape ns it runs as, their maps, and the copies in
 * the workspace.
 */
typedef struct {
    SSDScanShape s, ns;
    int split;                  /* native heads per head (ns.H = split * s.H): kn slices of kp sub-heads */
    int kn, kp;
    SSDAdaptMap x, bc, head, d, a, state_map; /* x channels, B and C, dt and dt_bias, D, A_log, state */
    floatX *xBC, *dxBC;         /* [B*T][ns.conv_dim] */
    floatX *xy;                 /* [B*T][ns.H ns.P] y (forward) or dy (backward); unused when P' = P, split 1 */
    floatX *dt, *ddt;           /* [B*T][ns.H] dt_raw per native head and its gradient; unused when split 1 */
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
    a.kn = ns->G / s->G;
    a.kp = a.split / a.kn;
    int H = s->H, G = s->G, kn = a.kn, kp = a.kp, na = s->diagonal ? s->N : 1, na2 = s->diagonal ? ns->N : 1;
    int a_mode = s->diagonal ? SSD_ADAPT_SLICE : SSD_ADAPT_SHARED;
    /* {heads, groups, width, n, kp, sub, kn, n2, p_shared, n_mode} */
    a.x = {H, G, s->P, 1, kp, ns->P, kn, 1, 0, SSD_ADAPT_SHARED};
    a.bc = {2 * G, 2 * G, 1, s->N, 1, 1, kn, ns->N, 0, SSD_ADAPT_SLICE}; /* B then C: 2G rows of N values */
    a.head = {H, G, 1, 1, kp, 1, kn, 1, 1, SSD_ADAPT_SHARED};
    a.d = {H, G, 1, 1, kp, 1, kn, 1, 1, SSD_ADAPT_FIRST};
    a.a = {H, G, 1, na, kp, 1, kn, na2, 1, a_mode};
    a.state_map = {H, G, s->P, s->N, kp, ns->P, kn, ns->N, 0, SSD_ADAPT_SLICE};
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
 * x, B, C always; dt_raw, dt_bias, D with several native heads per head; A_log with those or a padded
 * diagonal A. The caller's
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
        ssd_adapt_gather(a->D, 0, c->D, 0, a->d, 1, c->stream);
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

/* Forward, after it: y (summed over slices) and the leaving state back to the caller's (padding dropped) */
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

/* Backward, after it: dx (summed over slices), dB, dC back (padding dropped); d dt_raw the sum over a head's
 * native heads; ddt_bias, dA_log, dD their sums (dD: slice 0's) added to the caller's */
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
        ssd_adapt_scatter(dD, 0, a->dD, 0, a->d, 1, true, stream);
    }
    if (!ssd_adapt_same_a(a)) ssd_adapt_scatter(dA_log, 0, a->dA_log, 0, a->a, 1, true, stream);
}

#endif
