/*
 * The sub-block path of the SSD scan (SSD_PATH_SUB): every shape, and what AUTO runs for a diagonal A,
 * heads wider than 64 and the FP32 build. Its own steps (the overview is in ssd_scan.cuh):
 *   2. chunk states, per chunk a P x N GEMM over its steps i:
 *        states:  Z[p, n]  = sum_i (delta_i x_i[p]) B_i[n] exp(A[n] (dc_last - dc_i))
 *        dstates: dZ[p, n] = sum_i dy_i[p] C_i[n] exp(A[n] dc_i)
 *   4. the chunk scan: one block per (chunk, head) holds the head's P x N state in shared memory and
 *      walks the chunk in sub-blocks of SSD_SUB steps (ref = dc before the sub-block, end = dc at its
 *      last step, M[t][s] = C_t . B_s decayed from s to t, W[t][s] = dy_t . (delta x)_s):
 *        forward:  y  = (C exp(A (dc - ref))) S^T + M (delta x) + D x
 *                  S <- exp(A (end - ref)) S + (delta x)^T (B exp(A (end - dc)))
 *        backward: a forward sweep re-forms S for dC, a reverse sweep carries G = dL/dS for dx, dB and
 *                  the decays' gradient d delta, dA_log (the formulas in ssd_scan.cuh, backward 3).
 * Document boundaries (segment, ssd_scan.cuh): M and W are 0 between steps of two documents, the state
 * entering the sub-block (that of the step before it, in document seg_ref) reaches only the steps of
 * seg_ref (C exp(A (dc - ref)) is 0 at the others), and the state leaving it (document seg_end of its
 * last step) takes only the steps of seg_end (B exp(A (end - dc)) is 0 at the others) and keeps the
 * entering state only when seg_end = seg_ref (exp(A (end - ref)) is 0 otherwise). The backward's state
 * parts of dC and dB take the same masks; without segments every mask is 1.
 * For a diagonal A, M and the intra-sub-block parts of dB, dC take one exp per (t, s, n) (SIMT).
 * Operands sit in fp32 shared memory; bf16 builds multiply 16 x 8 warp tiles on tensor cores with
 * split-bf16 operands (ssd_mma), the FP32 build with fp32 FMAs in the same register layout. The
 * backward's dt step (ssd_scan_dt.cuh) and sums (ssd_scan_sums.cuh) follow the chunk scan.
 */
#ifndef SSD_KERNELS_SSD_SCAN_SUB_CUH
#define SSD_KERNELS_SSD_SCAN_SUB_CUH

#include "ssd_scan_common.cuh"
#include "ssd_scan_dt.cuh"
#include "ssd_scan_passing.cuh"
#include "ssd_scan_sums.cuh"

/* ------------------------------------------------------------------------------------------------
 * 2. Per-chunk GEMMs over the chunk's steps i, out[p, n] = sum_i u_i[p] v_i[n]:
 *    states:  u = delta x, v = B exp(A (dc_last - dc_i))   (the chunk's final state from zero)
 *    dstates: u = dy,      v = C exp(A dc_i)               (dL/d entering state, from the chunk's outputs)
 * With segments v is 0 at the steps of another document than the chunk's last step (states) or than
 * the state entering the chunk (dstates).
 * Grid (nchunks, B*H). Warp w owns the 16 x 8 tiles w, w + 16, ... of the P x N result in registers.
 */
static size_t ssd_reduce_smem_bytes(const SSDScanShape *s) {
    return sizeof(float) * ((size_t)SSD_REDUCE_STEPS * (s->P + 4) + (size_t)SSD_REDUCE_STEPS * (s->N + 4) + s->N);
}

template <int N_, bool SEG>
__global__ void __launch_bounds__(SSD_REDUCE_THREADS, 1) ssd_chunk_reduce_kernel(float *out, const floatX *u_src,
                                                                       const floatX *xBC, const float *delta,
                                                                       const float *dcum, const int *segment,
                                                                       const float *A_log, SSDScanShape s, int mode) {
    constexpr int LN = N_ + 4, NTC = N_ / 8, MAX_TILES = (SSD_MAX_P / 16) * NTC / SSD_REDUCE_WARPS;
    constexpr int UPT = SSD_REDUCE_STEPS * SSD_MAX_P / SSD_REDUCE_THREADS, VPT = SSD_REDUCE_STEPS * N_ / SSD_REDUCE_THREADS;
    extern __shared__ __align__(16) float ssd_reduce_smem[];
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, LP = P + 4;
    float *u_s = ssd_reduce_smem;                   /* [steps][LP] */
    float *v_s = u_s + SSD_REDUCE_STEPS * LP;       /* [steps][LN] */
    float *A_s = v_s + SSD_REDUCE_STEPS * LN;       /* [N] */
    int nc = gridDim.x, c = blockIdx.x, bh = blockIdx.y, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int tid = threadIdx.x, warp = tid >> 5, ntiles = (P / 16) * NTC;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    float last = dc[t0 + len - 1];
    int key = mode == SSD_REDUCE_STATES ? ssd_segment(segment, s, b, t0 + len - 1) : ssd_segment_before(segment, s, b, t0);
    int u_stride = mode == SSD_REDUCE_STATES ? s.conv_dim : s.H * s.P;
    int v_col = s.H * s.P + (mode == SSD_REDUCE_STATES ? 0 : s.G * N_) + g * N_;
    for (int n = tid; n < N_; n += SSD_REDUCE_THREADS) A_s[n] = ssd_rate(A_log, h, n, N_, s.diagonal);
    float acc[MAX_TILES][4];
#pragma unroll
    for (int j = 0; j < MAX_TILES; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
    for (int i0 = 0; i0 < len; i0 += SSD_REDUCE_STEPS) {
        __syncthreads();
        /* a batch of global loads per thread, then the shared-memory stores (overlapped latencies) */
        float uv[UPT], dv[UPT], vv[VPT], cv[VPT];
        bool keep[VPT];
#pragma unroll
        for (int k = 0; k < UPT; k++) {
            int idx = tid + k * SSD_REDUCE_THREADS, i = idx / P, p = idx % P, t = t0 + i0 + i;
            bool valid = idx < SSD_REDUCE_STEPS * P && i0 + i < len;
            uv[k] = valid ? to_float(u_src[((size_t)b * s.T + t) * u_stride + h * P + p]) : 0.0f;
            dv[k] = valid && mode == SSD_REDUCE_STATES ? dl[t] : 1.0f;
        }
#pragma unroll
        for (int k = 0; k < UPT; k++) {
            int idx = tid + k * SSD_REDUCE_THREADS, i = idx / P, p = idx % P;
            if (idx < SSD_REDUCE_STEPS * P) u_s[i * LP + p] = uv[k] * dv[k];
        }
#pragma unroll
        for (int k = 0; k < VPT; k++) {
            int idx = tid + k * SSD_REDUCE_THREADS, i = idx / N_, n = idx % N_, t = t0 + i0 + i;
            bool valid = i0 + i < len;
            vv[k] = valid ? to_float(xBC[((size_t)b * s.T + t) * s.conv_dim + v_col + n]) : 0.0f;
            cv[k] = valid ? dc[t] : 0.0f;
            keep[k] = !valid || ssd_segment(segment, s, b, t) == key;
        }
#pragma unroll
        for (int k = 0; k < VPT; k++) {
            int idx = tid + k * SSD_REDUCE_THREADS, i = idx / N_, n = idx % N_;
            float e = mode == SSD_REDUCE_STATES ? last - cv[k] : cv[k];
            v_s[i * LN + n] = keep[k] ? vv[k] * expf(A_s[n] * e) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < MAX_TILES; j++) {
            int tile = warp + SSD_REDUCE_WARPS * j;
            if (tile < ntiles) {
                int p0 = (tile / NTC) * 16, n0 = (tile % NTC) * 8;
                ssd_mma(acc[j], SSDView{u_s + p0, 1, LP}, SSDView{v_s + n0, 1, LN}, SSD_REDUCE_STEPS);
            }
        }
    }
    float *o = out + ((size_t)bh * nc + c) * P * N_;
#pragma unroll
    for (int j = 0; j < MAX_TILES; j++) {
        int tile = warp + SSD_REDUCE_WARPS * j;
        if (tile < ntiles) {
            int p0 = (tile / NTC) * 16, n0 = (tile % NTC) * 8;
#pragma unroll
            for (int i = 0; i < 4; i++) o[(p0 + ssd_tile_row(i)) * N_ + n0 + ssd_tile_col(i)] = acc[j][i];
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * 4. The chunk scan. Shared memory of one block (fp32; LP = P + 4, LN = N + 4 row strides keep the
 * warp tiles' loads from piling onto a few banks). Rows past the chunk's end are zero with dc held
 * at the last step, so they change nothing.
 */
struct SSDSmem {
    int LP, LN;
    float *state;          /* [P][LN] S (forward, backward's forward sweep) or G (backward's reverse sweep) */
    float *x, *xd, *dy;    /* [SUB][LP] x, delta x, dy of the sub-block */
    float *B, *C;          /* [SUB][LN] */
    float *Bt, *Ct;        /* [SUB][LN] B exp(A (end - dc)), C exp(A (dc - ref)) */
    float *gb;             /* [SUB][LP] backward: G_s B_s + M^T dy per step s */
    float *dBC;            /* [SUB][LN] backward: the sub-block's dC (forward sweep) or dB (reverse sweep) */
    float *M, *W;          /* [SUB][SUB + 1] */
    float *dc, *dl;        /* [SUB] */
    float *bounds;         /* [2] ref, end */
    float *A, *decE, *dA;  /* [N] rates, exp(A (end - ref)), backward dA sums (of dA_rows) */
    float *dA_rows;        /* [SUB][N] backward: dA partial sums of the epilogue thread rows */
    float *w, *din;        /* [Q] backward: sum_n A z_t, x_t . (G_t B_t) */
    int *seg;              /* [SUB + 2] the steps' documents, then seg_ref (the entering state's), seg_end */
};

/* Lays the arrays out from base (NULL: only counts); returns the number of floats. */
__host__ __device__ static size_t ssd_smem_carve(SSDSmem *sm, float *base, int P, int N, int Q) {
    size_t off = 0;
    int LP = P + 4, LN = N + 4;
    auto take = [&](size_t count) {
        float *p = base ? base + off : NULL;
        off += (count + 3) & ~(size_t)3;
        return p;
    };
    sm->LP = LP;
    sm->LN = LN;
    /* arrays sized by N and SSD_SUB only first: their offsets are compile-time constants */
    sm->B = take(SSD_SUB * LN);
    sm->C = take(SSD_SUB * LN);
    sm->Bt = take(SSD_SUB * LN);
    sm->Ct = take(SSD_SUB * LN);
    sm->dBC = take(SSD_SUB * LN);
    sm->M = take(SSD_SUB * (SSD_SUB + 1));
    sm->W = take(SSD_SUB * (SSD_SUB + 1));
    sm->dc = take(SSD_SUB);
    sm->dl = take(SSD_SUB);
    sm->bounds = take(2);
    sm->seg = (int *)take(SSD_SUB + 2);
    sm->A = take(N);
    sm->decE = take(N);
    sm->dA = take(N);
    sm->dA_rows = take((size_t)SSD_SUB * N);
    sm->x = take(SSD_SUB * LP);
    sm->xd = take(SSD_SUB * LP);
    sm->dy = take(SSD_SUB * LP);
    sm->gb = take(SSD_SUB * LP);
    sm->state = take((size_t)P * LN);
    sm->w = take(Q);
    sm->din = take(Q);
    return off;
}

static size_t ssd_scan_smem_bytes(const SSDScanShape *s) {
    SSDSmem sm;
    return sizeof(float) * ssd_smem_carve(&sm, NULL, s->P, s->N, s->Q);
}

/* the most dynamic shared memory a block of this path takes for shape s */
static size_t ssd_sub_smem_bytes(const SSDScanShape *s) {
    size_t reduce = ssd_reduce_smem_bytes(s), scan = ssd_scan_smem_bytes(s);
    return reduce > scan ? reduce : scan;
}

/* Loads sub-block i0 of the chunk (dy too when given). Each thread issues batches of SSD_BATCH
 * global loads into registers before storing them to shared memory, so their latencies overlap
 * instead of adding up. */
#define SSD_BATCH 4

template <int N_, bool SEG>
__device__ void ssd_load_sub(const SSDSmem &sm, const SSDScanShape &s, const floatX *xBC, const floatX *dy,
                             const float *dl, const float *dc, const int *segment, int b, int h, int g, int t0, int i0,
                             int len) {
    constexpr int XPT = SSD_SUB * SSD_MAX_P / SSD_THREADS, BPT = SSD_SUB * N_ / SSD_THREADS;
    constexpr int BB = BPT < SSD_BATCH ? BPT : SSD_BATCH;
    int tid = threadIdx.x, P = s.P, LP = sm.LP, LN = sm.LN;
    int nvalid = min(SSD_SUB, len - i0);
    if (!SEG) segment = NULL;
    size_t row0 = (size_t)b * s.T + t0 + i0;
    float ref = i0 == 0 ? 0.0f : dc[t0 + i0 - 1];
    float end = dc[t0 + i0 + nvalid - 1];
    int seg_ref = ssd_segment_before(segment, s, b, t0 + i0), seg_end = ssd_segment(segment, s, b, t0 + i0 + nvalid - 1);
#pragma unroll 1
    for (int u0 = 0; u0 < XPT; u0 += SSD_BATCH) {
        float xv[SSD_BATCH], dv[SSD_BATCH], yv[SSD_BATCH];
#pragma unroll
        for (int u = 0; u < SSD_BATCH; u++) {
            int idx = tid + (u0 + u) * SSD_THREADS, i = idx / P, p = idx % P;
            bool valid = idx < SSD_SUB * P && i < nvalid;
            xv[u] = valid ? to_float(xBC[(row0 + i) * s.conv_dim + h * P + p]) : 0.0f;
            dv[u] = valid ? dl[t0 + i0 + i] : 0.0f;
            yv[u] = valid && dy ? to_float(dy[(row0 + i) * s.H * P + h * P + p]) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < SSD_BATCH; u++) {
            int idx = tid + (u0 + u) * SSD_THREADS, i = idx / P, p = idx % P;
            if (idx < SSD_SUB * P) {
                sm.x[i * LP + p] = xv[u];
                sm.xd[i * LP + p] = xv[u] * dv[u];
                if (dy) sm.dy[i * LP + p] = yv[u];
            }
        }
    }
    if (tid < SSD_SUB) {
        bool valid = tid < nvalid;
        sm.dc[tid] = valid ? dc[t0 + i0 + tid] : end;
        sm.dl[tid] = valid ? dl[t0 + i0 + tid] : 0.0f;
        if (SEG) sm.seg[tid] = valid ? ssd_segment(segment, s, b, t0 + i0 + tid) : seg_end;
    }
    if (tid == 0) {
        sm.bounds[0] = ref;
        sm.bounds[1] = end;
        if (SEG) {
            sm.seg[SSD_SUB] = seg_ref;
            sm.seg[SSD_SUB + 1] = seg_end;
        }
    }
    int b_col = s.H * P + g * N_, c_col = s.H * P + s.G * N_ + g * N_;
#pragma unroll 1
    for (int u0 = 0; u0 < BPT; u0 += BB) {
        float Bv[BB], Cv[BB], dcv[BB];
        int sg[BB];
#pragma unroll
        for (int u = 0; u < BB; u++) {
            int idx = tid + (u0 + u) * SSD_THREADS, i = idx / N_, n = idx % N_;
            bool valid = i < nvalid;
            const floatX *r = xBC + (row0 + i) * s.conv_dim;
            Bv[u] = valid ? to_float(r[b_col + n]) : 0.0f;
            Cv[u] = valid ? to_float(r[c_col + n]) : 0.0f;
            dcv[u] = valid ? dc[t0 + i0 + i] : end;
            sg[u] = valid ? ssd_segment(segment, s, b, t0 + i0 + i) : seg_end;
        }
#pragma unroll
        for (int u = 0; u < BB; u++) {
            int idx = tid + (u0 + u) * SSD_THREADS, i = idx / N_, n = idx % N_;
            sm.B[i * LN + n] = Bv[u];
            sm.C[i * LN + n] = Cv[u];
            sm.Bt[i * LN + n] = sg[u] == seg_end ? Bv[u] * expf(sm.A[n] * (end - dcv[u])) : 0.0f;
            sm.Ct[i * LN + n] = sg[u] == seg_ref ? Cv[u] * expf(sm.A[n] * (dcv[u] - ref)) : 0.0f;
        }
    }
    for (int n = tid; n < N_; n += SSD_THREADS) sm.decE[n] = seg_end == seg_ref ? expf(sm.A[n] * (end - ref)) : 0.0f;
}

/* Copies a [P][N] fp32 state from global memory into the [P][LN] state buffer, 8 loads in flight per
 * thread. */
template <int N_>
__device__ void ssd_load_state(const SSDSmem &sm, const float *src, int P) {
    for (int base = threadIdx.x; base < P * N_; base += 8 * SSD_THREADS) {
        float v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int idx = base + u * SSD_THREADS;
            v[u] = idx < P * N_ ? src[idx] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int idx = base + u * SSD_THREADS;
            if (idx < P * N_) sm.state[(idx / N_) * sm.LN + idx % N_] = v[u];
        }
    }
}

/* The M tiles (warps 0-1, scalar A) or the whole of M (all threads, diagonal A), and the W tiles
 * (warps 2-3, when with_w):
 *   M[t][s] = sum_n C_t[n] B_s[n] exp(A[n] (dc_t - dc_s)),  W[t][s] = dy_t . (delta x)_s, times the
 *   decay exp(A (dc_t - dc_s)) when A is scalar; both zero for s > t and between two documents. */
template <int N_, bool DIAG, bool SEG>
__device__ void ssd_sub_matrices(const SSDSmem &sm, int P, bool with_m, bool with_w) {
    int tid = threadIdx.x, warp = tid >> 5, LN = sm.LN, LP = sm.LP;
    if (DIAG && with_m) {
        int t = tid >> 4, s = tid & 15;
        float m = 0.0f;
        if (s <= t && (!SEG || sm.seg[s] == sm.seg[t])) {
            float gap = sm.dc[t] - sm.dc[s];
#pragma unroll 8
            for (int n = 0; n < N_; n++) m += sm.C[t * LN + n] * sm.B[s * LN + n] * expf(sm.A[n] * gap);
        }
        sm.M[t * (SSD_SUB + 1) + s] = m;
    }
    bool m_tile = !DIAG && with_m && warp < 2, w_tile = with_w && warp >= 2 && warp < 4;
    if (m_tile || w_tile) {
        int s0 = 8 * (warp & 1);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (m_tile) ssd_mma(acc, SSDView{sm.C, LN, 1}, SSDView{sm.B + s0 * LN, LN, 1}, N_);
        else ssd_mma(acc, SSDView{sm.dy, LP, 1}, SSDView{sm.xd + s0 * LP, LP, 1}, P);
        float *out = m_tile ? sm.M : sm.W;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int t = ssd_tile_row(i), s = s0 + ssd_tile_col(i);
            float v = 0.0f;
            if (s <= t && (!SEG || sm.seg[s] == sm.seg[t])) v = DIAG ? acc[i] : acc[i] * expf(sm.A[0] * (sm.dc[t] - sm.dc[s]));
            out[t * (SSD_SUB + 1) + s] = v;
        }
    }
}

/* state <- decE (.) state + left^T right over the sub-block's steps: S with (delta x, Bt) going
 * forward, G with (dy, Ct) going back. */
__device__ void ssd_advance_state(const SSDSmem &sm, int P, int N, const float *left, const float *right) {
    int warp = threadIdx.x >> 5, ntc = N / 8, ntiles = (P / 16) * ntc, LN = sm.LN, LP = sm.LP;
    for (int tile = warp; tile < ntiles; tile += SSD_WARPS) {
        int p0 = (tile / ntc) * 16, n0 = (tile % ntc) * 8;
        float acc[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int n = n0 + ssd_tile_col(i);
            acc[i] = sm.decE[n] * sm.state[(p0 + ssd_tile_row(i)) * LN + n];
        }
        ssd_mma(acc, SSDView{left + p0, 1, LP}, SSDView{right + n0, 1, LN}, SSD_SUB);
#pragma unroll
        for (int i = 0; i < 4; i++) sm.state[(p0 + ssd_tile_row(i)) * LN + n0 + ssd_tile_col(i)] = acc[i];
    }
}

template <int N_>
__device__ void ssd_scan_prologue(const SSDSmem &sm, const float *A_log, int h, int diagonal) {
    for (int n = threadIdx.x; n < N_; n += SSD_THREADS) sm.A[n] = ssd_rate(A_log, h, n, N_, diagonal);
    for (int i = threadIdx.x; i < SSD_SUB * N_; i += SSD_THREADS) sm.dA_rows[i] = 0.0f;
    __syncthreads();
}

/* Grid (nchunks, B*H). */
template <int N_, bool DIAG, bool SEG>
__global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_scan_forward_kernel(floatX *y, const floatX *xBC,
                                                                             const float *delta, const float *dcum,
                                                                             const float *states, const int *segment,
                                                                             const float *A_log, const float *D,
                                                                             SSDScanShape s) {
    extern __shared__ __align__(16) float ssd_smem[];
    SSDSmem sm;
    ssd_smem_carve(&sm, ssd_smem, s.P, N_, s.Q);
    int nc = gridDim.x, c = blockIdx.x, bh = blockIdx.y, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int P = s.P, LP = sm.LP, LN = sm.LN, tid = threadIdx.x, warp = tid >> 5;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    ssd_load_state<N_>(sm, states + ((size_t)bh * nc + c) * P * N_, P);
    ssd_scan_prologue<N_>(sm, A_log, h, s.diagonal);
    float Dh = D[h];
    for (int i0 = 0; i0 < len; i0 += SSD_SUB) {
        __syncthreads();
        ssd_load_sub<N_, SEG>(sm, s, xBC, NULL, dl, dc, segment, b, h, g, t0, i0, len);
        __syncthreads();
        ssd_sub_matrices<N_, DIAG, SEG>(sm, P, true, false);
        __syncthreads();
        /* y tiles (16 steps x 8 rows p) */
        for (int tile = warp; tile < P / 8; tile += SSD_WARPS) {
            int p0 = tile * 8;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            ssd_mma(acc, SSDView{sm.Ct, LN, 1}, SSDView{sm.state + p0 * LN, LN, 1}, N_);
            ssd_mma(acc, SSDView{sm.M, SSD_SUB + 1, 1}, SSDView{sm.xd + p0, 1, LP}, SSD_SUB);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int t = ssd_tile_row(i), p = p0 + ssd_tile_col(i);
                if (i0 + t < len)
                    y[((size_t)b * s.T + t0 + i0 + t) * s.H * P + h * P + p] =
                        from_float<floatX>(acc[i] + Dh * sm.x[t * LP + p]);
            }
        }
        __syncthreads();
        if (i0 + SSD_SUB < len) ssd_advance_state(sm, P, N_, sm.xd, sm.Bt);
    }
}

/* 4-wide fp32 stores of the valid rows of the [SUB][N] shared-memory block dBC into this head's rows of
 * the per-head dB / dC buffer (dst: the first row, rows row_stride floats apart) */
template <int N_>
__device__ void ssd_store_rows(float *dst, int row_stride, const SSDSmem &sm, int nvalid) {
    for (int idx = threadIdx.x; idx < SSD_SUB * N_ / 4; idx += SSD_THREADS) {
        int i = idx / (N_ / 4), n = 4 * (idx % (N_ / 4));
        if (i < nvalid) {
            const float *v = sm.dBC + i * sm.LN + n;
            *reinterpret_cast<float4 *>(dst + (size_t)i * row_stride + n) = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}

/* Grid (nchunks, B*H). Writes dx, d delta, this head's dB and dC (dBC) and the block's dA_log and dD
 * (dA_part, dD_part, summed over blocks in a fixed order by ssd_scan_backward). */
template <int N_, bool DIAG, bool SEG>
__global__ void __launch_bounds__(SSD_THREADS, 2) ssd_chunk_scan_backward_kernel(
    floatX *dxBC, float *dBC, float *ddelta, float *dA_part, float *dD_part, const floatX *dy, const floatX *xBC,
    const float *delta, const float *dcum, const float *states, const float *dstates, const int *segment,
    const float *A_log, const float *D, SSDScanShape s) {
    constexpr int J = N_ / 16;
    static_assert(SSD_THREADS % N_ == 0 && SSD_THREADS <= SSD_SUB * N_, "the G load's dA shares need a slot per thread");
    extern __shared__ __align__(16) float ssd_smem[];
    SSDSmem sm;
    ssd_smem_carve(&sm, ssd_smem, s.P, N_, s.Q);
    int nc = gridDim.x, c = blockIdx.x, bh = blockIdx.y, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int P = s.P, LP = sm.LP, LN = sm.LN, tid = threadIdx.x, warp = tid >> 5, row = tid >> 4, l = tid & 15;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    int BC_row = s.H * 2 * N_; /* floats between the dBC rows of two steps; this head's part at h * 2 * N */
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    size_t state_off = ((size_t)bh * nc + c) * P * N_;
    ssd_load_state<N_>(sm, states + state_off, P);
    ssd_scan_prologue<N_>(sm, A_log, h, s.diagonal);
    float *dA_row = sm.dA_rows + row * N_; /* this thread's dA partial sums, at n = l + 16 j */
    float Dh = D[h], dD_acc = 0.0f;

    /* forward sweep: dC */
    for (int i0 = 0; i0 < len; i0 += SSD_SUB) {
        int nvalid = min(SSD_SUB, len - i0);
        __syncthreads();
        ssd_load_sub<N_, SEG>(sm, s, xBC, dy, dl, dc, segment, b, h, g, t0, i0, len);
        __syncthreads();
        ssd_sub_matrices<N_, DIAG, SEG>(sm, P, false, true);
        /* dC tiles, state part: exp(A (dc_t - ref)) (dy S)[t][n], at the steps of the entering state's document */
        for (int tile = warp; tile < N_ / 8; tile += SSD_WARPS) {
            int n0 = tile * 8;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            ssd_mma(acc, SSDView{sm.dy, LP, 1}, SSDView{sm.state + n0, 1, LN}, P);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int t = ssd_tile_row(i), n = n0 + ssd_tile_col(i);
                bool entered = !SEG || sm.seg[t] == sm.seg[SSD_SUB];
                sm.dBC[t * LN + n] = entered ? acc[i] * expf(sm.A[n] * (sm.dc[t] - sm.bounds[0])) : 0.0f;
            }
        }
        __syncthreads();
        /* dC, intra part: sum_{k <= t} W[t][k] B_k[n] exp(A[n] (dc_t - dc_k)) */
        if (DIAG) {
            int t = row;
            float dct = sm.dc[t];
#pragma unroll 1
            for (int j = 0; j < J; j++) {
                int n = l + 16 * j;
                float intra = 0.0f;
                for (int k = 0; k <= t; k++)
                    intra += sm.W[t * (SSD_SUB + 1) + k] * sm.B[k * LN + n] * expf(sm.A[n] * (dct - sm.dc[k]));
                sm.dBC[t * LN + n] += intra;
            }
        } else {
            for (int tile = warp; tile < N_ / 8; tile += SSD_WARPS) {
                int n0 = tile * 8;
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                ssd_mma(acc, SSDView{sm.W, SSD_SUB + 1, 1}, SSDView{sm.B + n0, 1, LN}, SSD_SUB);
#pragma unroll
                for (int i = 0; i < 4; i++) sm.dBC[ssd_tile_row(i) * LN + n0 + ssd_tile_col(i)] += acc[i];
            }
        }
        __syncthreads();
        ssd_store_rows<N_>(dBC + ((size_t)b * s.T + t0 + i0) * BC_row + h * 2 * N_ + N_, BC_row, sm, nvalid);
        {
            int t = row;
            float wsum = 0.0f, dct = sm.dc[t];
#pragma unroll 1
            for (int j = 0; j < J; j++) {
                int n = l + 16 * j;
                float z = sm.C[t * LN + n] * sm.dBC[t * LN + n];
                dA_row[n] += z * dct;
                wsum += sm.A[n] * z;
            }
            wsum = ssd_reduce16(wsum);
            if (l == 0 && t < nvalid) sm.w[i0 + t] = wsum;
        }
        ssd_advance_state(sm, P, N_, sm.xd, sm.Bt);
    }

    /* the part of r from later chunks, sum_p G_end[p, n] S_end[p, n]; the state buffer then takes G.
     * A thread's n = idx % N stays the same in this loop (SSD_THREADS is a multiple of N), so its
     * dA share goes to dA_rows[tid] = row tid / N, column n (SSD_THREADS <= SSD_SUB * N): that slot's
     * owner wrote it before the barrier above and writes it next after the reverse sweep's first one. */
    __syncthreads();
    float dc_last = dc[t0 + len - 1], rsum = 0.0f;
    {
        float gs = 0.0f;
        int n = tid % N_;
        const float *src = dstates + state_off;
        for (int base = tid; base < P * N_; base += 8 * SSD_THREADS) {
            float G[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                int idx = base + u * SSD_THREADS;
                G[u] = idx < P * N_ ? src[idx] : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < 8; u++) {
                int idx = base + u * SSD_THREADS;
                if (idx < P * N_) {
                    float *e = sm.state + (idx / N_) * LN + n;
                    gs += G[u] * *e;
                    *e = G[u];
                }
            }
        }
        sm.dA_rows[tid] += gs * dc_last;
        rsum = sm.A[n] * gs;
    }

    /* reverse sweep: G carries dL/dS at the end of the sub-block from everything after it */
    int nsub = (len + SSD_SUB - 1) / SSD_SUB;
    for (int k = nsub - 1; k >= 0; k--) {
        int i0 = k * SSD_SUB, nvalid = min(SSD_SUB, len - i0);
        __syncthreads();
        ssd_load_sub<N_, SEG>(sm, s, xBC, dy, dl, dc, segment, b, h, g, t0, i0, len);
        __syncthreads();
        ssd_sub_matrices<N_, DIAG, SEG>(sm, P, true, true);
        /* gb, state part: (Bt G^T)[s][p] */
        for (int tile = warp; tile < P / 8; tile += SSD_WARPS) {
            int p0 = tile * 8;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            ssd_mma(acc, SSDView{sm.Bt, LN, 1}, SSDView{sm.state + p0 * LN, LN, 1}, N_);
#pragma unroll
            for (int i = 0; i < 4; i++) sm.gb[ssd_tile_row(i) * LP + p0 + ssd_tile_col(i)] = acc[i];
        }
        /* dB, state part: exp(A (end - dc_s)) ((delta x) G)[s][n], at the steps of the leaving state's document */
        for (int tile = warp; tile < N_ / 8; tile += SSD_WARPS) {
            int n0 = tile * 8;
            float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            ssd_mma(acc, SSDView{sm.xd, LP, 1}, SSDView{sm.state + n0, 1, LN}, P);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int si = ssd_tile_row(i), n = n0 + ssd_tile_col(i);
                bool kept = !SEG || sm.seg[si] == sm.seg[SSD_SUB + 1];
                sm.dBC[si * LN + n] = kept ? acc[i] * expf(sm.A[n] * (sm.bounds[1] - sm.dc[si])) : 0.0f;
            }
        }
        __syncthreads();
        /* gb += M^T dy */
        for (int tile = warp; tile < P / 8; tile += SSD_WARPS) {
            int p0 = tile * 8;
            float acc[4];
#pragma unroll
            for (int i = 0; i < 4; i++) acc[i] = sm.gb[ssd_tile_row(i) * LP + p0 + ssd_tile_col(i)];
            ssd_mma(acc, SSDView{sm.M, 1, SSD_SUB + 1}, SSDView{sm.dy + p0, 1, LP}, SSD_SUB);
#pragma unroll
            for (int i = 0; i < 4; i++) sm.gb[ssd_tile_row(i) * LP + p0 + ssd_tile_col(i)] = acc[i];
        }
        /* dB, intra part: sum_{t >= s} W[t][s] C_t[n] exp(A[n] (dc_t - dc_s)) */
        if (DIAG) {
            int si = row;
            float dcs = sm.dc[si];
#pragma unroll 1
            for (int j = 0; j < J; j++) {
                int n = l + 16 * j;
                float intra = 0.0f;
                for (int t = si; t < SSD_SUB; t++)
                    intra += sm.W[t * (SSD_SUB + 1) + si] * sm.C[t * LN + n] * expf(sm.A[n] * (sm.dc[t] - dcs));
                sm.dBC[si * LN + n] += intra;
            }
        } else {
            for (int tile = warp; tile < N_ / 8; tile += SSD_WARPS) {
                int n0 = tile * 8;
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                ssd_mma(acc, SSDView{sm.W, 1, SSD_SUB + 1}, SSDView{sm.C + n0, 1, LN}, SSD_SUB);
#pragma unroll
                for (int i = 0; i < 4; i++) sm.dBC[ssd_tile_row(i) * LN + n0 + ssd_tile_col(i)] += acc[i];
            }
        }
        __syncthreads();
        /* dx_s = D dy_s + delta_s gb_s; thread (s = row, lane l) owns p = l + 16 j */
        {
            int si = row;
            bool valid = si < nvalid;
            float dinp = 0.0f, dls = sm.dl[si];
            for (int p = l; p < P; p += 16) {
                float gbv = sm.gb[si * LP + p], dyv = sm.dy[si * LP + p], xv = sm.x[si * LP + p];
                if (valid) {
                    dxBC[((size_t)b * s.T + t0 + i0 + si) * s.conv_dim + h * P + p] = from_float<floatX>(Dh * dyv + dls * gbv);
                    dD_acc += dyv * xv;
                }
                dinp += xv * gbv;
            }
            dinp = ssd_reduce16(dinp);
            if (l == 0 && valid) sm.din[i0 + si] = dinp;
        }
        ssd_store_rows<N_>(dBC + ((size_t)b * s.T + t0 + i0) * BC_row + h * 2 * N_, BC_row, sm, nvalid);
        {
            int si = row;
            float wsum = 0.0f, dcs = sm.dc[si];
#pragma unroll 1
            for (int j = 0; j < J; j++) {
                int n = l + 16 * j;
                float z = sm.B[si * LN + n] * sm.dBC[si * LN + n];
                dA_row[n] -= z * dcs;
                wsum -= sm.A[n] * z;
            }
            wsum = ssd_reduce16(wsum);
            if (l == 0 && si < nvalid) sm.w[i0 + si] += wsum;
        }
        /* G moves to the start of the sub-block: G <- decE G + dy^T Ct */
        ssd_advance_state(sm, P, N_, sm.dy, sm.Ct);
    }

    /* block sums: dA[n], sum_n A[n] r_later[n], dD; d delta_t = revcumsum(w)_t + rsum + din_t */
    rsum = block_reduce_sum(rsum);
    dD_acc = block_reduce_sum(dD_acc);
    if (tid < 32) {
        float carry = 0.0f;
        for (int base = ((len - 1) / 32) * 32; base >= 0; base -= 32) {
            int i = base + tid;
            float v = i < len ? sm.w[i] : 0.0f;
            for (int offset = 1; offset < 32; offset <<= 1) {
                float u = __shfl_down_sync(0xffffffff, v, offset);
                if (tid + offset < 32) v += u;
            }
            v += carry;
            if (i < len) sm.w[i] = v;
            carry = __shfl_sync(0xffffffff, v, 0);
        }
    }
    for (int n = tid; n < N_; n += SSD_THREADS) {
        float sum = 0.0f;
        for (int r = 0; r < SSD_SUB; r++) sum += sm.dA_rows[r * N_ + n];
        sm.dA[n] = sum;
    }
    __syncthreads();
    for (int i = tid; i < len; i += SSD_THREADS) ddelta[(size_t)bh * s.T + t0 + i] = sm.w[i] + rsum + sm.din[i];
    size_t part = ((size_t)b * nc + c) * s.H + h; /* this block's row of the partial sums */
    if (s.diagonal) {
        for (int n = tid; n < N_; n += SSD_THREADS) dA_part[part * N_ + n] = sm.dA[n] * sm.A[n];
    } else if (tid == 0) {
        float sum = 0.0f;
        for (int n = 0; n < N_; n++) sum += sm.dA[n];
        dA_part[part] = sum * sm.A[0];
    }
    if (tid == 0) dD_part[part] = dD_acc;
}

/* ------------------------------------------------------------------------------------------------
 * Launchers, and the path's forward and backward (called by ssd_scan_dispatch)
 */
template <int N_>
static void ssd_launch_reduce(const SSDScanShape *s, float *out, const floatX *u_src, const floatX *xBC,
                              const SSDScanWorkspace *ws, const int *segment, const float *A_log, int mode,
                              cudaStream_t stream) {
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_reduce_smem_bytes(s);
    auto kernel = segment ? ssd_chunk_reduce_kernel<N_, true> : ssd_chunk_reduce_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    kernel<<<grid, SSD_REDUCE_THREADS, smem, stream>>>(out, u_src, xBC, ws->delta, ws->dcum, segment, A_log, *s, mode);
    cudaCheckLaunch();
}

/* The chunk scan kernels come in four variants: diagonal or scalar A, with or without segments (without,
 * every mask is 1 at compile time, so the kernels run as they would without the masks). */
template <int N_>
static void ssd_launch_forward_scan(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                    const int *segment, const float *A_log, const float *D, cudaStream_t stream) {
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_scan_smem_bytes(s);
    auto kernel = s->diagonal ? (segment ? ssd_chunk_scan_forward_kernel<N_, true, true>
                                         : ssd_chunk_scan_forward_kernel<N_, true, false>)
                              : (segment ? ssd_chunk_scan_forward_kernel<N_, false, true>
                                         : ssd_chunk_scan_forward_kernel<N_, false, false>);
    ssd_set_smem(kernel, smem);
    kernel<<<grid, SSD_THREADS, smem, stream>>>(y, xBC, ws->delta, ws->dcum, ws->states, segment, A_log, D, *s);
    cudaCheckLaunch();
}

template <int N_>
static void ssd_launch_backward_scan(const SSDScanShape *s, floatX *dxBC, const floatX *dy, const floatX *xBC,
                                     const SSDScanWorkspace *ws, const int *segment, const float *A_log, const float *D,
                                     cudaStream_t stream) {
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_scan_smem_bytes(s);
    auto kernel = s->diagonal ? (segment ? ssd_chunk_scan_backward_kernel<N_, true, true>
                                         : ssd_chunk_scan_backward_kernel<N_, true, false>)
                              : (segment ? ssd_chunk_scan_backward_kernel<N_, false, true>
                                         : ssd_chunk_scan_backward_kernel<N_, false, false>);
    ssd_set_smem(kernel, smem);
    kernel<<<grid, SSD_THREADS, smem, stream>>>(dxBC, ws->dBC, ws->ddelta, ws->dA_part, ws->dD_part, dy, xBC, ws->delta,
                                                ws->dcum, ws->states, ws->dstates, segment, A_log, D, *s);
    cudaCheckLaunch();
}

template <int N_>
static void ssd_sub_scan_forward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    ssd_launch_dt_forward(s, ws, c->dt_raw, c->dt_bias, c->stream);
    ssd_launch_reduce<N_>(s, ws->states, c->xBC, c->xBC, ws, c->segment, c->A_log, SSD_REDUCE_STATES, c->stream);
    ssd_launch_passing(s, ws->states, NULL, c->state_in, c->state_out, c->segment, ws, c->A_log, 0, c->stream);
    ssd_launch_forward_scan<N_>(s, c->y, c->xBC, ws, c->segment, c->A_log, c->D, c->stream);
}

template <int N_>
static void ssd_sub_scan_backward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    ssd_launch_reduce<N_>(s, ws->dstates, c->dy, c->xBC, ws, c->segment, c->A_log, SSD_REDUCE_DSTATES, c->stream);
    ssd_launch_passing(s, ws->dstates, NULL, NULL, NULL, c->segment, ws, c->A_log, 1, c->stream);
    ssd_launch_backward_scan<N_>(s, c->dxBC, c->dy, c->xBC, ws, c->segment, c->A_log, c->D, c->stream);
    ssd_launch_dt_backward(s, c->ddt_raw, ws, c->dt_raw, c->dt_bias, c->stream);
    ssd_launch_dBC_store(s, c->dxBC, (const float *)ws->dBC, 0, 2, c->stream);
    ssd_launch_param_grads(s, c->ddt_bias, c->dA_log, c->dD, ws, s->B * ssd_num_chunks(s), s->B, c->stream);
}

#endif
