/*
 * The tensor-core path of the SSD scan (SSD_PATH_MMA): the chunk-parallel scan for a scalar A on bf16
 * tensor cores, bf16 builds only, heads of width P <= 64; what AUTO runs there. It shares delta and dc
 * (ssd_scan_dt.cuh), the state passing (ssd_scan_passing.cuh) and the sums (ssd_scan_sums.cuh) with
 * the sub-block path, and runs the stages that need nothing from the ones before them on a side
 * stream (ssd_fork, ssd_join). Within a chunk, with dc_t the inclusive cumulative sum of delta, L[t][s] = exp(A (dc_t - dc_s))
 * for s <= t (else 0, and always <= 1), S_in the state entering the chunk and G_out the gradient
 * w.r.t. the state leaving it:
 *   chunk states:  Z     = sum_t x_t^T (delta_t exp(A (dc_last - dc_t)) B_t)        (P x N, K = steps)
 *   dstates:       dZ    = sum_t dy_t^T (exp(A dc_t) C_t)
 *   forward:       y_t   = exp(A dc_t) S_in C_t + sum_{s<=t} (C_t.B_s) L[t][s] delta_s x_s + D x_t
 *   backward dx:   gb_s  = exp(A (dc_last - dc_s)) G_out B_s + sum_{t>=s} (B_s.C_t) L[t][s] dy_t
 *                  dx_s  = D dy_s + delta_s gb_s,          din_s = x_s . gb_s
 *                  dB_s  = delta_s (exp(A (dc_last - dc_s)) x_s G_out + sum_{t>=s} (x_s.dy_t) L[t][s] C_t)
 *   backward dC:   dC_t  = exp(A dc_t) dy_t S_in + sum_{s<=t} (dy_t.x_s) L[t][s] delta_s B_s
 *   d delta:       z_t   = C_t.dC_t - B_t.dB_t (this head's shares), gs = <G_out, S_out>,
 *                  r_t   = sum_{t'>=t in the chunk} z_t' + gs,   d delta_t = A r_t + din_t,
 *                  dA_log += A (sum_t z_t dc_t + gs dc_last)
 * Document boundaries (segment, ssd_scan.cuh): L[t][s] is also 0 when t and s are in two documents;
 * exp(A dc_t) (S_in and the dstates weight) is 0 at the steps t of another document than the state
 * entering the chunk (seg_in = ssd_segment_before), and exp(A (dc_last - dc_s)) (the chunk states'
 * weight, the state parts of gb and dB) is 0 at the steps s of another document than the chunk's last
 * step (seg_last). The z_t, r_t formulas hold unchanged: each masked term is 0 in y, dB and dC alike.
 * Each kernel comes with and without segments (SEG): without, every mask is 1 at compile time. With them,
 * as segments never decrease along a row, the segments at the ends of two 64-step tiles tell how the pair
 * meets (ssdm_tile_pairs): no step s <= t of the pair in one document (the forward, dx and dC skip the pair,
 * its loads included), all its steps in one document (the unmasked element loop) or neither (the masked
 * one); most pairs of documents longer than a tile are of the first two kinds. The chunk states and dstates
 * weigh the steps of one document, a prefix or suffix of the chunk, and skip the tiles outside it.
 * Every product above is a GEMM over whole 64-step tiles: one block of 4 warps per (64-step tile,
 * chunk, batch*head), each warp 16 rows, no sequential dependence inside a chunk. The inputs x, B, C,
 * dy are bf16 already, so they enter the tensor cores exactly. In every product the backward's sums
 * depend on (chunk states, dstates, dx, dB, dC) the derived operand (a state, a decayed matrix) is
 * split into a bf16 value and a bf16 remainder and takes two MMAs, ~16-bit operands: dA_log and
 * dt_bias are sums over B*T steps that cancel, and single bf16 roundings there leave errors of 1e-2
 * to 7 (measured on the test shapes). y, which nothing in the backward reads, takes the rounded value
 * alone: its error stays at its own bf16 rounding (2e-3 .. 4e-3 against 1.5e-3 .. 3.3e-3 split). A 16
 * x 16 accumulator tile feeds the next MMA's A operand from registers. Heads of width P <= 64
 * (zero-padded to 64 columns).
 */
#ifndef SSD_KERNELS_SSD_SCAN_MMA_CUH
#define SSD_KERNELS_SSD_SCAN_MMA_CUH

#include "ssd_scan_common.cuh"
#include "ssd_scan_dt.cuh"
#include "ssd_scan_passing.cuh"
#include "ssd_scan_sums.cuh"

#define SSDM_THREADS 128
#define SSDM_PAD 8 /* bf16 row padding: rows 16 bytes apart in bank phase, for ldmatrix */
#define SSDM_LP (SSDM_TILE + SSDM_PAD)

typedef __nv_bfloat16 ssdm_bf16;

/* ---- fragment loads (ldmatrix), 16 x 16 tiles of bf16 shared-memory arrays with row stride ld ---- */
__device__ __forceinline__ void ssdm_ldsm(uint32_t (&r)[4], const ssdm_bf16 *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ssdm_ldsm_t(uint32_t (&r)[4], const ssdm_bf16 *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
/* A operand (rows m0.., k0..) of an array stored [m][k] */
__device__ __forceinline__ void ssdm_load_a(uint32_t (&a)[4], const ssdm_bf16 *s, int ld, int m0, int k0) {
    int l = threadIdx.x & 31, mi = l >> 3, r = l & 7;
    ssdm_ldsm(a, s + (m0 + r + 8 * (mi & 1)) * ld + k0 + 8 * (mi >> 1));
}
/* A operand (rows m0.., k0..) of an array stored [k][m] */
__device__ __forceinline__ void ssdm_load_a_t(uint32_t (&a)[4], const ssdm_bf16 *s, int ld, int m0, int k0) {
    int l = threadIdx.x & 31, mi = l >> 3, r = l & 7;
    ssdm_ldsm_t(a, s + (k0 + r + 8 * (mi >> 1)) * ld + m0 + 8 * (mi & 1));
}
/* B operands of two n8 tiles (n0.., n0 + 8..; k0..) of an array stored [n][k]: b[0..1], b[2..3] */
__device__ __forceinline__ void ssdm_load_b(uint32_t (&b)[4], const ssdm_bf16 *s, int ld, int n0, int k0) {
    int l = threadIdx.x & 31, mi = l >> 3, r = l & 7;
    ssdm_ldsm(b, s + (n0 + r + 8 * (mi >> 1)) * ld + k0 + 8 * (mi & 1));
}
/* the same of an array stored [k][n] */
__device__ __forceinline__ void ssdm_load_b_t(uint32_t (&b)[4], const ssdm_bf16 *s, int ld, int n0, int k0) {
    int l = threadIdx.x & 31, mi = l >> 3, r = l & 7;
    ssdm_ldsm_t(b, s + (k0 + r + 8 * (mi & 1)) * ld + n0 + 8 * (mi >> 1));
}

/* acc[j0], acc[j0 + 1] (two n8 tiles) += a b */
__device__ __forceinline__ void ssdm_mma2(float (*acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[4]) {
    ssd_mma_bf16(acc[0], a[0], a[1], a[2], a[3], b[0], b[1]);
    ssd_mma_bf16(acc[1], a[0], a[1], a[2], a[3], b[2], b[3]);
}

/* acc[16 x 8 WIDTH] += the warp's 16 rows (16 (warp % 4)..) of a, stored [m][k], times the first
 * 8 WIDTH rows of b, stored [n][k] ([k][n] when TRANS_B), over K = 16 KBLOCKS; with SPLIT, b is a bf16
 * value plane and b_lo its remainder plane (two MMAs). ROLLED keeps the loop over K-blocks a loop (less code
 * for the diagonal A's kernels, whose size makes them wait on instruction fetches). */
template <int KBLOCKS, int WIDTH, bool TRANS_B = false, bool SPLIT = false, bool ROLLED = false>
__device__ __forceinline__ void ssdm_mma_rows(float (&acc)[WIDTH][4], const ssdm_bf16 *a_s, int lda, const ssdm_bf16 *b_s,
                                              const ssdm_bf16 *b_lo, int ldb) {
#pragma unroll(ROLLED ? 1 : KBLOCKS)
    for (int kb = 0; kb < KBLOCKS; kb++) {
        uint32_t a[4];
        ssdm_load_a(a, a_s, lda, 16 * (threadIdx.x >> 5), 16 * kb);
#pragma unroll
        for (int j = 0; j < WIDTH; j += 2) {
            uint32_t b[4];
            if (TRANS_B) ssdm_load_b_t(b, b_s, ldb, 8 * j, 16 * kb);
            else ssdm_load_b(b, b_s, ldb, 8 * j, 16 * kb);
            ssdm_mma2(acc + j, a, b);
            if (SPLIT) {
                if (TRANS_B) ssdm_load_b_t(b, b_lo, ldb, 8 * j, 16 * kb);
                else ssdm_load_b(b, b_lo, ldb, 8 * j, 16 * kb);
                ssdm_mma2(acc + j, a, b);
            }
        }
    }
}

/* The A operands (value and remainder) of the 16 x 16 block formed by accumulator tiles c0, c1
 * (columns k 0-7 and 8-15). */
__device__ __forceinline__ void ssdm_split_a(uint32_t (&hi)[4], uint32_t (&lo)[4], const float (&c0)[4],
                                             const float (&c1)[4]) {
    SSDSplit v0 = ssd_split_bf16(c0[0], c0[1]), v1 = ssd_split_bf16(c0[2], c0[3]);
    SSDSplit v2 = ssd_split_bf16(c1[0], c1[1]), v3 = ssd_split_bf16(c1[2], c1[3]);
    hi[0] = v0.hi, hi[1] = v1.hi, hi[2] = v2.hi, hi[3] = v3.hi;
    lo[0] = v0.lo, lo[1] = v1.lo, lo[2] = v2.lo, lo[3] = v3.lo;
}

/* acc[16 x 8 WIDTH] += (value + remainder of the 16 x 16 K-blocks of m; the value only when !SPLIT) times
 * the B operand of an array stored [k][n] (rows k0 + 16 kb): a decayed accumulator times an exact
 * bf16 input, or times a derived one given as value plane s and remainder plane s_lo (a third MMA, value
 * by remainder). */
template <int KBLOCKS, int WIDTH, bool SPLIT = true>
__device__ __forceinline__ void ssdm_mma_acc_t(float (&acc)[WIDTH][4], const float (&m)[2 * KBLOCKS][4],
                                               const ssdm_bf16 *s, int ld, int k0, const ssdm_bf16 *s_lo = nullptr) {
#pragma unroll
    for (int kb = 0; kb < KBLOCKS; kb++) {
        uint32_t hi[4], lo[4];
        ssdm_split_a(hi, lo, m[2 * kb], m[2 * kb + 1]);
#pragma unroll
        for (int j = 0; j < WIDTH; j += 2) {
            uint32_t b[4];
            ssdm_load_b_t(b, s, ld, 8 * j, k0 + 16 * kb);
            ssdm_mma2(acc + j, hi, b);
            if (SPLIT) ssdm_mma2(acc + j, lo, b);
            if (s_lo) {
                ssdm_load_b_t(b, s_lo, ld, 8 * j, k0 + 16 * kb);
                ssdm_mma2(acc + j, hi, b);
            }
        }
    }
}

/* ---- tile loads into shared memory (rows past the chunk's end and columns past `cols` are zero) ----
 * Copies go through cp.async, so all of a tile's loads are in flight at once (plain loads followed by
 * shared-memory stores would wait for each load in turn); ssdm_cp_wait completes them. */
__device__ __forceinline__ void ssdm_cp16(void *dst, const void *src, bool valid) {
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void ssdm_cp4(void *dst, const void *src) {
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void ssdm_cp_wait(void) {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

/* rows [0, 64) of a bf16 matrix (row stride `stride`, first column `col`, `cols` of them, a multiple
 * of 8; rows from nrows on are zero) into dst [64][ld] with `width` columns (a multiple of 8) */
__device__ __forceinline__ void ssdm_load_rows(ssdm_bf16 *dst, int ld, int width, const floatX *src, size_t stride,
                                               int col, int cols, int nrows) {
    int per_row = width / 8;
    for (int i = threadIdx.x; i < SSDM_TILE * per_row; i += SSDM_THREADS) {
        int r = i / per_row, c8 = 8 * (i % per_row);
        bool valid = r < nrows && c8 < cols;
        ssdm_cp16(dst + r * ld + c8, valid ? src + r * stride + col + c8 : src + col, valid);
    }
}

/* a chunk's state as bf16 value and remainder planes ([2][P][N], from the state passing) into hi and lo
 * [64][ld] (lo NULL: the value only); rows p >= P are zero */
template <int N_>
__device__ __forceinline__ void ssdm_load_planes(ssdm_bf16 *hi, ssdm_bf16 *lo, int ld, const float *planes,
                                                 size_t chunk, int P) {
    const ssdm_bf16 *src = (const ssdm_bf16 *)planes + chunk * 2 * P * N_;
    ssdm_load_rows(hi, ld, N_, src, N_, 0, N_, P);
    if (lo) ssdm_load_rows(lo, ld, N_, src + (size_t)P * N_, N_, 0, N_, P);
}

/* dc and delta of the tile's steps into shared memory (rows past the end: dc of the last step, delta 0) */
__device__ __forceinline__ void ssdm_load_steps(float *dc_s, float *dl_s, const float *dc, const float *dl,
                                                int nrows, float dc_last) {
    for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) {
        if (r < nrows) {
            ssdm_cp4(dc_s + r, dc + r);
            if (dl_s) ssdm_cp4(dl_s + r, dl + r);
        } else {
            dc_s[r] = dc_last;
            if (dl_s) dl_s[r] = 0.0f;
        }
    }
}

/* the documents of a tile's steps t0.. of row b (rows from nrows on: -1, which no step has), with the tile's
 * other loads (ssdm_cp_wait completes it) */
__device__ __forceinline__ void ssdm_load_segments(int *seg_s, const int *segment, const SSDScanShape &s, int b, int t0,
                                                   int nrows) {
    const int *src = segment + (size_t)b * s.T + t0;
    for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) {
        if (r < nrows) ssdm_cp4(seg_s + r, src + r);
        else seg_s[r] = -1;
    }
}

/* a 64 x 64 fp32 tile of a chunk's CB (row stride QP) into dst [64][ld], with the tile's other loads
 * (ssdm_cp_wait completes it) */
__device__ __forceinline__ void ssdm_load_cb(float *dst, int ld, const float *src, int QP) {
    for (int i = threadIdx.x; i < SSDM_TILE * SSDM_TILE / 4; i += SSDM_THREADS) {
        int r = i / (SSDM_TILE / 4), c4 = 4 * (i % (SSDM_TILE / 4));
        ssdm_cp16(dst + r * ld + c4, src + (size_t)r * QP + c4, true);
    }
}
/* row stride of the CB tile in shared memory: rows 8 banks apart, so a warp's float2 reads of the
 * accumulator layout are conflict free */
#define SSDM_CB_LD 72

/* Where a block is: tile, chunk, batch, head, group, and the chunk's first step and length. */
struct SSDMPlace {
    int tile, c, nc, bh, b, h, g, t0, len, row0, nrows;
};
__device__ __forceinline__ SSDMPlace ssdm_place(const SSDScanShape &s) {
    SSDMPlace w;
    w.tile = blockIdx.x;
    w.c = blockIdx.y;
    w.nc = gridDim.y;
    w.bh = blockIdx.z;
    w.b = w.bh / s.H;
    w.h = w.bh % s.H;
    w.g = w.h / (s.H / s.G);
    w.t0 = w.c * s.Q;
    w.len = min(s.Q, s.T - w.t0);
    w.row0 = w.tile * SSDM_TILE;
    w.nrows = min(SSDM_TILE, w.len - w.row0);
    return w;
}

/* The thread's two accumulator rows within the warp's 16 (i = 0, 1 for tile elements 0-1 and 2-3). */
__device__ __forceinline__ int ssdm_row(int i) { return 16 * (threadIdx.x >> 5) + ((threadIdx.x & 31) >> 2) + 8 * i; }
__device__ __forceinline__ int ssdm_col(int j, int e) { return 8 * j + 2 * (threadIdx.x & 3) + e; }

/* the documents of the thread's two accumulator rows of the block's tile (-1 past the chunk's end) */
__device__ __forceinline__ void ssdm_row_segments(int (&seg)[2], const int *segment, const SSDScanShape &s, int b,
                                                  int t0, int nrows) {
#pragma unroll
    for (int i = 0; i < 2; i++) seg[i] = ssdm_row(i) < nrows ? ssd_segment(segment, s, b, t0 + ssdm_row(i)) : -1;
}

/* How the block's tile meets each tile k of its chunk across documents, as bits of one block-uniform mask:
 * bit k when the pair is apart, bit 16 + k when it is in one document (ssdm_pair_apart, ssdm_pair_one).
 * Segments never decrease along a row, so the ends of the two tiles decide it: apart when no step s <= t of
 * the pair (s in the earlier tile, t in the later) is in one document with the other (the pair adds nothing:
 * the document at the earlier tile's last step is below that at the later tile's first), one when all their
 * steps are in one document (the document at the earlier tile's first step is that at the later tile's last
 * valid step: no mask needed); a pair that is neither takes the per-element mask. The diagonal pair is never
 * apart. later: the tiles k come after the block's (k >= tile), else before it. Without segments every pair
 * is one. */
static_assert(SSD_MAX_CHUNK / SSDM_TILE <= 16, "a chunk's tiles fit 16 bits");
template <bool SEG>
__device__ __forceinline__ unsigned ssdm_tile_pairs(const int *segment, const SSDScanShape &s, const SSDMPlace &w,
                                                    bool later) {
    if (!SEG) return 0xffff0000u;
    const int *seg = segment + (size_t)w.b * s.T + w.t0;
    int k = threadIdx.x & 31, first = min(k * SSDM_TILE, w.len - 1), last = min(first + SSDM_TILE, w.len) - 1;
    int k_first = seg[first], k_last = seg[last], own_first = seg[w.row0], own_last = seg[w.row0 + w.nrows - 1];
    bool exists = k * SSDM_TILE < w.len;
    unsigned apart = __ballot_sync(0xffffffffu, exists && (later ? own_last < k_first : k_last < own_first));
    unsigned one = __ballot_sync(0xffffffffu, exists && (later ? own_first == k_last : k_first == own_last));
    return apart | one << 16;
}
__device__ __forceinline__ bool ssdm_pair_apart(unsigned pairs, int k) { return pairs >> k & 1; }
__device__ __forceinline__ bool ssdm_pair_one(unsigned pairs, int k) { return pairs >> (16 + k) & 1; }

/* ------------------------------------------------------------------------------------------------
 * Chunk states and dstates: out[p][n] = sum_t u_t[p] (w_t[n] v_t[n]) over the chunk, u = x and
 * w v = delta exp(A (dc_last - dc)) B (states), u = dy and w v = exp(A dc) C (dstates), w = 0 at the steps
 * of another document than seg_last (states) or seg_in (dstates); every w <= delta. For a scalar A the
 * weight is one per step: it goes on u (P columns, fewer than N), w u is split and v enters exact. For a
 * diagonal A (DIAG) it is one per step and state: w v is split and u enters exact. Two MMAs either way.
 * Grid (1, nchunks, B*H); warp w owns rows p = 16w.. and all N columns.
 */
static size_t ssdm_states_smem(int N, bool diagonal) {
    return sizeof(ssdm_bf16) * (2 * SSDM_TILE * SSDM_LP + SSDM_TILE * (N + SSDM_PAD)) + sizeof(float) * 2 * SSDM_TILE +
           (diagonal ? sizeof(ssdm_bf16) * SSDM_TILE * (N + SSDM_PAD) + sizeof(float) * N : 0);
}

template <int N_, bool SEG, bool DIAG>
__global__ void __launch_bounds__(SSDM_THREADS, 4) ssdm_states_kernel(float *out, const floatX *u_src, const floatX *xBC,
                                                                  const float *delta, const float *dcum,
                                                                  const int *segment, const float *A_log,
                                                                  SSDScanShape s, int mode) {
    constexpr int LN = N_ + SSDM_PAD, NT = N_ / 8;
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *Uhi = (ssdm_bf16 *)ssdm_smem, *Ulo = Uhi + SSDM_TILE * SSDM_LP; /* u (scalar: then w u split in place) */
    ssdm_bf16 *V = Ulo + SSDM_TILE * SSDM_LP;                                   /* B or C (diagonal: then w v's value) */
    float *wf = (float *)(V + SSDM_TILE * LN);             /* w per step (diagonal: its part delta or 1) */
    float *ef = wf + SSDM_TILE;                            /* diagonal: e per step, w = wf exp(A_n e) */
    ssdm_bf16 *Vlo = (ssdm_bf16 *)(ef + SSDM_TILE);        /* diagonal: w v's remainder */
    float *A_s = (float *)(Vlo + SSDM_TILE * LN);                               /* diagonal: the rates */
    SSDMPlace w = ssdm_place(s);
    int warp = threadIdx.x >> 5;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float A = -expf(A_log[w.h]), dc_last = dc[w.len - 1];
    bool states = mode == SSD_REDUCE_STATES;
    size_t u_stride = states ? s.conv_dim : (size_t)s.H * s.P;
    int v_col = s.H * s.P + (states ? 0 : s.G * N_) + w.g * N_;
    if (DIAG)
        for (int n = threadIdx.x; n < N_; n += SSDM_THREADS) A_s[n] = ssd_rate(A_log, w.h, n, N_, 1);
    /* w is nonzero only at the steps [lo, hi) of the chunk: segments never decrease, so the steps of another
     * document than seg_last (states) are a prefix of the chunk and those of another than seg_in (dstates) a
     * suffix, counted here; the tiles outside [lo, hi) are skipped */
    int lo = 0, hi = w.len;
    if (SEG) {
        const int *seg = segment + (size_t)w.b * s.T + w.t0;
        int key = states ? seg[w.len - 1] : ssd_segment_before(segment, s, w.b, w.t0);
        unsigned other = 0; /* bit i: step threadIdx.x + i SSDM_THREADS is in another document than key */
#pragma unroll
        for (int i = 0; i < SSD_MAX_CHUNK / SSDM_THREADS; i++) {
            int r = threadIdx.x + i * SSDM_THREADS;
            if (r < w.len && seg[r] != key) other |= 1u << i;
        }
        int count = 0;
        for (int i = 0; i * SSDM_THREADS < w.len; i++) count += __syncthreads_count(other >> i & 1);
        if (states) lo = count;
        else hi = w.len - count;
    }
    float acc[NT][4] = {};
    for (int r0 = lo / SSDM_TILE * SSDM_TILE; r0 < hi; r0 += SSDM_TILE) {
        int nrows = min(SSDM_TILE, w.len - r0);
        size_t row = (size_t)w.b * s.T + w.t0 + r0;
        __syncthreads();
        ssdm_load_rows(Uhi, SSDM_LP, SSDM_TILE, u_src + row * u_stride, u_stride, w.h * s.P, s.P, nrows);
        ssdm_load_rows(V, LN, N_, xBC + row * s.conv_dim, s.conv_dim, v_col, N_, nrows);
        for (int r = threadIdx.x; r < SSDM_TILE; r += SSDM_THREADS) {
            bool zero = r >= nrows || (SEG && (r0 + r < lo || r0 + r >= hi));
            float e = zero ? 0.0f : states ? dc_last - dc[r0 + r] : dc[r0 + r];
            wf[r] = zero ? 0.0f : (states ? dl[r0 + r] : 1.0f) * (DIAG ? 1.0f : __expf(A * e));
            ef[r] = e;
        }
        ssdm_cp_wait();
        __syncthreads();
        if (DIAG) {
            /* w v = wf_r exp(A_n e_r) v, e_r = dc_last - dc_r (states) or dc_r (dstates), split into V and Vlo */
            for (int i = threadIdx.x; i < SSDM_TILE * N_ / 2; i += SSDM_THREADS) {
                int r = i / (N_ / 2), n = 2 * (i % (N_ / 2));
                float e = ef[r];
                float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(V + r * LN + n));
                float f = wf[r];
                SSDSplit x = ssd_split_bf16(f * __expf(A_s[n] * e) * v.x, f * __expf(A_s[n + 1] * e) * v.y);
                *reinterpret_cast<uint32_t *>(V + r * LN + n) = x.hi;
                *reinterpret_cast<uint32_t *>(Vlo + r * LN + n) = x.lo;
            }
        } else {
            for (int i = threadIdx.x; i < SSDM_TILE * SSDM_TILE / 4; i += SSDM_THREADS) {
                int r = i / (SSDM_TILE / 4), p = 4 * (i % (SSDM_TILE / 4));
                uint2 raw = *reinterpret_cast<const uint2 *>(Uhi + r * SSDM_LP + p);
                float2 u01 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&raw.x));
                float2 u23 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&raw.y));
                float f = wf[r];
                SSDSplit a = ssd_split_bf16(f * u01.x, f * u01.y), b = ssd_split_bf16(f * u23.x, f * u23.y);
                *reinterpret_cast<uint2 *>(Uhi + r * SSDM_LP + p) = make_uint2(a.hi, b.hi);
                *reinterpret_cast<uint2 *>(Ulo + r * SSDM_LP + p) = make_uint2(a.lo, b.lo);
            }
        }
        __syncthreads();
#pragma unroll
        for (int kb = 0; kb < SSDM_TILE / 16; kb++) {
            uint32_t a_hi[4], a_lo[4];
            ssdm_load_a_t(a_hi, Uhi, SSDM_LP, 16 * warp, 16 * kb);
            if (!DIAG) ssdm_load_a_t(a_lo, Ulo, SSDM_LP, 16 * warp, 16 * kb);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                uint32_t b[4];
                ssdm_load_b_t(b, V, LN, 8 * j, 16 * kb);
                ssdm_mma2(acc + j, a_hi, b);
                if (DIAG) ssdm_load_b_t(b, Vlo, LN, 8 * j, 16 * kb);
                ssdm_mma2(acc + j, DIAG ? a_hi : a_lo, b);
            }
        }
    }
    float *o = out + ((size_t)w.bh * w.nc + w.c) * s.P * N_;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int p = ssdm_row(i);
        if (p < s.P)
#pragma unroll
            for (int j = 0; j < NT; j++)
                *reinterpret_cast<float2 *>(o + p * N_ + ssdm_col(j, 0)) = make_float2(acc[j][2 * i], acc[j][2 * i + 1]);
    }
}

/* ------------------------------------------------------------------------------------------------
 * CB[t][s] = C_t . B_s of every chunk, per group (all its heads share it), for the 64 x 64 tiles with
 * s tile <= t tile: exact, bf16 inputs with fp32 sums. Rows and columns past the chunk's end are zero.
 * Grid (tiles * tiles, nchunks, B*G); cb [B*G][nchunks][QP][QP] with QP = tiles * 64.
 */
__host__ __device__ static inline int ssdm_cb_stride(const SSDScanShape *s) {
    return ssd_num_tiles(s) * SSDM_TILE;
}

template <int N_>
__global__ void __launch_bounds__(SSDM_THREADS) ssdm_cb_kernel(float *cb, const floatX *xBC, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, KN = N_ / 16;
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *Cs = (ssdm_bf16 *)ssdm_smem, *Bs = Cs + SSDM_TILE * LN;
    int QP = ssdm_cb_stride(&s), tiles = QP / SSDM_TILE, tt = blockIdx.x / tiles, st = blockIdx.x % tiles;
    int c = blockIdx.y, bg = blockIdx.z, b = bg / s.G, g = bg % s.G;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0), r0 = tt * SSDM_TILE, s0 = st * SSDM_TILE;
    if (st > tt || r0 >= len) return;
    size_t row = (size_t)b * s.T + t0;
    int b_col = s.H * s.P + g * N_, c_col = s.H * s.P + s.G * N_ + g * N_;
    ssdm_load_rows(Cs, LN, N_, xBC + (row + r0) * s.conv_dim, s.conv_dim, c_col, N_, min(SSDM_TILE, len - r0));
    ssdm_load_rows(Bs, LN, N_, xBC + (row + s0) * s.conv_dim, s.conv_dim, b_col, N_, min(SSDM_TILE, len - s0));
    ssdm_cp_wait();
    __syncthreads();
    float acc[8][4] = {};
    ssdm_mma_rows<KN, 8>(acc, Cs, LN, Bs, NULL, LN);
    float *out = cb + ((size_t)bg * gridDim.y + c) * QP * QP + (size_t)r0 * QP + s0;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            *reinterpret_cast<float2 *>(out + ssdm_row(i) * QP + ssdm_col(j, 0)) =
                make_float2(acc[j][2 * i], acc[j][2 * i + 1]);
}

/* The chunk's CB of the block's group */
__device__ __forceinline__ const float *ssdm_cb_chunk(const float *cb, const SSDScanShape &s, int b, int g, int c,
                                                      int nc) {
    int QP = ssdm_cb_stride(&s);
    return cb + (((size_t)b * s.G + g) * nc + c) * QP * QP;
}

/* ------------------------------------------------------------------------------------------------
 * Forward: y for the tile's 64 steps t. Grid (tiles per chunk, nchunks, B*H).
 */
/* bf16 elements of the shared region that holds a split state first and two input tiles after */
template <int N_>
__host__ __device__ constexpr int ssdm_region(void) {
    return 2 * SSDM_TILE * (N_ + SSDM_PAD) > SSDM_TILE * (N_ + SSDM_PAD) + SSDM_TILE * SSDM_LP
               ? 2 * SSDM_TILE * (N_ + SSDM_PAD)
               : SSDM_TILE * (N_ + SSDM_PAD) + SSDM_TILE * SSDM_LP;
}

/* shared memory of the forward: C_t, a region for S_in then x_s, then dc_s and delta_s, the CB tile and the
 * s tile's documents */
template <int N_>
__host__ __device__ constexpr int ssdm_forward_region(void) {
    return SSDM_TILE * (N_ + SSDM_PAD > SSDM_LP ? N_ + SSDM_PAD : SSDM_LP);
}
template <int N_>
static size_t ssdm_forward_smem(void) {
    return sizeof(ssdm_bf16) * (SSDM_TILE * (N_ + SSDM_PAD) + ssdm_forward_region<N_>()) +
           sizeof(float) * (2 * SSDM_TILE + SSDM_TILE * SSDM_CB_LD) + sizeof(int) * SSDM_TILE;
}

/* The decays of a 64 x 64 tile pair in the accumulator layout (m[j][e]: the thread's row ssdm_row(e >> 1), column
 * ssdm_col(j, e & 1)), 0 where s > t and, with MASK, where s and t are in two documents (a pair that
 * ssdm_tile_pairs finds in one document runs without MASK: the same values).
 * ssdm_decay_s: m[t][s] *= L[t][s] delta_s = exp(A (dc_t - dc_s)) delta_s, rows t of the thread in the block's
 * tile at step t0 of the chunk (dc in dct, documents in segt), columns s of the tile at step s0 (dc, delta and
 * documents in dc_s, dl_s, seg_s); without DECAY (a diagonal A's m, decayed already) m[t][s] *= delta_s. */
template <bool MASK, bool DECAY = true>
__device__ __forceinline__ void ssdm_decay_s(float (&m)[8][4], const float *dc_s, const float *dl_s, const int *seg_s,
                                             const float (&dct)[2], const int (&segt)[2], float A, int s0, int t0) {
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int t = t0 + ssdm_row(e >> 1), sl = ssdm_col(j, e & 1);
            bool keep = s0 + sl <= t;
            if (MASK) keep &= segt[e >> 1] == seg_s[sl]; /* no short circuit: a select, not a branch per element */
            float decay = DECAY ? __expf(A * (dct[e >> 1] - dc_s[sl])) : 1.0f;
            m[j][e] = keep ? m[j][e] * decay * dl_s[sl] : 0.0f;
        }
}
/* ssdm_decay_t: m[s][t] *= L[t][s] = exp(A (dc_t - dc_s)), rows s of the thread (dc in dcs, documents in segs),
 * columns t of a tile starting `offset` steps after the block's first row (dc in dc_t, documents in seg_t);
 * without DECAY (a diagonal A's m, decayed already, or W) only the zeros */
template <bool MASK, bool DECAY = true>
__device__ __forceinline__ void ssdm_decay_t(float (&m)[8][4], const float *dc_t, const int *seg_t,
                                             const float (&dcs)[2], const int (&segs)[2], float A, int offset) {
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            int tl = ssdm_col(j, e & 1);
            bool keep = offset + tl >= ssdm_row(e >> 1);
            if (MASK) keep &= seg_t[tl] == segs[e >> 1];
            float decay = DECAY ? __expf(A * (dc_t[tl] - dcs[e >> 1])) : 1.0f;
            m[j][e] = keep ? m[j][e] * decay : 0.0f;
        }
}

/* y_t = acc + D x_t for the tile's rows t (the first at row `row` of the [B*T][y_stride] output, this head's
 * channels from y_col), x_t in Xs [64][SSDM_LP] */
__device__ __forceinline__ void ssdm_store_y(floatX *y, const float (&acc)[8][4], const ssdm_bf16 *Xs, float Dh,
                                             size_t row, int nrows, int y_stride, int y_col, int P) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = ssdm_row(i);
        if (r >= nrows) continue;
        floatX *out = y + (row + r) * y_stride + y_col;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int p = ssdm_col(j, 0);
            if (p < P) {
                float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Xs + r * SSDM_LP + p));
                *reinterpret_cast<__nv_bfloat162 *>(out + p) =
                    __floats2bfloat162_rn(acc[j][2 * i] + Dh * x.x, acc[j][2 * i + 1] + Dh * x.y);
            }
        }
    }
}

template <int N_, bool SEG>
__global__ void __launch_bounds__(SSDM_THREADS, 4) ssdm_forward_kernel(floatX *y, const floatX *xBC, const float *cb,
                                                                   const float *delta, const float *dcum,
                                                                   const float *s_planes, const int *segment,
                                                                   const float *A_log, const float *D, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, KN = N_ / 16;
    constexpr int REGION = ssdm_forward_region<N_>();
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *Cs = (ssdm_bf16 *)ssdm_smem, *region = Cs + SSDM_TILE * LN;
    ssdm_bf16 *Ss = region, *Xs = region; /* S_in in the prologue, then the s tiles' x */
    float *dc_s = (float *)(region + REGION), *dl_s = dc_s + SSDM_TILE, *CBs = dl_s + SSDM_TILE;
    int *seg_s = (int *)(CBs + SSDM_TILE * SSDM_CB_LD);
    SSDMPlace w = ssdm_place(s);
    if (w.nrows <= 0) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, QP = ssdm_cb_stride(&s);
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    const float *cbc = ssdm_cb_chunk(cb, s, w.b, w.g, w.c, w.nc);
    float A = -expf(A_log[w.h]), dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int c_col = s.H * P + s.G * N_ + w.g * N_;
    ssdm_load_rows(Cs, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, c_col, N_, w.nrows);
    ssdm_load_planes<N_>(Ss, NULL, LN, s_planes, (size_t)w.bh * w.nc + w.c, P);
    float dct[2];
    int segt[2], seg_in = ssd_segment_before(segment, s, w.b, w.t0);
#pragma unroll
    for (int i = 0; i < 2; i++) dct[i] = ssdm_row(i) < w.nrows ? dc[w.row0 + ssdm_row(i)] : dc_last;
    ssdm_row_segments(segt, segment, s, w.b, w.t0 + w.row0, w.nrows);
    ssdm_cp_wait();
    __syncthreads();
    /* state part: exp(A dc_t) (C_t . S_in[p]), at the steps of S_in's document */
    float acc[8][4] = {};
    ssdm_mma_rows<KN, 8>(acc, Cs, LN, Ss, NULL, LN);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float e = segt[i] == seg_in ? __expf(A * dct[i]) : 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j][2 * i] *= e, acc[j][2 * i + 1] *= e;
    }
    /* intra-chunk part, s tiles up to the diagonal one: those apart from the block's tile skipped, those in
     * one document with it unmasked */
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, false);
    for (int st = 0; st <= w.tile; st++) {
        if (SEG && ssdm_pair_apart(pairs, st)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, st);
        int s0 = st * SSDM_TILE, srows = min(SSDM_TILE, w.len - s0);
        __syncthreads();
        ssdm_load_rows(Xs, SSDM_LP, SSDM_TILE, xBC + (row + s0) * s.conv_dim, s.conv_dim, w.h * P, P, srows);
        ssdm_load_steps(dc_s, dl_s, dc + s0, dl + s0, srows, dc_last);
        if (!one) ssdm_load_segments(seg_s, segment, s, w.b, w.t0 + s0, srows);
        ssdm_load_cb(CBs, SSDM_CB_LD, cbc + (size_t)w.row0 * QP + s0, QP);
        ssdm_cp_wait();
        __syncthreads();
        float m[8][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) {
                float2 v = *reinterpret_cast<const float2 *>(CBs + ssdm_row(i) * SSDM_CB_LD + ssdm_col(j, 0));
                m[j][2 * i] = v.x, m[j][2 * i + 1] = v.y;
            }
        if (one) ssdm_decay_s<false>(m, dc_s, dl_s, seg_s, dct, segt, A, s0, w.row0);
        else ssdm_decay_s<true>(m, dc_s, dl_s, seg_s, dct, segt, A, s0, w.row0);
        ssdm_mma_acc_t<4, 8, false>(acc, m, Xs, SSDM_LP, 0);
    }
    /* the last s tile loaded is this tile (the diagonal pair is never skipped), so Xs holds x_t */
    ssdm_store_y(y, acc, Xs, D[w.h], row + w.row0, w.nrows, s.H * P, w.h * P, P);
}

/* ------------------------------------------------------------------------------------------------
 * Backward, dx and dB for the tile's 64 steps s (t tiles from the diagonal one to the chunk's end).
 * Writes dx, this head's dB share (dBC index 0, bf16: it only feeds the bf16 dB), zb_s = B_s . dB_s, din_s = x_s . gb_s and the
 * block's dD partial. Grid (tiles per chunk, nchunks, B*H).
 */
template <int N_>
static size_t ssdm_backward_smem(void) {
    return sizeof(ssdm_bf16) * (SSDM_TILE * (N_ + SSDM_PAD) + SSDM_TILE * SSDM_LP + ssdm_region<N_>()) +
           sizeof(float) * 2 * SSDM_TILE + sizeof(int) * SSDM_TILE;
}

/* a row's value summed over the 4 lanes (a quad) that hold the row's accumulator columns */
__device__ __forceinline__ float ssdm_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffff, v, 1);
    return v + __shfl_xor_sync(0xffffffff, v, 2);
}

template <int N_, bool SEG>
__global__ void __launch_bounds__(SSDM_THREADS) ssdm_backward_dx_kernel(
    floatX *dxBC, ssdm_bf16 *dBC, float *zb, float *din, float *dD_part, const floatX *dy, const floatX *xBC,
    const float *cb, const float *delta, const float *dcum, const float *g_planes, const int *segment,
    const float *A_log, const float *D, SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, KN = N_ / 16, NT = N_ / 8;
    constexpr int REGION = ssdm_region<N_>();
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *Bs = (ssdm_bf16 *)ssdm_smem, *Xs = Bs + SSDM_TILE * LN, *region = Xs + SSDM_TILE * SSDM_LP;
    ssdm_bf16 *Ghi = region, *Glo = region + SSDM_TILE * LN; /* prologue: G_out */
    ssdm_bf16 *Ct = region, *dYt = region + SSDM_TILE * LN;  /* then: the t tiles */
    float *dc_t = (float *)(region + REGION);
    int *seg_t = (int *)(dc_t + 2 * SSDM_TILE);
    SSDMPlace w = ssdm_place(s);
    size_t dD_slot = (((size_t)w.b * w.nc + w.c) * gridDim.x + w.tile) * s.H + w.h;
    if (w.nrows <= 0) { /* a tile past the end of a short last chunk */
        if (threadIdx.x == 0) dD_part[dD_slot] = 0.0f;
        return;
    }
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int warp = threadIdx.x >> 5, P = s.P, HP = s.H * P, QP = ssdm_cb_stride(&s);
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    const float *cbc = ssdm_cb_chunk(cb, s, w.b, w.g, w.c, w.nc);
    float A = -expf(A_log[w.h]), dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int b_col = HP + w.g * N_, c_col = HP + s.G * N_ + w.g * N_;
    ssdm_load_rows(Bs, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, b_col, N_, w.nrows);
    ssdm_load_rows(Xs, SSDM_LP, SSDM_TILE, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, w.h * P, P, w.nrows);
    ssdm_load_planes<N_>(Ghi, Glo, LN, g_planes, (size_t)w.bh * w.nc + w.c, P);
    float dcs[2], dls[2];
    int segs[2], seg_last = ssd_segment(segment, s, w.b, w.t0 + w.len - 1);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        bool valid = ssdm_row(i) < w.nrows;
        dcs[i] = valid ? dc[w.row0 + ssdm_row(i)] : dc_last;
        dls[i] = valid ? dl[w.row0 + ssdm_row(i)] : 0.0f;
    }
    ssdm_row_segments(segs, segment, s, w.b, w.t0 + w.row0, w.nrows);
    ssdm_cp_wait();
    __syncthreads();
    uint32_t xf[4][4];
#pragma unroll
    for (int kb = 0; kb < 4; kb++) ssdm_load_a(xf[kb], Xs, SSDM_LP, 16 * warp, 16 * kb);
    /* state parts: gb = B_s G_out^T, dB = x_s G_out, both times exp(A (dc_last - dc_s)) at the steps of the
     * chunk's last step's document (0 elsewhere) */
    float gb[8][4] = {}, dB[NT][4] = {};
    ssdm_mma_rows<KN, 8, false, true>(gb, Bs, LN, Ghi, Glo, LN);
#pragma unroll
    for (int kb = 0; kb < 4; kb++)
#pragma unroll
        for (int j = 0; j < NT; j += 2) {
            uint32_t b[4];
            ssdm_load_b_t(b, Ghi, LN, 8 * j, 16 * kb);
            ssdm_mma2(dB + j, xf[kb], b);
            ssdm_load_b_t(b, Glo, LN, 8 * j, 16 * kb);
            ssdm_mma2(dB + j, xf[kb], b);
        }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float e = segs[i] == seg_last ? __expf(A * (dc_last - dcs[i])) : 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) gb[j][2 * i] *= e, gb[j][2 * i + 1] *= e;
#pragma unroll
        for (int j = 0; j < NT; j++) dB[j][2 * i] *= e, dB[j][2 * i + 1] *= e;
    }
    /* t tiles from the diagonal one: those apart from the block's tile skipped, those in one document with it
     * unmasked */
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, true);
    int ntiles = (w.len + SSDM_TILE - 1) / SSDM_TILE;
    for (int tt = w.tile; tt < ntiles; tt++) {
        if (SEG && ssdm_pair_apart(pairs, tt)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, tt);
        int r0 = tt * SSDM_TILE, trows = min(SSDM_TILE, w.len - r0);
        __syncthreads();
        ssdm_load_rows(Ct, LN, N_, xBC + (row + r0) * s.conv_dim, s.conv_dim, c_col, N_, trows);
        ssdm_load_rows(dYt, SSDM_LP, SSDM_TILE, dy + (row + r0) * HP, HP, w.h * P, P, trows);
        ssdm_load_steps(dc_t, NULL, dc + r0, NULL, trows, dc_last);
        if (!one) ssdm_load_segments(seg_t, segment, s, w.b, w.t0 + r0, trows);
        ssdm_cp_wait();
        __syncthreads();
        /* gb += ((B_s . C_t) L[t][s]) dy_t */
        float m[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                m[j][e] = __ldg(cbc + (size_t)(r0 + ssdm_col(j, e & 1)) * QP + w.row0 + ssdm_row(e >> 1));
        if (one) ssdm_decay_t<false>(m, dc_t, seg_t, dcs, segs, A, r0 - w.row0);
        else ssdm_decay_t<true>(m, dc_t, seg_t, dcs, segs, A, r0 - w.row0);
        ssdm_mma_acc_t<4, 8>(gb, m, dYt, SSDM_LP, 0);
        /* dB += ((x_s . dy_t) L[t][s]) C_t */
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) m[j][e] = 0.0f;
#pragma unroll
        for (int kb = 0; kb < 4; kb++)
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                uint32_t b[4];
                ssdm_load_b(b, dYt, SSDM_LP, 8 * j, 16 * kb);
                ssdm_mma2(m + j, xf[kb], b);
            }
        if (one) ssdm_decay_t<false>(m, dc_t, seg_t, dcs, segs, A, r0 - w.row0);
        else ssdm_decay_t<true>(m, dc_t, seg_t, dcs, segs, A, r0 - w.row0);
        ssdm_mma_acc_t<4, NT>(dB, m, Ct, LN, 0);
    }
    /* epilogue: dx, din, dD (x_s from Xs, dy_s from global), then dB and zb (B_s from Bs) */
    float Dh = D[w.h], dD_acc = 0.0f;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = ssdm_row(i);
        bool valid = r < w.nrows;
        size_t t_row = row + w.row0 + r;
        float din_v = 0.0f, zb_v = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) {
            int p = ssdm_col(j, 0);
            if (valid && p < P) {
                float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Xs + r * SSDM_LP + p));
                float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dy + t_row * HP + w.h * P + p));
                float gb0 = gb[j][2 * i], gb1 = gb[j][2 * i + 1];
                *reinterpret_cast<__nv_bfloat162 *>(dxBC + t_row * s.conv_dim + w.h * P + p) =
                    __floats2bfloat162_rn(Dh * g.x + dls[i] * gb0, Dh * g.y + dls[i] * gb1);
                din_v += x.x * gb0 + x.y * gb1;
                dD_acc += g.x * x.x + g.y * x.y;
            }
        }
        ssdm_bf16 *dB_out = dBC + t_row * s.H * 2 * N_ + w.h * 2 * N_;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int n = ssdm_col(j, 0);
            float v0 = dls[i] * dB[j][2 * i], v1 = dls[i] * dB[j][2 * i + 1];
            float2 bv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Bs + r * LN + n));
            zb_v += bv.x * v0 + bv.y * v1;
            if (valid) *reinterpret_cast<__nv_bfloat162 *>(dB_out + n) = __floats2bfloat162_rn(v0, v1);
        }
        din_v = ssdm_quad_sum(din_v);
        zb_v = ssdm_quad_sum(zb_v);
        if (valid && (threadIdx.x & 3) == 0) {
            size_t o = (size_t)w.bh * s.T + w.t0 + w.row0 + r;
            din[o] = din_v;
            zb[o] = zb_v;
        }
    }
    dD_acc = block_reduce_sum(dD_acc);
    if (threadIdx.x == 0) dD_part[dD_slot] = dD_acc;
}

/* ------------------------------------------------------------------------------------------------
 * Backward, dC for the tile's 64 steps t (s tiles up to the diagonal one). Writes this head's dC
 * share (dBC index 1, bf16) and zc_t = C_t . dC_t. Grid (tiles per chunk, nchunks, B*H).
 */
template <int N_, bool SEG>
__global__ void __launch_bounds__(SSDM_THREADS, 3) ssdm_backward_dc_kernel(ssdm_bf16 *dBC, float *zc, const floatX *dy,
                                                                       const floatX *xBC, const float *delta,
                                                                       const float *dcum, const float *s_planes,
                                                                       const int *segment, const float *A_log,
                                                                       SSDScanShape s) {
    constexpr int LN = N_ + SSDM_PAD, NT = N_ / 8;
    constexpr int REGION = ssdm_region<N_>();
    extern __shared__ __align__(16) unsigned char ssdm_smem[];
    ssdm_bf16 *dYt = (ssdm_bf16 *)ssdm_smem, *Cs = dYt + SSDM_TILE * SSDM_LP, *region = Cs + SSDM_TILE * LN;
    ssdm_bf16 *Shi = region, *Slo = region + SSDM_TILE * LN; /* prologue: S_in */
    ssdm_bf16 *Bs = region, *Xs = region + SSDM_TILE * LN;   /* then: the s tiles */
    float *dc_s = (float *)(region + REGION), *dl_s = dc_s + SSDM_TILE;
    int *seg_s = (int *)(dl_s + SSDM_TILE);
    SSDMPlace w = ssdm_place(s);
    if (w.nrows <= 0) return;
    if (!SEG) segment = NULL; /* every mask folds to 1 at compile time */
    int P = s.P, HP = s.H * P;
    const float *dl = delta + (size_t)w.bh * s.T + w.t0, *dc = dcum + (size_t)w.bh * s.T + w.t0;
    float A = -expf(A_log[w.h]), dc_last = dc[w.len - 1];
    size_t row = (size_t)w.b * s.T + w.t0;
    int b_col = HP + w.g * N_, c_col = HP + s.G * N_ + w.g * N_;
    ssdm_load_rows(dYt, SSDM_LP, SSDM_TILE, dy + (row + w.row0) * HP, HP, w.h * P, P, w.nrows);
    ssdm_load_rows(Cs, LN, N_, xBC + (row + w.row0) * s.conv_dim, s.conv_dim, c_col, N_, w.nrows);
    ssdm_load_planes<N_>(Shi, Slo, LN, s_planes, (size_t)w.bh * w.nc + w.c, P);
    float dct[2];
    int segt[2], seg_in = ssd_segment_before(segment, s, w.b, w.t0);
#pragma unroll
    for (int i = 0; i < 2; i++) dct[i] = ssdm_row(i) < w.nrows ? dc[w.row0 + ssdm_row(i)] : dc_last;
    ssdm_row_segments(segt, segment, s, w.b, w.t0 + w.row0, w.nrows);
    ssdm_cp_wait();
    __syncthreads();
    /* state part: exp(A dc_t) dy_t S_in at the steps of S_in's document (the dy_t fragments are reloaded where
     * needed: registers are short) */
    float dC[NT][4] = {};
    ssdm_mma_rows<4, NT, true, true>(dC, dYt, SSDM_LP, Shi, Slo, LN);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        float e = segt[i] == seg_in ? __expf(A * dct[i]) : 0.0f;
#pragma unroll
        for (int j = 0; j < NT; j++) dC[j][2 * i] *= e, dC[j][2 * i + 1] *= e;
    }
    /* s tiles up to the diagonal one: those apart from the block's tile skipped, those in one document with it
     * unmasked */
    unsigned pairs = ssdm_tile_pairs<SEG>(segment, s, w, false);
    for (int st = 0; st <= w.tile; st++) {
        if (SEG && ssdm_pair_apart(pairs, st)) continue;
        bool one = !SEG || ssdm_pair_one(pairs, st);
        int s0 = st * SSDM_TILE, srows = min(SSDM_TILE, w.len - s0);
        __syncthreads();
        ssdm_load_rows(Bs, LN, N_, xBC + (row + s0) * s.conv_dim, s.conv_dim, b_col, N_, srows);
        ssdm_load_rows(Xs, SSDM_LP, SSDM_TILE, xBC + (row + s0) * s.conv_dim, s.conv_dim, w.h * P, P, srows);
        ssdm_load_steps(dc_s, dl_s, dc + s0, dl + s0, srows, dc_last);
        if (!one) ssdm_load_segments(seg_s, segment, s, w.b, w.t0 + s0, srows);
        ssdm_cp_wait();
        __syncthreads();
        /* dC += ((dy_t . x_s) L[t][s] delta_s) B_s */
        float m[8][4] = {};
        ssdm_mma_rows<4, 8>(m, dYt, SSDM_LP, Xs, NULL, SSDM_LP);
        if (one) ssdm_decay_s<false>(m, dc_s, dl_s, seg_s, dct, segt, A, s0, w.row0);
        else ssdm_decay_s<true>(m, dc_s, dl_s, seg_s, dct, segt, A, s0, w.row0);
        ssdm_mma_acc_t<4, NT>(dC, m, Bs, LN, 0);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int r = ssdm_row(i);
        bool valid = r < w.nrows;
        size_t t_row = row + w.row0 + r;
        ssdm_bf16 *dC_out = dBC + t_row * s.H * 2 * N_ + w.h * 2 * N_ + N_;
        float zc_v = 0.0f;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int n = ssdm_col(j, 0);
            float2 cv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(Cs + r * LN + n));
            zc_v += cv.x * dC[j][2 * i] + cv.y * dC[j][2 * i + 1];
            if (valid)
                *reinterpret_cast<__nv_bfloat162 *>(dC_out + n) = __floats2bfloat162_rn(dC[j][2 * i], dC[j][2 * i + 1]);
        }
        zc_v = ssdm_quad_sum(zc_v);
        if (valid && (threadIdx.x & 3) == 0) zc[(size_t)w.bh * s.T + w.t0 + w.row0 + r] = zc_v;
    }
}

/* ------------------------------------------------------------------------------------------------
 * d delta from z = zc - zb, din and gs = <G_out, S_out> (S_out is the state entering the next chunk; the
 * last chunk has G_out = 0), which the reverse state passing left in per-warp partials; then the chunk's
 * dA_log partial, and the dt backward: ddt_raw = d delta sigmoid(dt_raw + dt_bias) and the chunk's
 * ddt_bias partial. Grid (nchunks, B*H), blockDim >= Q.
 */
__global__ void ssdm_ddelta_kernel(floatX *ddt_raw, float *ddt_part, float *dA_part, const float *zc, const float *zb,
                                   const float *din, const float *dcum, const float *gs_part, int gs_parts,
                                   const floatX *dt_raw, const float *dt_bias, const float *A_log, SSDScanShape s) {
    int c = blockIdx.x, nc = gridDim.x, bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    int t0 = c * s.Q, len = min(s.Q, s.T - t0);
    float gs = 0.0f;
    for (int k = threadIdx.x; k < gs_parts; k += blockDim.x) gs += gs_part[((size_t)bh * nc + c) * gs_parts + k];
    gs = block_reduce_sum(gs);
    size_t base = (size_t)bh * s.T + t0;
    int i = threadIdx.x, t = len - 1 - i; /* thread i takes step t, so an inclusive scan sums t' >= t */
    bool valid = i < len;
    float z = valid ? zc[base + t] - zb[base + t] : 0.0f;
    float r = ssd_block_inclusive_scan(z) + gs;
    float A = -expf(A_log[h]), grad = 0.0f;
    if (valid) {
        size_t raw = ((size_t)b * s.T + t0 + t) * s.d_in_proj + h;
        grad = ssd_softplus_grad(A * r + din[base + t], to_float(dt_raw[raw]) + dt_bias[h]);
        ddt_raw[raw] = from_float<floatX>(grad);
    }
    float dA = block_reduce_sum(valid ? z * dcum[base + t] : 0.0f);
    float ddt = block_reduce_sum(grad);
    size_t part = ((size_t)b * nc + c) * s.H + h;
    if (threadIdx.x == 0) {
        dA_part[part] = A * (dA + gs * dcum[base + len - 1]);
        ddt_part[part] = ddt;
    }
}

/* ------------------------------------------------------------------------------------------------
 * Launchers, and the path's forward and backward (called by ssd_scan_dispatch)
 */
/* A second stream for the tensor-core path's stages that need nothing from the ones before them (C B^T
 * beside the dt and chunk-state stages of the forward, dC and its sum over heads beside dstates, the
 * state passing and dx in the backward): forked from the caller's stream and joined back into it by
 * events, so the caller sees one stream. Created on first use (one process drives one GPU). */
typedef struct {
    cudaStream_t stream;
    cudaEvent_t fork, join;
} SSDSide;

static SSDSide *ssd_side(void) {
    static SSDSide side;
    static bool ready = false;
    if (!ready) {
        cudaCheck(cudaStreamCreateWithFlags(&side.stream, cudaStreamNonBlocking));
        cudaCheck(cudaEventCreateWithFlags(&side.fork, cudaEventDisableTiming));
        cudaCheck(cudaEventCreateWithFlags(&side.join, cudaEventDisableTiming));
        ready = true;
    }
    return &side;
}

/* the side stream, after all that `stream` holds so far */
static cudaStream_t ssd_fork(cudaStream_t stream) {
    SSDSide *side = ssd_side();
    cudaCheck(cudaEventRecord(side->fork, stream));
    cudaCheck(cudaStreamWaitEvent(side->stream, side->fork, 0));
    return side->stream;
}

/* `stream` goes on once the side stream's work so far is done */
static void ssd_join(cudaStream_t stream) {
    SSDSide *side = ssd_side();
    cudaCheck(cudaEventRecord(side->join, side->stream));
    cudaCheck(cudaStreamWaitEvent(stream, side->join, 0));
}

template <int N_>
static void ssdm_launch_states(const SSDScanShape *s, float *out, const floatX *u_src, const floatX *xBC,
                               const float *delta, const float *dcum, const int *segment, const float *A_log, int mode,
                               cudaStream_t stream) {
    size_t smem = ssdm_states_smem(N_, s->diagonal);
    auto kernel = s->diagonal ? (segment ? ssdm_states_kernel<N_, true, true> : ssdm_states_kernel<N_, false, true>)
                              : (segment ? ssdm_states_kernel<N_, true, false> : ssdm_states_kernel<N_, false, false>);
    ssd_set_smem(kernel, smem);
    dim3 grid(1, ssd_num_chunks(s), s->B * s->H);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>(out, u_src, xBC, delta, dcum, segment, A_log, *s, mode);
    cudaCheckLaunch();
}

template <int N_>
static void ssdm_launch_cb(const SSDScanShape *s, float *cb, const floatX *xBC, cudaStream_t stream) {
    size_t smem = sizeof(ssdm_bf16) * 2 * SSDM_TILE * (N_ + SSDM_PAD);
    ssd_set_smem(ssdm_cb_kernel<N_>, smem);
    dim3 grid(ssd_num_tiles(s) * ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->G);
    ssdm_cb_kernel<N_><<<grid, SSDM_THREADS, smem, stream>>>(cb, xBC, *s);
    cudaCheckLaunch();
}

template <int N_>
static void ssdm_launch_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                const int *segment, const float *A_log, const float *D, cudaStream_t stream) {
    size_t smem = ssdm_forward_smem<N_>();
    auto kernel = segment ? ssdm_forward_kernel<N_, true> : ssdm_forward_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>(y, xBC, ws->cb, ws->delta, ws->dcum, ws->states, segment, A_log, D, *s);
    cudaCheckLaunch();
}

/* dC and its sum over heads into dxBC (the side stream's part of the backward) */
template <int N_>
static void ssdm_launch_dc(const SSDScanShape *s, floatX *dxBC, const floatX *dy, const floatX *xBC,
                           const SSDScanWorkspace *ws, const int *segment, const float *A_log, cudaStream_t stream) {
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssdm_backward_smem<N_>();
    auto kernel = segment ? ssdm_backward_dc_kernel<N_, true> : ssdm_backward_dc_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>((ssdm_bf16 *)ws->dBC, ws->zc, dy, xBC, ws->delta, ws->dcum, ws->states,
                                                 segment, A_log, *s);
    cudaCheckLaunch();
    ssd_launch_dBC_store(s, dxBC, (const ssdm_bf16 *)ws->dBC, 1, 1, stream);
}

/* dx (with dB and its sum over heads), then, joined with the side stream's dC, d delta */
template <int N_>
static void ssdm_launch_backward(const SSDScanShape *s, floatX *dxBC, floatX *ddt_raw, const floatX *dy,
                                 const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                                 const SSDScanWorkspace *ws, const int *segment, const float *A_log, const float *D,
                                 cudaStream_t stream) {
    dim3 grid(ssd_num_tiles(s), ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssdm_backward_smem<N_>();
    auto kernel = segment ? ssdm_backward_dx_kernel<N_, true> : ssdm_backward_dx_kernel<N_, false>;
    ssd_set_smem(kernel, smem);
    kernel<<<grid, SSDM_THREADS, smem, stream>>>(dxBC, (ssdm_bf16 *)ws->dBC, ws->zb, ws->din, ws->dD_part, dy, xBC, ws->cb,
                                                 ws->delta, ws->dcum, ws->g_planes, segment, A_log, D, *s);
    cudaCheckLaunch();
    ssd_launch_dBC_store(s, dxBC, (const ssdm_bf16 *)ws->dBC, 0, 1, stream);
    ssd_join(stream); /* dC, its sum and zc, from the side stream */
    dim3 dgrid(ssd_num_chunks(s), s->B * s->H);
    ssdm_ddelta_kernel<<<dgrid, ceil_div(s->Q, 32) * 32, 0, stream>>>(ddt_raw, ws->ddt_part, ws->dA_part, ws->zc, ws->zb,
                                                                       ws->din, ws->dcum, ws->gs_part, ssd_pass_warps(s),
                                                                       dt_raw, dt_bias, A_log, *s);
    cudaCheckLaunch();
}

template <int N_>
static void ssdm_scan_forward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    cudaStream_t side = ssd_fork(c->stream);
    ssdm_launch_cb<N_>(s, ws->cb, c->xBC, side);
    ssd_launch_dt_forward(s, ws, c->dt_raw, c->dt_bias, c->stream);
    /* the chunk states go to scratch (dstates: a later layer's saved part, or this layer's backward
     * scratch, both free during this forward) and come back as planes in states */
    ssdm_launch_states<N_>(s, ws->dstates, c->xBC, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_STATES,
                           c->stream);
    ssd_launch_passing(s, ws->dstates, ws->states, c->state_in, c->state_out, c->segment, ws, c->A_log, 0, c->stream);
    ssd_join(c->stream);
    ssdm_launch_forward<N_>(s, c->y, c->xBC, ws, c->segment, c->A_log, c->D, c->stream);
}

template <int N_>
static void ssdm_scan_backward(const SSDScanShape *s, const SSDScanCall *c) {
    const SSDScanWorkspace *ws = &c->ws;
    cudaStream_t side = ssd_fork(c->stream); /* joined before d delta (ssdm_launch_backward) */
    ssdm_launch_dc<N_>(s, c->dxBC, c->dy, c->xBC, ws, c->segment, c->A_log, side);
    ssdm_launch_states<N_>(s, ws->dstates, c->dy, c->xBC, ws->delta, ws->dcum, c->segment, c->A_log, SSD_REDUCE_DSTATES,
                           c->stream);
    ssd_launch_passing(s, ws->dstates, ws->g_planes, NULL, NULL, c->segment, ws, c->A_log, 1, c->stream);
    ssdm_launch_backward<N_>(s, c->dxBC, c->ddt_raw, c->dy, c->xBC, c->dt_raw, c->dt_bias, ws, c->segment, c->A_log, c->D,
                             c->stream);
    int blocks = s->B * ssd_num_chunks(s);
    ssd_launch_param_grads(s, c->ddt_bias, c->dA_log, c->dD, ws, blocks * ssd_num_tiles(s), blocks, c->stream);
}

#endif
