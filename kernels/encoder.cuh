/*
 * Token embedding.
 *   forward:  residual[i, :] = wte[tokens[i], :]                       (fp32 residual stream)
 *   backward: dwte[v, :] += sum over positions i with tokens[i] == v of dresidual[i, :]
 * The backward is deterministic: the host groups the positions by token (encoder_buckets_build),
 * and one block sums each token's positions in a fixed order, so no atomics are needed.
 */
#ifndef SSD_KERNELS_ENCODER_CUH
#define SSD_KERNELS_ENCODER_CUH

#include "common.cuh"

__global__ void encoder_forward_kernel(float *residual, const int *tokens, const float *wte, int N, int C) {
    int row = blockIdx.x;
    const float *src = wte + (size_t)tokens[row] * C;
    float *dst = residual + (size_t)row * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = src[c];
}

/* bucket_token[b]: the b-th distinct token; its positions are bucket_pos[bucket_start[b] .. bucket_start[b+1]) */
__global__ void encoder_backward_kernel(float *dwte, const float *dresidual, const int *bucket_token,
                                        const int *bucket_start, const int *bucket_pos, int C) {
    int b = blockIdx.x;
    int begin = bucket_start[b], end = bucket_start[b + 1];
    float *dst = dwte + (size_t)bucket_token[b] * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float sum = 0.0f;
        for (int i = begin; i < end; i++) sum += dresidual[(size_t)bucket_pos[i] * C + c];
        dst[c] += sum;
    }
}

static inline void encoder_forward(float *residual, const int *tokens, const float *wte, int N, int C, cudaStream_t stream) {
    encoder_forward_kernel<<<N, 256, 0, stream>>>(residual, tokens, wte, N, C);
    cudaCheckLaunch();
}

static inline void encoder_backward(float *dwte, const float *dresidual, const int *bucket_token, const int *bucket_start,
                                    const int *bucket_pos, int num_buckets, int C, cudaStream_t stream) {
    encoder_backward_kernel<<<num_buckets, 256, 0, stream>>>(dwte, dresidual, bucket_token, bucket_start, bucket_pos, C);
    cudaCheckLaunch();
}

/*
 * Host side: groups the N positions of `tokens` by token id with a counting sort. Writes
 * bucket_token[num_buckets], bucket_start[num_buckets + 1], bucket_pos[N] and returns num_buckets.
 * count is scratch of vocab_size ints. Positions stay in increasing order inside each bucket.
 */
static inline int encoder_buckets_build(const int *tokens, int N, int vocab_size, int *count, int *bucket_token,
                                        int *bucket_start, int *bucket_pos) {
    for (int v = 0; v < vocab_size; v++) count[v] = 0;
    for (int i = 0; i < N; i++) count[tokens[i]]++;
    int num_buckets = 0, offset = 0;
    for (int v = 0; v < vocab_size; v++) {
        if (count[v] == 0) continue;
        bucket_token[num_buckets] = v;
        bucket_start[num_buckets] = offset;
        num_buckets++;
        int n = count[v];
        count[v] = offset;  /* now the next free slot of token v */
        offset += n;
    }
    bucket_start[num_buckets] = offset;
    for (int i = 0; i < N; i++) bucket_pos[count[tokens[i]]++] = i;
    return num_buckets;
}

#endif
