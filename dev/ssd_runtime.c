/*
 * Time of the three forms of one SSD layer (model/cpu_ssd.c) against the sequence length T, on the
 * CPU, forward and forward + backward, for scalar and diagonal A (arXiv 2510.04944, experiment 3).
 * Expected: recurrent and chunked O(T), quadratic O(T^2). The quadratic form here forms each mask
 * entry when it needs it (O(T) memory), so what stops it is time: a form is no longer run at the next
 * T once its last forward + backward took more than cap / 4 s (the next would take ~4x as long).
 *
 *   ssd_runtime_f32 [--cap SECONDS] [--out FILE.csv]
 * One layer of H = 1 head, P = 16, N = 16, chunk Q = 64, T = 128 ... 65536 (powers of two). Each time
 * is the process's CPU time, the least of repeats that fill 0.3 s of it (at least one): CPU time, not
 * wall time, so that other work on the machine does not count. Run it with OMP_NUM_THREADS=1: with
 * one head the forms are sequential anyway, and CPU time then equals the time of the computation.
 */
#include "tests/ssd_inputs.h"
#include "common/fileio.h"
#include "common/utils.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef SSD_DOUBLE
#define PRECISION "fp64"
#else
#define PRECISION "fp32"
#endif

enum { HEADS = 1, HEADDIM = 16, GROUPS = 1, STATE = 16, CHUNK = 64, T_MIN = 128, T_MAX = 65536 };
enum { RECURRENT, QUADRATIC, CHUNKED, FORMS };
static const char *const FORM_NAMES[FORMS] = {"recurrent", "quadratic", "chunked"};

static void run_form(int form, const SSDInputs *in, real *y, SSDGrads *g, int backward) {
    const SSDShape *s = &in->s;
    if (form == RECURRENT) {
        ssd_forward_recurrent(s, in->x, in->delta, in->A, in->B, in->C, in->D, NULL, y, NULL);
        if (backward) backward_recurrent(in, g);
    } else if (form == QUADRATIC) {
        ssd_forward_quadratic(s, in->x, in->delta, in->A, in->B, in->C, in->D, y);
        if (backward) backward_quadratic(in, g);
    } else {
        ssd_forward_chunked(s, CHUNK, in->x, in->delta, in->A, in->B, in->C, in->D, NULL, y, NULL);
        if (backward) backward_chunked(in, CHUNK, g);
    }
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Least CPU time of the repeats that fill min_total CPU seconds (at least one), in seconds. */
static double time_form(int form, const SSDInputs *in, real *y, SSDGrads *g, int backward, double min_total) {
    double best = INFINITY, start = cpu_seconds();
    do {
        double t0 = cpu_seconds();
        run_form(form, in, y, g, backward);
        double dt = cpu_seconds() - t0;
        if (dt < best) best = dt;
    } while (cpu_seconds() - start < min_total);
    return best;
}

int main(int argc, char **argv) {
    double cap = 20.0;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cap") == 0 && i + 1 < argc) {
            char *end;
            cap = strtod(argv[++i], &end);
            if (*end || !(cap > 0)) {
                fprintf(stderr, "ssd_runtime: --cap must be a positive number of seconds, got '%s'\n", argv[i]);
                return EXIT_FAILURE;
            }
        } else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
        else {
            fprintf(stderr, "ssd_runtime: unknown or incomplete argument '%s'\nusage: ssd_runtime [--cap SECONDS] [--out FILE.csv]\n",
                    argv[i]);
            return EXIT_FAILURE;
        }
    }
    AtomicFile file;
    FILE *csv = NULL;
    if (out) {
        atomic_file_open(&file, out);
        csv = file.fp;
        fprintf(csv, "device,precision,a,form,T,H,P,N,Q,forward_ms,forward_backward_ms\n");
    }
    for (int diagonal = 0; diagonal <= 1; diagonal++) {
        const char *a_kind = diagonal ? "diagonal" : "scalar";
        int stopped[FORMS] = {0};
        for (int T = T_MIN; T <= T_MAX; T *= 2) {
            SSDInputs in = make_inputs(T, HEADS, HEADDIM, GROUPS, STATE, diagonal, T + diagonal);
            real *y = (real *)callocCheck((size_t)T * in.s.y_stride, sizeof(real));
            SSDGrads g = grads_alloc(&in);
            for (int form = 0; form < FORMS; form++) {
                if (stopped[form]) continue;
                double fwd = time_form(form, &in, y, &g, 0, 0.3);
                double both = time_form(form, &in, y, &g, 1, 0.3);
                printf("%-8s %-9s T=%6d  forward %10.3f ms  forward+backward %10.3f ms\n", a_kind, FORM_NAMES[form], T,
                       1e3 * fwd, 1e3 * both);
                fflush(stdout);
                if (csv)
                    fprintf(csv, "cpu,%s,%s,%s,%d,%d,%d,%d,%d,%.6f,%.6f\n", PRECISION, a_kind, FORM_NAMES[form], T,
                            HEADS, HEADDIM, STATE, CHUNK, 1e3 * fwd, 1e3 * both);
                if (both > cap / 4) stopped[form] = 1;
            }
            grads_free(&g);
            free(y);
            free_inputs(&in);
        }
    }
    if (csv) atomic_file_commit(&file);
    return 0;
}
