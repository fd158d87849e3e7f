/*
 * main.log in the output dir, llm.c's format: "s:<step> trl:<train loss>" and
 * "s:<step> tel:<val loss>" lines, and "s:<step> skip ..." for a step skipped as not finite. Appends
 * when resuming.
 */
#ifndef SSD_TRAIN_LOGGER_H
#define SSD_TRAIN_LOGGER_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    FILE *file;  /* NULL when there is no output dir or this is not rank 0 */
} Logger;

void logger_init(Logger *logger, const char *output_dir, int rank, int resuming);
void logger_log_train(Logger *logger, int step, float loss, float lr, float grad_norm);
void logger_log_val(Logger *logger, int step, float loss);
/* A step skipped for a non-finite loss or gradient norm: "s:<step> skip loss:<loss> norm:<norm>". */
void logger_log_skip(Logger *logger, int step, float loss, float grad_norm);
void logger_free(Logger *logger);
/* Before a run resumes at `step`: drops the lines of main.log in output_dir for steps >= step (the
 * resumed run writes them again), so that every step has its lines once. Exits on an I/O error. */
void logger_drop_from_step(const char *output_dir, int step);
/* Creates the directory and its parents if they do not exist; exits on failure. */
void make_dir_if_missing(const char *dir);

#ifdef __cplusplus
}
#endif
#endif
