#include "train/schedule.h"

#include <math.h>

float schedule_lr(const LRSchedule *s, int step) {
    if (step < s->warmup_steps) return s->learning_rate * (float)(step + 1) / (float)s->warmup_steps;
    int decay_steps = s->max_steps - s->warmup_steps - 1;
    if (decay_steps <= 0) return s->learning_rate;
    double progress = (double)(step - s->warmup_steps) / (double)decay_steps;
    if (progress > 1.0) progress = 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    double final_lr = (double)s->learning_rate * s->final_frac;
    return (float)(final_lr + ((double)s->learning_rate - final_lr) * cosine);
}
