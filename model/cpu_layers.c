/*
 * CPU layers of the Mamba-2 block (see cpu_layers.h for the math of each), parallel over rows
 * with OpenMP. Matmuls unroll over 8 rows at a time so each weight row is read once per 8 tokens.
 */
#include "cpu_layers.h"
#include "utils.h"

#include <tgmath.h>
#include <string.h>

#define ROW_TILE 8
#define COL_BLOCK 16
#define OUT_BLOCK 64

/* Blocks of OUT_BLOCK outputs (their weight rows stay in cache) against tiles of ROW_TILE rows:
 * the eight dot products of a tile share the loads of each weight row. */
void matmul_forward(real *out, const real *inp, const real *w, int M, int C, int OC) {
    int out_blocks = (OC + OUT_BLOCK - 1) / OUT_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int ob = 0; ob < out_blocks; ob++) {
        int o_end = ob * OUT_BLOCK + OUT_BLOCK < OC ? ob * OUT_BLOCK + OUT_BLOCK : OC;
        for (int m0 = 0; m0 < M; m0 += ROW_TILE) {
            int rows = M - m0 < ROW_TILE ? M - m0 : ROW_TILE;
            const real *i0 = inp + (size_t)m0 * C;
            for (int o = ob * OUT_BLOCK; o < o_end; o++) {
                const real *wrow = w + (size_t)o * C;
                if (rows == ROW_TILE) {
                    real a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7)
                    for (int c = 0; c < C; c++) {
                        real wv = wrow[c];
                        a0 += i0[c] * wv;
                        a1 += i0[C + c] * wv;
                        a2 += i0[2 * C + c] * wv;
                        a3 += i0[3 * C + c] * wv;
                        a4 += i0[4 * C + c] * wv;
                        a5 += i0[5 * C + c] * wv;
                        a6 += i0[6 * C + c] * wv;
                        a7 += i0[7 * C + c] * wv;
                    }
                    real acc[ROW_TILE] = {a0, a1, a2, a3, a4, a5, a6, a7};
                    for (int r = 0; r < ROW_TILE; r++) out[(size_t)(m0 + r) * OC + o] = acc[r];
                    continue;
                }
                for (int r = 0; r < rows; r++) {
                    real acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (int c = 0; c < C; c++) acc += i0[(size_t)r * C + c] * wrow[c];
                    out[(size_t)(m0 + r) * OC + o] = acc;
                }
            }
        }
    }
}

/* dw[o0..o0+ROW_TILE, c0..c0+COL_BLOCK] += sum_m dout[m, o] inp[m, c], accumulated in registers */
static void weight_grad_tile(real *dw, const real *dout, const real *inp, int M, int C, int OC, int o0, int outs, int c0,
                             int cols) {
    real acc[ROW_TILE][COL_BLOCK] = {{0}};
    if (outs == ROW_TILE && cols == COL_BLOCK) {
        for (int m = 0; m < M; m++) {
            const real *x = inp + (size_t)m * C + c0, *d = dout + (size_t)m * OC + o0;
            for (int k = 0; k < ROW_TILE; k++) {
                real dk = d[k];
#pragma omp simd
                for (int j = 0; j < COL_BLOCK; j++) acc[k][j] += dk * x[j];
            }
        }
    } else {
        for (int m = 0; m < M; m++)
            for (int k = 0; k < outs; k++)
                for (int j = 0; j < cols; j++) acc[k][j] += dout[(size_t)m * OC + o0 + k] * inp[(size_t)m * C + c0 + j];
    }
    for (int k = 0; k < outs; k++)
        for (int j = 0; j < cols; j++) dw[(size_t)(o0 + k) * C + c0 + j] += acc[k][j];
}

void matmul_backward(real *dinp, real *dw, const real *dout, const real *inp, const real *w, int M, int C, int OC) {
    if (dinp) {
        /* blocks of weight rows in the outer loop so that each block is read from cache by every tile */
        int tiles = (M + ROW_TILE - 1) / ROW_TILE;
        for (int o_start = 0; o_start < OC; o_start += 4 * OUT_BLOCK) {
            int o_end = o_start + 4 * OUT_BLOCK < OC ? o_start + 4 * OUT_BLOCK : OC;
#pragma omp parallel for schedule(static)
            for (int tile = 0; tile < tiles; tile++) {
                int m0 = tile * ROW_TILE, rows = M - m0 < ROW_TILE ? M - m0 : ROW_TILE;
                for (int o = o_start; o < o_end; o++) {
                    const real *wrow = w + (size_t)o * C;
                    for (int r = 0; r < rows; r++) {
                        real d = dout[(size_t)(m0 + r) * OC + o];
                        real *di = dinp + (size_t)(m0 + r) * C;
#pragma omp simd
                        for (int c = 0; c < C; c++) di[c] += d * wrow[c];
                    }
                }
            }
        }
    }
    int out_tiles = (OC + ROW_TILE - 1) / ROW_TILE, col_blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
    for (int tile = 0; tile < out_tiles; tile++)
        for (int cb = 0; cb < col_blocks; cb++) {
            int o0 = tile * ROW_TILE, c0 = cb * COL_BLOCK;
            weight_grad_tile(dw, dout, inp, M, C, OC, o0, OC - o0 < ROW_TILE ? OC - o0 : ROW_TILE, c0,
                             C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK);
        }
}

void rmsnorm_forward(real *out, real *rstd, const real *inp, const real *w, int M, int C, real eps) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C;
        real ss = 0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        real r = 1 / sqrt(ss / C + eps);
        rstd[m] = r;
        for (int c = 0; c < C; c++) out[(size_t)m * C + c] = x[c] * r * w[c];
    }
}

/* dx = r (w dout) - x r^3 / C * sum(w dout x), for one row */
static void rmsnorm_row_backward(real *dx, const real *dout, const real *x, const real *w, real r, int C, int stride_w) {
    real dot = 0;
    for (int c = 0; c < C; c++) dot += w[c * stride_w] * dout[c] * x[c];
    real k = dot * r * r * r / C;
    for (int c = 0; c < C; c++) dx[c] += r * w[c * stride_w] * dout[c] - k * x[c];
}

void rmsnorm_backward(real *dinp, real *dw, const real *dout, const real *inp, const real *w, const real *rstd, int M, int C) {
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++)
        rmsnorm_row_backward(dinp + (size_t)m * C, dout + (size_t)m * C, inp + (size_t)m * C, w, rstd[m], C, 1);
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C, *d = dout + (size_t)m * C;
        for (int c = 0; c < C; c++) dw[c] += d[c] * x[c] * rstd[m];
    }
}

void gated_rmsnorm_forward(real *out, real *rstd, const real *y, const real *z, int z_stride, const real *w, int M,
                           int E, int G, real eps) {
    int gs = E / G;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const real *ym = y + (size_t)m * E, *zm = z + (size_t)m * z_stride;
        real *om = out + (size_t)m * E;
        for (int g = 0; g < G; g++) {
            real ss = 0;
            for (int c = g * gs; c < (g + 1) * gs; c++) {
                om[c] = ym[c] * silu_of(zm[c]);
                ss += om[c] * om[c];
            }
            real r = 1 / sqrt(ss / gs + eps);
            rstd[(size_t)m * G + g] = r;
            for (int c = g * gs; c < (g + 1) * gs; c++) om[c] *= r * w[c];
        }
    }
}

void gated_rmsnorm_backward(real *dy, real *dz, real *dw, const real *dout, const real *y, const real *z, int z_stride,
                            const real *w, const real *rstd, int M, int E, int G) {
    int gs = E / G;
#pragma omp parallel
    {
        real *gated = (real *)mallocCheck(sizeof(real) * E);
        real *dgated = (real *)mallocCheck(sizeof(real) * E);
#pragma omp for schedule(static)
        for (int m = 0; m < M; m++) {
            const real *ym = y + (size_t)m * E, *zm = z + (size_t)m * z_stride, *dm = dout + (size_t)m * E;
            for (int c = 0; c < E; c++) {
                gated[c] = ym[c] * silu_of(zm[c]);
                dgated[c] = 0;
            }
            for (int g = 0; g < G; g++)
                rmsnorm_row_backward(dgated + g * gs, dm + g * gs, gated + g * gs, w + g * gs, rstd[(size_t)m * G + g], gs, 1);
            for (int c = 0; c < E; c++) {
                dy[(size_t)m * E + c] = dgated[c] * silu_of(zm[c]);
                dz[(size_t)m * z_stride + c] = dgated[c] * ym[c] * silu_grad(zm[c]);
            }
        }
        free(gated);
        free(dgated);
    }
    for (int m = 0; m < M; m++) {
        const real *ym = y + (size_t)m * E, *zm = z + (size_t)m * z_stride, *dm = dout + (size_t)m * E;
        for (int c = 0; c < E; c++) dw[c] += dm[c] * ym[c] * silu_of(zm[c]) * rstd[(size_t)m * G + c / gs];
    }
}

void conv_forward(real *out, const real *inp, int in_stride, const real *w, const real *bias, int T, int channels, int K) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        real *o = out + (size_t)t * channels;
        for (int c = 0; c < channels; c++) o[c] = bias[c];
        for (int k = 0; k < K; k++) {
            int src = t - (K - 1) + k;
            if (src < 0) continue;
            const real *x = inp + (size_t)src * in_stride;
            for (int c = 0; c < channels; c++) o[c] += w[(size_t)c * K + k] * x[c];
        }
    }
}

void conv_backward(real *dinp, int in_stride, real *dw, real *dbias, const real *dout, const real *inp, const real *w,
                   int T, int channels, int K) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        real *di = dinp + (size_t)t * in_stride;
        for (int c = 0; c < channels; c++) di[c] = 0;
        for (int k = 0; k < K; k++) {
            int dst = t + (K - 1) - k; /* the output step that read input t through tap k */
            if (dst >= T) continue;
            const real *d = dout + (size_t)dst * channels;
            for (int c = 0; c < channels; c++) di[c] += w[(size_t)c * K + k] * d[c];
        }
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < channels; c++) {
        for (int t = 0; t < T; t++) {
            real d = dout[(size_t)t * channels + c];
            dbias[c] += d;
            for (int k = 0; k < K; k++) {
                int src = t - (K - 1) + k;
                if (src >= 0) dw[(size_t)c * K + k] += d * inp[(size_t)src * in_stride + c];
            }
        }
    }
}

real crossentropy_forward(real *losses, real *lse, const real *logits, const int *targets, int M, int V, int Vp) {
    real total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int m = 0; m < M; m++) {
        const real *row = logits + (size_t)m * Vp;
        real maxv = row[0];
        for (int v = 1; v < V; v++) maxv = row[v] > maxv ? row[v] : maxv;
        real sum = 0;
        for (int v = 0; v < V; v++) sum += exp(row[v] - maxv);
        lse[m] = log(sum) + maxv;
        losses[m] = lse[m] - row[targets[m]];
        total += losses[m];
    }
    return total / M;
}

void crossentropy_backward(real *logits, const real *lse, const int *targets, int M, int V, int Vp, real scale) {
    real k = scale / M;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        real *row = logits + (size_t)m * Vp;
        for (int v = 0; v < V; v++) row[v] = exp(row[v] - lse[m]) * k;
        for (int v = V; v < Vp; v++) row[v] = 0;
        row[targets[m]] -= k;
    }
}
