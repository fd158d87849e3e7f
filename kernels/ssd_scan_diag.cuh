/*
 * The tensor-core path of the SSD scan for a diagonal A (SSD_PATH_MMA with s.diagonal; bf16 builds, heads of
 * width P <= 64, N <= 128): its chunk states and dstates run on tensor cores (ssdm_states_kernel, DIAG), its
 * forward chunk scan is the kernel below, and its backward chunk scan is the sub-block path's
 * (ssd_sub_scan_backward_rest). The states are fp32 [B][H][nchunks][P][N] as in the sub-block path.
 *
 * Forward, for the 64 steps t of the block's tile, with dc_t the inclusive cumulative sum of delta in the
 * chunk and one rate A_n < 0 per state:
 *   y_t[p] = sum_n C_t[n] exp(A_n dc_t) S_in[p][n] + sum_{s <= t} M[t][s] delta_s x_s[p] + D x_t[p],
 *   M[t][s] = sum_n C_t[n] B_s[n] exp(A_n (dc_t - dc_s)).
 * The decay of M depends on n, so M is not C B^T times a decay. It factors through any reference r with
 * dc_s <= r <= dc_t, both factors <= 1 (no overflow; a factor that underflows bounds the product below it):
 *   M[t][s] = sum_n (C_t[n] exp(A_n (dc_t - r))) (B_s[n] exp(A_n (r - dc_s))),
 * a GEMM over n of two decayed operands. For an earlier s tile, r is the dc at its last step (one GEMM of
 * 64 x 64 over N). Inside the diagonal tile, each warp's 16 rows t meet the 16-step sub-blocks j before
 * its own through r_j, the dc at the end of sub-block j (a 16 x 16 GEMM each), and its own sub-block
 * (s, t in one 16-step block, where no r lies between every pair) directly: one exp per (t, s, n) in fp32.
 * The decayed operands are split into bf16 value and remainder (three MMAs: value x value, remainder x
 * value, value x remainder), so M keeps ~16-bit operands; M delta and S_in then enter as single bf16, as the
 * scalar path's y does (nothing in the backward reads y). Document boundaries: as in ssd_scan_mma.cuh
 * (tile pairs apart skipped, the state part 0 at the steps of another document than S_in's).
 */
#ifndef SSD_KERNELS_SSD_SCAN_DIAG_CUH
#define SSD_KERNELS_SSD_SCAN_DIAG_CUH

#include "ssd_scan_mma.cuh"
#include "ssd_scan_sub.cuh"

/* shared memory of the diagonal forward: C_t [64][LN]; S_in, then each s tile's B and its decayed value
 * plane [64][LN]; the decayed remainder plane [64][LN]; x_s [64][LP]; dc_s, delta_s [64]; the rates [N];
 * the s tile's documents [64] */
template <int N_>
static size_t ssdd_forward_smem(void) {
    return sizeof(ssdm_bf16) * (3 * SSDM_TILE * (N_ + SSDM_PAD) + SSDM_TILE * SSDM_LP) +
           sizeof(float) * (2 * SSDM_TILE + N_) + sizeof(int) * SSDM_TILE;
}

/* an fp32 state [P][N] as bf16 rows of dst [64][ld] (rows p >= P zero) */
template <int N_>
__device__ __forceinline__ void ssdd_load_state(ssdm_bf16 *dst, int ld, const float *src, int P) {
    for (int i = threadIdx.x; i < SSDM_TILE * N_ / 4; i += SSDM_THREADS) {
        int p = i / (N_ / 4), n = 4 * (i % (N_ / 4));
        float4 v = p < P ? *reinterpret_cast<const float4 *>(src + p * N_ + n) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        *reinterpret_cast<uint2 *>(dst + p * ld + n) =
            make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
    }
}

/* acc[WIDTH n8 tiles] += the warp's 16 rows t of C_t[n] exp(A_n (dc_t - r)) scale_t (formed in registers and
 * split into value and remainder) times rows n0.. of b stored [n][k] (value plane b_hi; remainder plane
 * b_lo, or NULL for an exact b), over K = 16 KBLOCKS states. dct, scale: the thread's two rows (ssdm_row). */
template <int KBLOCKS, int WIDTH>
__device__ __forceinline__ void ssdd_mma_decayed(float (*acc)[4], const ssdm_bf16 *Cs, int ldc, const float *A_s,
                                                 const float (&dct)[2], const float (&scale)[2], float r,
                                                 const ssdm_bf16 *b_hi, const ssdm_bf16 *b_lo, int ldb, int n0) {
    int q = 2 * (threadIdx.x & 3);
#pragma unroll
    for (int kb = 0; kb < KBLOCKS; kb++) {
        uint32_t hi[4], lo[4];
#pragma unroll
        for (int reg = 0; reg < 4; reg++) { /* A fragment: rows ssdm_row(reg & 1), columns k, k + 1 */
            int i = reg & 1, k = 16 * kb + q + 8 * (reg >> 1);
            float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Cs + ssdm_row(i) * ldc + k));
            float e = dct[i] - r;
            SSDSplit v = ssd_split_bf16(c.x * __expf(A_s[k] * e) * scale[i], c.y * __expf(A_s[k + 1] * e) * scale[i]);
            hi[reg] = v.hi;
            lo[reg] = v.lo;
        }
#pragma unroll
        for (int j = 0; j < WIDTH; j += 2) {
            uint32_t b[4];
            ssdm_load_b(b, b_hi, ldb, n0 + 8 * j, 16 * kb);
            ssdm_mma2(acc + j, hi, b);
            ssdm_mma2(acc + j, lo, b);
            if (b_lo) {
                ssdm_load_b(b, b_lo, ldb, n0 + 8 * j, 16 * kb);
                ssdm_mma2(acc + j, hi, b);
            }
        }
    }
}

/* M on the warp's own 16 x 16 block of the diagonal tile (rows and columns 16 warp..), directly:
 * d[jj][e] = sum_n C_t[n] B_s[n] exp(A_n max(dc_t - dc_s, 0)) at the thread's accumulator places of n8 tiles
 * 2 warp + jj (row ssdm_row(e >> 1), column ssdm_col(2 warp + jj, e & 1)); the places s > t get finite values
 * that the mask then drops. Bs holds the tile's B, dc_s its dc. */
template <int N_>
__device__ __forceinline__ void ssdd_direct(float (&d)[2][4], const ssdm_bf16 *Cs, const ssdm_bf16 *Bs, int ld,
                                            const float *A_s, const float (&dct)[2], const float *dc_s) {
    int warp = threadIdx.x >> 5, sl[4];
    float dcs[4];
#pragma unroll
    for (int k = 0; k < 4; k++) { /* k = 2 jj + (e & 1) */
        sl[k] = ssdm_col(2 * warp + (k >> 1), k & 1);
        dcs[k] = dc_s[sl[k]];
    }
#pragma unroll
    for (int jj = 0; jj < 2; jj++)
#pragma unroll
        for (int e = 0; e < 4; e++) d[jj][e] = 0.0f;
#pragma unroll 4
    for (int n = 0; n < N_; n += 2) {
        float2 An = make_float2(A_s[n], A_s[n + 1]), c[2], b[4];
#pragma unroll
        for (int i = 0; i < 2; i++)
            c[i] = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Cs + ssdm_row(i) * ld + n));
#pragma unroll
        for (int k = 0; k < 4; k++) b[k] = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Bs + sl[k] * ld + n));
#pragma unroll
        for (int jj = 0; jj < 2; jj++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1, k = 2 * jj + (e & 1);
                float gap = fmaxf(dct[i] - dcs[k], 0.0f);
                d[jj][e] += c[i].x * b[k].x * __expf(An.x * gap) + c[i].y * b[k].y * __expf(An.y * gap);
            }
    }
}

template <int N_, bool SEG>
__global__ void __launch_bounds__(SSDM_THREADS, 3) ssdd_forward_kernel(floatX *y, const floatX *xBC, const float *delta,
                                                                   const float *dcum, const float *states,
                                                                   const int *segment, const float *A_log,
                                                                   const float *D, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, KN = N_ / 16;
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *Cs = (ssdm_bf16 *)ssdm_smem, *Bhi = Cs + SSDM_TILE * LN, *Blo = Bhi + SSDM_TILE * LN;
    ssdm_bf16 *Xs = Blo + SSDM_TILE * LN;
    float *dc_s = (float *)(Xs + SSDM_TILE * SSDM_LP), *dl_s = dc_s + SSDM_TILE, *A_s = dl_s + SSDM_TILE;
    int *seg_s = (int *)(A_s + N_);
    SSDMPlace w = ssdm_place(s);
    if (w.nrows <= 0) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, warp = threadIdx.x >> 5;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int b_col = s.H * P + w.g * N_, c_col = s.H * P + s.G * N_ + w.g * N_;
    for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) A_s[n] = ssd_rate(A_log, w.h, n, N_, 1);
    ssdm_load_rows(Cs, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, c_col, N_, w.nrows);
    ssdd_load_state<N_>(Bhi, LN, states + ((size_t)w.bh * w.nc + w.c) * P * N_, P);
    float dct[2], in_doc[2];
    int segt[2], seg_in = ssd_segment_before(segment, s, w.b, w.t0);
#pragma unroll
    for (int i = 0; i < 2; i++) dct[i] = ssdm_row(i) < w.nrows ? dc[w.row0 + ssdm_row(i)] : dc_last;
    ssdm_row_segments(segt, segment, s, w.b, w.t0 + w.row0, w.nrows);
#pragma unroll
    for (int i = 0; i < 2; i++) in_doc[i] = segt[i] == seg_in ? 1.0f : 0.0f;
    ssdm_cp_wait();
    __syncthreads();
    /* state part: (C_t exp(A dc_t)) . S_in[p], at the steps of S_in's document (reference 0: the chunk's start) */
    float acc[8][4] = {};
    ssdd_mma_decayed<KN, 8>(acc, Cs, LN, A_s, dct, in_doc, 0.0f, Bhi, NULL, LN, 0);
    const float ones[2] = {1.0f, 1.0f};
    /* intra-chunk part, s tiles up to the diagonal one: those apart from the block's tile skipped, those in
     * one document with it unmasked */
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, false);
    for (int st = 0; st <= w.tile; st++) {
        if (SEG && ssdm_pair_apart(pairs, st)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, st), diag = st == w.tile;
        int s0 = st * SSDM_TILE, srows = min(SSDM_TILE, w.len - s0);
        __syncthreads();
        ssdm_load_rows(Xs, SSDM_LP, SSDM_TILE, xBC + (row + s0) * s.conv_dim, s.conv_dim, w.h * P, P, srows);
        ssdm_load_rows(Bhi, LN, N_, xBC + (row + s0) * s.conv_dim, s.conv_dim, b_col, N_, srows);
        ssdm_load_steps(dc_s, dl_s, dc + s0, dl + s0, srows, dc_last);
        if (!one) ssdm_load_segments(seg_s, segment, s, w.b, w.t0 + s0, srows);
        ssdm_cp_wait();
        __syncthreads();
        float m[8][4] = {};
        if (diag) {
            float d[2][4];
            ssdd_direct<N_>(d, Cs, Bhi, LN, A_s, dct, dc_s);
#pragma unroll
            for (int jw = 0; jw < 4; jw++) /* into the warp's own two n8 tiles, at compile-time indices */
                if (jw == warp)
#pragma unroll
                    for (int e = 0; e < 4; e++) m[2 * jw][e] = d[0][e], m[2 * jw + 1][e] = d[1][e];
            __syncthreads();
        }
        /* B_s exp(A_n (r - dc_s)) split in place, r the dc at the end of s's group: the tile, or inside the
         * diagonal tile its 16-step sub-block */
        int group_end = diag ? 15 : SSDM_TILE - 1;
        for (int i = threadIdx.x; i < SSDM_TILE * N_ / 2; i += SSDM_THREADS) {
            int r = i / (N_ / 2), n = 2 * (i % (N_ / 2));
            float e = dc_s[r | group_end] - dc_s[r];
            float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Bhi + r * LN + n));
            SSDSplit x = ssd_split_bf16(v.x * __expf(A_s[n] * e), v.y * __expf(A_s[n + 1] * e));
            *reinterpret_cast<uint32_t *>(Bhi + r * LN + n) = x.hi;
            *reinterpret_cast<uint32_t *>(Blo + r * LN + n) = x.lo;
        }
        __syncthreads();
        if (diag) {
#pragma unroll
            for (int j = 0; j < 3; j++) /* the sub-blocks before the warp's own (warp-uniform) */
                if (j < warp) ssdd_mma_decayed<KN, 2>(m + 2 * j, Cs, LN, A_s, dct, ones, dc_s[16 * j + 15], Bhi, Blo, LN, 16 * j);
        } else {
            ssdd_mma_decayed<KN, 8>(m, Cs, LN, A_s, dct, ones, dc_s[SSDM_TILE - 1], Bhi, Blo, LN, 0);
        }
        if (one) ssdm_decay_s<false, false>(m, dc_s, dl_s, seg_s, dct, segt, 0.0f, s0, w.row0);
        else ssdm_decay_s<true, false>(m, dc_s, dl_s, seg_s, dct, segt, 0.0f, s0, w.row0);
        ssdm_mma_acc_t<4, 8, false>(acc, m, Xs, SSDM_LP, 0);
    }
    ssdm_store_y(y, acc, Xs, D[w.h], row + w.row0, w.nrows, s.H * P, w.h * P, P);
}

template <int N_>
static void ssdd_launch_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                const int *segment, const float *A_log, const float *D, cudaStream_t stream) {
    size_t smem = ssdd_forward_smem<N_>();
    auto kernel = segment ? ssdd_forward_kernel<N_, true> : ssdd_forward_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>(y, xBC, ws->delta, ws->dcum, ws->states, segment, A_log, D, *s);
    cudaCheckLaunch();
}

/* the path's forward and backward (called by ssd_scan_dispatch) */
template <int N_>
static void ssdd_scan_forward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    ssd_launch_dt_forward(s, ws, c->dt_raw, c->dt_bias, c->stream);
    ssdm_launch_states<N_>(s, ws->states, c->xBC, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_STATES,
                           c->stream);
    ssd_launch_passing(s, ws->states, NULL, c->state_in, c->state_out, c->segment, ws, c->A_log, 0, c->stream);
    ssdd_launch_forward<N_>(s, c->y, c->xBC, ws, c->segment, c->A_log, c->D, c->stream);
}

template <int N_>
static void ssdd_scan_backward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    ssdm_launch_states<N_>(s, ws->dstates, c->dy, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_DSTATES,
                           c->stream);
    ssd_sub_scan_backward_rest<N_>(s, c);
}

#endif
