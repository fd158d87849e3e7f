/*
 * Shared CUDA helpers: the activation/parameter type floatX (bf16 by default, fp32 with
 * -DENABLE_FP32), checked CUDA/cuBLAS calls, conversions, and warp/block reductions.
 */
#ifndef SSD_KERNELS_COMMON_CUH
#define SSD_KERNELS_COMMON_CUH

#include <stdio.h>
#include <stdlib.h>

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

/* Sums rows of partial[nrows, ncols] (fp32) into out[ncols] (out += sum when accumulate): the second
 * stage of every deterministic parameter-gradient reduction in this project. */
__global__ void sum_rows_kernel(float *out, const float *partial, int nrows, int ncols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= ncols) return;
    float sum = 0.0f;
    for (int r = 0; r < nrows; r++) sum += partial[(size_t)r * ncols + c];
    out[c] += sum;
}
static inline void sum_rows_accumulate(float *out, const float *partial, int nrows, int ncols, cudaStream_t stream) {
    sum_rows_kernel<<<ceil_div(ncols, 256), 256, 0, stream>>>(out, partial, nrows, ncols);
    cudaCheckLaunch();
}

#endif
