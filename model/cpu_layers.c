/*
 * CPU layers of the Mamba-2 block (see cpu_layers.h for the math of each), parallel over rows
 * with OpenMP. Matmuls run on register tiles (tile_product) with their sums chunked for the cache.
 */
#include "model/cpu_layers.h"
#include "common/utils.h"
#include "data/dataloader.h"

#include <tgmath.h>
#include <string.h>

/* Matmuls: every product is built from register tiles of TILE_R x TILE_J outputs (the 4 x 16 floats
 * fit in 8 AVX registers), summed over K in cache-sized chunks of K_CHUNK. */
#define TILE_R 4
#define TILE_J 16
#define K_CHUNK 256

/* out[r][j] (+)= sum_k a[r * a_rs + k * a_ks] * b[k * b_ks + j] for r < rows <= TILE_R, j < cols <= TILE_J:
 * each step of k broadcasts TILE_R values of a against one contiguous row segment of b. */
static void tile_product(real *out, size_t out_rs, int accumulate, const real *a, size_t a_rs, size_t a_ks,
                         const real *b, size_t b_ks, int K, int rows, int cols) {
    real acc[TILE_R][TILE_J] = {{0}};
    if (rows == TILE_R && cols == TILE_J) {
        for (int k = 0; k < K; k++) {
            const real *bk = b + (size_t)k * b_ks;
            for (int r = 0; r < TILE_R; r++) {
                real ar = a[r * a_rs + (size_t)k * a_ks];
#pragma omp simd
                for (int j = 0; j < TILE_J; j++) acc[r][j] += ar * bk[j];
            }
        }
    } else {
        for (int k = 0; k < K; k++)
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < cols; j++) acc[r][j] += a[r * a_rs + (size_t)k * a_ks] * b[(size_t)k * b_ks + j];
    }
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++) out[r * out_rs + j] = (accumulate ? out[r * out_rs + j] : 0) + acc[r][j];
}

static int tile_extent(int total, int start, int tile) { return total - start < tile ? total - start : tile; }

/* Each thread copies a block of TILE_J weight rows transposed ([C][TILE_J]), then walks every row of
 * inp against it. */
void matmul_forward(real *out, const real *inp, const real *w, int M, int C, int OC) {
    int blocks = (OC + TILE_J - 1) / TILE_J;
#pragma omp parallel
    {
        real *w_block = (real *)mallocCheck(sizeof(real) * C * TILE_J);
#pragma omp for schedule(dynamic, 4)
        for (int ob = 0; ob < blocks; ob++) {
            int o0 = ob * TILE_J, cols = tile_extent(OC, o0, TILE_J);
            for (int c = 0; c < C; c++)
                for (int j = 0; j < TILE_J; j++) w_block[c * TILE_J + j] = j < cols ? w[(size_t)(o0 + j) * C + c] : 0;
            for (int m0 = 0; m0 < M; m0 += TILE_R)
                tile_product(out + (size_t)m0 * OC + o0, OC, 0, inp + (size_t)m0 * C, C, 1, w_block, TILE_J, C,
                             tile_extent(M, m0, TILE_R), cols);
        }
        free(w_block);
    }
}

void matmul_backward(real *dinp, real *dw, const real *dout, const real *inp, const real *w, int M, int C, int OC) {
    int col_blocks = (C + TILE_J - 1) / TILE_J;
    if (dinp) { /* dinp[m, c] += sum_o dout[m, o] w[o, c]; a chunk of K_CHUNK weight rows stays in cache */
        int row_tiles = (M + TILE_R - 1) / TILE_R;
        for (int o0 = 0; o0 < OC; o0 += K_CHUNK) {
#pragma omp parallel for schedule(static) collapse(2)
            for (int t = 0; t < row_tiles; t++)
                for (int cb = 0; cb < col_blocks; cb++) {
                    int m0 = t * TILE_R, c0 = cb * TILE_J;
                    tile_product(dinp + (size_t)m0 * C + c0, C, 1, dout + (size_t)m0 * OC + o0, OC, 1,
                                 w + (size_t)o0 * C + c0, C, tile_extent(OC, o0, K_CHUNK), tile_extent(M, m0, TILE_R),
                                 tile_extent(C, c0, TILE_J));
                }
        }
    }
    /* dw[o, c] += sum_m dout[m, o] inp[m, c] over chunks of K_CHUNK rows: within a chunk, a group of 16
     * outputs reads a 16-column panel of dout that stays in L1 for all its tiles */
    int groups = (OC + 15) / 16;
    for (int m0 = 0; m0 < M; m0 += K_CHUNK) {
#pragma omp parallel for schedule(static)
        for (int g = 0; g < groups; g++)
            for (int o0 = g * 16; o0 < g * 16 + 16 && o0 < OC; o0 += TILE_R)
                for (int cb = 0; cb < col_blocks; cb++) {
                    int c0 = cb * TILE_J;
                    tile_product(dw + (size_t)o0 * C + c0, C, 1, dout + (size_t)m0 * OC + o0, 1, OC,
                                 inp + (size_t)m0 * C + c0, C, tile_extent(M, m0, K_CHUNK), tile_extent(OC, o0, TILE_R),
                                 tile_extent(C, c0, TILE_J));
                }
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

/* whether the conv's output at step t reads input step src (src <= t) */
static inline int conv_tap(const int *segment, int t, int src) {
    return src >= 0 && (segment == NULL || segment[src] == segment[t]);
}

void conv_forward(real *out, const real *inp, int in_stride, const real *w, const real *bias, int T, int channels, int K,
                  const int *segment) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        real *o = out + (size_t)t * channels;
        for (int c = 0; c < channels; c++) o[c] = bias[c];
        for (int k = 0; k < K; k++) {
            int src = t - (K - 1) + k;
            if (!conv_tap(segment, t, src)) continue;
            const real *x = inp + (size_t)src * in_stride;
            for (int c = 0; c < channels; c++) o[c] += w[(size_t)c * K + k] * x[c];
        }
    }
}

void conv_backward(real *dinp, int in_stride, real *dw, real *dbias, const real *dout, const real *inp, const real *w,
                   int T, int channels, int K, const int *segment) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        real *di = dinp + (size_t)t * in_stride;
        for (int c = 0; c < channels; c++) di[c] = 0;
        for (int k = 0; k < K; k++) {
            int dst = t + (K - 1) - k; /* the output step that read input t through tap k */
            if (dst >= T || !conv_tap(segment, dst, t)) continue;
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
                if (conv_tap(segment, t, src)) dw[(size_t)c * K + k] += d * inp[(size_t)src * in_stride + c];
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
        losses[m] = targets[m] >= 0 ? lse[m] - row[targets[m]] : 0;
        total += losses[m];
    }
    int counted = (int)count_targets(targets, (size_t)M);
    return counted > 0 ? total / counted : 0;
}

void crossentropy_backward(real *logits, const real *lse, const int *targets, int M, int V, int Vp, real scale) {
    int counted = (int)count_targets(targets, (size_t)M);
    real k = counted > 0 ? scale / counted : 0;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        real *row = logits + (size_t)m * Vp;
        if (targets[m] < 0) {
            memset(row, 0, sizeof(real) * Vp);
            continue;
        }
        for (int v = 0; v < V; v++) row[v] = exp(row[v] - lse[m]) * k;
        for (int v = V; v < Vp; v++) row[v] = 0;
        row[targets[m]] -= k;
    }
}
