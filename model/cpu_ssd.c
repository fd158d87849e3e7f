/*
 * The SSD layer in its three dual forms (see cpu_ssd.h for the math), forward and backward.
 *
 * Everything works head by head. The decay of state n of head h at step t is a_t[n] = delta_t A[h,n];
 * a scalar A uses one column (k = 0) for every n, a diagonal A one column per n (k = n), so the
 * same code serves both and a scalar A costs no extra exponentials.
 *
 * Heads run in parallel (OpenMP). B and C are shared by the heads of a group, so the backward
 * passes write their dB, dC into a buffer per head and add them up afterwards.
 */
#include "model/cpu_ssd.h"
#include "common/utils.h"

#include <tgmath.h>
#include <string.h>

typedef struct {
    const SSDShape *s;
    int h, g;
    int nk;              /* decay columns: N (diagonal) or 1 (scalar) */
    const real *x, *delta, *B, *C;
    const real *A_h;     /* nk rates of this head */
    real D_h;
} Head;

static Head head_view(const SSDShape *s, int h, const real *x, const real *delta, const real *A, const real *B,
                      const real *C, const real *D) {
    Head hd;
    hd.s = s;
    hd.h = h;
    hd.g = h / (s->H / s->G);
    hd.nk = s->diagonal ? s->N : 1;
    hd.x = x;
    hd.delta = delta;
    hd.B = B;
    hd.C = C;
    hd.A_h = A + (size_t)h * hd.nk;
    hd.D_h = D[h];
    return hd;
}

static inline const real *head_x(const Head *hd, int t) { return hd->x + (size_t)t * hd->s->x_stride + (size_t)hd->h * hd->s->P; }
static inline const real *head_B(const Head *hd, int t) { return hd->B + (size_t)t * hd->s->bc_stride + (size_t)hd->g * hd->s->N; }
static inline const real *head_C(const Head *hd, int t) { return hd->C + (size_t)t * hd->s->bc_stride + (size_t)hd->g * hd->s->N; }
static inline real head_dt(const Head *hd, int t) { return hd->delta[(size_t)t * hd->s->dt_stride + hd->h]; }
static inline int col(const Head *hd, int n) { return hd->nk == 1 ? 0 : n; }
/* 1 if steps t and u (u = -1: the state before the sequence) are in one document, else 0: the decay factor
 * of a state carried from u to t */
static inline real same_doc(const Head *hd, int t, int u) {
    const int *seg = hd->s->segment;
    return seg == NULL || seg[t] == (u >= 0 ? seg[u] : 0);
}

/* cum[i*nk + k] = sum of a_r[k] for r in [t0, t0+i] */
static void cumulative_decay(const Head *hd, int t0, int len, real *cum) {
    for (int k = 0; k < hd->nk; k++) {
        real acc = 0;
        for (int i = 0; i < len; i++) {
            acc += head_dt(hd, t0 + i) * hd->A_h[k];
            cum[(size_t)i * hd->nk + k] = acc;
        }
    }
}

/* M[t,s] = sum_n C_t[n] B_s[n] exp(cum_t[k(n)] - cum_s[k(n)]) for s <= t inside a segment */
static real mask_entry(const Head *hd, const real *cum, int t0, int i, int j) {
    const real *Ct = head_C(hd, t0 + i), *Bs = head_B(hd, t0 + j);
    const real *ci = cum + (size_t)i * hd->nk, *cj = cum + (size_t)j * hd->nk;
    real m = 0;
    if (!same_doc(hd, t0 + i, t0 + j)) return 0;
    if (hd->nk == 1) {
        for (int n = 0; n < hd->s->N; n++) m += Ct[n] * Bs[n];
        return m * exp(ci[0] - cj[0]);
    }
    for (int n = 0; n < hd->s->N; n++) m += Ct[n] * Bs[n] * exp(ci[n] - cj[n]);
    return m;
}

/* y_t += sum_{s<=t in segment} M[t,s] delta_s x_s : the quadratic (attention-like) form */
static void segment_quadratic_forward(const Head *hd, int t0, int len, const real *cum, real *y) {
    const SSDShape *s = hd->s;
    for (int i = 0; i < len; i++) {
        real *yt = y + (size_t)(t0 + i) * s->y_stride + (size_t)hd->h * s->P;
        for (int j = 0; j <= i; j++) {
            real w = mask_entry(hd, cum, t0, i, j) * head_dt(hd, t0 + j);
            const real *xs = head_x(hd, t0 + j);
            for (int p = 0; p < s->P; p++) yt[p] += w * xs[p];
        }
    }
}

/* Backward of segment_quadratic_forward: du (gradient of u_s = delta_s x_s), dB, dC (per head
 * buffers [T, N]) and dcum (gradient of the cumulative decays) accumulate. */
static void segment_quadratic_backward(const Head *hd, int t0, int len, const real *cum, const real *dy, real *du,
                                       real *dB, real *dC, real *dcum) {
    const SSDShape *s = hd->s;
    int N = s->N, P = s->P, nk = hd->nk;
    for (int i = 0; i < len; i++) {
        const real *dyt = dy + (size_t)(t0 + i) * s->y_stride + (size_t)hd->h * P;
        const real *Ct = head_C(hd, t0 + i);
        real *dCt = dC + (size_t)(t0 + i) * N;
        for (int j = 0; j <= i; j++) {
            if (!same_doc(hd, t0 + i, t0 + j)) continue; /* L[t,s] = 0: no term, no gradient */
            const real *xs = head_x(hd, t0 + j), *Bs = head_B(hd, t0 + j);
            real dts = head_dt(hd, t0 + j);
            real dM = 0;
            for (int p = 0; p < P; p++) dM += dyt[p] * xs[p];
            dM *= dts;
            real M = 0;
            real *dBs = dB + (size_t)(t0 + j) * N;
            for (int n = 0; n < N; n++) {
                int k = col(hd, n);
                real L = exp(cum[(size_t)i * nk + k] - cum[(size_t)j * nk + k]);
                real cb = Ct[n] * Bs[n] * L;
                M += cb;
                dCt[n] += dM * Bs[n] * L;
                dBs[n] += dM * Ct[n] * L;
                dcum[(size_t)i * nk + k] += dM * cb;
                dcum[(size_t)j * nk + k] -= dM * cb;
            }
            real *dus = du + (size_t)(t0 + j) * P;
            for (int p = 0; p < P; p++) dus[p] += M * dyt[p];
        }
    }
}

/* From the gradient of the cumulative decays of a segment to delta and A; reverse cumsum first. */
static void segment_decay_backward(const Head *hd, int t0, int len, real *dcum, real *ddelta, real *dA_h) {
    int nk = hd->nk;
    for (int i = len - 2; i >= 0; i--)
        for (int k = 0; k < nk; k++) dcum[(size_t)i * nk + k] += dcum[(size_t)(i + 1) * nk + k];
    for (int i = 0; i < len; i++) {
        real dt = head_dt(hd, t0 + i), acc = 0;
        for (int k = 0; k < nk; k++) {
            real da = dcum[(size_t)i * nk + k];
            acc += da * hd->A_h[k];
            dA_h[k] += da * dt;
        }
        ddelta[(size_t)(t0 + i) * hd->s->dt_stride + hd->h] += acc;
    }
}

/* The D skip and u = delta x: forward adds D x_t; backward turns du and dy into dx, ddelta, dD. */
static void skip_forward(const Head *hd, real *y) {
    const SSDShape *s = hd->s;
    for (int t = 0; t < s->T; t++) {
        const real *xt = head_x(hd, t);
        real *yt = y + (size_t)t * s->y_stride + (size_t)hd->h * s->P;
        for (int p = 0; p < s->P; p++) yt[p] += hd->D_h * xt[p];
    }
}

static void input_backward(const Head *hd, const real *dy, const real *du, real *dx, real *ddelta, real *dD) {
    const SSDShape *s = hd->s;
    real dD_acc = 0;
    for (int t = 0; t < s->T; t++) {
        const real *xt = head_x(hd, t), *dut = du + (size_t)t * s->P;
        const real *dyt = dy + (size_t)t * s->y_stride + (size_t)hd->h * s->P;
        real *dxt = dx + (size_t)t * s->x_stride + (size_t)hd->h * s->P;
        real dt = head_dt(hd, t), ddt = 0;
        for (int p = 0; p < s->P; p++) {
            dxt[p] += dt * dut[p] + hd->D_h * dyt[p];
            ddt += dut[p] * xt[p];
            dD_acc += dyt[p] * xt[p];
        }
        ddelta[(size_t)t * s->dt_stride + hd->h] += ddt;
    }
    dD[hd->h] += dD_acc;
}

static void zero_head_output(const SSDShape *s, int h, real *y) {
    for (int t = 0; t < s->T; t++) memset(y + (size_t)t * s->y_stride + (size_t)h * s->P, 0, sizeof(real) * s->P);
}

/* Adds the per-head dB, dC buffers [H, T, N] into the shared group gradients. */
static void reduce_group_grads(const SSDShape *s, const real *dB_heads, const real *dC_heads, real *dB, real *dC) {
    size_t TN = (size_t)s->T * s->N;
    int heads_per_group = s->H / s->G;
    for (int h = 0; h < s->H; h++) {
        int g = h / heads_per_group;
        for (int t = 0; t < s->T; t++) {
            const real *hb = dB_heads + h * TN + (size_t)t * s->N, *hc = dC_heads + h * TN + (size_t)t * s->N;
            real *gb = dB + (size_t)t * s->bc_stride + (size_t)g * s->N, *gc = dC + (size_t)t * s->bc_stride + (size_t)g * s->N;
            for (int n = 0; n < s->N; n++) {
                gb[n] += hb[n];
                gc[n] += hc[n];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * 1. Recurrent form
 */
void ssd_forward_recurrent(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                           const real *C, const real *D, const real *init_state, real *y, real *final_state) {
    size_t PN = (size_t)s->P * s->N;
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        real *state = (real *)mallocCheck(sizeof(real) * PN);
        real *decay = (real *)mallocCheck(sizeof(real) * s->N);
        if (init_state) memcpy(state, init_state + h * PN, sizeof(real) * PN);
        else memset(state, 0, sizeof(real) * PN);
        for (int t = 0; t < s->T; t++) {
            const real *xt = head_x(&hd, t), *Bt = head_B(&hd, t), *Ct = head_C(&hd, t);
            real dt = head_dt(&hd, t);
            real carried = same_doc(&hd, t, t - 1);
            for (int n = 0; n < s->N; n++) decay[n] = carried * exp(dt * hd.A_h[col(&hd, n)]);
            real *yt = y + (size_t)t * s->y_stride + (size_t)h * s->P;
            for (int p = 0; p < s->P; p++) {
                real *row = state + (size_t)p * s->N, acc = 0, u = dt * xt[p];
                for (int n = 0; n < s->N; n++) {
                    row[n] = decay[n] * row[n] + u * Bt[n];
                    acc += row[n] * Ct[n];
                }
                yt[p] = acc + hd.D_h * xt[p];
            }
        }
        if (final_state) memcpy(final_state + h * PN, state, sizeof(real) * PN);
        free(state);
        free(decay);
    }
}

void ssd_backward_recurrent(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                            const real *C, const real *D, const real *init_state, const real *dy, real *dx,
                            real *ddelta, real *dA, real *dB, real *dC, real *dD) {
    size_t PN = (size_t)s->P * s->N, TN = (size_t)s->T * s->N;
    real *dB_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
    real *dC_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        int N = s->N, P = s->P;
        /* states[t] = S_t for t = 0..T-1, with S_{-1} = init_state (or 0) */
        const real *init = init_state ? init_state + h * PN : NULL;
        real *states = (real *)callocCheck((size_t)s->T * PN, sizeof(real));
        real *grad = (real *)callocCheck(PN, sizeof(real));
        real *du = (real *)callocCheck((size_t)s->T * P, sizeof(real));
        real *dcum_like = (real *)callocCheck((size_t)s->T * hd.nk, sizeof(real)); /* d a_t[k] */
        for (int t = 0; t < s->T; t++) {
            const real *xt = head_x(&hd, t), *Bt = head_B(&hd, t);
            real dt = head_dt(&hd, t);
            real *cur = states + (size_t)t * PN;
            const real *prev = t > 0 ? states + (size_t)(t - 1) * PN : init;
            for (int p = 0; p < P; p++)
                for (int n = 0; n < N; n++)
                    cur[p * N + n] = (prev ? same_doc(&hd, t, t - 1) * exp(dt * hd.A_h[col(&hd, n)]) * prev[p * N + n] : 0) +
                                     dt * xt[p] * Bt[n];
        }
        for (int t = s->T - 1; t >= 0; t--) {
            const real *xt = head_x(&hd, t), *Bt = head_B(&hd, t), *Ct = head_C(&hd, t);
            const real *dyt = dy + (size_t)t * s->y_stride + (size_t)h * P;
            const real *cur = states + (size_t)t * PN;
            const real *prev = t > 0 ? states + (size_t)(t - 1) * PN : init;
            real dt = head_dt(&hd, t);
            real *dBt = dB_heads + h * TN + (size_t)t * N, *dCt = dC_heads + h * TN + (size_t)t * N;
            for (int p = 0; p < P; p++)
                for (int n = 0; n < N; n++) {
                    grad[p * N + n] += dyt[p] * Ct[n];
                    dCt[n] += dyt[p] * cur[p * N + n];
                }
            for (int p = 0; p < P; p++) {
                real acc = 0;
                for (int n = 0; n < N; n++) {
                    acc += grad[p * N + n] * Bt[n];
                    dBt[n] += grad[p * N + n] * dt * xt[p];
                }
                du[(size_t)t * P + p] = acc;
            }
            for (int n = 0; n < N; n++) {
                int k = col(&hd, n);
                real decay = same_doc(&hd, t, t - 1) * exp(dt * hd.A_h[k]);
                for (int p = 0; p < P; p++) {
                    if (prev) dcum_like[(size_t)t * hd.nk + k] += grad[p * N + n] * decay * prev[p * N + n];
                    grad[p * N + n] *= decay;
                }
            }
        }
        /* d a_t[k] -> delta and A */
        for (int t = 0; t < s->T; t++) {
            real dt = head_dt(&hd, t), acc = 0;
            for (int k = 0; k < hd.nk; k++) {
                acc += dcum_like[(size_t)t * hd.nk + k] * hd.A_h[k];
                dA[(size_t)h * hd.nk + k] += dcum_like[(size_t)t * hd.nk + k] * dt;
            }
            ddelta[(size_t)t * s->dt_stride + h] += acc;
        }
        input_backward(&hd, dy, du, dx, ddelta, dD);
        free(states);
        free(grad);
        free(du);
        free(dcum_like);
    }
    reduce_group_grads(s, dB_heads, dC_heads, dB, dC);
    free(dB_heads);
    free(dC_heads);
}

/* ------------------------------------------------------------------------------------------------
 * 2. Quadratic (masked attention) form: one segment covering the whole sequence.
 */
void ssd_forward_quadratic(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                           const real *C, const real *D, real *y) {
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        real *cum = (real *)mallocCheck(sizeof(real) * (size_t)s->T * hd.nk);
        cumulative_decay(&hd, 0, s->T, cum);
        zero_head_output(s, h, y);
        segment_quadratic_forward(&hd, 0, s->T, cum, y);
        skip_forward(&hd, y);
        free(cum);
    }
}

void ssd_backward_quadratic(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                            const real *C, const real *D, const real *dy, real *dx, real *ddelta, real *dA,
                            real *dB, real *dC, real *dD) {
    size_t TN = (size_t)s->T * s->N;
    real *dB_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
    real *dC_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        real *cum = (real *)mallocCheck(sizeof(real) * (size_t)s->T * hd.nk);
        real *dcum = (real *)callocCheck((size_t)s->T * hd.nk, sizeof(real));
        real *du = (real *)callocCheck((size_t)s->T * s->P, sizeof(real));
        cumulative_decay(&hd, 0, s->T, cum);
        segment_quadratic_backward(&hd, 0, s->T, cum, dy, du, dB_heads + h * TN, dC_heads + h * TN, dcum);
        segment_decay_backward(&hd, 0, s->T, dcum, ddelta, dA + (size_t)h * hd.nk);
        input_backward(&hd, dy, du, dx, ddelta, dD);
        free(cum);
        free(dcum);
        free(du);
    }
    reduce_group_grads(s, dB_heads, dC_heads, dB, dC);
    free(dB_heads);
    free(dC_heads);
}

/* ------------------------------------------------------------------------------------------------
 * 3. Chunked form. Per chunk c = [t0, t0+len): cum = decays cumulated from t0, cum_end = cum[len-1].
 *    intra:           y_t += sum_{s<=t in chunk} M[t,s] u_s                      (quadratic form)
 *    state-to-output: y_t += (S_c exp(cum_t)) C_t       S_c = state entering chunk c
 *    chunk state:     Z_c = sum_{s in chunk} u_s (B_s exp(cum_end - cum_s))^T
 *    state passing:   S_{c+1} = S_c exp(cum_end) + Z_c
 */
static void chunk_state_to_output(const Head *hd, int t0, int len, const real *cum, const real *state, real *y) {
    const SSDShape *s = hd->s;
    int N = s->N;
    real *scaled_C = (real *)mallocCheck(sizeof(real) * N);
    for (int i = 0; i < len; i++) {
        const real *Ct = head_C(hd, t0 + i);
        real entered = same_doc(hd, t0 + i, t0 - 1);
        for (int n = 0; n < N; n++) scaled_C[n] = entered * Ct[n] * exp(cum[(size_t)i * hd->nk + col(hd, n)]);
        real *yt = y + (size_t)(t0 + i) * s->y_stride + (size_t)hd->h * s->P;
        for (int p = 0; p < s->P; p++) {
            real acc = 0;
            for (int n = 0; n < N; n++) acc += state[(size_t)p * N + n] * scaled_C[n];
            yt[p] += acc;
        }
    }
    free(scaled_C);
}

static void chunk_state_passing(const Head *hd, int t0, int len, const real *cum, real *state) {
    const SSDShape *s = hd->s;
    int N = s->N, nk = hd->nk;
    const real *cum_end = cum + (size_t)(len - 1) * nk;
    int end = t0 + len - 1;
    real passed = same_doc(hd, end, t0 - 1);
    for (int p = 0; p < s->P; p++)
        for (int n = 0; n < N; n++) state[(size_t)p * N + n] *= passed * exp(cum_end[col(hd, n)]);
    for (int i = 0; i < len; i++) {
        const real *xs = head_x(hd, t0 + i), *Bs = head_B(hd, t0 + i);
        real dts = head_dt(hd, t0 + i);
        if (!same_doc(hd, end, t0 + i)) continue;
        for (int p = 0; p < s->P; p++) {
            real u = dts * xs[p];
            for (int n = 0; n < N; n++) {
                int k = col(hd, n);
                state[(size_t)p * N + n] += u * Bs[n] * exp(cum_end[k] - cum[(size_t)i * nk + k]);
            }
        }
    }
}

/* Runs the chunked forward of one head; y may be NULL (states only). If states is non-NULL it
 * receives the state entering each chunk ([nchunks, P, N]), which the backward pass needs. */
static void chunked_forward_head(const Head *hd, int Q, const real *init, real *y, real *final_state, real *states) {
    const SSDShape *s = hd->s;
    size_t PN = (size_t)s->P * s->N;
    real *state = (real *)mallocCheck(sizeof(real) * PN);
    real *cum = (real *)mallocCheck(sizeof(real) * (size_t)Q * hd->nk);
    if (init) memcpy(state, init, sizeof(real) * PN);
    else memset(state, 0, sizeof(real) * PN);
    if (y) zero_head_output(s, hd->h, y);
    for (int c = 0, t0 = 0; t0 < s->T; c++, t0 += Q) {
        int len = s->T - t0 < Q ? s->T - t0 : Q;
        cumulative_decay(hd, t0, len, cum);
        if (states) memcpy(states + c * PN, state, sizeof(real) * PN);
        if (y) {
            segment_quadratic_forward(hd, t0, len, cum, y);
            chunk_state_to_output(hd, t0, len, cum, state, y);
        }
        chunk_state_passing(hd, t0, len, cum, state);
    }
    if (y) skip_forward(hd, y);
    if (final_state) memcpy(final_state, state, sizeof(real) * PN);
    free(state);
    free(cum);
}

void ssd_forward_chunked(const SSDShape *s, int chunk_size, const real *x, const real *delta, const real *A,
                         const real *B, const real *C, const real *D, const real *init_state, real *y,
                         real *final_state) {
    size_t PN = (size_t)s->P * s->N;
    int Q = chunk_size < s->T ? chunk_size : s->T; /* one chunk of T steps is the whole sequence */
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        chunked_forward_head(&hd, Q, init_state ? init_state + h * PN : NULL, y,
                             final_state ? final_state + h * PN : NULL, NULL);
    }
}

/* Backward of one chunk, given grad = dL/dS_{c+1} (total). Accumulates du, dB, dC, dcum and turns
 * grad into dL/dS_c. */
static void chunk_backward(const Head *hd, int t0, int len, const real *cum, const real *state, const real *dy,
                           real *grad, real *du, real *dB, real *dC, real *dcum) {
    const SSDShape *s = hd->s;
    int N = s->N, P = s->P, nk = hd->nk;
    const real *cum_end = cum + (size_t)(len - 1) * nk;
    real *dcum_end = dcum + (size_t)(len - 1) * nk;
    int end = t0 + len - 1;
    real passed = same_doc(hd, end, t0 - 1);
    /* state passing: S_{c+1} = S_c exp(cum_end) + Z_c (times 0 across a document boundary) */
    for (int p = 0; p < P; p++)
        for (int n = 0; n < N; n++) {
            int k = col(hd, n);
            dcum_end[k] += grad[(size_t)p * N + n] * passed * exp(cum_end[k]) * state[(size_t)p * N + n];
        }
    /* chunk state Z_c (its gradient is grad) */
    for (int i = 0; i < len; i++) {
        const real *xs = head_x(hd, t0 + i), *Bs = head_B(hd, t0 + i);
        real dts = head_dt(hd, t0 + i);
        real *dBs = dB + (size_t)(t0 + i) * N, *dus = du + (size_t)(t0 + i) * P;
        real kept = same_doc(hd, end, t0 + i);
        for (int n = 0; n < N; n++) {
            int k = col(hd, n);
            real e = kept * exp(cum_end[k] - cum[(size_t)i * nk + k]);
            real gu = 0;
            for (int p = 0; p < P; p++) {
                gu += grad[(size_t)p * N + n] * dts * xs[p];
                dus[p] += grad[(size_t)p * N + n] * e * Bs[n];
            }
            dBs[n] += e * gu;
            real w = e * Bs[n] * gu;
            dcum_end[k] += w;
            dcum[(size_t)i * nk + k] -= w;
        }
    }
    /* state-to-output, and grad <- exp(cum_end) grad + d(state-to-output)/dS_c */
    for (int p = 0; p < P; p++)
        for (int n = 0; n < N; n++) grad[(size_t)p * N + n] *= passed * exp(cum_end[col(hd, n)]);
    for (int i = 0; i < len; i++) {
        const real *Ct = head_C(hd, t0 + i);
        const real *dyt = dy + (size_t)(t0 + i) * s->y_stride + (size_t)hd->h * P;
        real *dCt = dC + (size_t)(t0 + i) * N;
        real entered = same_doc(hd, t0 + i, t0 - 1);
        for (int n = 0; n < N; n++) {
            int k = col(hd, n);
            real e = entered * exp(cum[(size_t)i * nk + k]);
            real dys = 0;
            for (int p = 0; p < P; p++) {
                dys += dyt[p] * state[(size_t)p * N + n];
                grad[(size_t)p * N + n] += dyt[p] * Ct[n] * e;
            }
            dCt[n] += e * dys;
            dcum[(size_t)i * nk + k] += Ct[n] * e * dys;
        }
    }
    segment_quadratic_backward(hd, t0, len, cum, dy, du, dB, dC, dcum);
}

void ssd_backward_chunked(const SSDShape *s, int chunk_size, const real *x, const real *delta, const real *A,
                          const real *B, const real *C, const real *D, const real *init_state, const real *dy,
                          real *dx, real *ddelta, real *dA, real *dB, real *dC, real *dD) {
    size_t PN = (size_t)s->P * s->N, TN = (size_t)s->T * s->N;
    int Q = chunk_size < s->T ? chunk_size : s->T; /* one chunk of T steps is the whole sequence */
    int nchunks = (s->T + Q - 1) / Q;
    real *dB_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
    real *dC_heads = (real *)callocCheck((size_t)s->H * TN, sizeof(real));
#pragma omp parallel for schedule(static)
    for (int h = 0; h < s->H; h++) {
        Head hd = head_view(s, h, x, delta, A, B, C, D);
        real *states = (real *)mallocCheck(sizeof(real) * nchunks * PN);
        real *grad = (real *)callocCheck(PN, sizeof(real));
        real *du = (real *)callocCheck((size_t)s->T * s->P, sizeof(real));
        real *cum = (real *)mallocCheck(sizeof(real) * (size_t)Q * hd.nk);
        real *dcum = (real *)mallocCheck(sizeof(real) * (size_t)Q * hd.nk);
        /* chunk 0's entering state is the initial one: its terms reach C, delta and A through chunk_backward;
         * the gradient left in grad after chunk 0 is that of the initial state, which stops here */
        chunked_forward_head(&hd, Q, init_state ? init_state + h * PN : NULL, NULL, NULL, states);
        for (int c = nchunks - 1; c >= 0; c--) {
            int t0 = c * Q, len = s->T - t0 < Q ? s->T - t0 : Q;
            cumulative_decay(&hd, t0, len, cum);
            memset(dcum, 0, sizeof(real) * (size_t)Q * hd.nk);
            chunk_backward(&hd, t0, len, cum, states + c * PN, dy, grad, du, dB_heads + h * TN, dC_heads + h * TN, dcum);
            segment_decay_backward(&hd, t0, len, dcum, ddelta, dA + (size_t)h * hd.nk);
        }
        input_backward(&hd, dy, du, dx, ddelta, dD);
        free(states);
        free(grad);
        free(du);
        free(cum);
        free(dcum);
    }
    reduce_group_grads(s, dB_heads, dC_heads, dB, dC);
    free(dB_heads);
    free(dC_heads);
}
