/*
 * The tensor-core path of the SSD scan for a diagonal A (SSD_PATH_MMA with s.diagonal; bf16 builds, heads of
 * width P <= 64, N <= 128): one rate A_n < 0 per state, so every decay inside a chunk is per state,
 * L_n[t][s] = exp(A_n (dc_t - dc_s)) for s <= t (dc: the inclusive cumulative sum of delta in the chunk).
 * Its chunk states and dstates are ssdm_states_kernel's DIAG variant; the states stay fp32
 * [B][H][nchunks][P][N] as in the sub-block path, and delta, dc, the state passing and the sums are shared.
 *
 * The factoring. A decay depends on n, so the intra-chunk products are not C B^T times a decay. They factor
 * through any reference r with dc_s <= r <= dc_t, each factor <= 1 (no overflow; a factor that underflows
 * leaves a product below it):  L_n[t][s] = exp(A_n (dc_t - r)) exp(A_n (r - dc_s)).
 * With r between two blocks of steps, a block pair is a GEMM over n of two decayed operands (or a GEMM with
 * the other factor applied to its output, where n is the output index). The references: between an earlier
 * 64-step tile and the block's, r is a dc at their boundary; inside the diagonal tile, each warp's 16 steps
 * meet the other 16-step sub-blocks through the dc at a sub-block edge. In the 16 x 16 block on the diagonal
 * no r lies between every pair: with r at one of its edges one factor is >= 1, bounded by 2^(max |A_n|
 * log2(e) x its span of dc). Up to 2^64 it is a GEMM like the others (ssdd_own_factors); for steeper decays
 * its sums take one exp per (t, s, n) in fp32 (the "direct" sums, exact at any decay).
 * Derived operands are split into bf16 value and remainder (three MMAs: value x value, remainder x value,
 * value x remainder), ~16-bit operands as in the scalar path; y takes single bf16 products of M delta and
 * S_in, as the scalar path's y does (nothing in the backward reads y).
 *
 *   forward:  y_t    = sum_n C_t[n] exp(A_n dc_t) S_in[p][n] + sum_{s<=t} M[t][s] delta_s x_s + D x_t,
 *             M[t][s] = sum_n C_t[n] B_s[n] L_n[t][s]
 *   dC:       dC_t[n] = exp(A_n dc_t) (dy_t S_in)[n] + sum_{s<=t} W[t][s] delta_s B_s[n] L_n[t][s],
 *             W[t][s] = dy_t . x_s
 *   dx, dB:   gb_s    = sum_n B_s[n] exp(A_n (dc_last - dc_s)) G_out[:, n] + sum_{t>=s} M[t][s] dy_t,
 *             dx_s = D dy_s + delta_s gb_s,   din_s = x_s . gb_s,
 *             dB_s[n] = delta_s (exp(A_n (dc_last - dc_s)) (x_s G_out)[n] + sum_{t>=s} W[t][s] C_t[n] L_n[t][s])
 *   d delta:  z_t[n] = C_t[n] dC_t[n] - B_t[n] dB_t[n] (this head's shares), gs[n] = <G_out, S_out>[:, n],
 *             d delta_t = sum_n A_n (sum_{t'>=t} z_t'[n] + gs[n]) + din_t,
 *             dA_log[n] += A_n (sum_t z_t[n] dc_t + gs[n] dc_last)
 * Kernels, each a block of 4 warps per (64-step tile, chunk, batch*head): forward; dC (on the side stream);
 * gb and dB (one template, two launches: the two accumulators in one kernel cost half its occupancy);
 * d delta. The dC and dB kernels write zc_t = sum_n A_n C_t[n] dC_t[n] and zb_s = sum_n A_n B_s[n] dB_s[n]
 * (the rates folded in), and per state the tile's sums of C dC dc and B dB dc; ssdd_ddelta_kernel finishes
 * both sums.
 * Document boundaries: as in ssd_scan_mma.cuh (tile pairs apart skipped, masks on the block pairs, the
 * state parts 0 at the steps of another document than the state's).
 */
#ifndef SSD_KERNELS_SSD_SCAN_DIAG_CUH
#define SSD_KERNELS_SSD_SCAN_DIAG_CUH

#include "ssd_scan_mma.cuh"

/* ------------------------------------------------------------------------------------------------
 * Building blocks. Accumulator tiles are the warp's 16 rows (ssdm_row) by 8 columns (ssdm_col) as in
 * ssd_scan_mma.cuh; A_s holds the head's rates times log2(e), so a decay exp(A_n u) is one exp2 (ex2.approx)
 * of A_s[n] u. Every u below is >= 0 by the choice of reference (rows past the chunk's end hold the last dc),
 * except in a warp's own 16-step sub-block factored through a reference inside it (ssdd_own_factors).
 */
#define SSDD_LOG2E 1.44269504088896341f
#define SSDD_LN2 0.693147180559945309f
__device__ __forceinline__ float ssdd_rate2(const float *A_log, int h, int n, int N) {
    return ssd_rate(A_log, h, n, N, 1) * SSDD_LOG2E;
}
__device__ __forceinline__ float ssdd_decay(float A2, float u) { return exp2f(A2 * u); }

/* Whether the warp's own 16-step sub-block of the tile (dc of the tile's steps in dc_tile, the dc before the
 * tile in before) factors like the others: through a reference at one of its edges, one factor of each pair
 * is >= 1, at most 2^(max_n |A_n log2(e)| span) for the sub-block's span of dc. Up to 2^64 both factors, and
 * their bf16 value and remainder, stay far inside bf16's range (2^+-126), so the product keeps its ~16-bit
 * operands; else (decays too steep for it) the sub-block's sums run direct, one exp per term. */
__device__ __forceinline__ bool ssdd_own_factors(const float *A_s, int N, const float *dc_tile, float before) {
    int warp = threadIdx.x >> 5;
    float amax = 0.0f;
    for (int n = threadIdx.x & 31; n < N; n += 32) amax = fmaxf(amax, fabsf(A_s[n]));
    for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffff, amax, offset));
    float start = warp > 0 ? dc_tile[16 * warp - 1] : before;
    return amax * (dc_tile[16 * warp + 15] - start) <= 64.0f;
}

/* the thread's two rows (ssdm_row) of the block's tile: their dc (the last one past the chunk's end), their
 * documents, and 1 or 0 as each is in document `key` (the state entering the chunk, or the chunk's last step) */
__device__ __forceinline__ void ssdd_rows(float (&dc_i)[2], int (&seg_i)[2], float (&in_key)[2], const float *dc,
                                          float dc_last, const int *segment, const SSDScanShape &s, const SSDMPlace &w,
                                          int key) {
#pragma unroll
    for (int i = 0; i < 2; i++) dc_i[i] = ssdm_row(i) < w.nrows ? dc[w.row0 + ssdm_row(i)] : dc_last;
    ssdm_row_segments(seg_i, segment, s, w.b, w.t0 + w.row0, w.nrows);
#pragma unroll
    for (int i = 0; i < 2; i++) in_key[i] = seg_i[i] == key ? 1.0f : 0.0f;
}

/* an fp32 state [P][N] times exp(A_n u) per column n, into bf16 rows of hi [64][ld] (value) and lo (remainder;
 * NULL: the value only); rows p >= P zero */
template <int N_>
__device__ __forceinline__ void ssdd_load_state(ssdm_bf16 *hi, ssdm_bf16 *lo, int ld, const float *__restrict__ src,
                                                int P, const float *A_s, float u) {
    constexpr int PER = SSDM_TILE * N_ / 4 / SSDM_THREADS, BATCH = PER < 8 ? PER : 8; /* float4 loads per thread */
#pragma unroll 1
    for (int b0 = 0; b0 < PER; b0 += BATCH) {
        float4 v[BATCH]; /* a batch of loads in flight before the first store */
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            int i = threadIdx.x + (b0 + k) * SSDM_THREADS, p = i / (N_ / 4), n = 4 * (i % (N_ / 4));
            v[k] = p < P ? __ldg(reinterpret_cast<const float4 *>(src + p * N_ + n)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int k = 0; k < BATCH; k++) {
            int i = threadIdx.x + (b0 + k) * SSDM_THREADS, p = i / (N_ / 4), n = 4 * (i % (N_ / 4));
            SSDSplit x0 = ssd_split_bf16(v[k].x * ssdd_decay(A_s[n], u), v[k].y * ssdd_decay(A_s[n + 1], u));
            SSDSplit x1 = ssd_split_bf16(v[k].z * ssdd_decay(A_s[n + 2], u), v[k].w * ssdd_decay(A_s[n + 3], u));
            *reinterpret_cast<uint2 *>(hi + p * ld + n) = make_uint2(x0.hi, x1.hi);
            if (lo) *reinterpret_cast<uint2 *>(lo + p * ld + n) = make_uint2(x0.lo, x1.lo);
        }
    }
}

/* rows r of a bf16 tile in hi [64][ld] times exp(A_n e[r]), in place: value in hi, remainder in lo */
template <int N_>
__device__ __forceinline__ void ssdd_decay_rows(ssdm_bf16 *hi, ssdm_bf16 *lo, int ld, const float *A_s, const float *e) {
#pragma unroll 2
    for (int i = threadIdx.x; i < SSDM_TILE * N_ / 2; i += SSDM_THREADS) {
        int r = i / (N_ / 2), n = 2 * (i % (N_ / 2));
        float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(hi + r * ld + n));
        SSDSplit x = ssd_split_bf16(v.x * ssdd_decay(A_s[n], e[r]), v.y * ssdd_decay(A_s[n + 1], e[r]));
        *reinterpret_cast<uint32_t *>(hi + r * ld + n) = x.hi;
        *reinterpret_cast<uint32_t *>(lo + r * ld + n) = x.lo;
    }
}

/* acc[WIDTH n8 tiles] += the warp's 16 rows i of R_i[n] exp(A_n u_i) scale_i (R stored [row][n], C or B rows;
 * formed in registers, split into value and remainder) times rows n0.. of b stored [n][k] (value plane b_hi;
 * remainder plane b_lo, or NULL for an exact b), over K = 16 KBLOCKS states. u, scale: the thread's two rows. */
template <int KBLOCKS, int WIDTH>
__device__ __forceinline__ void ssdd_mma_decayed(float (*acc)[4], const ssdm_bf16 *R, int ldr, const float *A_s,
                                                 const float (&u)[2], const float (&scale)[2],
                                                 const ssdm_bf16 *b_hi, const ssdm_bf16 *b_lo, int ldb, int n0) {
    int q = 2 * (threadIdx.x & 3);
#pragma unroll 1
    for (int kb = 0; kb < KBLOCKS; kb++) {
        uint32_t hi[4], lo[4];
#pragma unroll
        for (int reg = 0; reg < 4; reg++) { /* A fragment: row ssdm_row(reg & 1), columns k, k + 1 */
            int i = reg & 1, k = 16 * kb + q + 8 * (reg >> 1);
            float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(R + ssdm_row(i) * ldr + k));
            SSDSplit v = ssd_split_bf16(c.x * ssdd_decay(A_s[k], u[i]) * scale[i], c.y * ssdd_decay(A_s[k + 1], u[i]) * scale[i]);
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

/* acc[NT n8 tiles over n] += W (the 16 x 16 K-block w in accumulator tiles, split) times the B operand
 * R[k][n] exp(A_n sign (dc_k[k] - ref)) of the block's 16 rows k of R (stored [k][n]), formed in registers:
 * the product with a warp's own reference, which a shared plane cannot hold */
template <int NT>
__device__ __forceinline__ void ssdd_mma_w_decayed(float (&acc)[NT][4], const float (&w)[2][4], const ssdm_bf16 *R,
                                                   int ld, const float *A_s, const float *dc_k, float ref, float sign) {
    uint32_t a_hi[4], a_lo[4];
    ssdm_split_a(a_hi, a_lo, w[0], w[1]);
    int g = (threadIdx.x & 31) >> 2, q = 2 * (threadIdx.x & 3);
    const int k[4] = {q, q + 1, q + 8, q + 9}; /* B fragment: (k, n = g) in b0 (k q, q + 1) and b1 (q + 8, q + 9) */
    float u[4];
#pragma unroll
    for (int i = 0; i < 4; i++) u[i] = sign * (dc_k[k[i]] - ref);
#pragma unroll
    for (int jn = 0; jn < NT; jn++) {
        int n = 8 * jn + g;
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = __bfloat162float(R[k[i] * ld + n]) * ssdd_decay(A_s[n], u[i]);
        SSDSplit b0 = ssd_split_bf16(v[0], v[1]), b1 = ssd_split_bf16(v[2], v[3]);
        ssd_mma_bf16(acc[jn], a_hi[0], a_hi[1], a_hi[2], a_hi[3], b0.hi, b1.hi);
        ssd_mma_bf16(acc[jn], a_lo[0], a_lo[1], a_lo[2], a_lo[3], b0.hi, b1.hi);
        ssd_mma_bf16(acc[jn], a_hi[0], a_hi[1], a_hi[2], a_hi[3], b0.lo, b1.lo);
    }
}

/* acc[t][n] *= exp(A_n u_t), u per the thread's two rows (ssdm_row) */
template <int NT>
__device__ __forceinline__ void ssdd_scale(float (&acc)[NT][4], const float *A_s, float u0, float u1) {
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] *= ssdd_decay(A_s[ssdm_col(j, e & 1)], e < 2 ? u0 : u1);
}

/* The 16 x 16 block of the warp's own rows and columns (16 warp..) of a decayed product, directly:
 * d[jj][e] = sum_n R_i[n] K_k[n] exp(A_n |dc_i - dc_k|), row i = ssdm_row(e >> 1) of R, column
 * k = ssdm_col(2 warp + jj, e & 1) of K (both stored [row][n], dc of the columns in dc_k). The places on the
 * wrong side of the diagonal get finite values that the caller's mask drops. */
template <int N_>
__device__ __forceinline__ void ssdd_direct(float (&d)[2][4], const ssdm_bf16 *R, const ssdm_bf16 *K, int ld,
                                            const float *A_s, const float (&dc_i)[2], const float *dc_k) {
    int warp = threadIdx.x >> 5, col[4];
    float dck[4];
#pragma unroll
    for (int k = 0; k < 4; k++) { /* k = 2 jj + (e & 1) */
        col[k] = ssdm_col(2 * warp + (k >> 1), k & 1);
        dck[k] = dc_k[col[k]];
    }
#pragma unroll
    for (int jj = 0; jj < 2; jj++)
#pragma unroll
        for (int e = 0; e < 4; e++) d[jj][e] = 0.0f;
#pragma unroll 2
    for (int n = 0; n < N_; n += 2) {
        float2 An = make_float2(A_s[n], A_s[n + 1]), r[2], kv[4];
#pragma unroll
        for (int i = 0; i < 2; i++)
            r[i] = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(R + ssdm_row(i) * ld + n));
#pragma unroll
        for (int k = 0; k < 4; k++) kv[k] = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(K + col[k] * ld + n));
#pragma unroll
        for (int jj = 0; jj < 2; jj++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int i = e >> 1, k = 2 * jj + (e & 1);
                float gap = fabsf(dc_i[i] - dck[k]);
                d[jj][e] += r[i].x * kv[k].x * exp2f(An.x * gap) + r[i].y * kv[k].y * exp2f(An.y * gap);
            }
    }
}

/* m's tiles 2 j, 2 j + 1 (K-block or 16 columns j, run-time) from or into a pair: selects over the
 * compile-time indices, since a register array takes no run-time index */
__device__ __forceinline__ void ssdd_get_pair(float (&p)[2][4], const float (&m)[8][4], int j) {
#pragma unroll
    for (int jj = 0; jj < 4; jj++)
        if (jj == j)
#pragma unroll
            for (int e = 0; e < 4; e++) p[0][e] = m[2 * jj][e], p[1][e] = m[2 * jj + 1][e];
}
__device__ __forceinline__ void ssdd_set_pair(float (&m)[8][4], const float (&p)[2][4], int j) {
#pragma unroll
    for (int jj = 0; jj < 4; jj++)
        if (jj == j)
#pragma unroll
            for (int e = 0; e < 4; e++) m[2 * jj][e] = p[0][e], m[2 * jj + 1][e] = p[1][e];
}

/* the warp's own 16 x 16 block of m (tiles 2 warp, 2 warp + 1) into Wb [16][17] (row: the warp's row) */
#define SSDD_WB_LD 17
__device__ __forceinline__ void ssdd_stage_own(float *Wb, const float (&m)[8][4]) {
    int warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, q = 2 * (threadIdx.x & 3);
#pragma unroll
    for (int jw = 0; jw < 4; jw++)
        if (jw == warp)
#pragma unroll
            for (int jj = 0; jj < 2; jj++)
#pragma unroll
                for (int e = 0; e < 4; e++) Wb[(g + 8 * (e >> 1)) * SSDD_WB_LD + 8 * jj + q + (e & 1)] = m[2 * jw + jj][e];
    __syncwarp();
}

/* acc[i][n] += sum_k Wb[i][k] R_k[n] exp(A_n |dc_i - dc_k[k]|) over the warp's own 16 steps k (R from its
 * first row, stored [k][n]): the output-side direct sums of dC and dB (Wb is 0 off the causal side) */
template <int NT>
__device__ __forceinline__ void ssdd_direct_out(float (&acc)[NT][4], const float *Wb, const ssdm_bf16 *R, int ld,
                                                const float *A_s, const float (&dc_i)[2], const float *dc_k) {
    int g = (threadIdx.x & 31) >> 2, q = 2 * (threadIdx.x & 3);
#pragma unroll 1
    for (int k = 0; k < 16; k++) {
        float w0 = Wb[g * SSDD_WB_LD + k], w1 = Wb[(g + 8) * SSDD_WB_LD + k];
        if (w0 == 0.0f && w1 == 0.0f) continue; /* the quad's two rows take nothing from step k */
        float u0 = fabsf(dc_i[0] - dc_k[k]), u1 = fabsf(dc_i[1] - dc_k[k]);
#pragma unroll
        for (int jn = 0; jn < NT; jn++) {
            int n = 8 * jn + q;
            float2 r = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(R + k * ld + n));
            acc[jn][0] += w0 * r.x * exp2f(A_s[n] * u0);
            acc[jn][1] += w0 * r.y * exp2f(A_s[n + 1] * u0);
            acc[jn][2] += w1 * r.x * exp2f(A_s[n] * u1);
            acc[jn][3] += w1 * r.y * exp2f(A_s[n + 1] * u1);
        }
    }
}

/* out[n] = the block's sum over its 64 rows of v (v[j][c]: the thread's two rows summed, column ssdm_col(j, c)),
 * in a fixed order (rows of a warp by shuffles, then the warps in order through red [4][N]) */
template <int NT>
__device__ __forceinline__ void ssdd_state_sums(float *out, const float (&v)[NT][2], float *red) {
    constexpr int N_ = 8 * NT;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); /* red may hold the warps' own blocks */
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int c = 0; c < 2; c++) {
            float x = v[j][c];
            x += __shfl_xor_sync(0xffffffff, x, 4);
            x += __shfl_xor_sync(0xffffffff, x, 8);
            x += __shfl_xor_sync(0xffffffff, x, 16);
            if (lane < 4) red[warp * N_ + ssdm_col(j, c)] = x;
        }
    __syncthreads();
    for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) out[n] = red[n] + red[N_ + n] + red[2 * N_ + n] + red[3 * N_ + n];
}

/* The epilogue of dC (which 1) and dB (which 0): the warp's rows i of this head's share v_i[n] = scale_i acc_i[n]
 * into dBC (bf16, [row][H][2][N]); z_i = sum_n A_n X_i[n] v_i[n] into z (X: the block's C or B rows, from xBC at
 * column col; A_s holds A log2(e)); the tile's sums over its rows of X v dc per state into za_out */
template <int NT>
__device__ __forceinline__ void ssdd_store_share(ssdm_bf16 *dBC, float *z, float *za_out, const float (&acc)[NT][4],
                                                 const float (&scale)[2], const floatX *xBC, int col, int which,
                                                 const float *A_s, const float (&dc_i)[2], float *red,
                                                 const SSDScanShape &s, const SSDMPlace &w) {
    constexpr int N_ = 8 * NT;
    float part[NT][2] = {};
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = ssdm_row(i);
        bool valid = r < w.nrows;
        size_t t_row = (size_t)w.b * s.T + w.t0 + w.row0 + r;
        ssdm_bf16 *out = dBC + t_row * s.H * 2 * N_ + w.h * 2 * N_ + which * N_;
        const floatX *x_in = xBC + t_row * s.conv_dim + col;
        float z_v = 0.0f;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int n = ssdm_col(j, 0);
            float v0 = scale[i] * acc[j][2 * i], v1 = scale[i] * acc[j][2 * i + 1];
            float2 xv = valid ? __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(x_in + n)) : make_float2(0.0f, 0.0f);
            float z0 = xv.x * v0, z1 = xv.y * v1;
            z_v += A_s[n] * z0 + A_s[n + 1] * z1;
            part[j][0] += z0 * dc_i[i];
            part[j][1] += z1 * dc_i[i];
            if (valid) *reinterpret_cast<__nv_bfloat162 *>(out + n) = __floats2bfloat162_rn(v0, v1);
        }
        z_v = ssdm_quad_sum(z_v) * SSDD_LN2;
        if (valid && (threadIdx.x & 3) == 0) z[(size_t)w.bh * s.T + w.t0 + w.row0 + r] = z_v;
    }
    ssdd_state_sums<NT>(za_out, part, red);
}

/* ------------------------------------------------------------------------------------------------
 * Forward: y for the tile's 64 steps t (s tiles up to the diagonal one). Against an earlier s tile the
 * reference is the dc at its last step; inside the diagonal tile, the warp's rows meet sub-block j < warp
 * (and their own where it factors, ssdd_own_factors) through the dc at the end of j, else their own sub-block
 * directly. Grid (tiles per chunk, nchunks, B*H).
 * Shared memory: C_t [64][LN]; S_in, then each s tile's B and its decayed value plane [64][LN]; the decayed
 * remainder plane [64][LN]; x_s [64][LP]; dc_s, delta_s, the planes' exponents [64]; the rates [N]; the
 * s tile's documents [64].
 */
static size_t ssdd_forward_smem(int N) {
    return sizeof(ssdm_bf16) * (3 * SSDM_TILE * (N + SSDM_PAD) + SSDM_TILE * SSDM_LP) +
           sizeof(float) * (3 * SSDM_TILE + N) + sizeof(int) * SSDM_TILE;
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
    float *dc_s = (float *)(Xs + SSDM_TILE * SSDM_LP), *dl_s = dc_s + SSDM_TILE, *e_s = dl_s + SSDM_TILE;
    float *A_s = e_s + SSDM_TILE;
    int *seg_s = (int *)(A_s + N_);
    SSDMPlace w = ssdm_place(s);
    if (w.nrows <= 0) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, warp = threadIdx.x >> 5;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int b_col = s.H * P + w.g * N_, c_col = s.H * P + s.G * N_ + w.g * N_;
    for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) A_s[n] = ssdd_rate2(A_log, w.h, n, N_);
    ssdm_load_rows(Cs, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, c_col, N_, w.nrows);
    float dct[2], in_doc[2];
    int segt[2];
    ssdd_rows(dct, segt, in_doc, dc, dc_last, segment, s, w, ssd_segment_before(segment, s, w.b, w.t0));
    __syncthreads();
    ssdd_load_state<N_>(Bhi, NULL, LN, states + ((size_t)w.bh * w.nc + w.c) * P * N_, P, A_s, 0.0f);
    ssdm_cp_wait();
    __syncthreads();
    /* state part: (C_t exp(A dc_t)) . S_in[p], at the steps of S_in's document (reference 0: the chunk's start) */
    float acc[8][4] = {};
    ssdd_mma_decayed<KN, 8>(acc, Cs, LN, A_s, dct, in_doc, Bhi, NULL, LN, 0);
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
        bool own_fac = diag && ssdd_own_factors(A_s, N_, dc_s, w.row0 > 0 ? dc[w.row0 - 1] : 0.0f);
        if (diag && !own_fac) {
            float d[2][4];
            ssdd_direct<N_>(d, Cs, Bhi, LN, A_s, dct, dc_s);
            ssdd_set_pair(m, d, warp);
        }
        /* B_s exp(A_n (r - dc_s)), r the dc at the end of s's group: the tile, or inside the diagonal tile its
         * 16-step sub-block */
        int group_end = diag ? 15 : SSDM_TILE - 1;
        for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) e_s[r] = dc_s[r | group_end] - dc_s[r];
        __syncthreads();
        ssdd_decay_rows<N_>(Bhi, Blo, LN, A_s, e_s);
        __syncthreads();
        if (diag) {
#pragma unroll 1
            for (int j = 0; j < warp + own_fac; j++) { /* the sub-blocks before the warp's own, and it if it factors */
                float u[2] = {dct[0] - dc_s[16 * j + 15], dct[1] - dc_s[16 * j + 15]}, t[2][4] = {};
                ssdd_mma_decayed<KN, 2>(t, Cs, LN, A_s, u, ones, Bhi, Blo, LN, 16 * j);
                ssdd_set_pair(m, t, j);
            }
        } else {
            float u[2] = {dct[0] - dc_s[SSDM_TILE - 1], dct[1] - dc_s[SSDM_TILE - 1]};
            ssdd_mma_decayed<KN, 8>(m, Cs, LN, A_s, u, ones, Bhi, Blo, LN, 0);
        }
        if (one) ssdm_decay_s<false, false>(m, dc_s, dl_s, seg_s, dct, segt, 0.0f, s0, w.row0);
        else ssdm_decay_s<true, false>(m, dc_s, dl_s, seg_s, dct, segt, 0.0f, s0, w.row0);
        ssdm_mma_acc_t<4, 8, false>(acc, m, Xs, SSDM_LP, 0);
    }
    ssdm_store_y(y, acc, Xs, D[w.h], row + w.row0, w.nrows, s.H * P, w.h * P, P);
}

/* ------------------------------------------------------------------------------------------------
 * Backward. Shared memory of its kernels: the block's own tile of P columns ([64][LP]; dC: dy_t, gb and dB:
 * x_s), its B ([64][LN], gb only), two planes [64][LN] (a state, then each other tile's B or C, decayed in
 * place: value, remainder), the other tile's P columns ([64][LP]; dC: x_s, gb and dB: dy_t), its dc, delta and
 * the planes' exponents [64], the rates [N], its documents [64], and (dC, dB) the warps' own 16 x 16 blocks of
 * W, then the per-state sums ([4][N]).
 */
struct SSDDSmem {
    ssdm_bf16 *own, *B, *hi, *lo, *other;
    float *dc, *dl, *e, *A, *red;
    int *seg;
};

__host__ __device__ static size_t ssdd_backward_carve(SSDDSmem *sm, unsigned char *base, int N, bool with_b) {
    /* with_b: the gb kernel, which keeps no W blocks and no per-state sums (3 blocks per SM fit 227 KB) */
    size_t off = 0, LN = N + SSDM_PAD, red = with_b ? 0 : 4 * 16 * SSDD_WB_LD > 4 * N ? 4 * 16 * SSDD_WB_LD : 4 * N;
    auto take = [&](size_t bytes) {
        unsigned char *p = base ? base + off : NULL;
        off += (bytes + 15) & ~(size_t)15;
        return p;
    };
    sm->own = (ssdm_bf16 *)take(sizeof(ssdm_bf16) * SSDM_TILE * SSDM_LP);
    sm->B = (ssdm_bf16 *)take(with_b ? sizeof(ssdm_bf16) * SSDM_TILE * LN : 0);
    sm->hi = (ssdm_bf16 *)take(sizeof(ssdm_bf16) * SSDM_TILE * LN);
    sm->lo = (ssdm_bf16 *)take(sizeof(ssdm_bf16) * SSDM_TILE * LN);
    sm->other = (ssdm_bf16 *)take(sizeof(ssdm_bf16) * SSDM_TILE * SSDM_LP);
    sm->dc = (float *)take(sizeof(float) * SSDM_TILE);
    sm->dl = (float *)take(sizeof(float) * SSDM_TILE);
    sm->e = (float *)take(sizeof(float) * SSDM_TILE);
    sm->A = (float *)take(sizeof(float) * N);
    sm->red = (float *)take(sizeof(float) * red);
    sm->seg = (int *)take(sizeof(int) * SSDM_TILE);
    return off;
}

static size_t ssdd_backward_smem(int N, bool with_b) {
    SSDDSmem sm;
    return ssdd_backward_carve(&sm, NULL, N, with_b);
}

/* where the tile's per-state sums go: za [B*H][nchunks][tiles][2][N], index 0 from dC, 1 from dB */
__device__ __forceinline__ float *ssdd_za(float *za, const SSDMPlace &w, int which, int N) {
    return za + ((((size_t)w.bh * w.nc + w.c) * gridDim.x + w.tile) * 2 + which) * N;
}

/* dC for the tile's 64 steps t (s tiles up to the diagonal one): this head's dC share (dBC index 1, bf16),
 * zc_t and the tile's sums of C dC dc. References: r0, the dc before the tile, for the state and the earlier
 * tiles (dC accumulates (dy S_in exp(A r0)) and W (B exp(A (r0 - dc_s))), all to be times exp(A (dc_t - r0)));
 * before the diagonal tile it moves to rw, the dc before the warp's 16 rows (times exp(A (rw - r0))), where
 * the sub-blocks j < warp (and its own where it factors, ssdd_own_factors) enter with B exp(A (rw - dc_s));
 * then times exp(A (dc_t - rw)), and the warp's own sub-block directly where it does not factor.
 * Grid (tiles per chunk, nchunks, B*H). */
template <int N_, bool SEG>
__global__ void __launch_bounds__(SSDM_THREADS, 3) ssdd_backward_dc_kernel(ssdm_bf16 *dBC, float *zc, float *za,
                                                                       const floatX *dy, const floatX *xBC,
                                                                       const float *delta, const float *dcum,
                                                                       const float *states, const int *segment,
                                                                       const float *A_log, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, NT = N_ / 8;
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    SSDDSmem sm;
    ssdd_backward_carve(&sm, ssdm_smem, N_, false);
    SSDMPlace w = ssdm_place(s);
    if (w.nrows <= 0) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, HP = s.H * P, warp = threadIdx.x >> 5;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int b_col = HP + w.g * N_, c_col = HP + s.G * N_ + w.g * N_;
    for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) sm.A[n] = ssdd_rate2(A_log, w.h, n, N_);
    ssdm_load_rows(sm.own, SSDM_LP, SSDM_TILE, dy + (row + w.row0) * HP, HP, w.h * P, P, w.nrows);
    float dct[2], in_doc[2];
    int segt[2];
    ssdd_rows(dct, segt, in_doc, dc, dc_last, segment, s, w, ssd_segment_before(segment, s, w.b, w.t0));
    int before_warp = min(w.row0 + 16 * warp, w.len);
    float r0 = w.row0 > 0 ? dc[w.row0 - 1] : 0.0f, rw = before_warp > 0 ? dc[before_warp - 1] : 0.0f;
    __syncthreads();
    ssdd_load_state<N_>(sm.hi, sm.lo, LN, states + ((size_t)w.bh * w.nc + w.c) * P * N_, P, sm.A, r0);
    ssdm_cp_wait();
    __syncthreads();
    /* state part: dy_t (S_in exp(A r0)), at the steps of S_in's document */
    float dC[NT][4] = {};
    ssdm_mma_rows<4, NT, true, true, true>(dC, sm.own, SSDM_LP, sm.hi, sm.lo, LN);
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) dC[j][e] *= in_doc[e >> 1];
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, false);
    for (int st = 0; st <= w.tile; st++) {
        if (SEG && ssdm_pair_apart(pairs, st)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, st), diag = st == w.tile;
        int s0 = st * SSDM_TILE, srows = min(SSDM_TILE, w.len - s0);
        if (diag) ssdd_scale<NT>(dC, sm.A, rw - r0, rw - r0);
        __syncthreads();
        ssdm_load_rows(sm.hi, LN, N_, xBC + (row + s0) * s.conv_dim, s.conv_dim, b_col, N_, srows);
        ssdm_load_rows(sm.other, SSDM_LP, SSDM_TILE, xBC + (row + s0) * s.conv_dim, s.conv_dim, w.h * P, P, srows);
        ssdm_load_steps(sm.dc, sm.dl, dc + s0, dl + s0, srows, dc_last);
        if (!one) ssdm_load_segments(sm.seg, segment, s, w.b, w.t0 + s0, srows);
        ssdm_cp_wait();
        __syncthreads();
        /* W[t][s] = (dy_t . x_s) delta_s, 0 for s > t and across documents */
        float m[8][4] = {};
        ssdm_mma_rows<4, 8, false, false, true>(m, sm.own, SSDM_LP, sm.other, NULL, SSDM_LP);
        if (one) ssdm_decay_s<false, false>(m, sm.dc, sm.dl, sm.seg, dct, segt, 0.0f, s0, w.row0);
        else ssdm_decay_s<true, false>(m, sm.dc, sm.dl, sm.seg, dct, segt, 0.0f, s0, w.row0);
        if (!diag) {
            for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) sm.e[r] = r0 - sm.dc[r];
            __syncthreads();
            ssdd_decay_rows<N_>(sm.hi, sm.lo, LN, sm.A, sm.e);
            __syncthreads();
            ssdm_mma_acc_t<4, NT>(dC, m, sm.hi, LN, 0, sm.lo);
        } else {
            bool own_fac = ssdd_own_factors(sm.A, N_, sm.dc, r0);
            float *Wb = sm.red + warp * 16 * SSDD_WB_LD;
            if (!own_fac) ssdd_stage_own(Wb, m);
#pragma unroll 1
            for (int j = 0; j < warp + own_fac; j++) {
                float t[2][4];
                ssdd_get_pair(t, m, j);
                ssdd_mma_w_decayed<NT>(dC, t, sm.hi + 16 * j * LN, LN, sm.A, sm.dc + 16 * j, rw, -1.0f);
            }
            ssdd_scale<NT>(dC, sm.A, dct[0] - rw, dct[1] - rw);
            if (!own_fac) ssdd_direct_out<NT>(dC, Wb, sm.hi + 16 * warp * LN, LN, sm.A, dct, sm.dc + 16 * warp);
        }
    }
    /* this head's dC share, zc_t = sum_n A_n C_t[n] dC_t[n], and the tile's sums of C dC dc per state */
    const float ones[2] = {1.0f, 1.0f};
    ssdd_store_share<NT>(dBC, zc, ssdd_za(za, w, 0, N_), dC, ones, xBC, c_col, 1, sm.A, dct, sm.red, s, w);
}

/* The backward of the tile's 64 steps s (t tiles from the chunk's last back to the diagonal one), in two
 * kernels of one template: gb (DB false: dx, din_s, the block's dD partial) and dB (DB true: this head's dB
 * share, dBC index 0, bf16; zb_s; the tile's sums of B dB dc per state; and, in the chunk's first tile,
 * gs[n] = <G_out, S_out>[:, n]). References: R, the dc at the tile's last step, for the state and the later
 * tiles (gb: B exp(A (R - dc_s)) against C exp(A (dc_t - R)); dB accumulates x G_out exp(A (dc_last - R)) and
 * W (C exp(A (dc_t - R))), all to be times exp(A (R - dc_s))). Before the diagonal tile dB moves to ew, the dc
 * at the end of the warp's 16 rows (times exp(A (R - ew))), where the sub-blocks j > warp (and its own where
 * it factors, ssdd_own_factors) enter with C exp(A (dc_t - ew)); then times exp(A (ew - dc_s)), and the warp's
 * own sub-block directly where it does not factor. The diagonal tile's gb meets sub-block j > warp (and its
 * own where it factors) through the dc before j, else its own sub-block directly.
 * Grid (tiles per chunk, nchunks, B*H). */
template <int N_, bool SEG, bool DB>
__global__ void __launch_bounds__(SSDM_THREADS, 3) ssdd_backward_s_kernel(
    floatX *dxBC, ssdm_bf16 *dBC, float *zb, float *din, float *dD_part, float *za, float *gs, const floatX *dy,
    const floatX *xBC, const float *delta, const float *dcum, const float *states, const float *dstates,
    const int *segment, const float *A_log, const float *D, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, KN = N_ / 16, NT = N_ / 8;
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    SSDDSmem sm;
    ssdd_backward_carve(&sm, ssdm_smem, N_, !DB);
    SSDMPlace w = ssdm_place(s);
    size_t dD_slot = (((size_t)w.b * w.nc + w.c) * gridDim.x + w.tile) * s.H + w.h;
    if (w.nrows <= 0) { /* a tile past the end of a short last chunk */
        if (!DB && threadIdx.x == 0) dD_part[dD_slot] = 0.0f;
        return;
    }
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, HP = s.H * P, warp = threadIdx.x >> 5;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0, chunk = (size_t)w.bh * w.nc + w.c;
    int b_col = HP + w.g * N_, c_col = HP + s.G * N_ + w.g * N_;
    for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) sm.A[n] = ssdd_rate2(A_log, w.h, n, N_);
    if (!DB) ssdm_load_rows(sm.B, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, b_col, N_, w.nrows);
    ssdm_load_rows(sm.own, SSDM_LP, SSDM_TILE, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, w.h * P, P, w.nrows);
    float dcs[2], dls[2], in_last[2];
    int segs[2];
    ssdd_rows(dcs, segs, in_last, dc, dc_last, segment, s, w, ssd_segment(segment, s, w.b, w.t0 + w.len - 1));
#pragma unroll
    for (int i = 0; i < 2; i++) dls[i] = ssdm_row(i) < w.nrows ? dl[w.row0 + ssdm_row(i)] : 0.0f;
    float R = dc[w.row0 + w.nrows - 1], ew = dc[min(w.row0 + 16 * warp + 16, w.len) - 1];
    float before_tile = w.row0 > 0 ? dc[w.row0 - 1] : 0.0f;
    const float *G = dstates + chunk * P * N_;
    if (DB && w.tile == 0) /* gs[n] = sum_p G_out[p][n] S_out[p][n]; S_out is the next chunk's entering state (the
                              last chunk has G_out = 0) */
        for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) {
            float sum = 0.0f;
            if (w.c + 1 < w.nc) {
                const float *S_out = states + (chunk + 1) * P * N_;
#pragma unroll 8
                for (int p = 0; p < P; p++) sum += __ldg(G + p * N_ + n) * __ldg(S_out + p * N_ + n);
            }
            gs[chunk * N_ + n] = sum;
        }
    __syncthreads();
    /* the state parts, at the steps of the chunk's last step's document: gb = (B_s exp(A (dc_last - dc_s)))
     * G_out^T, dB = x_s (G_out exp(A (dc_last - R))) */
    ssdd_load_state<N_>(sm.hi, sm.lo, LN, G, P, sm.A, DB ? dc_last - R : 0.0f);
    ssdm_cp_wait();
    __syncthreads();
    const float ones[2] = {1.0f, 1.0f};
    float acc[DB ? NT : 8][4] = {}; /* dB, or gb */
    if constexpr (DB) {
        ssdm_mma_rows<4, NT, true, true, true>(acc, sm.own, SSDM_LP, sm.hi, sm.lo, LN);
    } else {
        float u[2] = {dc_last - dcs[0], dc_last - dcs[1]};
        ssdd_mma_decayed<KN, 8>(acc, sm.B, LN, sm.A, u, ones, sm.hi, sm.lo, LN, 0);
    }
#pragma unroll
    for (int j = 0; j < (DB ? NT : 8); j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] *= in_last[e >> 1];
    /* t tiles from the chunk's last back to the diagonal one: those apart from the block's tile skipped, those in
     * one document with it unmasked */
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, true);
    int ntiles = (w.len + SSDM_TILE - 1) / SSDM_TILE;
    for (int tt = ntiles - 1; tt >= w.tile; tt--) {
        if (SEG && ssdm_pair_apart(pairs, tt)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, tt), diag = tt == w.tile;
        int r0 = tt * SSDM_TILE, trows = min(SSDM_TILE, w.len - r0);
        if constexpr (DB)
            if (diag) ssdd_scale<NT>(acc, sm.A, R - ew, R - ew);
        __syncthreads();
        ssdm_load_rows(sm.hi, LN, N_, xBC + (row + r0) * s.conv_dim, s.conv_dim, c_col, N_, trows);
        ssdm_load_rows(sm.other, SSDM_LP, SSDM_TILE, dy + (row + r0) * HP, HP, w.h * P, P, trows);
        ssdm_load_steps(sm.dc, NULL, dc + r0, NULL, trows, dc_last);
        if (!one) ssdm_load_segments(sm.seg, segment, s, w.b, w.t0 + r0, trows);
        ssdm_cp_wait();
        __syncthreads();
        float m[8][4] = {};
        if constexpr (DB) { /* W[s][t] = x_s . dy_t, 0 for t < s and across documents */
            ssdm_mma_rows<4, 8, false, false, true>(m, sm.own, SSDM_LP, sm.other, NULL, SSDM_LP);
            if (one) ssdm_decay_t<false, false>(m, sm.dc, sm.seg, dcs, segs, 0.0f, r0 - w.row0);
            else ssdm_decay_t<true, false>(m, sm.dc, sm.seg, dcs, segs, 0.0f, r0 - w.row0);
        }
        if (!diag) {
            for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) sm.e[r] = sm.dc[r] - R;
            __syncthreads();
            ssdd_decay_rows<N_>(sm.hi, sm.lo, LN, sm.A, sm.e);
            __syncthreads();
            if constexpr (DB) {
                ssdm_mma_acc_t<4, NT>(acc, m, sm.hi, LN, 0, sm.lo);
            } else { /* M^T[s][t] = (B_s exp(A (R - dc_s))) . (C_t exp(A (dc_t - R))) */
                float u[2] = {R - dcs[0], R - dcs[1]};
                ssdd_mma_decayed<KN, 8>(m, sm.B, LN, sm.A, u, ones, sm.hi, sm.lo, LN, 0);
            }
        } else if constexpr (DB) {
            bool own_fac = ssdd_own_factors(sm.A, N_, sm.dc, before_tile);
            float *Wb = sm.red + warp * 16 * SSDD_WB_LD;
            if (!own_fac) ssdd_stage_own(Wb, m);
#pragma unroll 1
            for (int j = own_fac ? warp : warp + 1; j < 4; j++) {
                float t[2][4];
                ssdd_get_pair(t, m, j);
                ssdd_mma_w_decayed<NT>(acc, t, sm.hi + 16 * j * LN, LN, sm.A, sm.dc + 16 * j, ew, 1.0f);
            }
            ssdd_scale<NT>(acc, sm.A, ew - dcs[0], ew - dcs[1]);
            if (!own_fac) ssdd_direct_out<NT>(acc, Wb, sm.hi + 16 * warp * LN, LN, sm.A, dcs, sm.dc + 16 * warp);
        } else { /* gb: sub-block j >= warp through the dc before j (the warp's own directly if it does not factor) */
            bool own_fac = ssdd_own_factors(sm.A, N_, sm.dc, before_tile);
            if (!own_fac) {
                float d[2][4];
                ssdd_direct<N_>(d, sm.B, sm.hi, LN, sm.A, dcs, sm.dc);
                ssdd_set_pair(m, d, warp);
            }
            for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS)
                sm.e[r] = sm.dc[r] - (r >= 16 ? sm.dc[(r & ~15) - 1] : before_tile);
            __syncthreads();
            ssdd_decay_rows<N_>(sm.hi, sm.lo, LN, sm.A, sm.e);
            __syncthreads();
#pragma unroll 1
            for (int j = own_fac ? warp : warp + 1; j < 4; j++) {
                float r_j = j > 0 ? sm.dc[16 * j - 1] : before_tile;
                float u[2] = {r_j - dcs[0], r_j - dcs[1]}, t[2][4] = {};
                ssdd_mma_decayed<KN, 2>(t, sm.B, LN, sm.A, u, ones, sm.hi, sm.lo, LN, 16 * j);
                ssdd_set_pair(m, t, j);
            }
        }
        if constexpr (!DB) { /* gb += M^T dy_t, M^T 0 for t < s and across documents */
            if (one) ssdm_decay_t<false, false>(m, sm.dc, sm.seg, dcs, segs, 0.0f, r0 - w.row0);
            else ssdm_decay_t<true, false>(m, sm.dc, sm.seg, dcs, segs, 0.0f, r0 - w.row0);
            ssdm_mma_acc_t<4, 8>(acc, m, sm.other, SSDM_LP, 0);
        }
    }
    if constexpr (DB) { /* dB_s = delta_s (...), zb and the per-state sums (B_s from global) */
        ssdd_store_share<NT>(dBC, zb, ssdd_za(za, w, 1, N_), acc, dls, xBC, b_col, 0, sm.A, dcs, sm.red, s, w);
    } else { /* dx, din, dD (x_s from own, dy_s from global) */
        float Dh = D[w.h], dD_acc = 0.0f;
#pragma unroll
        for (int i = 0; i < 2; i++) {
            int r = ssdm_row(i);
            bool valid = r < w.nrows;
            size_t t_row = row + w.row0 + r;
            float din_v = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                int p = ssdm_col(j, 0);
                if (valid && p < P) {
                    float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(sm.own + r * SSDM_LP + p));
                    float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dy + t_row * HP + w.h * P + p));
                    float gb0 = acc[j][2 * i], gb1 = acc[j][2 * i + 1];
                    *reinterpret_cast<__nv_bfloat162 *>(dxBC + t_row * s.conv_dim + w.h * P + p) =
                        __floats2bfloat162_rn(Dh * g.x + dls[i] * gb0, Dh * g.y + dls[i] * gb1);
                    din_v += x.x * gb0 + x.y * gb1;
                    dD_acc += g.x * x.x + g.y * x.y;
                }
            }
            din_v = ssdm_quad_sum(din_v);
            if (valid && (threadIdx.x & 3) == 0) din[(size_t)w.bh * s.T + w.t0 + w.row0 + r] = din_v;
        }
        dD_acc = block_reduce_sum(dD_acc);
        if (threadIdx.x == 0) dD_part[dD_slot] = dD_acc;
    }
}

/* d delta from z = zc - zb (rates folded in), din and gs, then ddt_raw = d delta sigmoid(dt_raw + dt_bias) and
 * the chunk's ddt_bias partial; and per state the chunk's dA_log partial A_n (sum over the tiles of the C dC dc
 * and B dB dc sums, difference, + gs[n] dc_last). Grid (nchunks, B*H), blockDim >= Q. */
__global__ void ssdd_ddelta_kernel(floatX *ddt_raw, float *ddt_part, float *dA_part, const float *zc, const float *zb,
                                   const float *din, const float *dcum, const float *za, const float *gs,
                                   const floatX *dt_raw, const float *dt_bias, const float *A_log, SSDScanShape s) {
    int c = blockIdx.x, nc = gridDim.x, bh = blockIdx.y, b = bh / s.H, h = bh % s.H, N = s.N;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0), tiles = ssd_num_tiles(&s), used = (len + SSDM_TILE - 1) / SSDM_TILE;
    size_t base = (size_t)bh * s.T + t0, chunk = (size_t)bh * nc + c, part = ((size_t)b * nc + c) * s.H + h;
    float dc_last = dcum[base + len - 1], gsA = 0.0f;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        float A = ssd_rate(A_log, h, n, N, 1), sum = 0.0f;
        for (int k = 0; k < used; k++) {
            const float *zt = za + ((chunk * tiles + k) * 2) * N;
            sum += zt[n] - zt[N + n];
        }
        float g = gs[chunk * N + n];
        gsA += A * g;
        dA_part[part * N + n] = A * (sum + g * dc_last);
    }
    gsA = block_reduce_sum(gsA);
    int i = threadIdx.x, t = len - 1 - i; /* thread i takes step t, so an inclusive scan sums t' >= t */
    bool valid = i < len;
    float z = valid ? zc[base + t] - zb[base + t] : 0.0f;
    float r = ssd_block_inclusive_scan(z) + gsA, grad = 0.0f;
    if (valid) {
        size_t raw = ((size_t)b * s.T + t0 + t) * s.d_in_proj + h;
        grad = ssd_softplus_grad(r + din[base + t], to_float(dt_raw[raw]) + dt_bias[h]);
        ddt_raw[raw] = from_float<floatX>(grad);
    }
    float ddt = block_reduce_sum(grad);
    if (threadIdx.x == 0) ddt_part[part] = ddt;
}

/* ------------------------------------------------------------------------------------------------
 * Launchers, and the path's forward and backward (called by ssd_scan_dispatch)
 */
/* the most shared memory a block of this path takes at d_state N */
static size_t ssdd_smem_need(int N) {
    size_t f = ssdd_forward_smem(N), b = ssdd_backward_smem(N, true), st = ssdm_states_smem(N, true);
    return f > b ? (f > st ? f : st) : (b > st ? b : st);
}

template <int N_>
static void ssdd_launch_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                const int *segment, const float *A_log, const float *D, cudaStream_t stream) {
    size_t smem = ssdd_forward_smem(N_);
    auto kernel = segment ? ssdd_forward_kernel<N_, true> : ssdd_forward_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>(y, xBC, ws->delta, ws->dcum, ws->states, segment, A_log, D, *s);
    cudaCheckLaunch();
}

template <int N_>
static void ssdd_scan_forward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    ssd_launch_dt_forward(s, ws, c->dt_raw, c->dt_bias, c->stream);
    ssdm_launch_states<N_>(s, ws->states, c->xBC, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_STATES,
                           c->stream);
    ssd_launch_passing(s, ws->states, NULL, c->state_in, c->state_out, c->segment, ws, c->A_log, 0, c->stream);
    ssdd_launch_forward<N_>(s, c->y, c->xBC, ws, c->segment, c->A_log, c->D, c->stream);
}

/* dC and its sum over heads run on the side stream, beside dstates, the state passing, gb and dB */
template <int N_>
static void ssdd_scan_backward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    cudaStream_t side = ssd_fork(c->stream);
    size_t dc_smem = ssdd_backward_smem(N_, false);
    auto dc_kernel = c->segment ? ssdd_backward_dc_kernel<N_, true> : ssdd_backward_dc_kernel<N_, false>;
    ssd_set_smem(dc_kernel, dc_smem);
    dc_kernel<<<grid, SSDM_THREADS, dc_smem, side>>>((ssdm_bf16 *)ws->dBC, ws->zc, ws->za_part, c->dy, c->xBC,
                                                     ws->delta, ws->dcum, ws->states, c->segment, c->A_log, *s);
    cudaCheckLaunch();
    ssd_launch_dBC_store(s, c->dxBC, (const ssdm_bf16 *)ws->dBC, 1, 1, side);
    ssdm_launch_states<N_>(s, ws->dstates, c->dy, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_DSTATES,
                           c->stream);
    ssd_launch_passing(s, ws->dstates, NULL, NULL, NULL, c->segment, ws, c->A_log, 1, c->stream);
    size_t gb_smem = ssdd_backward_smem(N_, true), db_smem = ssdd_backward_smem(N_, false);
    auto gb_kernel = c->segment ? ssdd_backward_s_kernel<N_, true, false> : ssdd_backward_s_kernel<N_, false, false>;
    auto db_kernel = c->segment ? ssdd_backward_s_kernel<N_, true, true> : ssdd_backward_s_kernel<N_, false, true>;
    ssd_set_smem(gb_kernel, gb_smem);
    ssd_set_smem(db_kernel, db_smem);
    gb_kernel<<<grid, SSDM_THREADS, gb_smem, c->stream>>>(c->dxBC, (ssdm_bf16 *)ws->dBC, ws->zb, ws->din, ws->dD_part,
                                                          ws->za_part, ws->gs_part, c->dy, c->xBC, ws->delta, ws->dcum,
                                                          ws->states, ws->dstates, c->segment, c->A_log, c->D, *s);
    cudaCheckLaunch();
    db_kernel<<<grid, SSDM_THREADS, db_smem, c->stream>>>(c->dxBC, (ssdm_bf16 *)ws->dBC, ws->zb, ws->din, ws->dD_part,
                                                          ws->za_part, ws->gs_part, c->dy, c->xBC, ws->delta, ws->dcum,
                                                          ws->states, ws->dstates, c->segment, c->A_log, c->D, *s);
    cudaCheckLaunch();
    ssd_launch_dBC_store(s, c->dxBC, (const ssdm_bf16 *)ws->dBC, 0, 1, c->stream);
    ssd_join(c->stream);
    dim3 dgrid(ssd_num_chunks(s), s->B * s->H);
    ssdd_ddelta_kernel<<<dgrid, ceil_div(s->Q, 32) * 32, 0, c->stream>>>(c->ddt_raw, ws->ddt_part, ws->dA_part, ws->zc,
                                                                         ws->zb, ws->din, ws->dcum, ws->za_part,
                                                                         ws->gs_part, c->dt_raw, c->dt_bias, c->A_log, *s);
    cudaCheckLaunch();
    int blocks = s->B * ssd_num_chunks(s);
    ssd_launch_param_grads(s, c->ddt_bias, c->dA_log, c->dD, ws, blocks * ssd_num_tiles(s), blocks, c->stream);
}

#endif
