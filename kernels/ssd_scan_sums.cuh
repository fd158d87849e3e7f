/*
 * Step 5 of the SSD scan's backward (both paths), the sums that make it deterministic: dB and dC of a
 * group are the sums of its heads' shares, added in head order,
 *     dB_t[g] = sum_{h in g} dB_t[h],   dC_t[g] = sum_{h in g} dC_t[h],
 * and dA_log, dD, ddt_bias are the sums of the per-block partials in a fixed order, added to the
 * caller's gradients.
 */
#ifndef SSD_KERNELS_SSD_SCAN_SUMS_CUH
#define SSD_KERNELS_SSD_SCAN_SUMS_CUH

#include "ssd_scan_common.cuh"

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

/* the parameter gradients from the workspace's partials: dD_rows rows of dD partials (blocks, or blocks
 * x tiles in the tensor-core path) and ddt_rows of ddt_bias partials (B, or blocks there) */
static void ssd_launch_param_grads(const SSDScanShape *s, float *ddt_bias, float *dA_log, float *dD,
                                   const SSDScanWorkspace *ws, int dD_rows, int ddt_rows, cudaStream_t stream) {
    int blocks = s->B * ssd_num_chunks(s);
    SSDSumJob jobs[3] = {{dA_log, ws->dA_part, blocks, s->H * ssd_num_rates(s)},
                         {dD, ws->dD_part, dD_rows, s->H},
                         {ddt_bias, ws->ddt_part, ddt_rows, s->H}};
    int groups = 0;
    for (int i = 0; i < 3; i++) groups += ceil_div(jobs[i].cols, 32);
    ssd_param_grads_kernel<<<groups, 32 * SSD_SUM_WARPS, 0, stream>>>(jobs[0], jobs[1], jobs[2]);
    cudaCheckLaunch();
}

#endif
