/*
 * Learning-rate schedule: linear warmup from lr/warmup to lr over `warmup` steps, then cosine
 * decay from lr to lr*final_frac at the last step.
 */
#ifndef SSD_TRAIN_SCHEDULE_H
#define SSD_TRAIN_SCHEDULE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float learning_rate;
    int warmup_steps;
    int max_steps;
    float final_frac;
} LRSchedule;

float schedule_lr(const LRSchedule *schedule, int step);

#ifdef __cplusplus
}
#endif
#endif
