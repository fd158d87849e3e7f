/*
 * The CPU model as the forward of an evaluation (train/eval_split.h): summed losses of independent
 * windows, or of one stream whose recurrent state is carried from window to window.
 */
#include "train/cpu_evaluator.h"

#include <string.h>

static double sum_losses(const Mamba *model) {
    double total = 0;
    for (int i = 0; i < model->B * model->T; i++) total += model->acts.losses[i];
    return total;
}

static double evaluator_loss_sum(void *self, const int *inputs, const int *targets, int B, int T) {
    MambaEvaluator *e = (MambaEvaluator *)self;
    mamba_forward(e->model, inputs, targets, B, T);
    return sum_losses(e->model);
}

static double evaluator_loss_sum_carry(void *self, const int *inputs, const int *targets, int T, int reset) {
    MambaEvaluator *e = (MambaEvaluator *)self;
    const ModelConfig *c = &e->model->config;
    if (e->carry.conv_state == NULL) inference_state_init(&e->carry, c);
    if (reset) inference_state_reset(&e->carry, c);
    mamba_forward_carry(e->model, inputs, targets, 1, T, &e->carry);
    return sum_losses(e->model);
}

static void evaluator_token_scores(void *self, const int *inputs, const int *targets, int B, int T, double *losses,
                                   unsigned char *hits) {
    MambaEvaluator *e = (MambaEvaluator *)self;
    Mamba *model = e->model;
    mamba_forward(model, inputs, targets, B, T);
    int V = model->config.vocab_size, Vp = model->config.padded_vocab;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        const real *logits = model->acts.logits + i * Vp;
        real target_logit = logits[targets[i]];
        unsigned char hit = 1;
        for (int v = 0; v < V && hit; v++) hit = logits[v] <= target_logit;
        losses[i] = model->acts.losses[i];
        hits[i] = hit;
    }
}

EvalForward mamba_evaluator_init(MambaEvaluator *evaluator, Mamba *model) {
    memset(evaluator, 0, sizeof(*evaluator));
    evaluator->model = model;
    EvalForward forward = {evaluator, evaluator_loss_sum, evaluator_loss_sum_carry, evaluator_token_scores};
    return forward;
}

void mamba_evaluator_free(MambaEvaluator *evaluator) {
    if (evaluator->carry.conv_state) inference_state_free(&evaluator->carry);
    memset(evaluator, 0, sizeof(*evaluator));
}

EvalResult mamba_evaluate_split(Mamba *model, EvalSplit *split, int B, int carry, Comm *comm) {
    MambaEvaluator evaluator;
    EvalForward forward = mamba_evaluator_init(&evaluator, model);
    EvalResult result = eval_split_evaluate(split, B, carry, &forward, comm);
    mamba_evaluator_free(&evaluator);
    return result;
}
