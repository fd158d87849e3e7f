/*
 * The SSD scan of a Mamba-2 / SSD-Mamba layer on the GPU, forward and backward, for a scalar A (one
 * decay rate per head) or a diagonal A (one per head and state). The math is in model/cpu_ssd.h:
 *     delta_t = softplus(dt_raw_t[h] + dt_bias[h]),   A = -exp(A_log)
 *     S_t = exp(delta_t A[h,:]) (.) S_{t-1} + delta_t x_t[h] B_t[g]^T,    y_t[h] = S_t C_t[g] + D[h] x_t[h]
 *
 * Two implementations (paths) share steps 1, 3 and 5 (delta and dc, state passing, the sums): for heads
 * of width P <= 64 and N <= 128, bf16 builds run the tensor-core path over whole 64-step tiles (a scalar
 * A: ssd_scan_mma.cuh; a diagonal A: ssd_scan_diag.cuh, its products factored through reference steps, a
 * few of its kernels shared with the scalar A, at chunks of 64; N = 256 as two slices of 128,
 * ssd_scan_adapt.cuh); wider heads and the FP32 build run the sub-block kernels of ssd_scan_sub.cuh (steps 2
 * and 4 as described below). The shape's `path` picks one at run time (SSD_PATH_AUTO: the choice just
 * described; SSD_PATH_SUB, SSD_PATH_MMA force one), and ssd_scan_dispatch, at the end of this file, is the
 * one place that maps a shape to its kernels.
 *
 * Files, one per stage or path, each opening with the math it computes:
 *   ssd_scan.cuh          this overview, the shape check and path choice, the workspace, the dispatch
 *                         and the entry points ssd_scan_forward, ssd_scan_backward
 *   ssd_scan_common.cuh   shape, path, constants, workspace arrays, device helpers, the warp GEMM tile
 *   ssd_scan_dt.cuh       step 1 (delta, dc) and backward step 4 (d dt_raw)
 *   ssd_scan_passing.cuh  step 3 and backward step 2 (state passing)
 *   ssd_scan_sums.cuh     backward step 5 (dB, dC over heads; parameter gradients)
 *   ssd_scan_sub.cuh      the sub-block path: steps 2 and 4, forward and backward
 *   ssd_scan_mma.cuh      the tensor-core path: steps 2 and 4 over 64-step tiles (bf16 builds)
 *   ssd_scan_diag.cuh     the tensor-core path for a diagonal A: steps 2 and 4, the per-state decays
 *                         factored through reference steps (bf16 builds)
 *   ssd_scan_adapt.cuh    the shape adapter: any headdim <= 256 and d_state <= 256 as a shape the kernels
 *                         run (wide heads as sub-heads, d_state 256 as two slices of 128 on the tensor-core
 *                         path, states padded with zero columns of B and C)
 *
 * Chunked algorithm. With dc_t the cumulative sum of delta inside a chunk, every decay between two
 * steps s <= t of a chunk is exp(A[n] (dc_t - dc_s)) <= 1, so no factor can overflow.
 *   1. dt:         delta and dc for every step                              (one block per chunk)
 *   2. states:     each chunk's own final state from a zero start, the GEMM
 *                  Z = (delta x)^T (B exp(A (dc_last - dc)))  (P x N, K = chunk steps)
 *   3. passing:    the state entering each chunk, chunk after chunk         (one thread per (p, n))
 *   4. chunk scan: one block per (chunk, head) holds the head's whole P x N state in shared memory and
 *                  walks the chunk in sub-blocks of SSD_SUB steps; per sub-block (ref = dc before it,
 *                  end = dc at its last step):
 *                    y   = (C exp(A (dc - ref))) S^T + M (delta x) + D x   with M[t][s] = C_t.B_s
 *                          decayed from s to t (s <= t), the intra-sub-block term
 *                    S  <- exp(A (end - ref)) S + (delta x)^T (B exp(A (end - dc)))
 * For a diagonal A the decay of M depends on n, so the sub-block path sums M with one exp per (t, s, n)
 * (SIMT): a product of two factors with the reference before the sub-block would need
 * exp(-A (dc_s - ref)) >= 1, which overflows for large delta |A| (the test's stress shape). The diagonal
 * tensor-core path (ssd_scan_diag.cuh) takes references between s and t instead, where both factors
 * are <= 1. Every other product is a GEMM with bounded operands.
 *
 * Backward (gradients of sum(dy . y)), with G = dL/dS the adjoint state:
 *   1. dstates:    each chunk's gradient w.r.t. its entering state, dy^T (C exp(A dc)) (same GEMM as 2)
 *   2. passing:    reversed: the gradient w.r.t. each chunk's final state from all later chunks
 *   3. chunk scan: a forward sweep re-forms S to give dC_t = S_t^T dy_t, a reverse sweep carries G to
 *                  give dx_t = D dy_t + delta_t G_t B_t and dB_t = delta_t G_t^T x_t. Per sub-block,
 *                  with W[t][s] = dy_t . (delta x)_s (s <= t):
 *                    dC = exp(A (dc - ref)) (.) (dy S) + sum_s W[t][s] B_s decayed from s to t
 *                    gb = (B exp(A (end - dc))) G^T + M^T dy                  (G_s B_s, per step s)
 *                    dB = exp(A (end - dc)) (.) ((delta x) G) + sum_t W[t][s] C_t decayed from s to t
 *                    G <- exp(A (end - ref)) G + dy^T (C exp(A (dc - ref)))
 *      The decays' gradient uses u_t = A (sum of delta up to t): dL/du_t[n] = z_t[n] =
 *      C_t[n] dC_t[n] - B_t[n] dB_t[n] (this head's share of dB, dC), so with r_t = sum_{t'>=t} z_t'
 *      d delta_t = sum_n A[n] r_t[n] + x_t . (G_t B_t)   and   dA[n] = sum_t delta_t r_t[n].
 *      The part of r_t from later chunks is sum_p G_end[p,n] S_end[p,n] at the chunk's end.
 *   4. dt:         d dt_raw = d delta * sigmoid(dt_raw + dt_bias).
 *   5. sums:       dB, dC over the heads of a group; dA_log, dD, ddt_bias over the per-block partials.
 *
 * GEMM tiles: all operands sit in fp32 shared memory. In bf16 builds a warp computes a 16 x 8 tile
 * with tensor cores (mma.sync m16n8k16, fp32 accumulation), each operand split into a bf16 value and
 * a bf16 remainder (three MMAs, ~16-bit operands: see ssd_mma); the fp32 build (the precision
 * reference) computes the same tiles with fp32 FMAs in the same register layout, so both builds run
 * the same indexing.
 *
 * Document boundaries: with segment ([B][T] ints, per row non-decreasing: the number of documents that
 * started at or before t; NULL: one document per row) a contribution from step s to step t (s <= t)
 * exists only when segment[s] = segment[t], and the state entering the row (zero or carried) belongs to
 * document 0, so it reaches t only when segment[t] = 0 (the CPU reference's rule, model/cpu_ssd.h). Every
 * stage multiplies its decays by these 0/1 masks (selects, where the decay is formed), and the decays
 * themselves stay exp(A (dc_t - dc_s)) <= 1. Per chunk, with seg_in the document of the state entering
 * it (segment[t0 - 1], or 0 for the first chunk) and seg_last that of its last step:
 *   intra-chunk:     M[t][s], W[t][s] are 0 unless segment[s] = segment[t]
 *   state-to-output: the entering state reaches t only when segment[t] = seg_in (dC's state part alike)
 *   chunk state:     Z takes B_s only from the steps of seg_last (dB's state part alike)
 *   passing:         in[c+1] = [seg_last = seg_in] exp(A dc_last) in[c] + Z (dstates in reverse alike)
 *   dstates:         C_t exp(A dc_t) only at the steps of seg_in
 * so in[c+1] is exactly the state after the chunk's last step. The decays' gradient stays as below: each
 * masked term is 0 in y and in the dB, dC shares alike, so z_t = C_t dC_t - B_t dB_t is still dL/du_t,
 * and gs = <G_end, S_end> uses the masked S_end. Without segments (NULL) the chunk kernels run a
 * variant of their own (a template flag) in which every mask is 1 at compile time, so they compute what
 * they computed before the masks existed, at the same cost; the state passing tests its one mask per
 * chunk at run time (a select of the unchanged value: the same bits).
 *
 * Carried state: the forward may take a state [B][H][P][N] (fp32, state_in) that enters the first chunk
 * instead of zero, and may write the state after step T - 1 (state_out: only its last document's part,
 * by the masks; it may be state_in, updated in place). The backward reads the entering state from the
 * forward's saved states (chunk 0's entering state is state_in), so it gives the gradients of the CPU's
 * ssd_backward_chunked(init_state): the entering state's terms reach C, delta and A_log; no gradient
 * flows into the state itself.
 *
 * Deterministic: no atomics. Every sum runs in a fixed order (warp shuffles, then shared memory in
 * a fixed order), so two runs on the same inputs give bitwise-equal outputs and gradients. Each
 * head writes its own share of dB, dC to the workspace (fp32; bf16 in the tensor-core path) and the
 * store kernel adds the heads of a group in head order; each chunk block writes its dA_log, dD
 * partial sums (and its ddt_bias sum), which ssd_param_grads_kernel adds in a fixed order to the
 * caller's gradients. d delta has one writer per step (the block of its chunk).
 *
 * Streams: the tensor-core path runs its stages that need nothing from the ones before them on a
 * side stream forked from the caller's and joined back into it (ssd_fork, ssd_join), so to the
 * caller the scan is one stream's work, with no host synchronisation.
 *
 * A new variant (docs/cuda.md, "Trying a scan variant"): a file of its own with templates
 * xxx_scan_forward<N>, xxx_scan_backward<N> taking (shape, SSDScanCall), a value in SSDScanPath, its
 * rule in ssd_scan_path_applies, its workspace needs in ssd_scan_workspace_view, and a line in
 * ssd_scan_run; tests/gpu/test_ssd_scan --path then checks it and --bench --path times it.
 */
#ifndef SSD_KERNELS_SSD_SCAN_CUH
#define SSD_KERNELS_SSD_SCAN_CUH

#include "ssd_scan_adapt.cuh"
#include "ssd_scan_common.cuh"
#include "ssd_scan_sub.cuh"
#if !defined(ENABLE_FP32)
#include "ssd_scan_diag.cuh"
#include "ssd_scan_mma.cuh"
#endif

static const char *ssd_scan_path_name(SSDScanPath path) {
    return path == SSD_PATH_SUB ? "sub" : path == SSD_PATH_MMA ? "mma" : "auto";
}

/* The kernels run heads of P channels, P a multiple of 16 in [16, SSD_MAX_P], and d_state N of 16, 32, 64,
 * 128 or 256; every other shape runs as the native shape that ssd_scan_native gives (ssd_scan_adapt.cuh):
 * N padded to the next of those, each head split into the fewest sub-heads of P' channels (a multiple of
 * 16, at most SSD_MAX_P) whose sub-block kernels fit SSD_SPLIT_SMEM_BYTES of shared memory. A shape the
 * kernels run directly is its own native shape, except heads of 96 to 128 channels at N = 256 where their
 * sub-block kernels need more than 227 KB (no GPU has it): those are split. Fewest sub-heads: each sub-head
 * repeats its head's per-step work that does not scale with P (delta, and for a diagonal A the one exp per
 * (t, s, n) of the intra-sub-block sums), so a head of 256 channels at d_state 128 runs as two of 128, not
 * four of 64 (at d_state 256, as four of 64: two of 128 need 274 KB). Where the tensor-core path could
 * run the sub-heads but for N > SSDM_MAX_N (bf16 builds, P' <= SSDM_TILE, path auto or mma), the states are
 * cut into slices of SSDM_MAX_N: d_state 256 runs as two scans of 128 on the tensor-core path (each slice a
 * group of its own), not as one on the sub-block path. Last, the chunk: every chunk size gives the same
 * scan (the chunks only regroup its sums), and a diagonal A on the tensor-core path runs fastest at chunks of
 * one 64-step tile (SSDD_CHUNK: its tile pairs inside a chunk cost more than carrying the state across
 * chunks; PERF.md log row 25), so under SSD_PATH_AUTO it runs there at chunk min(Q, 64). That keeps 256 / 64
 * = 4x the chunk states for the backward; a forced SSD_PATH_MMA runs the shape's own chunk. */
static int ssd_native_state(int N) {
    int n = 16;
    while (n < N) n *= 2;
    return n;
}

/* whether ns runs s's tensors as they are (no adapter copies): the same heads and states; the chunk may differ */
static bool ssd_scan_is_native(const SSDScanShape *s, const SSDScanShape *ns) {
    return ns->H == s->H && ns->P == s->P && ns->N == s->N;
}

static SSDScanShape ssd_scan_native(const SSDScanShape *s) {
    SSDScanShape ns = *s;
    ns.N = ssd_native_state(s->N);
    for (int split = ceil_div(s->P, SSD_MAX_P);; split++) {
        ns.P = ceil_div(ceil_div(s->P, split), 16) * 16;
        ns.H = s->H * split;
        if (ns.P == 16 || ssd_sub_smem_bytes(&ns) <= SSD_SPLIT_SMEM_BYTES) break;
    }
#if !defined(ENABLE_FP32)
    if (s->path != SSD_PATH_SUB && ns.P <= SSDM_TILE && ns.N > SSDM_MAX_N) {
        int slices = ns.N / SSDM_MAX_N;
        ns.N = SSDM_MAX_N;
        ns.H *= slices;
        ns.G *= slices;
    }
    if (s->path == SSD_PATH_AUTO && s->diagonal && ns.P <= SSDM_TILE && ns.Q > SSDD_CHUNK) ns.Q = SSDD_CHUNK;
#endif
    if (ssd_scan_is_native(s, &ns)) return ns;
    ns.conv_dim = ns.H * ns.P + 2 * ns.G * ns.N;
    ns.d_in_proj = ns.H == s->H ? s->d_in_proj : ns.H; /* a copy of dt_raw per native head is compact */
    return ns;
}

/* Whether `path` can run shape s in this build: the tensor-core path (ssd_scan_mma.cuh for a scalar A,
 * ssd_scan_diag.cuh for a diagonal one) takes heads of width P <= 64 and N <= 128 in bf16 builds; the
 * sub-block path (ssd_scan_sub.cuh) takes every shape. The rule applies to the native shape that path would
 * run (a head of 40 channels runs as one of 48, d_state 256 as two slices of 128, on the tensor-core path). */
static bool ssd_scan_path_applies(const SSDScanShape *s, SSDScanPath path) {
    if (path != SSD_PATH_MMA) return true;
#if defined(ENABLE_FP32)
    return false;
#else
    SSDScanShape on_path = *s;
    on_path.path = SSD_PATH_MMA;
    SSDScanShape ns = ssd_scan_native(&on_path);
    return ns.P <= SSDM_TILE && ns.N <= SSDM_MAX_N;
#endif
}

/* The path that runs shape s: for SSD_PATH_AUTO the tensor-core path where it applies, else the
 * sub-block path; a forced path that cannot run s is refused with a message. */
static SSDScanPath ssd_scan_path(const SSDScanShape *s) {
    if (s->path == SSD_PATH_AUTO) return ssd_scan_path_applies(s, SSD_PATH_MMA) ? SSD_PATH_MMA : SSD_PATH_SUB;
    if (!ssd_scan_path_applies(s, s->path)) {
        SSDScanShape ns = ssd_scan_native(s);
        fprintf(stderr, "ssd_scan: path %s cannot run this shape (diagonal=%d P=%d N=%d, run as P=%d N=%d) in this %s "
                        "build: it needs heads of at most %d channels as run and a bf16 build\n",
                ssd_scan_path_name(s->path), s->diagonal, s->P, s->N, ns.P, ns.N, PRECISION_NAME, SSDM_TILE);
        exit(EXIT_FAILURE);
    }
    return s->path;
}

static SSDScanWorkspace ssd_scan_workspace_view(const SSDScanShape *s, void *workspace, size_t *total,
                                               size_t *saved) {
    size_t blocks = (size_t)s->B * ssd_num_chunks(s) * s->H;
    size_t bht = (size_t)s->B * s->H * s->T * sizeof(float);
    size_t st = blocks * s->P * s->N * sizeof(float);
    /* tc: the tensor-core path (scalar: mma, diagonal: diag); its dB, dC shares are bf16 */
    bool tc = ssd_scan_path(s) == SSD_PATH_MMA, mma = tc && !s->diagonal, diag = tc && s->diagonal;
    size_t bc = (size_t)s->B * s->T * s->H * 2 * s->N * (tc ? sizeof(__nv_bfloat16) : sizeof(float));
    size_t da = blocks * ssd_num_rates(s) * sizeof(float);
    size_t tiles = ssd_num_tiles(s); /* the tensor-core path's dD partials: one per tile */
    size_t qp = tiles * SSDM_TILE, cb = mma ? (size_t)s->B * s->G * ssd_num_chunks(s) * qp * qp * 4 : 0;
    size_t gs = mma ? blocks * ssd_pass_warps(s) : diag ? blocks * s->N : 0;
    SSDScanWorkspace ws;
    /* what the forward writes for the backward first (delta, dcum, states, cb), then the scratch */
    struct {
        float **ptr;
        size_t bytes;
    } arrays[] = {{&ws.delta, bht},
                  {&ws.dcum, bht},
                  {&ws.states, st},
                  {&ws.cb, cb},
                  {&ws.dstates, st},
                  {&ws.ddelta, tc ? 0 : bht}, /* the tensor-core path keeps d delta in registers */
                  {&ws.dBC, bc},
                  {&ws.dA_part, da},
                  {&ws.dD_part, blocks * tiles * sizeof(float)},
                  {&ws.ddt_part, blocks * sizeof(float)},
                  {&ws.zc, bht},
                  {&ws.zb, bht},
                  {&ws.din, bht},
                  {&ws.gs_part, gs * sizeof(float)},
                  {&ws.g_planes, mma ? st : 0},
                  {&ws.za_part, diag ? blocks * tiles * 2 * s->N * sizeof(float) : 0}};
    size_t offset = 0;
    for (size_t i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
        *arrays[i].ptr = workspace ? (float *)((char *)workspace + offset) : NULL;
        offset += ssd_align(arrays[i].bytes);
        if (arrays[i].ptr == &ws.cb && saved) *saved = offset;
    }
    if (total) *total = offset;
    return ws;
}

/* Exits with a message naming the field on a shape the scan cannot run. */
static void ssd_scan_check_shape(const SSDScanShape *s) {
    const char *bad = NULL;
    if (s->B < 1 || s->T < 1 || s->H < 1 || s->G < 1) bad = "B, T, H, G must be positive";
    else if (s->H % s->G != 0) bad = "H must be a multiple of G (ngroups)";
    else if (s->P < 1 || s->P > SSD_MAX_HEADDIM) bad = "P (headdim) must be in [1, 256]";
    else if (s->N < 1 || s->N > SSD_MAX_STATE) bad = "N (d_state) must be in [1, 256]";
    else if (s->Q < 1 || s->Q > SSD_MAX_CHUNK) bad = "Q (chunk_size) must be in [1, 1024]";
    else if (s->conv_dim != s->H * s->P + 2 * s->G * s->N) bad = "conv_dim must equal H*P + 2*G*N";
    else if ((long)s->B * ssd_scan_native(s).H > 65535) bad = "B*H (each head counted as its sub-heads) must be at most 65535";
    else if (s->d_in_proj < s->H) bad = "d_in_proj must be at least H";
    else if ((int)s->path < SSD_PATH_AUTO || (int)s->path > SSD_PATH_MMA) bad = "path must be auto, sub or mma";
    if (bad) {
        fprintf(stderr, "ssd_scan: unsupported shape (B=%d T=%d H=%d P=%d G=%d N=%d Q=%d conv_dim=%d d_in_proj=%d): %s\n",
                s->B, s->T, s->H, s->P, s->G, s->N, s->Q, s->conv_dim, s->d_in_proj, bad);
        exit(EXIT_FAILURE);
    }
}

/* The most shared memory a block of native shape ns takes on its path: the sub-block kernels', or the
 * diagonal tensor-core path's (75 KB at N = 128); the scalar tensor-core kernels stay under 64 KB at
 * their N <= 128, which every GPU from Ampere on has. */
static size_t ssd_scan_smem_need(const SSDScanShape *ns) {
    SSDScanPath path = ssd_scan_path(ns);
#if !defined(ENABLE_FP32)
    if (path == SSD_PATH_MMA && ns->diagonal) return ssdd_smem_need(ns->N);
#endif
    return path == SSD_PATH_SUB ? ssd_sub_smem_bytes(ns) : 0;
}

/* Exits with a message naming headdim, d_state and chunk_size when this GPU's shared memory per block is
 * less than the scan's kernels need for shape s (its sub-block kernels: the tensor-core path needs at most
 * 62 KB, which every GPU from Ampere on has); for a check before anything is allocated. */
void ssd_scan_check_device(const SSDScanShape *s) {
    ssd_scan_check_shape(s);
    SSDScanShape ns = ssd_scan_native(s);
    size_t need = ssd_scan_smem_need(&ns);
    if (need > (size_t)ssd_smem_optin_limit()) {
        fprintf(stderr, "error: the SSD scan at headdim %d, d_state %d, chunk_size %d (run as heads of %d channels, "
                        "d_state %d) needs %zu bytes of shared memory per block and this GPU allows %d; a smaller "
                        "d_state, headdim or chunk_size fits (docs/cuda.md lists what each GPU runs)\n",
                s->P, s->N, s->Q, ns.P, ns.N, need, ssd_smem_optin_limit());
        exit(EXIT_FAILURE);
    }
}

/* Bytes of the workspace of shape s: the native shape's arrays (ssd_scan_workspace_view), then for an
 * adapted shape the adapter's copies (ssd_adapt_view). */
size_t ssd_scan_workspace_bytes(const SSDScanShape *s) {
    ssd_scan_check_shape(s);
    SSDScanShape ns = ssd_scan_native(s);
    size_t total, copies = 0;
    ssd_scan_workspace_view(&ns, NULL, &total, NULL);
    if (!ssd_scan_is_native(s, &ns)) ssd_adapt_view(s, &ns, NULL, &copies);
    return total + copies;
}

/* The leading part of the workspace that the forward writes and the backward reads (delta, dcum,
 * states, and C B^T in the tensor-core path, of the native shape); the rest is scratch (the adapter's
 * copies too: the backward gathers them again). A model can therefore give layer l the workspace at
 * l * saved_bytes of one buffer of (L - 1) * saved + total bytes: layer l's scratch then overlaps only
 * later layers, whose backward has already run (or, during the forward, whose forward has not yet: the
 * tensor-core path's forward and the adapter use scratch too). */
size_t ssd_scan_saved_bytes(const SSDScanShape *s) {
    ssd_scan_check_shape(s);
    SSDScanShape ns = ssd_scan_native(s);
    size_t saved;
    ssd_scan_workspace_view(&ns, NULL, NULL, &saved);
    return saved;
}

/* ------------------------------------------------------------------------------------------------
 * The dispatch: the one place where a shape's d_state and path pick the kernels. A path's forward and
 * backward are templates over N (the state width, so the kernels' loops and register tiles are sized
 * at compile time).
 */
template <int N_>
static void ssd_scan_run(const SSDScanShape *s, SSDScanPath path, const SSDScanCall *c, bool backward) {
#if !defined(ENABLE_FP32)
    if constexpr (N_ <= SSDM_MAX_N) {
        if (path == SSD_PATH_MMA) {
            if (s->diagonal) {
                if (backward) ssdd_scan_backward<N_>(s, c);
                else ssdd_scan_forward<N_>(s, c);
            } else {
                if (backward) ssdm_scan_backward<N_>(s, c);
                else ssdm_scan_forward<N_>(s, c);
            }
            return;
        }
    }
#endif
    if (backward) ssd_sub_scan_backward<N_>(s, c);
    else ssd_sub_scan_forward<N_>(s, c);
}

static void ssd_scan_dispatch(const SSDScanShape *s, const SSDScanCall *c, bool backward) {
    SSDScanPath path = ssd_scan_path(s);
    switch (s->N) { /* 16, 32, 64, 128 or 256: a native shape (ssd_scan_native) */
    case 16: ssd_scan_run<16>(s, path, c, backward); break;
    case 32: ssd_scan_run<32>(s, path, c, backward); break;
    case 64: ssd_scan_run<64>(s, path, c, backward); break;
    case 128: ssd_scan_run<128>(s, path, c, backward); break;
    default: ssd_scan_run<256>(s, path, c, backward); break;
    }
}

/* The call of shape s after checking it: its native shape (*ns), the workspace's arrays and the inputs that
 * forward and backward share, for the dispatch; for an adapted shape the adapter's view (*a) with those inputs
 * gathered (returns whether it is adapted). */
static bool ssd_scan_call(SSDScanCall *c, SSDScanShape *ns, SSDAdapt *a, const SSDScanShape *s, const floatX *xBC,
                          const floatX *dt_raw, const float *dt_bias, const float *A_log, const float *D,
                          const int *segment, void *workspace, cudaStream_t stream) {
    ssd_scan_check_shape(s);
    *ns = ssd_scan_native(s);
    memset(c, 0, sizeof(*c));
    size_t native_bytes;
    c->ws = ssd_scan_workspace_view(ns, workspace, &native_bytes, NULL);
    c->stream = stream;
    c->xBC = xBC;
    c->dt_raw = dt_raw;
    c->dt_bias = dt_bias;
    c->A_log = A_log;
    c->D = D;
    c->segment = segment;
    if (ssd_scan_is_native(s, ns)) return false;
    *a = ssd_adapt_view(s, ns, (char *)workspace + native_bytes, NULL);
    ssd_adapt_gather_inputs(a, c);
    return true;
}

/* segment: NULL (one document per row) or [B][T] on the device (see above). state_in: NULL (zero) or the
 * [B][H][P][N] fp32 state entering each row; state_out: NULL or where the state after step T - 1 goes (only
 * its last document's part); the two may be one array. */
void ssd_scan_forward(const SSDScanShape *s, floatX *y, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                      const float *A_log, const float *D, const int *segment, const float *state_in, float *state_out,
                      void *workspace, cudaStream_t stream) {
    SSDScanCall c;
    SSDScanShape ns;
    SSDAdapt a;
    bool adapted = ssd_scan_call(&c, &ns, &a, s, xBC, dt_raw, dt_bias, A_log, D, segment, workspace, stream);
    c.y = y;
    c.state_in = state_in;
    c.state_out = state_out;
    if (adapted) ssd_adapt_forward_in(&a, &c);
    ssd_scan_dispatch(&ns, &c, false);
    if (adapted) ssd_adapt_forward_out(&a, y, state_out, stream);
}

/* segment: the forward's; the entering state comes from the forward's workspace (no gradient into it) */
void ssd_scan_backward(const SSDScanShape *s, floatX *dxBC, floatX *ddt_raw, float *ddt_bias, float *dA_log, float *dD,
                       const floatX *dy, const floatX *xBC, const floatX *dt_raw, const float *dt_bias,
                       const float *A_log, const float *D, const int *segment, void *workspace, cudaStream_t stream) {
    SSDScanCall c;
    SSDScanShape ns;
    SSDAdapt a;
    bool adapted = ssd_scan_call(&c, &ns, &a, s, xBC, dt_raw, dt_bias, A_log, D, segment, workspace, stream);
    c.dy = dy;
    c.dxBC = dxBC;
    c.ddt_raw = ddt_raw;
    c.ddt_bias = ddt_bias;
    c.dA_log = dA_log;
    c.dD = dD;
    if (adapted) ssd_adapt_backward_in(&a, &c);
    ssd_scan_dispatch(&ns, &c, true);
    if (adapted) ssd_adapt_backward_out(&a, dxBC, ddt_raw, ddt_bias, dA_log, dD, stream);
}

#endif
