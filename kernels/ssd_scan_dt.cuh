/*
 * The SSD scan's step size and its gradient, per step t of head h (both paths):
 *     delta_t = softplus(dt_raw_t[h] + dt_bias[h]),   dc_t = sum of delta over the chunk's steps up to t
 *     d dt_raw_t = d delta_t sigmoid(dt_raw_t[h] + dt_bias[h]),   ddt_bias[h] = sum_t d dt_raw_t
 * (The tensor-core path forms d delta and its dt backward in one kernel of its own, ssdm_ddelta_kernel.)
 */
#ifndef SSD_KERNELS_SSD_SCAN_DT_CUH
#define SSD_KERNELS_SSD_SCAN_DT_CUH

#include "ssd_scan_common.cuh"

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

static void ssd_launch_dt_forward(const SSDScanShape *s, const SSDScanWorkspace *ws, const floatX *dt_raw,
                                  const float *dt_bias, cudaStream_t stream) {
    dim3 dt_grid(ssd_num_chunks(s), s->H, s->B);
    ssd_dt_forward_kernel<<<dt_grid, ceil_div(s->Q, 32) * 32, 0, stream>>>(ws->delta, ws->dcum, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
}

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

static void ssd_launch_dt_backward(const SSDScanShape *s, floatX *ddt_raw, const SSDScanWorkspace *ws,
                                   const floatX *dt_raw, const float *dt_bias, cudaStream_t stream) {
    ssd_dt_backward_kernel<<<dim3(s->H, s->B), 256, 0, stream>>>(ddt_raw, ws->ddt_part, ws->ddelta, dt_raw, dt_bias, *s);
    cudaCheckLaunch();
}

#endif
