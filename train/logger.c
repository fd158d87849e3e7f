#include "train/logger.h"
#include "common/utils.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void make_dir_if_missing(const char *dir) {
    char path[4096];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST) break;
        *p = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "error: cannot create output dir '%s': %s\n", dir, strerror(errno));
        exit(1);
    }
}

void logger_init(Logger *logger, const char *output_dir, int rank, int resuming) {
    logger->file = NULL;
    if (output_dir == NULL || rank != 0) return;
    make_dir_if_missing(output_dir);
    char path[4096];
    snprintf(path, sizeof(path), "%s/main.log", output_dir);
    char err[8192];
    logger->file = fopen_regular_write(path, resuming, "main.log", err, sizeof(err));
    if (logger->file == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

void logger_log_train(Logger *logger, int step, float loss, float lr, float grad_norm) {
    if (logger->file == NULL) return;
    fprintf(logger->file, "s:%d trl:%.4f lr:%.6g norm:%.4f\n", step, loss, lr, grad_norm);
    fflush(logger->file);
}

void logger_log_val(Logger *logger, int step, float loss) {
    if (logger->file == NULL) return;
    fprintf(logger->file, "s:%d tel:%.4f\n", step, loss);
    fflush(logger->file);
}

void logger_log_skip(Logger *logger, int step, float loss, float grad_norm) {
    if (logger->file == NULL) return;
    fprintf(logger->file, "s:%d skip loss:%.4f norm:%.4f\n", step, loss, grad_norm);
    fflush(logger->file);
}

void logger_free(Logger *logger) {
    if (logger->file) fcloseCheck(logger->file);
    logger->file = NULL;
}

void logger_drop_from_step(const char *output_dir, int step) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/main.log", output_dir);
    struct stat st;
    if (stat(path, &st) != 0) return; /* no main.log yet */
    char err[8192];
    FILE *in = fopen_regular(path, "main.log", err, sizeof(err));
    if (in == NULL) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp); /* a stale one, whatever it is, cannot block the open below */
    FILE *out = fopenCheck(tmp, "wx");
    char *line = NULL;
    size_t capacity = 0;
    while (getline(&line, &capacity, in) != -1) {
        int line_step;
        if (!(sscanf(line, "s:%d ", &line_step) == 1 && line_step >= step)) fputs(line, out);
    }
    free(line);
    fclose(in);
    if (fflush(out) != 0 || ferror(out)) {
        fprintf(stderr, "error: cannot write '%s': %s\n", tmp, strerror(errno));
        exit(1);
    }
    fcloseCheck(out);
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "error: cannot replace '%s': %s\n", path, strerror(errno));
        exit(1);
    }
}
