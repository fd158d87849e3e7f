/*
 * The CPU model (model/cpu_model.h) behind the evaluation of train/eval_split.h.
 */
#ifndef SSD_TRAIN_CPU_EVALUATOR_H
#define SSD_TRAIN_CPU_EVALUATOR_H

#include "model/cpu_model.h"
#include "train/eval_split.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The model as the forward of an evaluation; the carried state is allocated at its
 * first use. */
typedef struct {
    Mamba *model;
    MambaInferenceState carry;
} MambaEvaluator;
EvalForward mamba_evaluator_init(MambaEvaluator *evaluator, Mamba *model);
void mamba_evaluator_free(MambaEvaluator *evaluator);
/* Cross-entropy summed over every target of the split (eval_split_evaluate). carry 0: independent
 * windows, batched B at a time; carry 1: one stream, the state carried from window to window.
 * comm: the ranks sharing the work (NULL: this process alone). */
EvalResult mamba_evaluate_split(Mamba *model, EvalSplit *split, int B, int carry, Comm *comm);

#ifdef __cplusplus
}
#endif
#endif
