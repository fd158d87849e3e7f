/*
 * The SSD scan of a Mamba-2 / SSD-Mamba layer on the GPU, forward and backward, for a scalar A (one
 * decay rate per head) or a diagonal A (one per head and state). The math is in model/cpu_ssd.h:
 *     delta_t = softplus(dt_raw_t[h] + dt_bias[h]),   A = -exp(A_log)
 *     S_t = exp(delta_t A[h,:]) (.) S_{t-1} + delta_t x_t[h] B_t[g]^T,    y_t[h] = S_t C_t[g] + D[h] x_t[h]
 *
 * Two implementations share this file's steps 1, 3 and 5 (delta and dc, state passing, the sums): for
 * a scalar A with heads of width P <= 64, bf16 builds run the chunk-parallel tensor-core kernels of
 * ssd_scan_mma.cuh (whole 64-step tiles); a diagonal A, wider heads and the FP32 build run the
 * sub-block kernels of ssd_scan_sub.cuh (steps 2 and 4 as described below).
 *
 * Chunked algorithm. With dc_t the cumulative sum of delta inside a chunk, every decay between two
 * steps s <= t of a chunk is exp(A[n] (dc_t - dc_s)) <= 1, so no factor can overflow.
 *   1. dt:         delta and dc for every step                              (one block per chunk)
 *   2. states:     each chunk's own final state from a zero start, the GEMM
 *                  Z = (delta x)^T (B exp(A (dc_last - dc)))  (P x N, K = chunk steps)
 *   3. passing:    the state entering each chunk, chunk after chunk         (one thread per (p, n))
 *   4. chunk scan: one block per (chunk, head) holds the head's whole P x N state in shared memory and
 *                  walks the chunk in sub-blocks of SSD_SUB steps; per sub-block (ref = dc before it,
 *                  end = dc at its last step):
 *                    y   = (C exp(A (dc - ref))) S^T + M (delta x) + D x   with M[t][s] = C_t.B_s
 *                          decayed from s to t (s <= t), the intra-sub-block term
 *                    S  <- exp(A (end - ref)) S + (delta x)^T (B exp(A (end - dc)))
 * For a diagonal A the decay of M depends on n, so M is summed with one exp per (t, s, n) (SIMT);
 * splitting it into a product of two factors would need exp(-A (dc_s - ref)) >= 1, which overflows
 * for large delta |A| (the test's stress shape). Every other product is a GEMM with bounded operands.
 *
 * Backward (gradients of sum(dy . y)), with G = dL/dS the adjoint state:
 *   1. dstates:    each chunk's gradient w.r.t. its entering state, dy^T (C exp(A dc)) (same GEMM as 2)
 *   2. passing:    reversed: the gradient w.r.t. each chunk's final state from all later chunks
 *   3. chunk scan: a forward sweep re-forms S to give dC_t = S_t^T dy_t, a reverse sweep carries G to
 *                  give dx_t = D dy_t + delta_t G_t B_t and dB_t = delta_t G_t^T x_t. Per sub-block,
 *                  with W[t][s] = dy_t . (delta x)_s (s <= t):
 *                    dC = exp(A (dc - ref)) (.) (dy S) + sum_s W[t][s] B_s decayed from s to t
 *                    gb = (B exp(A (end - dc))) G^T + M^T dy                  (G_s B_s, per step s)
 *                    dB = exp(A (end - dc)) (.) ((delta x) G) + sum_t W[t][s] C_t decayed from s to t
 *                    G <- exp(A (end - ref)) G + dy^T (C exp(A (dc - ref)))
 *      The decays' gradient uses u_t = A (sum of delta up to t): dL/du_t[n] = z_t[n] =
 *      C_t[n] dC_t[n] - B_t[n] dB_t[n] (this head's share of dB, dC), so with r_t = sum_{t'>=t} z_t'
 *      d delta_t = sum_n A[n] r_t[n] + x_t . (G_t B_t)   and   dA[n] = sum_t delta_t r_t[n].
 *      The part of r_t from later chunks is sum_p G_end[p,n] S_end[p,n] at the chunk's end.
 *   4. dt:         d dt_raw = d delta * sigmoid(dt_raw + dt_bias).
 *   5. sums:       dB, dC over the heads of a group; dA_log, dD, ddt_bias over the per-block partials.
 *
 * GEMM tiles: all operands sit in fp32 shared memory. In bf16 builds a warp computes a 16 x 8 tile
 * with tensor cores (mma.sync m16n8k16, fp32 accumulation), each operand split into a bf16 value and
 * a bf16 remainder (three MMAs, ~16-bit operands: see ssd_mma); the fp32 build (the precision
 * reference) computes the same tiles with fp32 FMAs in the same register layout, so both builds run
 * the same indexing.
 *
 * Carried state (evaluation across consecutive windows): the forward may take a state [B][H][P][N]
 * (fp32) that enters the first chunk instead of zero; it is replaced by the state after step T - 1.
 * The backward does not give its gradient (training starts every sequence from zero).
 *
 * Deterministic: no atomics. Every sum runs in a fixed order (warp shuffles, then shared memory in
 * a fixed order), so two runs on the same inputs give bitwise-equal outputs and gradients. Each
 * head writes its own share of dB, dC to the workspace (fp32; bf16 in the tensor-core path) and the
 * store kernel adds the heads of a group in head order; each chunk block writes its dA_log, dD
 * partial sums (and its ddt_bias sum), which ssd_param_grads_kernel adds in a fixed order to the
 * caller's gradients. d delta has one writer per step (the block of its chunk).
 *
 * Streams: the tensor-core path runs its stages that need nothing from the ones before them on a
 * side stream forked from the caller's and joined back into it (ssd_fork, ssd_join), so to the
 * caller the scan is one stream's work, with no host synchronisation.
 */
#ifndef SSD_KERNELS_SSD_SCAN_CUH
#define SSD_KERNELS_SSD_SCAN_CUH

#include <stdint.h>

#include "common.cuh"

typedef struct { int B, T, H, P, G, N, Q; int diagonal; int conv_dim; int d_in_proj; } SSDScanShape;

#define SSD_SUB 16        /* steps per sub-block of the chunk scan */
#define SSD_THREADS 256
#define SSD_WARPS (SSD_THREADS / 32)
#define SSD_MAX_CHUNK 1024
#define SSD_MAX_P 128
#define SSD_REDUCE_STEPS 32 /* steps per shared-memory stage of the chunk-state GEMM */
#define SSD_REDUCE_THREADS 512
#define SSD_REDUCE_WARPS (SSD_REDUCE_THREADS / 32)
#define SSDM_TILE 64 /* steps per tile of the tensor-core path (ssd_scan_mma.cuh) */

/* ------------------------------------------------------------------------------------------------
 * Workspace: what the forward keeps for the backward, then the backward's scratch.
 */
typedef struct {
    float *delta;    /* [B][H][T] softplus(dt_raw + dt_bias) */
    float *dcum;     /* [B][H][T] inclusive cumulative sum of delta within each chunk */
    float *states;   /* [B][H][nchunks][P][N] the state entering each chunk; in the tensor-core path two
                        bf16 planes per chunk instead, [2][P][N]: its value and remainder */
    float *dstates;  /* [B][H][nchunks][P][N] backward: dL/d(state leaving each chunk) from later chunks; in
                        the tensor-core path the chunks' own states (forward: each chunk's Z, backward: its
                        dZ), which the state passing reads */
    float *ddelta;   /* [B][H][T] backward, sub-block path: d delta */
    float *dBC;      /* [B*T][H][2][N] backward: each head's own share of dB (index 0) and dC (index 1);
                        bf16 in the tensor-core path (and sized for bf16 there) */
    float *dA_part;  /* [B][nchunks][H][NA] backward: dA_log of each chunk block (NA = N diagonal, 1 scalar) */
    float *dD_part;  /* [B][nchunks][tiles][H] backward: dD of each chunk block (or of each of its 64-step
                        tiles in the tensor-core path) */
    float *ddt_part; /* [B][H] backward: ddt_bias of each (batch, head); [B][nchunks][H] in the tensor-core
                        path, of each chunk */
    float *zc, *zb;  /* [B][H][T] backward, tensor-core path: C_t . dC_t and B_t . dB_t (this head's shares) */
    float *din;      /* [B][H][T] backward, tensor-core path: x_t . (G_t B_t) */
    float *cb;       /* [B][G][nchunks][QP][QP] tensor-core path: C_t . B_s per chunk (QP: Q rounded up to
                        whole tiles), from the forward, kept for the backward */
    float *gs_part;  /* [B][H][nchunks][warps] tensor-core path, backward: <G_out, S_out> of each chunk in
                        per-warp partial sums of the reverse state passing */
    float *g_planes; /* [B][H][nchunks][2][P][N] bf16, tensor-core path, backward: dL/d(state leaving each
                        chunk) as value and remainder planes */
} SSDScanWorkspace;

/* The bf16 tensor-core path (ssd_scan_mma.cuh) takes scalar A and heads of width P <= 64; other shapes
 * and the fp32 build run the sub-block kernels (ssd_scan_sub.cuh). */
static bool ssdm_applies(const SSDScanShape *s) {
#if defined(ENABLE_FP32)
    return false;
#else
    return !s->diagonal && s->P <= SSDM_TILE;
#endif
}

__host__ __device__ static inline int ssd_num_chunks(const SSDScanShape *s) { return (s->T + s->Q - 1) / s->Q; }

/* 64-step tiles per chunk (the tensor-core path's unit of work) */
__host__ __device__ static inline int ssd_num_tiles(const SSDScanShape *s) { return (s->Q + SSDM_TILE - 1) / SSDM_TILE; }

/* the state passing: threads of 4 state elements, blocks of SSD_PASS_THREADS, per (batch, head) */
#define SSD_PASS_THREADS 256
static inline int ssd_pass_blocks(const SSDScanShape *s) { return (s->P * s->N / 4 + SSD_PASS_THREADS - 1) / SSD_PASS_THREADS; }
static inline int ssd_pass_warps(const SSDScanShape *s) { return ssd_pass_blocks(s) * SSD_PASS_THREADS / 32; }

/* dA_log entries per head: one per state (diagonal A) or one (scalar A) */
static inline int ssd_num_rates(const SSDScanShape *s) { return s->diagonal ? s->N : 1; }

static inline size_t ssd_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

static SSDScanWorkspace ssd_scan_workspace_view(const SSDScanShape *s, void *workspace, size_t *total,
                                               size_t *saved) {
    size_t blocks = (size_t)s->B * ssd_num_chunks(s) * s->H;
    size_t bht = (size_t)s->B * s->H * s->T * sizeof(float);
    size_t st = blocks * s->P * s->N * sizeof(float);
    bool mma = ssdm_applies(s);
    size_t bc = (size_t)s->B * s->T * s->H * 2 * s->N * (mma ? sizeof(__nv_bfloat16) : sizeof(float));
    size_t da = blocks * ssd_num_rates(s) * sizeof(float);
    size_t tiles = ssd_num_tiles(s); /* the tensor-core path's dD partials: one per tile */
    size_t qp = tiles * SSDM_TILE, cb = mma ? (size_t)s->B * s->G * ssd_num_chunks(s) * qp * qp * 4 : 0;
    SSDScanWorkspace ws;
    /* what the forward writes for the backward first (delta, dcum, states, cb), then the scratch */
    struct {
        float **ptr;
        size_t bytes;
    } arrays[] = {{&ws.delta, bht},
                  {&ws.dcum, bht},
                  {&ws.states, st},
                  {&ws.cb, cb},
                  {&ws.dstates, st},
                  {&ws.ddelta, mma ? 0 : bht}, /* the tensor-core path keeps d delta in registers */
                  {&ws.dBC, bc},
                  {&ws.dA_part, da},
                  {&ws.dD_part, blocks * tiles * sizeof(float)},
                  {&ws.ddt_part, blocks * sizeof(float)},
                  {&ws.zc, bht},
                  {&ws.zb, bht},
                  {&ws.din, bht},
                  {&ws.gs_part, mma ? blocks * ssd_pass_warps(s) * sizeof(float) : 0},
                  {&ws.g_planes, mma ? st : 0}};
    size_t offset = 0;
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        *arrays[i].ptr = workspace ? (float *)((char *)workspace + offset) : NULL;
        offset += ssd_align(arrays[i].bytes);
        if (arrays[i].ptr == &ws.cb && saved) *saved = offset;
    }
    if (total) *total = offset;
    return ws;
}

/* Exits with a message naming the field on a shape these kernels cannot run. */
static void ssd_scan_check_shape(const SSDScanShape *s) {
    const char *bad = NULL;
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->G < 1) bad = "B, T, H, G must be positive";
    else if (s->H % s->G != 0) bad = "H must be a multiple of G (ngroups)";
    else if (s->P < 16 || s->P % 16 != 0 || s->P > SSD_MAX_P) bad = "P (headdim) must be a multiple of 16 in [16, 128]";
    else if (s->N != 16 && s->N != 32 && s->N != 64 && s->N != 128) bad = "N (d_state) must be 16, 32, 64 or 128";
    else if (s->Q < 1 || s->Q > SSD_MAX_CHUNK) bad = "Q (chunk_size) must be in [1, 1024]";
    else if (s->conv_dim != s->H * s->P + 2 * s->G * s->N) bad = "conv_dim must equal H*P + 2*G*N";
    else if ((long)s->B * s->H > 65535) bad = "B*H must be at most 65535";
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
    ssd_scan_workspace_view(s, NULL, &total, NULL);
    return total;
}

/* The leading part of the workspace that the forward writes and the backward reads (delta, dcum,
 * states, and C B^T in the tensor-core path); the rest is scratch. A model can therefore give layer l
 * the workspace at l * saved_bytes of one buffer of (L - 1) * saved + total bytes: layer l's scratch
 * then overlaps only later layers, whose backward has already run (or, during the forward, whose
 * forward has not yet: the tensor-core path's forward uses scratch too). */
size_t ssd_scan_saved_bytes(const SSDScanShape *s) {
    ssd_scan_check_shape(s);
    size_t saved;
    ssd_scan_workspace_view(s, NULL, NULL, &saved);
    return saved;
}

/* ------------------------------------------------------------------------------------------------
 * Device helpers
 */
__device__ __forceinline__ float ssd_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }
/* d dt_raw from d delta, delta = softplus(dt_raw + dt_bias): d delta sigmoid(dt_raw + dt_bias) */
__device__ __forceinline__ float ssd_softplus_grad(float d_delta, float v) { return d_delta / (1.0f + expf(-v)); }

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

/* Sum over the 16 lanes of a half warp. */
__device__ __forceinline__ float ssd_reduce16(float v) {
#pragma unroll
    for (int offset = 8; offset >= 1; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * Warp GEMM tiles. A view reads element (r, k) of an fp32 shared-memory matrix at p[r * rs + k * ks],
 * so one array serves as an operand and as its transpose.
 */
struct SSDView {
    const float *p;
    int rs, ks;
    __device__ __forceinline__ float at(int r, int k) const { return p[r * rs + k * ks]; }
};

/* Element i (0..3) of a warp's 16 x 8 tile sits at row ssd_tile_row(i), column ssd_tile_col(i). */
__device__ __forceinline__ int ssd_tile_row(int i) { return ((threadIdx.x & 31) >> 2) + 8 * (i >> 1); }
__device__ __forceinline__ int ssd_tile_col(int i) { return 2 * (threadIdx.x & 3) + (i & 1); }

/* Two fp32 values as a bf16x2 of their roundings (hi) and a bf16x2 of what the rounding left (lo):
 * hi + lo holds 16 significant bits of each value. */
struct SSDSplit {
    uint32_t hi, lo;
};
__device__ __forceinline__ SSDSplit ssd_split_bf16(float x0, float x1) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
    float2 hf = __bfloat1622float2(h);
    __nv_bfloat162 l = __floats2bfloat162_rn(x0 - hf.x, x1 - hf.y);
    SSDSplit v = {*reinterpret_cast<uint32_t *>(&h), *reinterpret_cast<uint32_t *>(&l)};
    return v;
}

#if !defined(ENABLE_FP32)
__device__ __forceinline__ void ssd_mma_bf16(float (&acc)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
#endif

/* acc[16 x 8] += sum_{k < K} a(r, k) b(c, k), K a multiple of 16. bf16 builds: three mma.sync
 * m16n8k16 per 16 k, a_lo b_hi + a_hi b_lo + a_hi b_hi with each operand split into bf16 hi + lo
 * (the dropped a_lo b_lo is 2^-18 of the product), so the tile is as precise as ~16-bit operands:
 * single bf16 operands leave 2^-9 relative errors that the cancelling sums of dA_log and dt_bias
 * amplify past 2e-2. fp32 build: fp32 FMAs on the same register layout. */
__device__ __forceinline__ void ssd_mma(float (&acc)[4], SSDView a, SSDView b, int K) {
    int lane = threadIdx.x & 31, g = lane >> 2, q = 2 * (lane & 3);
#if defined(ENABLE_FP32)
#pragma unroll 4
    for (int k = 0; k < K; k++) {
        float a0 = a.at(g, k), a1 = a.at(g + 8, k), b0 = b.at(q, k), b1 = b.at(q + 1, k);
        acc[0] += a0 * b0;
        acc[1] += a0 * b1;
        acc[2] += a1 * b0;
        acc[3] += a1 * b1;
    }
#else
#pragma unroll 1
    for (int k = 0; k < K; k += 16) {
        SSDSplit a0 = ssd_split_bf16(a.at(g, k + q), a.at(g, k + q + 1));
        SSDSplit a1 = ssd_split_bf16(a.at(g + 8, k + q), a.at(g + 8, k + q + 1));
        SSDSplit a2 = ssd_split_bf16(a.at(g, k + q + 8), a.at(g, k + q + 9));
        SSDSplit a3 = ssd_split_bf16(a.at(g + 8, k + q + 8), a.at(g + 8, k + q + 9));
        SSDSplit b0 = ssd_split_bf16(b.at(g, k + q), b.at(g, k + q + 1));
        SSDSplit b1 = ssd_split_bf16(b.at(g, k + q + 8), b.at(g, k + q + 9));
        ssd_mma_bf16(acc, a0.lo, a1.lo, a2.lo, a3.lo, b0.hi, b1.hi);
        ssd_mma_bf16(acc, a0.hi, a1.hi, a2.hi, a3.hi, b0.lo, b1.lo);
        ssd_mma_bf16(acc, a0.hi, a1.hi, a2.hi, a3.hi, b0.hi, b1.hi);
    }
#endif
}

/* what a chunk-state GEMM computes: the chunks' own states (forward) or dstates (backward) */
enum { SSD_REDUCE_STATES = 0, SSD_REDUCE_DSTATES = 1 };

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
 * 3. Passing states between chunks, one thread per 4 consecutive (p, n) of a (b, h):
 *    forward:  in[0] = 0 (or the carried state, which then becomes the state after the last chunk),
 *              in[c+1] = exp(A dc_last(c)) in[c] + own[c]
 *    backward: out[nc-1] = 0,    out[c-1] = own[c] + exp(A dc_last(c)) out[c]
 * own comes from `states`; in / out go back there in place (fp32), or, with `planes`, there as bf16
 * value and remainder planes ([B][H][nchunks][2][P][N]: the tensor-core path loads them straight into
 * shared memory). The backward can also give gs(c) = <out[c], in[c+1]> (the forward's planes as
 * `partner`), in per-warp partial sums gs_part[b][h][c][warp]. The 16-byte loads of a batch of chunks
 * are issued before the dependent updates, to overlap their latency.
 */
#define SSD_PASS_BATCH 8

/* 4 consecutive elements of a bf16 value + remainder plane pair (`plane` elements apart) */
__device__ __forceinline__ float4 ssd_load_planes4(const __nv_bfloat16 *p, size_t plane) {
    uint2 hi = *reinterpret_cast<const uint2 *>(p), lo = *reinterpret_cast<const uint2 *>(p + plane);
    float2 h01 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&hi.x));
    float2 h23 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&hi.y));
    float2 l01 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&lo.x));
    float2 l23 = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&lo.y));
    return make_float4(h01.x + l01.x, h01.y + l01.y, h23.x + l23.x, h23.y + l23.y);
}
__device__ __forceinline__ void ssd_store_planes4(__nv_bfloat16 *p, size_t plane, float4 v) {
    SSDSplit a = ssd_split_bf16(v.x, v.y), b = ssd_split_bf16(v.z, v.w);
    *reinterpret_cast<uint2 *>(p) = make_uint2(a.hi, b.hi);
    *reinterpret_cast<uint2 *>(p + plane) = make_uint2(a.lo, b.lo);
}

__global__ void __launch_bounds__(SSD_PASS_THREADS) ssd_state_passing_kernel(float *states, __nv_bfloat16 *planes,
                                                                             float *carried, const float *dcum,
                                                                             const float *A_log,
                                                                             const __nv_bfloat16 *partner,
                                                                             float *gs_part, SSDScanShape s,
                                                                             int reverse) {
    int PN = s.P * s.N, e = 4 * (blockIdx.x * blockDim.x + threadIdx.x), bh = blockIdx.y, h = bh % s.H;
    bool active = e < PN; /* inactive threads stay for the warp sums of gs */
    int warps = gridDim.x * (SSD_PASS_THREADS / 32), warp = blockIdx.x * (SSD_PASS_THREADS / 32) + threadIdx.x / 32;
    float A[4];
#pragma unroll
    for (int k = 0; k < 4; k++) A[k] = ssd_rate(A_log, h, (e + k) % s.N, s.N, s.diagonal);
    int nc = ssd_num_chunks(&s);
    const float *dc = dcum + (size_t)bh * s.T;
    float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 run = carried && active ? *reinterpret_cast<const float4 *>(carried + (size_t)bh * PN + e) : zero;
    for (int k0 = 0; k0 < nc; k0 += SSD_PASS_BATCH) {
        float4 own[SSD_PASS_BATCH], next[SSD_PASS_BATCH];
        float last[SSD_PASS_BATCH];
#pragma unroll
        for (int i = 0; i < SSD_PASS_BATCH; i++) {
            int c = reverse ? nc - 1 - (k0 + i) : k0 + i;
            if (k0 + i < nc) {
                last[i] = dc[c * s.Q + min(s.Q, s.T - c * s.Q) - 1];
                own[i] = active ? *reinterpret_cast<const float4 *>(states + ((size_t)bh * nc + c) * PN + e) : zero;
                next[i] = partner && active && c + 1 < nc
                              ? ssd_load_planes4(partner + ((size_t)bh * nc + c + 1) * 2 * PN + e, PN)
                              : zero;
            }
        }
#pragma unroll
        for (int i = 0; i < SSD_PASS_BATCH; i++) {
            int c = reverse ? nc - 1 - (k0 + i) : k0 + i;
            if (k0 + i < nc) {
                if (active && planes) ssd_store_planes4(planes + ((size_t)bh * nc + c) * 2 * PN + e, PN, run);
                else if (active) *reinterpret_cast<float4 *>(states + ((size_t)bh * nc + c) * PN + e) = run;
                if (partner) {
                    float g = warp_reduce_sum(run.x * next[i].x + run.y * next[i].y + run.z * next[i].z +
                                              run.w * next[i].w);
                    if ((threadIdx.x & 31) == 0) gs_part[((size_t)bh * nc + c) * warps + warp] = g;
                }
                run.x = expf(A[0] * last[i]) * run.x + own[i].x;
                run.y = expf(A[1] * last[i]) * run.y + own[i].y;
                run.z = expf(A[2] * last[i]) * run.z + own[i].z;
                run.w = expf(A[3] * last[i]) * run.w + own[i].w;
            }
        }
    }
    if (carried && active) *reinterpret_cast<float4 *>(carried + (size_t)bh * PN + e) = run;
}

#include "ssd_scan_sub.cuh"

/* ------------------------------------------------------------------------------------------------
 * 5. Backward of delta = softplus(dt_raw + dt_bias): grid (H, B). Writes ddt_raw and the (batch, head)
 * sum of ddt_bias into ddt_part[b][h].
 */
__global__ void ssd_dt_backward_kernel(floatX *ddt_raw, float *ddt_part, const float *ddelta, const floatX *dt_raw,
                                       const float *dt_bias, SSDScanShape s) {
    int h = blockIdx.x, b = blockIdx.y;
    float sum = 0.0f;
    for (int t = threadIdx.x; t < s.T; t += blockDim.x) {
        size_t r = ((size_t)b * s.T + t) * s.d_in_proj + h;
        float grad = ssd_softplus_grad(ddelta[((size_t)b * s.H + h) * s.T + t], to_float(dt_raw[r]) + dt_bias[h]);
        ddt_raw[r] = from_float<floatX>(grad);
        sum += grad;
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) ddt_part[b * s.H + h] = sum;
}

/* dB (which 0), dC (1) into their columns of dxBC: the per-head shares of a group (fp32, or bf16 from the
 * tensor-core path) summed in head order in fp32; `count` kinds from which0 on. A thread takes 8
 * consecutive n (16- or 32-byte accesses: P is a multiple of 16 and N of 8, so every such run is
 * aligned). */
template <typename T>
struct alignas(8 * sizeof(T)) SSDPack8 {
    T v[8];
};

template <typename Share>
__global__ void ssd_dBC_store_kernel(floatX *dxBC, const Share *dBC, SSDScanShape s, int which0, int count) {
    size_t GN = (size_t)s.G * s.N, i = 8 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= (size_t)s.B * s.T * count * GN) return;
    size_t r = i / (count * GN), k = i % (count * GN) + which0 * GN;
    int which = (int)(k / GN), g = (int)(k % GN) / s.N, n = (int)(k % GN) % s.N, heads = s.H / s.G;
    const Share *src = dBC + (r * s.H + (size_t)g * heads) * 2 * s.N + which * s.N + n;
    float sum[8] = {};
    for (int j = 0; j < heads; j++) {
        SSDPack8<Share> v = *reinterpret_cast<const SSDPack8<Share> *>(src + (size_t)j * 2 * s.N);
#pragma unroll
        for (int e = 0; e < 8; e++) sum[e] += to_float(v.v[e]);
    }
    SSDPack8<floatX> out;
#pragma unroll
    for (int e = 0; e < 8; e++) out.v[e] = from_float<floatX>(sum[e]);
    *reinterpret_cast<SSDPack8<floatX> *>(dxBC + r * s.conv_dim + s.H * s.P + k) = out;
}

template <typename Share>
static void ssd_launch_dBC_store(const SSDScanShape *s, floatX *dxBC, const Share *dBC, int which0, int count,
                                 cudaStream_t stream) {
    long threads = (long)s->B * s->T * count * s->G * s->N / 8;
    ssd_dBC_store_kernel<<<ceil_div(threads, 256), 256, 0, stream>>>(dxBC, dBC, *s, which0, count);
    cudaCheckLaunch();
}

/* The parameter gradients (dA_log, dD, ddt_bias) in one launch: each output column summed over the rows
 * of its per-block partials and added to the caller's. A warp takes 32 columns and every 8th row from
 * its own (loads of consecutive columns); the warps' sums meet in shared memory in warp order, so every
 * run gives the same bits. Blocks enumerate the 32-column groups of the three jobs in turn. */
#define SSD_SUM_WARPS 8
typedef struct {
    float *out;
    const float *part;
    int rows, cols;
} SSDSumJob;

__global__ void ssd_param_grads_kernel(SSDSumJob a, SSDSumJob b, SSDSumJob c) {
    __shared__ float partial[SSD_SUM_WARPS][32];
    int group = blockIdx.x, ga = (a.cols + 31) / 32, gb = (b.cols + 31) / 32;
    SSDSumJob job = group < ga ? a : group < ga + gb ? b : c;
    int col0 = 32 * (group < ga ? group : group < ga + gb ? group - ga : group - ga - gb);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, col = col0 + lane;
    float sum = 0.0f;
    if (col < job.cols)
        for (int r = warp; r < job.rows; r += SSD_SUM_WARPS) sum += job.part[(size_t)r * job.cols + col];
    partial[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && col < job.cols) {
        float total = 0.0f;
        for (int w = 0; w < SSD_SUM_WARPS; w++) total += partial[w][lane];
        job.out[col] += total;
    }
}

/* ------------------------------------------------------------------------------------------------
 * Launchers
 */
/* The most dynamic shared memory a block may have on this GPU: 227 KB on sm_90 and sm_100, 163 KB on
 * sm_80, 99 KB on sm_86 and sm_89. */
static int ssd_smem_optin_limit(void) {
    static int limit = 0;
    if (limit == 0) {
        int device;
        cudaCheck(cudaGetDevice(&device));
        cudaCheck(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    }
    return limit;
}

/* Raises a kernel's dynamic shared memory limit to `bytes` where it is lower: the host call costs more
 * than the shorter kernels it would precede at every launch. (One process drives one GPU.) A shape
 * that needs more than the GPU has is refused with a message. */
template <typename Kernel>
static void ssd_set_smem(Kernel kernel, size_t bytes) {
    if (bytes > (size_t)ssd_smem_optin_limit()) {
        fprintf(stderr, "error: the SSD scan of this model (its headdim and d_state) needs %zu bytes of shared memory "
                        "per block and this GPU allows %d; a smaller d_state or headdim fits (docs/cuda.md lists what "
                        "each GPU runs)\n", bytes, ssd_smem_optin_limit());
        exit(EXIT_FAILURE);
    }
    enum { SLOTS = 32 };
    static const void *kernels[SLOTS];
    static size_t limits[SLOTS];
    static int count = 0;
    int i = 0;
    while (i < count && kernels[i] != (const void *)kernel) i++;
    if (i < count && limits[i] >= bytes) return;
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (i == count && count < SLOTS) kernels[count++] = (const void *)kernel;
    if (i < count) limits[i] = bytes;
}

/* A second stream for the tensor-core path's stages that need nothing from the ones before them (C B^T
 * beside the dt and chunk-state stages of the forward, dC and its sum over heads beside dstates, the
 * state passing and dx in the backward): forked from the caller's stream and joined back into it by events, so the caller sees
 * one stream. Created on first use (one process drives one GPU). */
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

#if !defined(ENABLE_FP32)
#include "ssd_scan_mma.cuh"
#endif

/* The tensor-core path's side-stream stages (nothing in the fp32 build, which never forks) */
template <int N_>
static void ssd_launch_side_forward(const SSDScanShape *s, const floatX *xBC, const SSDScanWorkspace *ws,
                                    cudaStream_t side) {
#if !defined(ENABLE_FP32)
    ssdm_launch_cb<N_>(s, ws->cb, xBC, side);
#endif
}
template <int N_>
static void ssd_launch_side_backward(const SSDScanShape *s, floatX *dxBC, const floatX *dy, const floatX *xBC,
                                     const SSDScanWorkspace *ws, const float *A_log, cudaStream_t side) {
#if !defined(ENABLE_FP32)
    ssdm_launch_dc<N_>(s, dxBC, dy, xBC, ws, A_log, side);
#endif
}

/* Each stage's launcher runs the tensor-core path where it applies (ssdm_applies), else its own kernels. */

template <int N_>
static void ssd_launch_forward_scan(const SSDScanShape *s, floatX *y, const floatX *xBC, const SSDScanWorkspace *ws,
                                    const float *A_log, const float *D, cudaStream_t stream) {
#if !defined(ENABLE_FP32)
    if (ssdm_applies(s)) return ssdm_launch_forward<N_>(s, y, xBC, ws, A_log, D, stream);
#endif
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_scan_smem_bytes(s);
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
#if !defined(ENABLE_FP32)
    if (ssdm_applies(s)) return ssdm_launch_states<N_>(s, out, u_src, xBC, ws->delta, ws->dcum, A_log, mode, stream);
#endif
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_reduce_smem_bytes(s);
    ssd_set_smem(ssd_chunk_reduce_kernel<N_>, smem);
    ssd_chunk_reduce_kernel<N_><<<grid, SSD_REDUCE_THREADS, smem, stream>>>(out, u_src, xBC, ws->delta, ws->dcum, A_log, *s,
                                                                     mode);
    cudaCheckLaunch();
}

template <int N_>
static void ssd_launch_backward_scan(const SSDScanShape *s, floatX *dxBC, floatX *ddt_raw, const floatX *dy,
                                     const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                                     const SSDScanWorkspace *ws, const float *A_log, const float *D,
                                     cudaStream_t stream) {
#if !defined(ENABLE_FP32)
    if (ssdm_applies(s)) return ssdm_launch_backward<N_>(s, dxBC, ddt_raw, dy, xBC, dt_raw, dt_bias, ws, A_log, D, stream);
#endif
    dim3 grid(ssd_num_chunks(s), s->B * s->H);
    size_t smem = ssd_scan_smem_bytes(s);
    if (s->diagonal) {
        ssd_set_smem(ssd_chunk_scan_backward_kernel<N_, true>, smem);
        ssd_chunk_scan_backward_kernel<N_, true><<<grid, SSD_THREADS, smem, stream>>>(
            dxBC, ws->dBC, ws->ddelta, ws->dA_part, ws->dD_part, dy, xBC, ws->delta, ws->dcum, ws->states, ws->dstates,
            A_log, D, *s);
    } else {
        ssd_set_smem(ssd_chunk_scan_backward_kernel<N_, false>, smem);
        ssd_chunk_scan_backward_kernel<N_, false><<<grid, SSD_THREADS, smem, stream>>>(
            dxBC, ws->dBC, ws->ddelta, ws->dA_part, ws->dD_part, dy, xBC, ws->delta, ws->dcum, ws->states, ws->dstates,
            A_log, D, *s);
    }
    cudaCheckLaunch();
    ssd_dt_backward_kernel<<<dim3(s->H, s->B), 256, 0, stream>>>(ddt_raw, ws->ddt_part, ws->ddelta, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
}

#define SSD_DISPATCH_N(N, CALL)                      \
    switch (N) {                                     \
    case 16: CALL(16); break;                        \
    case 32: CALL(32); break;                        \
    case 64: CALL(64); break;                        \
    default: CALL(128); break;                       \
    }

/* the state passing (forward or reverse) of the chunks' own states in `own`: in place, or into the
 * planes of the tensor-core path (which its reverse pass reads the forward's planes beside, for gs) */
static void ssd_launch_passing(const SSDScanShape *s, float *own, float *planes, float *carried,
                               const SSDScanWorkspace *ws, const float *A_log, int reverse, cudaStream_t stream) {
    bool gs = reverse && planes;
    dim3 grid(ssd_pass_blocks(s), s->B * s->H);
    ssd_state_passing_kernel<<<grid, SSD_PASS_THREADS, 0, stream>>>(
        own, (__nv_bfloat16 *)planes, carried, ws->dcum, A_log, gs ? (const __nv_bfloat16 *)ws->states : NULL,
        ws->gs_part, *s, reverse);
    cudaCheckLaunch();
}

/* state: NULL (each sequence starts from zero) or the carried [B][H][P][N] state, updated in place */
void ssd_scan_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                      const float *A_log, const float *D, float *state, void *workspace, cudaStream_t stream) {
    ssd_scan_check_shape(s);
    SSDScanWorkspace ws = ssd_scan_workspace_view(s, workspace, NULL, NULL);
    bool mma = ssdm_applies(s);
    if (mma) {
        cudaStream_t side = ssd_fork(stream);
#define SSD_FWD_SIDE(NN) ssd_launch_side_forward<NN>(s, xBC, &ws, side)
        SSD_DISPATCH_N(s->N, SSD_FWD_SIDE)
#undef SSD_FWD_SIDE
    }
    dim3 dt_grid(ssd_num_chunks(s), s->H, s->B);
    ssd_dt_forward_kernel<<<dt_grid, ceil_div(s->Q, 32) * 32, 0, stream>>>(ws.delta, ws.dcum, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
    /* the tensor-core path's chunk states go to scratch (dstates: a later layer's saved part, or this
     * layer's backward scratch, both free during this forward) and come back as planes in states */
    float *own = mma ? ws.dstates : ws.states;
#define SSD_FWD_REDUCE(NN) ssd_launch_reduce<NN>(s, own, xBC, xBC, &ws, A_log, SSD_REDUCE_STATES, stream)
    SSD_DISPATCH_N(s->N, SSD_FWD_REDUCE)
#undef SSD_FWD_REDUCE
    ssd_launch_passing(s, own, mma ? ws.states : NULL, state, &ws, A_log, 0, stream);
    if (mma) ssd_join(stream);
#define SSD_FWD_SCAN(NN) ssd_launch_forward_scan<NN>(s, y, xBC, &ws, A_log, D, stream)
    SSD_DISPATCH_N(s->N, SSD_FWD_SCAN)
#undef SSD_FWD_SCAN
}

void ssd_scan_backward(const SSDScanShape *s, floatX *dxBC, floatX *ddt_raw, float *ddt_bias, float *dA_log, float *dD,
                       const floatX *dy, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                       const float *A_log, const float *D, void *workspace, cudaStream_t stream) {
    ssd_scan_check_shape(s);
    SSDScanWorkspace ws = ssd_scan_workspace_view(s, workspace, NULL, NULL);
    bool mma = ssdm_applies(s);
    if (mma) { /* joined before d delta (ssdm_launch_backward) */
        cudaStream_t side = ssd_fork(stream);
#define SSD_BWD_SIDE(NN) ssd_launch_side_backward<NN>(s, dxBC, dy, xBC, &ws, A_log, side)
        SSD_DISPATCH_N(s->N, SSD_BWD_SIDE)
#undef SSD_BWD_SIDE
    }
#define SSD_BWD_REDUCE(NN) ssd_launch_reduce<NN>(s, ws.dstates, dy, xBC, &ws, A_log, SSD_REDUCE_DSTATES, stream)
    SSD_DISPATCH_N(s->N, SSD_BWD_REDUCE)
#undef SSD_BWD_REDUCE
    ssd_launch_passing(s, ws.dstates, mma ? ws.g_planes : NULL, NULL, &ws, A_log, 1, stream);
#define SSD_BWD_SCAN(NN) ssd_launch_backward_scan<NN>(s, dxBC, ddt_raw, dy, xBC, dt_raw, dt_bias, &ws, A_log, D, stream)
    SSD_DISPATCH_N(s->N, SSD_BWD_SCAN)
#undef SSD_BWD_SCAN
    if (!mma) ssd_launch_dBC_store(s, dxBC, (const float *)ws.dBC, 0, 2, stream); /* the tensor-core path's own */
    /* the parameter gradients: fixed-order sums of the per-block partials, added to the caller's */
    int blocks = s->B * ssd_num_chunks(s), tiles = ssd_num_tiles(s);
    SSDSumJob jobs[3] = {{dA_log, ws.dA_part, blocks, s->H * ssd_num_rates(s)},
                         {dD, ws.dD_part, mma ? blocks * tiles : blocks, s->H},
                         {ddt_bias, ws.ddt_part, mma ? blocks : s->B, s->H}};
    int groups = 0;
    for (int i = 0; i < 3; i++) groups += ceil_div(jobs[i].cols, 32);
    ssd_param_grads_kernel<<<groups, 32 * SSD_SUM_WARPS, 0, stream>>>(jobs[0], jobs[1], jobs[2]);
    cudaCheckLaunch();
}

#endif
