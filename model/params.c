#include "model/params.h"
#include "common/rng.h"

#include <math.h>

const char *PARAM_NAMES[NUM_PARAM_TENSORS] = {"wte",     "norm_w", "in_proj_w", "conv_w", "conv_b", "dt_bias",
                                              "A_log",   "D",      "gnorm_w",   "out_proj_w", "norm_f"};

void param_layout_init(ParamLayout *layout, const ModelConfig *c) {
    size_t L = (size_t)c->n_layer;
    layout->sizes[P_WTE] = (size_t)c->padded_vocab * c->d_model;
    layout->sizes[P_NORM_W] = L * c->d_model;
    layout->sizes[P_IN_PROJ_W] = L * c->d_in_proj * c->d_model;
    layout->sizes[P_CONV_W] = L * c->conv_dim * c->d_conv;
    layout->sizes[P_CONV_B] = L * c->conv_dim;
    layout->sizes[P_DT_BIAS] = L * c->nheads;
    layout->sizes[P_A_LOG] = L * c->nheads * c->a_per_head;
    layout->sizes[P_D] = L * c->nheads;
    layout->sizes[P_GNORM_W] = L * c->d_inner;
    layout->sizes[P_OUT_PROJ_W] = L * c->d_model * c->d_inner;
    layout->sizes[P_NORM_F] = c->d_model;
    size_t offset = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        layout->layer_sizes[i] = i == P_WTE || i == P_NORM_F ? 0 : layout->sizes[i] / L;
        layout->offsets[i] = offset;
        offset += layout->sizes[i];
    }
    layout->total = offset;
}

int param_has_weight_decay(int tensor) {
    return tensor == P_IN_PROJ_W || tensor == P_OUT_PROJ_W || tensor == P_CONV_W;
}

int params_find_nonfinite(const ParamLayout *layout, const float *x, size_t first, size_t n, int nonnegative,
                          size_t *element) {
    for (size_t i = 0; i < n; i++) {
        if (isfinite(x[i]) && !(nonnegative && x[i] < 0)) continue;
        size_t at = first + i;
        int tensor = 0;
        while (tensor + 1 < NUM_PARAM_TENSORS && at >= layout->offsets[tensor + 1]) tensor++;
        *element = at - layout->offsets[tensor];
        return tensor;
    }
    return -1;
}

size_t params_count_effective(const ModelConfig *c) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    return layout.total - (size_t)(c->padded_vocab - c->vocab_size) * c->d_model;
}

static void fill_uniform(float *out, size_t n, double bound, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) out[i] = (float)((2.0 * rng_uniform(rng) - 1.0) * bound);
}

/*
 * The reference Mamba-2 initialisation: embedding N(0, 0.02); linear layers U(+-1/sqrt(fan_in)),
 * out_proj further scaled by 1/sqrt(n_layer); conv U(+-1/sqrt(d_conv)); dt log-uniform in
 * [dt_min, dt_max] floored, dt_bias = softplus^-1(dt); A_log = log U(1, 16); D = 1; norms 1.
 * Each tensor draws from its own stream so that changing one size leaves the others unchanged.
 */
void params_init(const ModelConfig *c, float *params, uint64_t seed) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    uint64_t rng;
    float *p;

    rng = rng_seed(seed * 16 + P_WTE);
    p = params + layout.offsets[P_WTE];
    for (size_t i = 0; i < layout.sizes[P_WTE]; i++) p[i] = (float)(0.02 * rng_normal(&rng));

    rng = rng_seed(seed * 16 + P_IN_PROJ_W);
    fill_uniform(params + layout.offsets[P_IN_PROJ_W], layout.sizes[P_IN_PROJ_W], 1.0 / sqrt((double)c->d_model), &rng);

    rng = rng_seed(seed * 16 + P_OUT_PROJ_W);
    fill_uniform(params + layout.offsets[P_OUT_PROJ_W], layout.sizes[P_OUT_PROJ_W],
                 1.0 / sqrt((double)c->d_inner) / sqrt((double)c->n_layer), &rng);

    rng = rng_seed(seed * 16 + P_CONV_W);
    fill_uniform(params + layout.offsets[P_CONV_W], layout.sizes[P_CONV_W], 1.0 / sqrt((double)c->d_conv), &rng);
    rng = rng_seed(seed * 16 + P_CONV_B);
    fill_uniform(params + layout.offsets[P_CONV_B], layout.sizes[P_CONV_B], 1.0 / sqrt((double)c->d_conv), &rng);

    rng = rng_seed(seed * 16 + P_DT_BIAS);
    p = params + layout.offsets[P_DT_BIAS];
    double log_lo = log((double)c->dt_min), log_hi = log((double)c->dt_max);
    for (size_t i = 0; i < layout.sizes[P_DT_BIAS]; i++) {
        double dt = exp(rng_uniform(&rng) * (log_hi - log_lo) + log_lo);
        if (dt < c->dt_init_floor) dt = c->dt_init_floor;
        p[i] = (float)(dt + log(-expm1(-dt)));
    }

    rng = rng_seed(seed * 16 + P_A_LOG);
    p = params + layout.offsets[P_A_LOG];
    for (size_t i = 0; i < layout.sizes[P_A_LOG]; i++) p[i] = (float)log(1.0 + 15.0 * rng_uniform(&rng));

    p = params + layout.offsets[P_D];
    for (size_t i = 0; i < layout.sizes[P_D]; i++) p[i] = 1.0f;
    int ones[] = {P_NORM_W, P_GNORM_W, P_NORM_F};
    for (int k = 0; k < 3; k++) {
        p = params + layout.offsets[ones[k]];
        for (size_t i = 0; i < layout.sizes[ones[k]]; i++) p[i] = 1.0f;
    }
}
