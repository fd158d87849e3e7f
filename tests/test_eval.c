/*
 * Full-split evaluation (train/eval_split.h, mamba_forward_carry, mamba_evaluate_split), in double,
 * on shards this program writes (random tokens, several shard lengths including one shorter than a
 * window), scalar and diagonal A:
 *   - the windows hand out every (input, target) pair of every shard exactly once, in order, never
 *     crossing a shard boundary, and flag the first window of each shard;
 *   - carrying the conv and SSM states window to window gives per-token losses equal (1e-12) to one
 *     forward over each whole shard, for window lengths that are multiples of the chunk size, not,
 *     and shorter than the conv's d_conv-1 = 3 steps of history;
 *   - without carrying, the batched evaluation equals independent windows run one by one, for
 *     several batch sizes, and the two conventions really differ;
 *   - mamba_forward_carry from zero states equals mamba_forward (B = 2 rows);
 *   - so does the backward after it.
 */
#include "model/cpu_model.h"
#include "train/cpu_evaluator.h"
#include "common/rng.h"
#include "common/utils.h"
#include "tests/model_fixtures.h"
#include "tests/test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NUM_SHARDS 3
static const int shard_len[NUM_SHARDS] = {42, 6, 25}; /* tokens per shard */
static int *shard_tokens[NUM_SHARDS];
static char test_dir[256];
static char pattern[300];

/* the fixture's parameters with slower decays (A_log around -1), so that states carry over */
static float *eval_params(const ModelConfig *c, uint64_t seed) {
    float *p = fixture_params(c, seed);
    ParamLayout layout;
    param_layout_init(&layout, c);
    uint64_t rng = rng_seed(seed + 17);
    for (size_t i = 0; i < layout.sizes[P_A_LOG]; i++) p[layout.offsets[P_A_LOG] + i] = (float)(-1.0 + 0.5 * rng_normal(&rng));
    return p;
}

/* the fixture model (scalar or diagonal A) with eval_params' parameters */
static void eval_model(Mamba *model, int diagonal, uint64_t seed) {
    ModelConfig c = fixture_config(diagonal);
    float *p = eval_params(&c, seed);
    mamba_build(model, &c, p);
    free(p);
}

static void write_shards(int vocab) {
    snprintf(test_dir, sizeof(test_dir), "/tmp/ssd_test_eval_%d", (int)getpid());
    if (mkdir(test_dir, 0755) != 0) {
        perror(test_dir);
        exit(1);
    }
    uint64_t rng = rng_seed(2024);
    for (int s = 0; s < NUM_SHARDS; s++) {
        shard_tokens[s] = (int *)mallocCheck(sizeof(int) * shard_len[s]);
        int32_t header[SHARD_HEADER_INTS] = {SHARD_MAGIC, 1, shard_len[s]};
        char path[400];
        snprintf(path, sizeof(path), "%s/split_%06d.bin", test_dir, s);
        FILE *fp = fopenCheck(path, "wb");
        fwriteCheck(header, sizeof(int32_t), SHARD_HEADER_INTS, fp);
        for (int i = 0; i < shard_len[s]; i++) {
            shard_tokens[s][i] = (int)(rng_next(&rng) % (uint64_t)vocab);
            uint16_t t = (uint16_t)shard_tokens[s][i];
            fwriteCheck(&t, sizeof(t), 1, fp);
        }
        fcloseCheck(fp);
    }
    snprintf(pattern, sizeof(pattern), "%s/split_*.bin", test_dir);
}

static void remove_shards(void) {
    for (int s = 0; s < NUM_SHARDS; s++) {
        char path[400];
        snprintf(path, sizeof(path), "%s/split_%06d.bin", test_dir, s);
        remove(path);
        free(shard_tokens[s]);
    }
    rmdir(test_dir);
}

static double window_loss_sum(const Mamba *model) {
    double total = 0;
    for (int i = 0; i < model->B * model->T; i++) total += model->acts.losses[i];
    return total;
}

/* every pair once, in order, windows within shards, first windows flagged */
static void check_windows(int vocab, int T) {
    EvalSplit split;
    eval_split_init(&split, pattern, T, vocab);
    size_t expected_total = 0;
    for (int s = 0; s < NUM_SHARDS; s++) expected_total += shard_len[s] - 1;
    int ok = split.total_targets == expected_total, shard = 0, pos = 0, windows = 0, flags_ok = 1, short_ok = 1;
    while (ok && eval_split_next(&split)) {
        if (pos == shard_len[shard] - 1) { shard++; pos = 0; }
        if (shard >= NUM_SHARDS) { ok = 0; break; }
        flags_ok &= split.starts_stream == (pos == 0);
        int left = shard_len[shard] - 1 - pos;
        short_ok &= split.length == (left < T ? left : T);
        for (int i = 0; i < split.length && ok; i++, pos++)
            ok = split.inputs[i] == shard_tokens[shard][pos] && split.targets[i] == shard_tokens[shard][pos + 1];
        windows++;
    }
    ok = ok && flags_ok && short_ok && shard == NUM_SHARDS - 1 && pos == shard_len[shard] - 1 &&
         split.consumed == expected_total && !eval_split_next(&split);
    char name[64];
    snprintf(name, sizeof(name), "eval_windows_cover_once[T=%d]", T);
    test_report(ok, name, "%d windows over %zu targets of %d shards (lengths %d, %d, %d)", windows, split.consumed,
                NUM_SHARDS, shard_len[0], shard_len[1], shard_len[2]);
    eval_split_free(&split);
}

/* carried windows == one forward per shard, token by token; total via mamba_evaluate_split too */
static void check_carry(int diagonal, int T) {
    Mamba model;
    eval_model(&model, diagonal, 11 + diagonal);
    ModelConfig c = model.config;
    double long_total = 0, max_diff = 0, max_loss = 0;
    size_t count = 0;
    MambaInferenceState state;
    inference_state_init(&state, &c);
    for (int s = 0; s < NUM_SHARDS; s++) {
        int n = shard_len[s] - 1;
        mamba_forward(&model, shard_tokens[s], shard_tokens[s] + 1, 1, n);
        real *reference = (real *)mallocCheck(sizeof(real) * n);
        memcpy(reference, model.acts.losses, sizeof(real) * n);
        long_total += window_loss_sum(&model);
        inference_state_free(&state);
        inference_state_init(&state, &c); /* zero states */
        for (int t0 = 0; t0 < n; t0 += T) {
            int len = n - t0 < T ? n - t0 : T;
            mamba_forward_carry(&model, shard_tokens[s] + t0, shard_tokens[s] + t0 + 1, 1, len, &state);
            for (int i = 0; i < len; i++) {
                double d = fabs(model.acts.losses[i] - reference[t0 + i]);
                max_diff = d > max_diff ? d : max_diff;
                max_loss = fabs(reference[t0 + i]) > max_loss ? fabs(reference[t0 + i]) : max_loss;
            }
            count += len;
        }
        free(reference);
    }
    inference_state_free(&state);
    EvalSplit split;
    eval_split_init(&split, pattern, T, c.vocab_size);
    EvalResult carried = mamba_evaluate_split(&model, &split, 4, 1, NULL);
    EvalResult fresh = mamba_evaluate_split(&model, &split, 4, 0, NULL);
    size_t total_targets = split.total_targets;
    eval_split_free(&split);
    double total_diff = fabs(carried.loss_sum - long_total) / long_total;
    double convention_gap = fabs(fresh.loss_sum - carried.loss_sum) / long_total;
    char name[96];
    snprintf(name, sizeof(name), "eval_carry_equals_long_forward[%s,T=%d]", diagonal ? "diagonal" : "scalar", T);
    int ok = count == total_targets && max_diff <= 1e-12 * max_loss && total_diff <= 1e-12 &&
             carried.tokens == count;
    test_report(ok, name, "max |per-token loss diff| %.2e (losses up to %.2f), total rel diff %.2e over %zu tokens",
                max_diff, max_loss, total_diff, carried.tokens);
    /* the carried state must change the result, or the equality above would prove nothing */
    snprintf(name, sizeof(name), "eval_conventions_differ[%s,T=%d]", diagonal ? "diagonal" : "scalar", T);
    test_report(convention_gap > 1e-6, name, "carried vs fresh windows: relative gap %.2e in the summed loss",
                convention_gap);
    mamba_free(&model);
}

/* batched fresh windows == windows one by one */
static void check_no_carry(int diagonal, int T) {
    Mamba model;
    eval_model(&model, diagonal, 21 + diagonal);
    ModelConfig c = model.config;
    EvalSplit split;
    eval_split_init(&split, pattern, T, c.vocab_size);
    double reference = 0;
    size_t count = 0;
    eval_split_reset(&split);
    while (eval_split_next(&split)) {
        mamba_forward(&model, split.inputs, split.targets, 1, split.length);
        reference += window_loss_sum(&model);
        count += split.length;
    }
    const int batch_sizes[] = {1, 2, 3, 16};
    double worst = 0;
    int tokens_ok = 1;
    for (int k = 0; k < 4; k++) {
        EvalResult r = mamba_evaluate_split(&model, &split, batch_sizes[k], 0, NULL);
        double d = fabs(r.loss_sum - reference) / reference;
        worst = d > worst ? d : worst;
        tokens_ok &= r.tokens == count;
    }
    char name[96];
    snprintf(name, sizeof(name), "eval_fresh_equals_independent_windows[%s,T=%d]", diagonal ? "diagonal" : "scalar", T);
    test_report(tokens_ok && count == split.total_targets && worst <= 1e-12, name,
                "batch sizes 1, 2, 3, 16: max rel diff %.2e from windows run one by one (%zu tokens)", worst, count);
    eval_split_free(&split);
    mamba_free(&model);
}

static void check_zero_state_forward(void) {
    ModelConfig c = fixture_config(1);
    float *p = eval_params(&c, 31);
    Mamba model;
    mamba_build(&model, &c, p);
    free(p);
    int B = 2, T = 9, inputs[18], targets[18];
    uint64_t rng = rng_seed(3);
    for (int i = 0; i < B * T; i++) {
        inputs[i] = (int)(rng_next(&rng) % (uint64_t)c.vocab_size);
        targets[i] = (int)(rng_next(&rng) % (uint64_t)c.vocab_size);
    }
    mamba_forward(&model, inputs, targets, B, T);
    size_t n = (size_t)B * T * c.padded_vocab;
    real *logits = (real *)mallocCheck(sizeof(real) * n);
    memcpy(logits, model.acts.logits, sizeof(real) * n);
    MambaInferenceState states[2];
    inference_state_init(&states[0], &c);
    inference_state_init(&states[1], &c);
    mamba_forward_carry(&model, inputs, targets, B, T, states);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(model.acts.logits[i] - logits[i]);
        worst = d > worst ? d : worst;
    }
    test_report(worst <= 1e-12, "forward_carry_zero_state", "B=2 T=9: max |logit diff| %.2e from mamba_forward", worst);
    /* from zero states the backward is mamba_forward's too (tests/test_carry.c checks nonzero ones) */
    size_t np = model.layout.total;
    real *grads = (real *)mallocCheck(sizeof(real) * np);
    mamba_zero_grad(&model);
    mamba_backward(&model, 1.0);
    memcpy(grads, model.grads, sizeof(real) * np);
    mamba_forward(&model, inputs, targets, B, T);
    mamba_zero_grad(&model);
    mamba_backward(&model, 1.0);
    double gworst = 0;
    for (size_t i = 0; i < np; i++) gworst = fmax(gworst, fabs(grads[i] - model.grads[i]));
    if (isnan(gworst)) gworst = INFINITY;
    test_report(gworst <= 1e-12, "backward_after_zero_carry", "max |gradient diff| %.2e from mamba_forward's", gworst);
    free(grads);
    inference_state_free(&states[0]);
    inference_state_free(&states[1]);
    free(logits);
    mamba_free(&model);
}

int main(void) {
    write_shards(37);
    const int windows[] = {8, 5, 2};
    for (int k = 0; k < 3; k++) check_windows(37, windows[k]);
    for (int diagonal = 0; diagonal <= 1; diagonal++)
        for (int k = 0; k < 3; k++) {
            check_carry(diagonal, windows[k]);
            check_no_carry(diagonal, windows[k]);
        }
    check_zero_state_forward();
    remove_shards();
    return test_exit_code();
}
