/*
 * What every stage of the SSD scan shares (ssd_scan.cuh has the math and the public entry points):
 * the shape and the run-time choice of path, the kernels' constants, the workspace's arrays, small
 * device helpers (softplus, the decay rates, block and half-warp sums) and the warp GEMM tile:
 *     acc[16 x 8] += sum_{k < K} a(r, k) b(c, k)
 * over fp32 shared-memory operands, on bf16 tensor cores with each operand split into a bf16 value
 * and a bf16 remainder (bf16 builds) or with fp32 FMAs in the same register layout (the FP32 build),
 * and ssd_set_smem, which raises a kernel's dynamic shared memory limit.
 */
#ifndef SSD_KERNELS_SSD_SCAN_COMMON_CUH
#define SSD_KERNELS_SSD_SCAN_COMMON_CUH

#include <stdint.h>

#include "common.cuh"

/* Which implementation runs the scan's chunk stages. AUTO takes the tensor-core path where it applies
 * (bf16 builds, scalar A, heads of width P <= 64) and the sub-block path elsewhere; SUB and MMA force
 * one (a shape or build that the forced path cannot run is refused: ssd_scan_path). */
typedef enum { SSD_PATH_AUTO = 0, SSD_PATH_SUB = 1, SSD_PATH_MMA = 2 } SSDScanPath;

/* path: SSD_PATH_AUTO (0) unless a test or benchmark forces one */
typedef struct { int B, T, H, P, G, N, Q; int diagonal; int conv_dim; int d_in_proj; SSDScanPath path; } SSDScanShape;

#define SSD_SUB 16        /* steps per sub-block of the chunk scan */
#define SSD_THREADS 256
#define SSD_WARPS (SSD_THREADS / 32)
#define SSD_MAX_CHUNK 1024
#define SSD_MAX_P 128       /* the widest head the kernels run; wider ones run as sub-heads (ssd_scan_adapt.cuh) */
#define SSD_MAX_HEADDIM 256 /* the widest head the scan takes (through the adapter above SSD_MAX_P) */
#define SSD_MAX_STATE 256   /* the largest d_state the scan takes (the kernels' d_states: 16, 32, 64, 128, 256) */
/* The shared memory per block that the adapter sizes sub-heads for (sm_90's and sm_100's 227 KB): a head
 * whose sub-block kernels need more runs as narrower sub-heads, on every GPU alike (so that the workspace
 * does not depend on the GPU); a GPU with less refuses what does not fit (ssd_scan_check_device). */
#define SSD_SPLIT_SMEM_BYTES (227 * 1024)
#define SSD_REDUCE_STEPS 32 /* steps per shared-memory stage of the chunk-state GEMM */
#define SSD_REDUCE_THREADS 512
#define SSD_REDUCE_WARPS (SSD_REDUCE_THREADS / 32)
#define SSDM_TILE 64 /* steps per tile of the tensor-core path (ssd_scan_mma.cuh) */
#define SSDM_MAX_N 128 /* the largest d_state of the tensor-core kernels; 256 runs there as two slices */
#define SSDD_CHUNK 64  /* the chunk a diagonal A runs at on the tensor-core path under SSD_PATH_AUTO */

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
                        per-warp partial sums of the reverse state passing; diagonal A: [B][H][nchunks][N],
                        per state */
    float *g_planes; /* [B][H][nchunks][2][P][N] bf16, tensor-core path, backward: dL/d(state leaving each
                        chunk) as value and remainder planes */
    float *za_part;  /* [B][H][nchunks][tiles][2][N] tensor-core path, diagonal A, backward: each tile's sums of
                        C dC dc (index 0) and B dB dc (index 1) per state (ssd_scan_diag.cuh) */
} SSDScanWorkspace;

/* The arguments of one forward or backward (ssd_scan_forward, ssd_scan_backward) as the dispatch hands
 * them to a path: a forward leaves the backward's fields NULL, a backward the forward's. */
typedef struct {
    SSDScanWorkspace ws;
    cudaStream_t stream;
    const floatX *xBC, *dt_raw;
    const float *dt_bias, *A_log, *D;
    const int *segment;            /* NULL (one document per row) or [B][T] document index of each step */
    floatX *y;                     /* forward: the output */
    const float *state_in;         /* forward: NULL (zero) or the [B][H][P][N] state entering each row */
    float *state_out;              /* forward: NULL or where the state after step T - 1 goes (may be state_in) */
    const floatX *dy;              /* backward: the output's gradient */
    floatX *dxBC, *ddt_raw;        /* backward: the input gradients */
    float *ddt_bias, *dA_log, *dD; /* backward: the parameter gradients, added to */
} SSDScanCall;

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

/* The document index of step t of row b (segment [B][T]; NULL: one document, index 0), and that of the
 * state entering a chunk that starts at t0: the step before it, or segment 0 (the state entering the row)
 * for the first chunk. A contribution from step s to step t exists only where their indices are equal. */
__device__ __forceinline__ int ssd_segment(const int *segment, const SSDScanShape &s, int b, int t) {
    return segment ? segment[(size_t)b * s.T + t] : 0;
}
__device__ __forceinline__ int ssd_segment_before(const int *segment, const SSDScanShape &s, int b, int t0) {
    return t0 > 0 ? ssd_segment(segment, s, b, t0 - 1) : 0;
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
 * Shared memory limits
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

#endif
