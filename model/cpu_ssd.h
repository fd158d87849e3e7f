/*
 * The SSD layer (state space duality) for one sequence, in its three exact forms.
 *
 * Per head h (group g = h / (H/G)), with state S_t in R^{P x N}:
 *     a_t[n] = delta_t[h] * A[h, n]       (scalar A: A[h] for every n)
 *     S_t    = exp(a_t) (.) S_{t-1} + delta_t[h] x_t[h] B_t[g]^T     ((.) scales column n by exp(a_t[n]))
 *     y_t[h] = S_t C_t[g] + D[h] x_t[h]
 * 1. recurrent: the loop above, O(T P N).
 * 2. quadratic: y = (L o C B^T) (delta x) + D x with the 1-semiseparable mask
 *    L[t,s] = exp(cum_t - cum_s) for s <= t (cum_t = a_1 + ... + a_t); a diagonal A is the sum over n
 *    of N such one-state heads. O(T^2 (N + P)).
 * 3. chunked: chunks of Q steps; intra-chunk quadratic term, per-chunk states, state passing
 *    between chunks, and state-to-output. O(T Q (N + P) + T P N). Used for training.
 *
 * Document boundaries: with a segment array (segment[t], non-decreasing, the number of documents that
 * started at or before t in this sequence; the state before t = 0, zero or carried, is in segment 0), a
 * state never passes from one segment to the next: the decay product across a segment change is zero.
 * Recurrent: S_t = [seg_t == seg_{t-1}] exp(a_t) S_{t-1} + ...; quadratic: L[t,s] = 0 across segments;
 * chunked: the same in the intra-chunk term, and a state enters (leaves) a chunk only up to the chunk's
 * first (from its last) segment change. Without one (NULL) the sequence is one document.
 *
 * All three compute the same function; backward functions ACCUMULATE (+=) into the gradients
 * (B and C are shared by the heads of a group, A and D by the whole batch).
 * A holds the (negative) decay rates A = -exp(A_log).
 */
#ifndef SSD_MODEL_CPU_SSD_H
#define SSD_MODEL_CPU_SSD_H

#include "model/real.h"

typedef struct {
    int T;          /* time steps */
    int H, P;       /* heads, head dimension */
    int G, N;       /* groups of B/C, state size */
    int diagonal;   /* 1: A is [H, N]; 0: A is [H] */
    int x_stride;   /* x[t * x_stride + h * P + p] (y, dy, dx use the same layout with y_stride) */
    int y_stride;
    int bc_stride;  /* B[t * bc_stride + g * N + n], likewise C, dB, dC */
    int dt_stride;  /* delta[t * dt_stride + h] */
    const int *segment; /* [T] document index of each step (see above), or NULL: one document */
} SSDShape;

/* init_state and final_state are [H, P, N] and may be NULL (zero start / not wanted). */
void ssd_forward_recurrent(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                           const real *C, const real *D, const real *init_state, real *y, real *final_state);
void ssd_forward_quadratic(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                           const real *C, const real *D, real *y);
void ssd_forward_chunked(const SSDShape *s, int chunk_size, const real *x, const real *delta, const real *A,
                         const real *B, const real *C, const real *D, const real *init_state, real *y,
                         real *final_state);

/* Gradients of sum(dy . y); each accumulates into dx, ddelta, dA, dB, dC, dD. init_state ([H, P, N] or NULL: zero)
 * is the state the forward started from: a constant whose term y_t += S0 exp(cum_t) C_t (up to the first document
 * boundary) reaches C, delta and A; no gradient flows into it (the caller's gradient stop). The quadratic form
 * has no initial state. */
void ssd_backward_recurrent(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                            const real *C, const real *D, const real *init_state, const real *dy, real *dx,
                            real *ddelta, real *dA, real *dB, real *dC, real *dD);
void ssd_backward_quadratic(const SSDShape *s, const real *x, const real *delta, const real *A, const real *B,
                            const real *C, const real *D, const real *dy, real *dx, real *ddelta, real *dA,
                            real *dB, real *dC, real *dD);
void ssd_backward_chunked(const SSDShape *s, int chunk_size, const real *x, const real *delta, const real *A,
                          const real *B, const real *C, const real *D, const real *init_state, const real *dy,
                          real *dx, real *ddelta, real *dA, real *dB, real *dC, real *dD);

#endif
