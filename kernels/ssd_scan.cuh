/*
 * The SSD scan of a Mamba-2 / SSD-Mamba layer on the GPU, forward and backward, for a scalar A (one
 * decay rate per head) or a diagonal A (one per head and state). The math is in model/cpu_ssd.h:
 *     delta_t = softplus(dt_raw_t[h] + dt_bias[h]),   A = -exp(A_log)
 *     S_t = exp(delta_t A[h,:]) (.) S_{t-1} + delta_t x_t[h] B_t[g]^T,    y_t[h] = S_t C_t[g] + D[h] x_t[h]
 *
 * Chunked algorithm. With dc_t the cumulative sum of delta inside a chunk, every decay between two
 * steps s <= t of a chunk is exp(A[n] (dc_t - dc_s)) <= 1, so no factor can overflow.
 *   1. dt:         delta and dc for every step                        (one block per chunk)
 *   2. states:     each chunk's own final state from a zero start     (parallel over chunks)
 *   3. passing:    the state entering each chunk, chunk after chunk   (P*N threads per head)
 *   4. chunk scan: per chunk, sub-blocks of SSD_SUB steps in order: the intra-sub-block quadratic term
 *                  (C B^T o L) (delta x), the state-to-output term C S, and the state update.
 * A block owns SSD_PTILE rows p of the head dimension, whose state rows are independent.
 *
 * Backward (gradients of sum(dy . y)), with G = dL/dS the adjoint state:
 *   1. dstates:    each chunk's gradient w.r.t. its entering state, from its own outputs
 *   2. passing:    reversed: the gradient w.r.t. each chunk's final state from all later chunks
 *   3. chunk scan: a forward sweep re-forms S to give dC_t = S_t^T dy_t, a reverse sweep carries G to
 *                  give dx_t = D dy_t + delta_t G_t B_t and dB_t = delta_t G_t^T x_t.
 *      The decays' gradient uses u_t = A (sum of delta up to t): dL/du_t[n] = z_t[n] =
 *      C_t[n] dC_t[n] - B_t[n] dB_t[n] (this head's share of dB, dC), so with r_t = sum_{t'>=t} z_t'
 *      d delta_t = sum_n A[n] r_t[n] + x_t . (G_t B_t)   and   dA[n] = sum_t delta_t r_t[n].
 *      The part of r_t from later chunks is sum_p G_end[p,n] S_end[p,n] at the chunk's end.
 *   4. dt:         d dt_raw = d delta * sigmoid(dt_raw + dt_bias); the fp32 dB, dC sums to floatX.
 * dB, dC (summed over the heads of a group), d delta and the parameter gradients are accumulated with
 * fp32 atomics, so their last bits may differ from run to run.
 */
#ifndef SSD_KERNELS_SSD_SCAN_CUH
#define SSD_KERNELS_SSD_SCAN_CUH

#include "common.cuh"

typedef struct { int B, T, H, P, G, N, Q; int diagonal; int conv_dim; int d_in_proj; } SSDScanShape;

#define SSD_SUB 16     /* steps per sub-block of the chunk scan */
#define SSD_PTILE 16   /* head-dimension rows per block */
#define SSD_THREADS 256
#define SSD_MAX_CHUNK 1024

/* ------------------------------------------------------------------------------------------------
 * Workspace: what the forward keeps for the backward, then the backward's scratch.
 */
typedef struct {
    float *delta;    /* [B][H][T] softplus(dt_raw + dt_bias) */
    float *dcum;     /* [B][H][T] inclusive cumulative sum of delta within each chunk */
    float *states;   /* [B][H][nchunks][P][N] the state entering each chunk */
    float *dstates;  /* [B][H][nchunks][P][N] backward: dL/d(state leaving each chunk) from later chunks */
    float *ddelta;   /* [B][H][T] backward: d delta accumulator */
    float *dBC;      /* [B*T][2*G*N] backward: dB, dC accumulator (summed over heads) */
} SSDScanWorkspace;

__host__ __device__ static inline int ssd_num_chunks(const SSDScanShape *s) { return (s->T + s->Q - 1) / s->Q; }

static inline size_t ssd_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

static SSDScanWorkspace ssd_scan_workspace_view(const SSDScanShape *s, void *workspace, size_t *total) {
    size_t bht = (size_t)s->B * s->H * s->T * sizeof(float);
    size_t st = (size_t)s->B * s->H * ssd_num_chunks(s) * s->P * s->N * sizeof(float);
    size_t bc = (size_t)s->B * s->T * 2 * s->G * s->N * sizeof(float);
    size_t sizes[6] = {bht, bht, st, st, bht, bc};
    float *ptrs[6];
    size_t offset = 0;
    for (int i = 0; i < 6; i++) {
        ptrs[i] = workspace ? (float *)((char *)workspace + offset) : NULL;
        offset += ssd_align(sizes[i]);
    }
    if (total) *total = offset;
    SSDScanWorkspace ws = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5]};
    return ws;
}

/* Exits with a message naming the field on a shape these kernels cannot run. */
static void ssd_scan_check_shape(const SSDScanShape *s) {
    const char *bad = NULL;
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->G < 1) bad = "B, T, H, G must be positive";
    else if (s->H % s->G != 0) bad = "H must be a multiple of G (ngroups)";
    else if (s->P < SSD_PTILE || s->P % SSD_PTILE != 0) bad = "P (headdim) must be a positive multiple of 16";
    else if (s->N != 16 && s->N != 32 && s->N != 64 && s->N != 128) bad = "N (d_state) must be 16, 32, 64 or 128";
    else if (s->Q < 1 || s->Q > SSD_MAX_CHUNK) bad = "Q (chunk_size) must be in [1, 1024]";
    else if (s->conv_dim != s->H * s->P + 2 * s->G * s->N) bad = "conv_dim must equal H*P + 2*G*N";
    else if ((long)s->B * s->H > 65535 || ssd_num_chunks(s) > 65535) bad = "B*H and the number of chunks must be at most 65535";
    else if (s->d_in_proj < s->H) bad = "d_in_proj must be at least H";
    if (bad) {
        fprintf(stderr, "ssd_scan: unsupported shape (B=%d T=%d H=%d P=%d G=%d N=%d Q=%d conv_dim=%d d_in_proj=%d): %s\n",
                s->B, s->T, s->H, s->P, s->G, s->N, s->Q, s->conv_dim, s->d_in_proj, bad);
        exit(EXIT_FAILURE);
    }
}

size_t ssd_scan_workspace_bytes(const SSDScanShape *s) {
    ssd_scan_check_shape(s);
    size_t total;
    ssd_scan_workspace_view(s, NULL, &total);
    return total;
}

/* ------------------------------------------------------------------------------------------------
 * Device helpers
 */
__device__ __forceinline__ float ssd_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* A[h, n] = -exp(A_log): one rate per head (scalar) or per head and state (diagonal) */
__device__ __forceinline__ float ssd_rate(const float *A_log, int h, int n, int N, int diagonal) {
    return -expf(diagonal ? A_log[h * N + n] : A_log[h]);
}

/* Inclusive prefix sum over the block (blockDim.x a multiple of 32). */
__device__ float ssd_block_inclusive_scan(float v) {
    __shared__ float warp_totals[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int offset = 1; offset < 32; offset <<= 1) {
        float u = __shfl_up_sync(0xffffffff, v, offset);
        if (lane >= offset) v += u;
    }
    if (lane == 31) warp_totals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < (int)(blockDim.x / 32) ? warp_totals[lane] : 0.0f;
        for (int offset = 1; offset < 32; offset <<= 1) {
            float u = __shfl_up_sync(0xffffffff, w, offset);
            if (lane >= offset) w += u;
        }
        warp_totals[lane] = w;
    }
    __syncthreads();
    return warp > 0 ? v + warp_totals[warp - 1] : v;
}

/* Each of 16 lanes (a half warp) holds SSD_SUB partial sums; afterwards lane l holds the sum over the
 * 16 lanes of entry l. Halving exchange: 8 + 4 + 2 + 1 shuffles. */
__device__ __forceinline__ float ssd_transpose_reduce16(float (&v)[SSD_SUB]) {
    int lane = threadIdx.x & 15;
#pragma unroll
    for (int width = 8; width >= 1; width >>= 1) {
        bool upper = lane & width;
#pragma unroll
        for (int i = 0; i < width; i++) {
            float send = upper ? v[i] : v[i + width];
            float keep = upper ? v[i + width] : v[i];
            v[i] = keep + __shfl_xor_sync(0xffffffff, send, width);
        }
    }
    return v[0];
}

__device__ __forceinline__ float ssd_reduce16(float v) {
#pragma unroll
    for (int offset = 8; offset >= 1; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * 1. delta and its cumulative sum within each chunk. Grid (nchunks, H, B), blockDim >= Q.
 */
__global__ void ssd_dt_forward_kernel(float *delta, float *dcum, const floatX *dt_raw, const float *dt_bias,
                                      SSDScanShape s) {
    int c = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    int i = threadIdx.x, t = c * s.Q + i;
    bool valid = i < s.Q && t < s.T;
    float d = 0.0f;
    if (valid) d = ssd_softplus(to_float(dt_raw[((size_t)b * s.T + t) * s.d_in_proj + h]) + dt_bias[h]);
    float cum = ssd_block_inclusive_scan(d);
    if (valid) {
        size_t o = ((size_t)b * s.H + h) * s.T + t;
        delta[o] = d;
        dcum[o] = cum;
    }
}

/* ------------------------------------------------------------------------------------------------
 * 2. Per-chunk reductions over the chunk's steps i, out[p, n] = sum_i u_i[p] v_i[n]:
 *    states:  u = delta x, v = B exp(A (dc_last - dc_i))   (the chunk's final state from zero)
 *    dstates: u = dy,      v = C exp(A dc_i)               (dL/d entering state, from the chunk's outputs)
 * Grid (P/16, nchunks, B*H); thread (row = tid/16, lane l) owns p = p0 + row and n = l + 16 j.
 */
enum { SSD_REDUCE_STATES = 0, SSD_REDUCE_DSTATES = 1 };

template <int N_>
__global__ void __launch_bounds__(SSD_THREADS) ssd_chunk_reduce_kernel(float *out, const floatX *u_src,
                                                                       const floatX *xBC, const float *delta,
                                                                       const float *dcum, const float *A_log,
                                                                       SSDScanShape s, int mode) {
    constexpr int J = N_ / 16;
    __shared__ float u_s[SSD_SUB][SSD_PTILE];
    __shared__ float v_s[SSD_SUB][N_ + 1];
    __shared__ float A_s[N_];
    int nc = gridDim.y, c = blockIdx.y, bh = blockIdx.z, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int p0 = blockIdx.x * SSD_PTILE, tid = threadIdx.x, row = tid >> 4, l = tid & 15;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    float last = dc[t0 + len - 1];
    int u_stride = mode == SSD_REDUCE_STATES ? s.conv_dim : s.H * s.P;
    int v_col = s.H * s.P + (mode == SSD_REDUCE_STATES ? 0 : s.G * s.N) + g * N_;
    for (int n = tid; n < N_; n += SSD_THREADS) A_s[n] = ssd_rate(A_log, h, n, N_, s.diagonal);
    float acc[J];
#pragma unroll
    for (int j = 0; j < J; j++) acc[j] = 0.0f;
    for (int i0 = 0; i0 < len; i0 += SSD_SUB) {
        __syncthreads();
        {
            int t = t0 + i0 + row;
            float u = 0.0f;
            if (i0 + row < len) {
                u = to_float(u_src[((size_t)b * s.T + t) * u_stride + h * s.P + p0 + l]);
                if (mode == SSD_REDUCE_STATES) u *= dl[t];
            }
            u_s[row][l] = u;
        }
        for (int idx = tid; idx < SSD_SUB * N_; idx += SSD_THREADS) {
            int i = idx / N_, n = idx % N_, t = t0 + i0 + i;
            float v = 0.0f;
            if (i0 + i < len) {
                float e = mode == SSD_REDUCE_STATES ? last - dc[t] : dc[t];
                v = to_float(xBC[((size_t)b * s.T + t) * s.conv_dim + v_col + n]) * expf(A_s[n] * e);
            }
            v_s[i][n] = v;
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < SSD_SUB; i++) {
            float u = u_s[i][row];
#pragma unroll
            for (int j = 0; j < J; j++) acc[j] += u * v_s[i][l + 16 * j];
        }
    }
    float *o = out + (((size_t)bh * nc + c) * s.P + p0 + row) * N_;
#pragma unroll
    for (int j = 0; j < J; j++) o[l + 16 * j] = acc[j];
}

/* ------------------------------------------------------------------------------------------------
 * 3. Passing states between chunks, one thread per (b, h, p, n):
 *    forward:  in[0] = 0,        in[c+1] = exp(A dc_last(c)) in[c] + own[c]     (own -> in, in place)
 *    backward: out[nc-1] = 0,    out[c-1] = own[c] + exp(A dc_last(c)) out[c]   (own -> out, in place)
 */
__global__ void ssd_state_passing_kernel(float *states, const float *dcum, const float *A_log, SSDScanShape s,
                                         int reverse) {
    int PN = s.P * s.N, e = blockIdx.x * blockDim.x + threadIdx.x, bh = blockIdx.y, h = bh % s.H;
    if (e >= PN) return;
    float A = ssd_rate(A_log, h, e % s.N, s.N, s.diagonal);
    int nc = ssd_num_chunks(&s);
    const float *dc = dcum + (size_t)bh * s.T;
    float run = 0.0f;
    for (int k = 0; k < nc; k++) {
        int c = reverse ? nc - 1 - k : k;
        int len = min(s.Q, s.T - c * s.Q);
        float decay = expf(A * dc[c * s.Q + len - 1]);
        float *ptr = states + ((size_t)bh * nc + c) * PN + e;
        float own = *ptr;
        *ptr = run;
        run = decay * run + own;
    }
}

/* ------------------------------------------------------------------------------------------------
 * 4. The chunk scan. Shared memory of one block for one sub-block of SSD_SUB steps (t, s index steps
 * in the sub-block; ref = dc before it, end = dc at its last step; rows past the chunk's end are
 * zero with dc held at end, so they change nothing).
 */
template <int N_>
struct SSDSubTile {
    float Braw[SSD_SUB][N_ + 1];
    float Craw[SSD_SUB][N_ + 1];
    float decB[SSD_SUB][N_ + 1];  /* exp(A[n] (end - dc_s)): from step s to the end of the sub-block */
    float decC[SSD_SUB][N_ + 1];  /* exp(A[n] (dc_t - ref)): from the start of the sub-block to step t */
    float Bt[SSD_SUB][N_ + 1];    /* Braw decB */
    float Ct[SSD_SUB][N_ + 1];    /* Craw decC */
    float rows[SSD_PTILE][N_ + 1]; /* a copy of the block's state (or adjoint state) rows */
    float decE[N_];               /* exp(A[n] (end - ref)): across the whole sub-block */
    float A[N_];
    float dA[N_];                 /* backward: dA partial sums */
    float x[SSD_SUB][SSD_PTILE + 1];
    float xd[SSD_SUB][SSD_PTILE + 1];  /* delta x */
    float dy[SSD_SUB][SSD_PTILE + 1];
    float M[SSD_SUB][SSD_SUB + 1];     /* M[t][s] = sum_n C_t[n] B_s[n] exp(A[n] (dc_t - dc_s)), s <= t */
    float W[SSD_SUB][SSD_SUB + 1];     /* backward: dy_t . (delta x)_s over the block's rows, times the
                                          scalar decay exp(A (dc_t - dc_s)) when A is scalar */
    float dc[SSD_SUB];
    float dl[SSD_SUB];
};

template <int N_>
__device__ void ssd_load_sub(SSDSubTile<N_> &sm, const SSDScanShape &s, const floatX *xBC, const floatX *dy,
                             const float *dl, const float *dc, int b, int h, int g, int p0, int t0, int i0, int len) {
    int tid = threadIdx.x, row = tid >> 4, l = tid & 15;
    int nvalid = min(SSD_SUB, len - i0);
    float ref = i0 == 0 ? 0.0f : dc[t0 + i0 - 1];
    float end = dc[t0 + i0 + nvalid - 1];
    {
        int t = t0 + i0 + row;
        bool valid = row < nvalid;
        size_t r = (size_t)b * s.T + t;
        float x = valid ? to_float(xBC[r * s.conv_dim + h * s.P + p0 + l]) : 0.0f;
        float d = valid ? dl[t] : 0.0f;
        sm.x[row][l] = x;
        sm.xd[row][l] = x * d;
        if (dy) sm.dy[row][l] = valid ? to_float(dy[r * s.H * s.P + h * s.P + p0 + l]) : 0.0f;
        if (l == 0) {
            sm.dc[row] = valid ? dc[t] : end;
            sm.dl[row] = d;
        }
    }
    int b_col = s.H * s.P + g * N_, c_col = s.H * s.P + s.G * N_ + g * N_;
    for (int idx = tid; idx < SSD_SUB * N_; idx += SSD_THREADS) {
        int i = idx / N_, n = idx % N_, t = t0 + i0 + i;
        bool valid = i < nvalid;
        const floatX *r = xBC + ((size_t)b * s.T + t) * s.conv_dim;
        float dci = valid ? dc[t] : end;
        float Bv = valid ? to_float(r[b_col + n]) : 0.0f, Cv = valid ? to_float(r[c_col + n]) : 0.0f;
        float eB = expf(sm.A[n] * (end - dci)), eC = expf(sm.A[n] * (dci - ref));
        sm.Braw[i][n] = Bv;
        sm.Craw[i][n] = Cv;
        sm.decB[i][n] = eB;
        sm.decC[i][n] = eC;
        sm.Bt[i][n] = Bv * eB;
        sm.Ct[i][n] = Cv * eC;
    }
    for (int n = tid; n < N_; n += SSD_THREADS) sm.decE[n] = expf(sm.A[n] * (end - ref));
}

/* M (and, for the backward, W) of the loaded sub-block; thread (t = tid/16, s = tid%16). */
template <int N_, bool DIAG>
__device__ void ssd_sub_matrices(SSDSubTile<N_> &sm, bool with_w) {
    int t = threadIdx.x >> 4, s = threadIdx.x & 15;
    float m = 0.0f, w = 0.0f;
    if (s <= t) {
        float gap = sm.dc[t] - sm.dc[s];
        if (DIAG) {
#pragma unroll 8
            for (int n = 0; n < N_; n++) m += sm.Craw[t][n] * sm.Braw[s][n] * expf(sm.A[n] * gap);
        } else {
#pragma unroll 8
            for (int n = 0; n < N_; n++) m += sm.Craw[t][n] * sm.Braw[s][n];
            m *= expf(sm.A[0] * gap);
        }
        if (with_w) {
#pragma unroll
            for (int p = 0; p < SSD_PTILE; p++) w += sm.dy[t][p] * sm.xd[s][p];
            if (!DIAG) w *= expf(sm.A[0] * gap);
        }
    }
    sm.M[t][s] = m;
    if (with_w) sm.W[t][s] = w;
}

/* The block's state rows advance over the loaded sub-block: S = decE S + sum_s (delta x)_s (B_s decB_s)^T */
template <int N_>
__device__ __forceinline__ void ssd_state_update(const SSDSubTile<N_> &sm, float (&S)[N_ / 16], int row, int l) {
#pragma unroll
    for (int j = 0; j < N_ / 16; j++) {
        int n = l + 16 * j;
        float acc = sm.decE[n] * S[j];
#pragma unroll
        for (int i = 0; i < SSD_SUB; i++) acc += sm.xd[i][row] * sm.Bt[i][n];
        S[j] = acc;
    }
}

template <int N_>
static size_t ssd_tile_bytes(const SSDScanShape *s) { return sizeof(SSDSubTile<N_>) + 2 * sizeof(float) * s->Q; }

/* Grid (P/16, nchunks, B*H). */
template <int N_, bool DIAG>
__global__ void __launch_bounds__(SSD_THREADS) ssd_chunk_scan_forward_kernel(floatX *y, const floatX *xBC,
                                                                             const float *delta, const float *dcum,
                                                                             const float *states, const float *A_log,
                                                                             const float *D, SSDScanShape s) {
    constexpr int J = N_ / 16;
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    SSDSubTile<N_> &sm = *reinterpret_cast<SSDSubTile<N_> *>(ssd_smem);
    int nc = gridDim.y, c = blockIdx.y, bh = blockIdx.z, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int p0 = blockIdx.x * SSD_PTILE, tid = threadIdx.x, row = tid >> 4, l = tid & 15;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    for (int n = tid; n < N_; n += SSD_THREADS) sm.A[n] = ssd_rate(A_log, h, n, N_, s.diagonal);
    float S[J];
    const float *st = states + (((size_t)bh * nc + c) * s.P + p0 + row) * N_;
#pragma unroll
    for (int j = 0; j < J; j++) S[j] = st[l + 16 * j];
    float Dh = D[h];
    for (int i0 = 0; i0 < len; i0 += SSD_SUB) {
        __syncthreads();
        ssd_load_sub<N_>(sm, s, xBC, NULL, dl, dc, b, h, g, p0, t0, i0, len);
        __syncthreads();
        ssd_sub_matrices<N_, DIAG>(sm, false);
        __syncthreads();
        /* thread (row p, lane l): y_t[p] for t = l */
        float part[SSD_SUB];
#pragma unroll
        for (int t = 0; t < SSD_SUB; t++) {
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < J; j++) acc += sm.Ct[t][l + 16 * j] * S[j];
            part[t] = acc;
        }
        float v = ssd_transpose_reduce16(part);
        for (int k = 0; k <= l; k++) v += sm.M[l][k] * sm.xd[k][row];
        v += Dh * sm.x[l][row];
        if (i0 + l < len) y[((size_t)b * s.T + t0 + i0 + l) * s.H * s.P + h * s.P + p0 + row] = from_float<floatX>(v);
        ssd_state_update<N_>(sm, S, row, l);
    }
}

/* Grid (P/16, nchunks, B*H). Writes dx; accumulates dB, dC (dBC), d delta, dA_log, dD. */
template <int N_, bool DIAG>
__global__ void __launch_bounds__(SSD_THREADS) ssd_chunk_scan_backward_kernel(
    floatX *dxBC, float *dBC, float *ddelta, float *dA_log, float *dD, const floatX *dy, const floatX *xBC,
    const float *delta, const float *dcum, const float *states, const float *dstates, const float *A_log,
    const float *D, SSDScanShape s) {
    constexpr int J = N_ / 16;
    extern __shared__ __align__(16) unsigned char ssd_smem[];
    SSDSubTile<N_> &sm = *reinterpret_cast<SSDSubTile<N_> *>(ssd_smem);
    float *w_chunk = reinterpret_cast<float *>(ssd_smem + sizeof(SSDSubTile<N_>)); /* [Q] sum_n A z_t */
    float *din = w_chunk + s.Q;                                                       /* [Q] x_t . G_t B_t */
    int nc = gridDim.y, c = blockIdx.y, bh = blockIdx.z, b = bh / s.H, h = bh % s.H, g = h / (s.H / s.G);
    int p0 = blockIdx.x * SSD_PTILE, tid = threadIdx.x, row = tid >> 4, l = tid & 15;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    int GN = s.G * N_, BC2 = 2 * GN;
    const float *dl = delta + (size_t)bh * s.T, *dc = dcum + (size_t)bh * s.T;
    for (int n = tid; n < N_; n += SSD_THREADS) {
        sm.A[n] = ssd_rate(A_log, h, n, N_, s.diagonal);
        sm.dA[n] = 0.0f;
    }
    for (int i = tid; i < s.Q; i += SSD_THREADS) w_chunk[i] = din[i] = 0.0f;
    size_t rows_off = (((size_t)bh * nc + c) * s.P + p0 + row) * N_;
    float S[J], G[J], dA_acc[J];
#pragma unroll
    for (int j = 0; j < J; j++) {
        S[j] = states[rows_off + l + 16 * j];
        G[j] = dstates[rows_off + l + 16 * j];
        dA_acc[j] = 0.0f;
    }
    float Dh = D[h], dD_acc = 0.0f;

    /* forward sweep: dC_t[n] = sum_p dy_t[p] S_t[p, n]; thread (t = row, lane l) owns n = l + 16 j */
    for (int i0 = 0; i0 < len; i0 += SSD_SUB) {
        __syncthreads();
        ssd_load_sub<N_>(sm, s, xBC, dy, dl, dc, b, h, g, p0, t0, i0, len);
#pragma unroll
        for (int j = 0; j < J; j++) sm.rows[row][l + 16 * j] = S[j];
        __syncthreads();
        ssd_sub_matrices<N_, DIAG>(sm, true);
        __syncthreads();
        int t = row;
        float wsum = 0.0f, dct = sm.dc[t];
#pragma unroll
        for (int j = 0; j < J; j++) {
            int n = l + 16 * j;
            float from_state = 0.0f, intra = 0.0f;
#pragma unroll
            for (int p = 0; p < SSD_PTILE; p++) from_state += sm.dy[t][p] * sm.rows[p][n];
            for (int k = 0; k <= t; k++) {
                float e = DIAG ? expf(sm.A[n] * (dct - sm.dc[k])) : 1.0f;
                intra += sm.W[t][k] * sm.Braw[k][n] * e;
            }
            float dC = sm.decC[t][n] * from_state + intra;
            if (i0 + t < len) atomicAdd(dBC + ((size_t)b * s.T + t0 + i0 + t) * BC2 + GN + g * N_ + n, dC);
            float z = sm.Craw[t][n] * dC;
            dA_acc[j] += z * dct;
            wsum += sm.A[n] * z;
        }
        wsum = ssd_reduce16(wsum);
        if (l == 0 && i0 + t < len) w_chunk[i0 + t] += wsum;
        ssd_state_update<N_>(sm, S, row, l);
    }
    /* the part of r from later chunks: sum_p G_end[p, n] S_end[p, n] (S now holds S_end) */
    float dc_last = dc[t0 + len - 1], rsum = 0.0f;
#pragma unroll
    for (int j = 0; j < J; j++) {
        float r = G[j] * S[j];
        dA_acc[j] += r * dc_last;
        rsum += sm.A[l + 16 * j] * r;
    }

    /* reverse sweep: G carries dL/dS at the end of the sub-block from everything after it */
    int nsub = (len + SSD_SUB - 1) / SSD_SUB;
    for (int k = nsub - 1; k >= 0; k--) {
        int i0 = k * SSD_SUB;
        __syncthreads();
        ssd_load_sub<N_>(sm, s, xBC, dy, dl, dc, b, h, g, p0, t0, i0, len);
#pragma unroll
        for (int j = 0; j < J; j++) sm.rows[row][l + 16 * j] = G[j];
        __syncthreads();
        ssd_sub_matrices<N_, DIAG>(sm, true);
        __syncthreads();
        /* thread (row p, lane l): (G_s B_s)[p] for s = l, then dx */
        float part[SSD_SUB];
#pragma unroll
        for (int i = 0; i < SSD_SUB; i++) {
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < J; j++) acc += G[j] * sm.Bt[i][l + 16 * j];
            part[i] = acc;
        }
        float gb = ssd_transpose_reduce16(part);
        for (int t = l; t < SSD_SUB; t++) gb += sm.M[t][l] * sm.dy[t][row];
        if (i0 + l < len) {
            float dyv = sm.dy[l][row], xv = sm.x[l][row];
            dxBC[((size_t)b * s.T + t0 + i0 + l) * s.conv_dim + h * s.P + p0 + row] =
                from_float<floatX>(Dh * dyv + sm.dl[l] * gb);
            atomicAdd(&din[i0 + l], xv * gb);
            dD_acc += dyv * xv;
        }
        /* thread (s = row, lane l): dB_s[n] = sum_p (delta x)_s[p] G_s[p, n] */
        int si = row;
        float wsum = 0.0f, dcs = sm.dc[si];
#pragma unroll
        for (int j = 0; j < J; j++) {
            int n = l + 16 * j;
            float from_state = 0.0f, intra = 0.0f;
#pragma unroll
            for (int p = 0; p < SSD_PTILE; p++) from_state += sm.xd[si][p] * sm.rows[p][n];
            for (int t = si; t < SSD_SUB; t++) {
                float e = DIAG ? expf(sm.A[n] * (sm.dc[t] - dcs)) : 1.0f;
                intra += sm.W[t][si] * sm.Craw[t][n] * e;
            }
            float dB = sm.decB[si][n] * from_state + intra;
            if (i0 + si < len) atomicAdd(dBC + ((size_t)b * s.T + t0 + i0 + si) * BC2 + g * N_ + n, dB);
            float z = sm.Braw[si][n] * dB;
            dA_acc[j] -= z * dcs;
            wsum -= sm.A[n] * z;
        }
        wsum = ssd_reduce16(wsum);
        if (l == 0 && i0 + si < len) w_chunk[i0 + si] += wsum;
        /* G moves to the start of the sub-block */
#pragma unroll
        for (int j = 0; j < J; j++) {
            int n = l + 16 * j;
            float acc = sm.decE[n] * G[j];
#pragma unroll
            for (int t = 0; t < SSD_SUB; t++) acc += sm.dy[t][row] * sm.Ct[t][n];
            G[j] = acc;
        }
    }

    /* block sums: dA[n], sum_n A[n] r_later[n], dD */
#pragma unroll
    for (int j = 0; j < J; j++) atomicAdd(&sm.dA[l + 16 * j], dA_acc[j]);
    rsum = block_reduce_sum(rsum);
    dD_acc = block_reduce_sum(dD_acc);
    if (tid < 32) { /* w_chunk <- its reverse cumulative sum */
        float carry = 0.0f;
        for (int base = ((len - 1) / 32) * 32; base >= 0; base -= 32) {
            int i = base + tid;
            float v = i < len ? w_chunk[i] : 0.0f;
            for (int offset = 1; offset < 32; offset <<= 1) {
                float u = __shfl_down_sync(0xffffffff, v, offset);
                if (tid + offset < 32) v += u;
            }
            v += carry;
            if (i < len) w_chunk[i] = v;
            carry = __shfl_sync(0xffffffff, v, 0);
        }
    }
    __syncthreads();
    for (int i = tid; i < len; i += SSD_THREADS) atomicAdd(ddelta + (size_t)bh * s.T + t0 + i, w_chunk[i] + rsum + din[i]);
    if (s.diagonal) {
        for (int n = tid; n < N_; n += SSD_THREADS) atomicAdd(dA_log + h * N_ + n, sm.dA[n] * sm.A[n]);
    } else if (tid == 0) {
        float sum = 0.0f;
        for (int n = 0; n < N_; n++) sum += sm.dA[n];
        atomicAdd(dA_log + h, sum * sm.A[0]);
    }
    if (tid == 0) atomicAdd(dD + h, dD_acc);
}

/* ------------------------------------------------------------------------------------------------
 * 5. Backward of delta = softplus(dt_raw + dt_bias): grid (H, B). Writes ddt_raw, accumulates ddt_bias.
 */
__global__ void ssd_dt_backward_kernel(floatX *ddt_raw, float *ddt_bias, const float *ddelta, const floatX *dt_raw,
                                       const float *dt_bias, SSDScanShape s) {
    int h = blockIdx.x, b = blockIdx.y;
    float sum = 0.0f;
    for (int t = threadIdx.x; t < s.T; t += blockDim.x) {
        size_t r = ((size_t)b * s.T + t) * s.d_in_proj + h;
        float v = to_float(dt_raw[r]) + dt_bias[h];
        float grad = ddelta[((size_t)b * s.H + h) * s.T + t] / (1.0f + expf(-v));
        ddt_raw[r] = from_float<floatX>(grad);
        sum += grad;
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) atomicAdd(ddt_bias + h, sum);
}

/* dB, dC from the fp32 accumulator into their columns of dxBC */
__global__ void ssd_dBC_store_kernel(floatX *dxBC, const float *dBC, SSDScanShape s) {
    size_t BC2 = 2 * (size_t)s.G * s.N, i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)s.B * s.T * BC2) return;
    size_t r = i / BC2, k = i % BC2;
    dxBC[r * s.conv_dim + s.H * s.P + k] = from_float<floatX>(dBC[i]);
}

/* ------------------------------------------------------------------------------------------------
 * Launchers
 */
template <typename Kernel>
static void ssd_set_smem(Kernel kernel, size_t bytes) {
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int N_>
static void ssd_launch_forward_scan(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                    const float *A_log, const float *D, cudaStream_t stream) {
    dim3 grid(s->P / SSD_PTILE, ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_tile_bytes<N_>(s);
    if (s->diagonal) {
        ssd_set_smem(ssd_chunk_scan_forward_kernel<N_, true>, smem);
        ssd_chunk_scan_forward_kernel<N_, true><<<grid, SSD_THREADS, smem, stream>>>(y, xBC, ws->delta, ws->dcum,
                                                                                     ws->states, A_log, D, *s);
    } else {
        ssd_set_smem(ssd_chunk_scan_forward_kernel<N_, false>, smem);
        ssd_chunk_scan_forward_kernel<N_, false><<<grid, SSD_THREADS, smem, stream>>>(y, xBC, ws->delta, ws->dcum,
                                                                                      ws->states, A_log, D, *s);
    }
    cudaCheckLaunch();
}

template <int N_>
static void ssd_launch_reduce(const SSDScanShape *s, float *out, const floatX *u_src, const floatX *xBC,
                              const SSDScanWorkspace *ws, const float *A_log, int mode, cudaStream_t stream) {
    dim3 grid(s->P / SSD_PTILE, ssd_num_chunks(s), s->B * s->H);
    ssd_chunk_reduce_kernel<N_><<<grid, SSD_THREADS, 0, stream>>>(out, u_src, xBC, ws->delta, ws->dcum, A_log, *s, mode);
    cudaCheckLaunch();
}

template <int N_>
static void ssd_launch_backward_scan(const SSDScanShape *s, floatX *dxBC, float *dA_log, float *dD, const floatX *dy,
                                     const floatX *xBC, const SSDScanWorkspace *ws, const float *A_log,
                                     const float *D, cudaStream_t stream) {
    dim3 grid(s->P / SSD_PTILE, ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_tile_bytes<N_>(s);
    if (s->diagonal) {
        ssd_set_smem(ssd_chunk_scan_backward_kernel<N_, true>, smem);
        ssd_chunk_scan_backward_kernel<N_, true><<<grid, SSD_THREADS, smem, stream>>>(
            dxBC, ws->dBC, ws->ddelta, dA_log, dD, dy, xBC, ws->delta, ws->dcum, ws->states, ws->dstates, A_log, D, *s);
    } else {
        ssd_set_smem(ssd_chunk_scan_backward_kernel<N_, false>, smem);
        ssd_chunk_scan_backward_kernel<N_, false><<<grid, SSD_THREADS, smem, stream>>>(
            dxBC, ws->dBC, ws->ddelta, dA_log, dD, dy, xBC, ws->delta, ws->dcum, ws->states, ws->dstates, A_log, D, *s);
    }
    cudaCheckLaunch();
}

#define SSD_DISPATCH_N(N, CALL)                      \
    switch (N) {                                     \
    case 16: CALL(16); break;                        \
    case 32: CALL(32); break;                        \
    case 64: CALL(64); break;                        \
    default: CALL(128); break;                       \
    }

void ssd_scan_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                      const float *A_log, const float *D, void *workspace, cudaStream_t stream) {
    ssd_scan_check_shape(s);
    SSDScanWorkspace ws = ssd_scan_workspace_view(s, workspace, NULL);
    dim3 dt_grid(ssd_num_chunks(s), s->H, s->B);
    ssd_dt_forward_kernel<<<dt_grid, ceil_div(s->Q, 32) * 32, 0, stream>>>(ws.delta, ws.dcum, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
#define SSD_FWD_REDUCE(NN) ssd_launch_reduce<NN>(s, ws.states, xBC, xBC, &ws, A_log, SSD_REDUCE_STATES, stream)
    SSD_DISPATCH_N(s->N, SSD_FWD_REDUCE)
#undef SSD_FWD_REDUCE
    dim3 pass_grid(ceil_div((long)s->P * s->N, 256), s->B * s->H);
    ssd_state_passing_kernel<<<pass_grid, 256, 0, stream>>>(ws.states, ws.dcum, A_log, *s, 0);
    cudaCheckLaunch();
#define SSD_FWD_SCAN(NN) ssd_launch_forward_scan<NN>(s, y, xBC, &ws, A_log, D, stream)
    SSD_DISPATCH_N(s->N, SSD_FWD_SCAN)
#undef SSD_FWD_SCAN
}

void ssd_scan_backward(const SSDScanShape *s, floatX *dxBC, floatX *ddt_raw, float *ddt_bias, float *dA_log, float *dD,
                       const floatX *dy, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                       const float *A_log, const float *D, void *workspace, cudaStream_t stream) {
    ssd_scan_check_shape(s);
    SSDScanWorkspace ws = ssd_scan_workspace_view(s, workspace, NULL);
    cudaCheck(cudaMemsetAsync(ws.ddelta, 0, (size_t)s->B * s->H * s->T * sizeof(float), stream));
    cudaCheck(cudaMemsetAsync(ws.dBC, 0, (size_t)s->B * s->T * 2 * s->G * s->N * sizeof(float), stream));
#define SSD_BWD_REDUCE(NN) ssd_launch_reduce<NN>(s, ws.dstates, dy, xBC, &ws, A_log, SSD_REDUCE_DSTATES, stream)
    SSD_DISPATCH_N(s->N, SSD_BWD_REDUCE)
#undef SSD_BWD_REDUCE
    dim3 pass_grid(ceil_div((long)s->P * s->N, 256), s->B * s->H);
    ssd_state_passing_kernel<<<pass_grid, 256, 0, stream>>>(ws.dstates, ws.dcum, A_log, *s, 1);
    cudaCheckLaunch();
#define SSD_BWD_SCAN(NN) ssd_launch_backward_scan<NN>(s, dxBC, dA_log, dD, dy, xBC, &ws, A_log, D, stream)
    SSD_DISPATCH_N(s->N, SSD_BWD_SCAN)
#undef SSD_BWD_SCAN
    ssd_dt_backward_kernel<<<dim3(s->H, s->B), 256, 0, stream>>>(ddt_raw, ddt_bias, ws.ddelta, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
    long nbc = (long)s->B * s->T * 2 * s->G * s->N;
    ssd_dBC_store_kernel<<<ceil_div(nbc, 256), 256, 0, stream>>>(dxBC, ws.dBC, *s);
    cudaCheckLaunch();
}

#endif
