/*
 * Small models for the CPU tests: a 2-layer config with ngroups 2 and chunk 4 (so short sequences
 * cross chunks), and random parameters away from any special value.
 */
#ifndef SSD_TESTS_MODEL_FIXTURES_H
#define SSD_TESTS_MODEL_FIXTURES_H

#include <stdio.h>
#include <stdlib.h>

#include "model/config.h"
#include "model/params.h"
#include "common/rng.h"

static inline ModelConfig fixture_config(int diagonal) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"d_model\":16,\"n_layer\":2,\"vocab_size\":37,\"pad_vocab_multiple\":8,\"d_state\":4,\"d_conv\":4,"
             "\"expand\":2,\"headdim\":8,\"ngroups\":2,\"chunk_size\":4,\"a_structure\":\"%s\"}",
             diagonal ? "diagonal" : "scalar");
    ModelConfig c;
    char err[256];
    if (config_parse(&c, json, "fixture", err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    return c;
}

/* The reference init, then every tensor perturbed so nothing sits at a special value (norm weights
 * 1, D 1) that could hide a wrong gradient; logits made lively; delta around 0.5 rather than the
 * init's 1e-3..0.1, so that dt_bias and A_log matter and states carry over visibly. */
static inline float *fixture_params(const ModelConfig *c, uint64_t seed) {
    ParamLayout layout;
    param_layout_init(&layout, c);
    float *p = (float *)malloc(sizeof(float) * layout.total);
    params_init(c, p, seed);
    uint64_t rng = rng_seed(seed + 99);
    for (size_t i = 0; i < layout.total; i++) p[i] += (float)(0.1 * rng_normal(&rng));
    for (size_t i = 0; i < layout.sizes[P_WTE]; i++) p[layout.offsets[P_WTE] + i] *= 10.0f;
    for (size_t i = 0; i < layout.sizes[P_DT_BIAS]; i++) p[layout.offsets[P_DT_BIAS] + i] = (float)(-0.5 + 0.5 * rng_normal(&rng));
    return p;
}

#endif
