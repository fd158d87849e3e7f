/*
 * Shared CUDA helpers: the activation/parameter type floatX (bf16 by default, fp32 with
 * -DENABLE_FP32), checked CUDA/cuBLAS calls, conversions, warp/block reductions, 16-byte vector
 * loads/stores, and the deterministic column sum of per-block partials (sum_rows_accumulate).
 */
#ifndef SSD_KERNELS_COMMON_CUH
#define SSD_KERNELS_COMMON_CUH

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#if defined(ENABLE_FP32)
typedef float floatX;
#define PRECISION_NAME "fp32"
#define CUBLAS_FLOATX CUDA_R_32F
#else
typedef __nv_bfloat16 floatX;
#define PRECISION_NAME "bf16"
#define CUBLAS_FLOATX CUDA_R_16BF
#endif

static inline void cuda_check(cudaError_t err, const char *file, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "[CUDA ERROR] at %s:%d: %s\n", file, line, cudaGetErrorString(err));
        exit(EXIT_FAILURE);
    }
}
#define cudaCheck(err) cuda_check((err), __FILE__, __LINE__)

static inline void cublas_check(cublasStatus_t status, const char *file, int line) {
    if (status != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "[cuBLAS ERROR] %d at %s:%d\n", (int)status, file, line);
        exit(EXIT_FAILURE);
    }
}
#define cublasCheck(status) cublas_check((status), __FILE__, __LINE__)

/* Checks the last launch: every kernel launch in this project is followed by it. */
#define cudaCheckLaunch() cuda_check(cudaGetLastError(), __FILE__, __LINE__)

static inline int ceil_div(long a, long b) { return (int)((a + b - 1) / b); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
/* d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x) */
__device__ __forceinline__ float silu_grad(float x) {
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffff, v, offset);
    return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, offset));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
 * Fixed reduction order, so the result is deterministic. */
__device__ inline float block_reduce_sum(float v) {
    __shared__ float partial[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_reduce_sum(v);
    __syncthreads();  /* partial may still be read by a previous call */
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < nwarps ? partial[lane] : 0.0f;
    return warp_reduce_sum(v);
}

/* 16-byte vectors: X_VEC floatX values (8 bf16 or 4 fp32) moved by one load or store instruction.
 * The pointers given to the aligned forms are 16-byte aligned (their callers check). */
#define X_VEC (16 / (int)sizeof(floatX))
typedef struct __align__(16) {
    floatX v[X_VEC];
} XPack;
__device__ __forceinline__ XPack load_xpack(const floatX *p) {
    int4 bits = *reinterpret_cast<const int4 *>(p);
    XPack x;
    memcpy(&x, &bits, sizeof(bits));
    return x;
}
/* the same values from a pointer that may not be 16-byte aligned: one load per value */
__device__ __forceinline__ XPack load_xpack_unaligned(const floatX *p) {
    XPack x;
#pragma unroll
    for (int j = 0; j < X_VEC; j++) x.v[j] = p[j];
    return x;
}
__device__ __forceinline__ void store_xpack(floatX *p, const float *vals) {
    XPack x;
#pragma unroll
    for (int j = 0; j < X_VEC; j++) x.v[j] = from_float<floatX>(vals[j]);
    int4 bits;
    memcpy(&bits, &x, sizeof(bits));
    *reinterpret_cast<int4 *>(p) = bits;
}
__device__ __forceinline__ void store_xpack_unaligned(floatX *p, const float *vals) {
#pragma unroll
    for (int j = 0; j < X_VEC; j++) p[j] = from_float<floatX>(vals[j]);
}
/* X_VEC fp32 values: one or two 16-byte accesses */
__device__ __forceinline__ void load_floats_vec(float *dst, const float *p) {
#pragma unroll
    for (int j = 0; j < X_VEC; j += 4) {
        float4 q = *reinterpret_cast<const float4 *>(p + j);
        dst[j] = q.x; dst[j + 1] = q.y; dst[j + 2] = q.z; dst[j + 3] = q.w;
    }
}
__device__ __forceinline__ void store_floats_vec(float *p, const float *src) {
#pragma unroll
    for (int j = 0; j < X_VEC; j += 4) *reinterpret_cast<float4 *>(p + j) = make_float4(src[j], src[j + 1], src[j + 2], src[j + 3]);
}
static inline bool aligned16(const void *p) { return ((size_t)p & 15) == 0; }

/* The vectorised row kernels (rmsnorm.cuh, gated_norm.cuh) split a row of n values into n / X_VEC
 * vectors; thread t of the block keeps vectors t and (with 2 per thread) t + blockDim.x in registers
 * from the load to the write. Returns the vectors per thread (1 or 2) and sets *threads (a multiple
 * of 32, at most ROW_VEC_MAX_THREADS); returns 0 when n is no multiple of X_VEC or longer than
 * 2 * ROW_VEC_MAX_THREADS vectors (8192 bf16, 4096 fp32 values): such rows take the callers' scalar
 * kernels. */
#define ROW_VEC_MAX_THREADS 512
static inline int row_vec_plan(int n, int *threads) {
    if (n <= 0 || n % X_VEC != 0) return 0;
    int nvec = n / X_VEC, vecs = ceil_div(nvec, ROW_VEC_MAX_THREADS);
    if (vecs > 2) return 0;
    *threads = 32 * ceil_div(ceil_div(nvec, vecs), 32);
    return vecs;
}
/* where the thread's k-th vector starts in its row; n or past it: the thread has no k-th vector */
__device__ __forceinline__ int row_vec_start(int k) { return (k * blockDim.x + threadIdx.x) * X_VEC; }
/* out = x * scale * w over the thread's vectors of a row of n values (the norms' last step) */
template <int VECS>
__device__ __forceinline__ void row_vec_store_scaled(floatX *out, const float (&x)[VECS][X_VEC], float scale,
                                                     const float *w, int n) {
#pragma unroll
    for (int k = 0; k < VECS; k++) {
        int c = row_vec_start(k);
        if (c >= n) continue;
        float o[X_VEC];
#pragma unroll
        for (int j = 0; j < X_VEC; j++) o[j] = x[k][j] * scale * w[c + j];
        store_xpack(out + c, o);
    }
}
/* a block's row of per-column partial sums: the thread's columns (no alignment asked of dst) */
template <int VECS>
__device__ __forceinline__ void row_vec_store_partial(float *dst, const float (&acc)[VECS][X_VEC], int n) {
#pragma unroll
    for (int k = 0; k < VECS; k++) {
        int c = row_vec_start(k);
        if (c >= n) continue;
#pragma unroll
        for (int j = 0; j < X_VEC; j++) dst[c + j] = acc[k][j];
    }
}

/* Sums rows of partial[nrows, ncols] (fp32) into out[ncols] (out += sum): the second stage of every
 * deterministic parameter-gradient reduction in this project. A block takes 32 columns; its warp w
 * sums rows w, w + 32, w + 64, ... in order (one 128-byte load per row), and warp 0 adds the 32 warp
 * sums in warp order: the same order, hence the same bits, on every run. */
#define SUM_ROWS_WARPS 32
__global__ void __launch_bounds__(32 * SUM_ROWS_WARPS) sum_rows_kernel(float *out, const float *partial, int nrows,
                                                                         int ncols) {
    __shared__ float warp_sums[SUM_ROWS_WARPS][32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, c = blockIdx.x * 32 + lane;
    float sum = 0.0f;
    if (c < ncols) {
#pragma unroll 8
        for (int r = warp; r < nrows; r += SUM_ROWS_WARPS) sum += partial[(size_t)r * ncols + c];
    }
    warp_sums[warp][lane] = sum;
    __syncthreads();
    if (warp == 0 && c < ncols) {
        float total = 0.0f;
        for (int w = 0; w < SUM_ROWS_WARPS; w++) total += warp_sums[w][lane];
        out[c] += total;
    }
}
static inline void sum_rows_accumulate(float *out, const float *partial, int nrows, int ncols, cudaStream_t stream) {
    sum_rows_kernel<<<ceil_div(ncols, 32), 32 * SUM_ROWS_WARPS, 0, stream>>>(out, partial, nrows, ncols);
    cudaCheckLaunch();
}

#endif
