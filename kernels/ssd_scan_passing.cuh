/*
 * Step 3 of the SSD scan (both paths): the state entering each chunk from the chunks' own states,
 * chunk after chunk (forward), and the gradient w.r.t. each chunk's final state from the later
 * chunks (backward, the reverse pass); formulas below.
 */
#ifndef SSD_KERNELS_SSD_SCAN_PASSING_CUH
#define SSD_KERNELS_SSD_SCAN_PASSING_CUH

#include "ssd_scan_common.cuh"

/* ------------------------------------------------------------------------------------------------
 * 3. Passing states between chunks, one thread per 4 consecutive (p, n) of a (b, h):
 *    forward:  in[0] = state_in (or 0),  in[c+1] = pass(c) exp(A dc_last(c)) in[c] + own[c],
 *              state_out = in[nchunks] (the state after step T - 1)
 *    backward: out[nc-1] = 0,    out[c-1] = own[c] + pass(c) exp(A dc_last(c)) out[c]
 * pass(c) is 1 when the chunk's last step is in the document of the state entering it (segment[t0 - 1],
 * or segment 0 for chunk 0: ssd_segment_before) and 0 when a document starts inside the chunk; own[c]
 * already holds only the steps of its last step's document (stage 2), so in[c+1] is the state after the
 * chunk's last step. Without segments pass(c) = 1.
 * own comes from `states`; in / out go back there in place (fp32), or, with `planes`, there as bf16
 * value and remainder planes ([B][H][nchunks][2][P][N]: the tensor-core path loads them straight into
 * shared memory). The backward can also give gs(c) = <out[c], in[c+1]> (the forward's planes as
 * `partner`), in per-warp partial sums gs_part[b][h][c][warp]. The 16-byte loads of a batch of chunks
 * are issued before the dependent updates, to overlap their latency. state_in and state_out may be one
 * array: each thread reads its elements before it writes them.
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
                                                                             const float *state_in, float *state_out,
                                                                             const float *dcum, const int *segment,
                                                                             const float *A_log,
                                                                             const __nv_bfloat16 *partner,
                                                                             float *gs_part, SSDScanShape s,
                                                                             int reverse) {
    int PN = s.P * s.N, e = 4 * (blockIdx.x * blockDim.x + threadIdx.x), bh = blockIdx.y, b = bh / s.H, h = bh % s.H;
    bool active = e < PN; /* inactive threads stay for the warp sums of gs */
    int warps = gridDim.x * (SSD_PASS_THREADS / 32), warp = blockIdx.x * (SSD_PASS_THREADS / 32) + threadIdx.x / 32;
    float A[4];
#pragma unroll
    for (int k = 0; k < 4; k++) A[k] = ssd_rate(A_log, h, (e + k) % s.N, s.N, s.diagonal);
    int nc = ssd_num_chunks(&s);
    const float *dc = dcum + (size_t)bh * s.T;
    float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 run = state_in && active ? *reinterpret_cast<const float4 *>(state_in + (size_t)bh * PN + e) : zero;
    for (int k0 = 0; k0 < nc; k0 += SSD_PASS_BATCH) {
        float4 own[SSD_PASS_BATCH], next[SSD_PASS_BATCH];
        float last[SSD_PASS_BATCH];
        bool pass[SSD_PASS_BATCH];
#pragma unroll
        for (int i = 0; i < SSD_PASS_BATCH; i++) {
            int c = reverse ? nc - 1 - (k0 + i) : k0 + i;
            if (k0 + i < nc) {
                int t_last = c * s.Q + min(s.Q, s.T - c * s.Q) - 1;
                last[i] = dc[t_last];
                pass[i] = ssd_segment(segment, s, b, t_last) == ssd_segment_before(segment, s, b, c * s.Q);
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
                float d0 = pass[i] ? expf(A[0] * last[i]) : 0.0f, d1 = pass[i] ? expf(A[1] * last[i]) : 0.0f;
                float d2 = pass[i] ? expf(A[2] * last[i]) : 0.0f, d3 = pass[i] ? expf(A[3] * last[i]) : 0.0f;
                run.x = d0 * run.x + own[i].x;
                run.y = d1 * run.y + own[i].y;
                run.z = d2 * run.z + own[i].z;
                run.w = d3 * run.w + own[i].w;
            }
        }
    }
    if (state_out && active) *reinterpret_cast<float4 *>(state_out + (size_t)bh * PN + e) = run;
}

/* the state passing (forward or reverse) of the chunks' own states in `own`: in place, or into the
 * planes of the tensor-core path (which its reverse pass reads the forward's planes beside, for gs);
 * state_in, state_out: the forward's entering and leaving states (NULL in the reverse pass) */
static void ssd_launch_passing(const SSDScanShape *s, float *own, float *planes, const float *state_in,
                               float *state_out, const int *segment, const SSDScanWorkspace *ws, const float *A_log,
                               int reverse, cudaStream_t stream) {
    bool gs = reverse && planes;
    dim3 grid(ssd_pass_blocks(s), s->B * s->H);
    ssd_state_passing_kernel<<<grid, SSD_PASS_THREADS, 0, stream>>>(
        own, (__nv_bfloat16 *)planes, state_in, state_out, ws->dcum, segment, A_log, gs ? (const __nv_bfloat16 *)ws->states : NULL,
        ws->gs_part, *s, reverse);
    cudaCheckLaunch();
}

#endif
