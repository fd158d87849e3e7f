/*
 * Fused softmax + cross-entropy + its gradient over the logits of the tied lm_head, one row per
 * block, the vocabulary padding (columns >= V of Vp) masked out:
 *   m = max_v l_v      s = sum_v exp(l_v - m)      loss = m + log(s) - l_target
 *   dl_v = (exp(l_v - m) / s - [v == target]) * dloss      (0 in the padding columns)
 * The gradient overwrites the logits in place, so no fp32 copy of the logits ever exists.
 * With dloss == 0 only the losses are computed (evaluation). A target -1 (IGNORE_TARGET, a loss mask's 0:
 * data/dataloader.h) does not count: its loss and its logits' gradient are 0.
 * greedy_hit (tasks, on logits that an evaluation left intact): hit = 1 if no l_v (v < V) exceeds
 * l_target, i.e. the target is a greedy choice.
 */
#ifndef SSD_KERNELS_CLASSIFIER_CUH
#define SSD_KERNELS_CLASSIFIER_CUH

#include "common.cuh"

#define CLASSIFIER_THREADS 1024

__global__ void fused_classifier_kernel(floatX *logits, float *losses, const int *targets, float dloss, int V, int Vp) {
    __shared__ float shared_max[32], shared_sum[32];
    int row = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    floatX *l = logits + (size_t)row * Vp;
    int target = targets[row];
    if (target < 0) {
        if (threadIdx.x == 0) losses[row] = 0.0f;
        if (dloss != 0.0f)
            for (int v = threadIdx.x; v < Vp; v += blockDim.x) l[v] = from_float<floatX>(0.0f);
        return;
    }
    /* online softmax: each thread keeps a running max and a sum scaled to it */
    float m = -INFINITY, s = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float x = to_float(l[v]);
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float wm = warp_reduce_max(m);
    s = (m == -INFINITY) ? 0.0f : s * expf(m - wm);
    s = warp_reduce_sum(s);
    if (lane == 0) {
        shared_max[warp] = wm;
        shared_sum[warp] = s;
    }
    __syncthreads();
    float bm = -INFINITY;
    for (int i = 0; i < nwarps; i++) bm = fmaxf(bm, shared_max[i]);
    float bs = 0.0f;
    for (int i = 0; i < nwarps; i++) bs += shared_max[i] == -INFINITY ? 0.0f : shared_sum[i] * expf(shared_max[i] - bm);
    if (threadIdx.x == 0) losses[row] = bm + logf(bs) - to_float(l[target]);
    if (dloss == 0.0f) return;
    __syncthreads();  /* l[target] is read above before it is overwritten below */
    float inv_s = 1.0f / bs;
    for (int v = threadIdx.x; v < Vp; v += blockDim.x) {
        float d = 0.0f;
        if (v < V) d = (expf(to_float(l[v]) - bm) * inv_s - (v == target ? 1.0f : 0.0f)) * dloss;
        l[v] = from_float<floatX>(d);
    }
}

/* Mean of losses[N] over the counted targets (not -1) into *mean, 0 if none counts (one block, fixed order). */
__global__ void mean_loss_kernel(float *mean, const float *losses, const int *targets, int N) {
    float sum = 0.0f, counted = 0.0f;
    for (int i = threadIdx.x; i < N; i += blockDim.x) {
        sum += losses[i];
        counted += targets[i] >= 0;
    }
    sum = block_reduce_sum(sum);
    counted = block_reduce_sum(counted);
    if (threadIdx.x == 0) *mean = counted > 0.0f ? sum / counted : 0.0f;
}

__global__ void greedy_hit_kernel(const floatX *logits, const int *targets, unsigned char *hits, int V, int Vp) {
    __shared__ int any_above;
    int row = blockIdx.x;
    const floatX *l = logits + (size_t)row * Vp;
    float target = to_float(l[targets[row]]);
    if (threadIdx.x == 0) any_above = 0;
    __syncthreads();
    int above = 0;
    for (int v = threadIdx.x; v < V; v += blockDim.x) above |= to_float(l[v]) > target;
    if (above) any_above = 1;
    __syncthreads();
    if (threadIdx.x == 0) hits[row] = !any_above;
}

static inline void greedy_hit(const floatX *logits, const int *targets, unsigned char *hits, int N, int V, int Vp,
                              cudaStream_t stream) {
    greedy_hit_kernel<<<N, 256, 0, stream>>>(logits, targets, hits, V, Vp);
    cudaCheckLaunch();
}

static inline void fused_classifier(floatX *logits, float *losses, const int *targets, float dloss, int N, int V, int Vp,
                                    cudaStream_t stream) {
    fused_classifier_kernel<<<N, CLASSIFIER_THREADS, 0, stream>>>(logits, losses, targets, dloss, V, Vp);
    cudaCheckLaunch();
}

static inline void mean_loss(float *mean, const float *losses, const int *targets, int N, cudaStream_t stream) {
    mean_loss_kernel<<<1, 1024, 0, stream>>>(mean, losses, targets, N);
    cudaCheckLaunch();
}

#endif
