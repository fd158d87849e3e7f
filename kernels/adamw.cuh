/*
 * Global gradient norm and AdamW on fp32 master weights.
 *   norm = sqrt(sum_i g_i^2)                         (two fixed-order passes: deterministic; over
 *                                                     several ranks the squares are summed first)
 *   clip scale s = clip / norm if clip > 0 and norm > clip, else 1  (read on the device: no host sync)
 *   g = s * g;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
 *   p -= lr * ((m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p)     (wd only where decayed)
 * The updated master weight is also written in floatX for the forward pass.
 */
#ifndef SSD_KERNELS_ADAMW_CUH
#define SSD_KERNELS_ADAMW_CUH

#include "common.cuh"
#include "train/train_loop.h" /* AdamWSettings */

#define NORM_BLOCKS 512
#define NORM_THREADS 512

__global__ void norm_squared_partial_kernel(float *partial, const float *x, size_t n) {
    float sum = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        sum += x[i] * x[i];
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void norm_finish_kernel(float *squared, const float *partial, int n) {
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += partial[i];
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) *squared = sum;
}

__global__ void sqrt_in_place_kernel(float *x) { *x = sqrtf(*x); }

/* *squared = sum_i x_i^2 on the device; scratch holds NORM_BLOCKS floats. */
static inline void global_norm_squared(float *squared, float *scratch, const float *x, size_t n, cudaStream_t stream) {
    norm_squared_partial_kernel<<<NORM_BLOCKS, NORM_THREADS, 0, stream>>>(scratch, x, n);
    cudaCheckLaunch();
    norm_finish_kernel<<<1, 1024, 0, stream>>>(squared, scratch, NORM_BLOCKS);
    cudaCheckLaunch();
}

static inline void sqrt_in_place(float *x, cudaStream_t stream) {
    sqrt_in_place_kernel<<<1, 1, 0, stream>>>(x);
    cudaCheckLaunch();
}

/* *norm = ||x||_2 on the device. */
static inline void global_norm(float *norm, float *scratch, const float *x, size_t n, cudaStream_t stream) {
    global_norm_squared(norm, scratch, x, n, stream);
    sqrt_in_place(norm, stream);
}

__global__ void adamw_kernel(float *master, floatX *params, const float *grads, float *m, float *v, size_t n,
                             AdamWSettings h, float weight_decay, const float *grad_norm) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float norm = *grad_norm;
    float scale = (h.grad_clip > 0.0f && norm > h.grad_clip) ? h.grad_clip / norm : 1.0f;
    float g = grads[i] * scale;
    float mi = h.beta1 * m[i] + (1.0f - h.beta1) * g;
    float vi = h.beta2 * v[i] + (1.0f - h.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / (1.0f - powf(h.beta1, (float)h.step));
    float vhat = vi / (1.0f - powf(h.beta2, (float)h.step));
    float p = master[i];
    p -= h.lr * (mhat / (sqrtf(vhat) + h.eps) + weight_decay * p);
    master[i] = p;
    params[i] = from_float<floatX>(p);
}

/* One tensor; weight_decay is 0 for tensors without decay. */
static inline void adamw_update(float *master, floatX *params, const float *grads, float *m, float *v, size_t n,
                                const AdamWSettings *h, float weight_decay, const float *grad_norm, cudaStream_t stream) {
    adamw_kernel<<<ceil_div((long)n, 512), 512, 0, stream>>>(master, params, grads, m, v, n, *h, weight_decay, grad_norm);
    cudaCheckLaunch();
}

#endif
