/*
 * Linear layers through cuBLASLt (floatX inputs, fp32 accumulation; no TF32 in the FP32 build).
 * Row-major shapes, weights [OC, IC] like torch.nn.Linear:
 *   matmul_forward:         out[N, OC]  = inp[N, IC] @ W^T
 *   matmul_backward_input:  dinp[N, IC] = dout[N, OC] @ W
 *   matmul_backward_weight: dW[OC, IC] += dout^T @ inp          (fp32 gradient, accumulated)
 * cuBLASLt is column-major: a row-major [R, C] matrix is a column-major [C, R] one, so each call
 * computes the transposed product.
 */
#ifndef SSD_KERNELS_MATMUL_CUH
#define SSD_KERNELS_MATMUL_CUH

#include <stdint.h>

#include "common.cuh"

#define MATMUL_WORKSPACE_BYTES (32 * 1024 * 1024)

static cublasLtHandle_t matmul_handle;
static void *matmul_workspace;

static void matmul_init(void) {
    cublasCheck(cublasLtCreate(&matmul_handle));
    cudaCheck(cudaMalloc(&matmul_workspace, MATMUL_WORKSPACE_BYTES));
}

static void matmul_free(void) {
    cudaCheck(cudaFree(matmul_workspace));
    cublasCheck(cublasLtDestroy(matmul_handle));
}

/* Largest power of two (at most 256) dividing the address: cuBLASLt otherwise assumes 256-byte
 * aligned operands, and per-layer slices of the flat parameter buffer are not. */
static uint32_t pointer_alignment(const void *p) {
    uint32_t alignment = 256;
    while (alignment > 1 && (uintptr_t)p % alignment != 0) alignment /= 2;
    return alignment;
}

/* Column-major D[m, n] = op(A)[m, k] @ op(B)[k, n] + beta * D; D has type d_type, A and B are floatX. */
static void matmul_lt(void *d, cudaDataType_t d_type, const floatX *a, const floatX *b, int m, int n, int k, int trans_a,
                      int trans_b, float beta, cudaStream_t stream) {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a_layout, b_layout, d_layout;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
    cublasCheck(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
    cublasCheck(cublasLtMatrixLayoutCreate(&a_layout, CUBLAS_FLOATX, trans_a ? k : m, trans_a ? m : k, trans_a ? k : m));
    cublasCheck(cublasLtMatrixLayoutCreate(&b_layout, CUBLAS_FLOATX, trans_b ? n : k, trans_b ? k : n, trans_b ? n : k));
    cublasCheck(cublasLtMatrixLayoutCreate(&d_layout, d_type, m, n, m));

    cublasLtMatmulPreference_t pref;
    size_t workspace_bytes = MATMUL_WORKSPACE_BYTES;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                     sizeof(workspace_bytes)));
    uint32_t align_a = pointer_alignment(a), align_b = pointer_alignment(b), align_d = pointer_alignment(d);
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
    cublasLtMatmulHeuristicResult_t heuristic;
    int found = 0;
    cublasCheck(cublasLtMatmulAlgoGetHeuristic(matmul_handle, desc, a_layout, b_layout, d_layout, d_layout, pref, 1,
                                               &heuristic, &found));
    if (found == 0) {
        fprintf(stderr, "matmul: no cuBLASLt algorithm for m=%d n=%d k=%d trans_a=%d trans_b=%d\n", m, n, k, trans_a,
                trans_b);
        exit(EXIT_FAILURE);
    }
    float alpha = 1.0f;
    cublasCheck(cublasLtMatmul(matmul_handle, desc, &alpha, a, a_layout, b, b_layout, &beta, d, d_layout, d, d_layout,
                               &heuristic.algo, matmul_workspace, MATMUL_WORKSPACE_BYTES, stream));
    cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
    cublasCheck(cublasLtMatrixLayoutDestroy(a_layout));
    cublasCheck(cublasLtMatrixLayoutDestroy(b_layout));
    cublasCheck(cublasLtMatrixLayoutDestroy(d_layout));
    cublasCheck(cublasLtMatmulDescDestroy(desc));
}

static inline void matmul_forward(floatX *out, const floatX *inp, const floatX *weight, int N, int IC, int OC,
                                  cudaStream_t stream) {
    matmul_lt(out, CUBLAS_FLOATX, weight, inp, OC, N, IC, 1, 0, 0.0f, stream);
}

static inline void matmul_backward_input(floatX *dinp, const floatX *dout, const floatX *weight, int N, int IC, int OC,
                                         cudaStream_t stream) {
    matmul_lt(dinp, CUBLAS_FLOATX, weight, dout, IC, N, OC, 0, 0, 0.0f, stream);
}

static inline void matmul_backward_weight(float *dweight, const floatX *dout, const floatX *inp, int N, int IC, int OC,
                                          cudaStream_t stream) {
    matmul_lt(dweight, CUDA_R_32F, inp, dout, IC, OC, N, 0, 1, 1.0f, stream);
}

#endif
