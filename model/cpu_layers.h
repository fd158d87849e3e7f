/*
 * CPU layers of the Mamba-2 block, forward and backward. Backward functions accumulate (+=)
 * into parameter gradients and into input gradients unless the comment says "writes".
 * Shapes: M rows (B*T tokens), row-major.
 */
#ifndef SSD_MODEL_CPU_LAYERS_H
#define SSD_MODEL_CPU_LAYERS_H

#include "model/real.h"

#include <tgmath.h> /* exp, log, sqrt at the precision of real */

/* out[M, OC] = inp[M, C] @ w[OC, C]^T (writes) */
void matmul_forward(real *out, const real *inp, const real *w, int M, int C, int OC);
/* dinp[M, C] += dout @ w; dw[OC, C] += dout^T @ inp (dinp may be NULL) */
void matmul_backward(real *dinp, real *dw, const real *dout, const real *inp, const real *w, int M, int C, int OC);

/* out = inp / sqrt(mean(inp^2) + eps) * w over rows of C; rstd[M] kept for backward (writes) */
void rmsnorm_forward(real *out, real *rstd, const real *inp, const real *w, int M, int C, real eps);
void rmsnorm_backward(real *dinp, real *dw, const real *dout, const real *inp, const real *w, const real *rstd, int M, int C);

/* Gated RMSNorm: g = y * silu(z); out = g / sqrt(mean over each group of E/G channels of g^2 + eps) * w.
 * z has row stride z_stride. rstd [M, G]. */
void gated_rmsnorm_forward(real *out, real *rstd, const real *y, const real *z, int z_stride, const real *w, int M,
                           int E, int G, real eps);
/* writes dy; dz (row stride z_stride) writes; dw accumulates */
void gated_rmsnorm_backward(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z, int z_stride,
                            const real *w, const real *rstd, int M, int E, int G);

/* Causal depthwise conv over time for one sequence of T steps and `channels` channels:
 * out[t, c] = bias[c] + sum_k w[c, k] inp[t - (K-1) + k, c]  (inp rows stride in_stride; zero before t=0,
 * and zero at a step of another document: segment[src] != segment[t], when segment [T] is not NULL).
 * Writes out [T, channels]. */
void conv_forward(real *out, const real *inp, int in_stride, const real *w, const real *bias, int T, int channels, int K,
                  const int *segment);
/* dinp (stride in_stride) writes; dw, dbias accumulate */
void conv_backward(real *dinp, int in_stride, real *dw, real *dbias, const real *dout, const real *inp, const real *w,
                   int T, int channels, int K, const int *segment);

static inline real sigmoid_of(real v) { return 1 / (1 + exp(-v)); }
static inline real silu_of(real v) { return v * sigmoid_of(v); }
static inline real silu_grad(real v) { real s = sigmoid_of(v); return s * (1 + v * (1 - s)); }
static inline real softplus_of(real v) { return v > 20 ? v : log1p(exp(v)); }

/* Cross-entropy over the first V of Vp columns of logits [M, Vp] (columns >= V never count); a target -1
 * (IGNORE_TARGET, a loss mask's 0: data/dataloader.h) does not count.
 * losses[M] (0 where the target does not count) and the log-sum-exp of each row lse[M] written; returns the
 * mean over the targets that count (0 when none does). */
real crossentropy_forward(real *losses, real *lse, const real *logits, const int *targets, int M, int V, int Vp);
/* Overwrites logits with d(scale * mean loss)/d(logits) = scale/counted (softmax - onehot) on the rows whose
 * target counts, 0 on the others. */
void crossentropy_backward(real *logits, const real *lse, const int *targets, int M, int V, int Vp, real scale);

#endif
