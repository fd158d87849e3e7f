/*
 * train_ssd: the CPU reference trainer for Mamba-2 (scalar A) and SSD-Mamba (diagonal A) language
 * models. Readable first; OpenMP for speed. Shares every host-side piece (config, CLI, data,
 * checkpoints, schedule, logging) and the training loop (train/train_loop.h) with the CUDA trainer
 * train_ssd.cu; this file is the CPU compute behind the loop's TrainCompute.
 *
 * Several ranks run over MPI (mpirun -np W ./train_ssd ...; built with mpicc), so every multi-rank
 * behaviour of the loop is tested on CPUs: the gradients are summed over ranks with MPI_Allreduce, or
 * with -z 1 (ZeRO-1) reduce-scattered so that each rank updates its shard of the parameters and AdamW
 * moments, after which the parameters are all-gathered.
 *
 * With -cs 1 row b of micro-batch m is one stream (data/dataloader.h): carry[m*B + b] holds its conv and SSD
 * states, read and replaced by each step's forward (mamba_forward_carry), the gradient stopping at the window.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/args.h"
#include "train/comm_mpi.h"
#include "train/cpu_evaluator.h"
#include "train/launch.h"
#include "train/stop.h"
#include "train/train_loop.h"
#include "common/utils.h"

typedef char real_is_float[sizeof(real) == sizeof(float) ? 1 : -1]; /* the collectives move floats */

typedef struct {
    Mamba model;
    Comm *comm;
    int zero;
    size_t shard;       /* ZeRO-1: parameters per rank, ceil(n / world) */
    float *padded;      /* ZeRO-1: world x shard floats, the buffer the collectives work in */
    size_t lo, hi;      /* the parameters this rank updates */
    int B, T;           /* of the training micro-batches */
    double micro_loss;  /* the last one's mean over its counted targets (the backward does not keep it) */
    MambaInferenceState *carry; /* -cs 1: grad_accum * B streams' states, NULL without */
    int carry_streams;
    int micro;          /* the step's micro-batches trained so far */
    MambaEvaluator evaluator;
} CPUCompute;

static void cpu_zero_grad(void *self) {
    CPUCompute *c = (CPUCompute *)self;
    mamba_zero_grad(&c->model);
    c->micro = 0;
}

static void cpu_train_micro(void *self, const int *inputs, const int *targets, float loss_scale, int last) {
    CPUCompute *c = (CPUCompute *)self;
    if (c->carry) mamba_forward_carry(&c->model, inputs, targets, c->B, c->T, c->carry + (size_t)c->micro * c->B);
    else mamba_forward(&c->model, inputs, targets, c->B, c->T);
    c->micro++;
    /* the model's loss is the mean over the counted targets: scaled by their count, the sum's weight is loss_scale */
    c->micro_loss = c->model.mean_loss;
    mamba_backward(&c->model, (real)(loss_scale * c->model.counted_targets));
}

static double cpu_micro_loss(void *self) { return ((CPUCompute *)self)->micro_loss; }

static float cpu_grad_norm(void *self) {
    CPUCompute *c = (CPUCompute *)self;
    Mamba *model = &c->model;
    size_t n = model->layout.total;
    double norm_squared = 0.0;
    if (c->zero) {
        memcpy(c->padded, model->grads, n * sizeof(float));
        c->comm->ops->reduce_scatter(c->comm, c->padded, c->shard, NULL);
        memcpy(model->grads + c->lo, c->padded + c->lo, (c->hi - c->lo) * sizeof(float));
        for (size_t i = c->lo; i < c->hi; i++) norm_squared += (double)model->grads[i] * model->grads[i];
        c->comm->ops->sum_doubles(c->comm, &norm_squared, 1);
    } else {
        c->comm->ops->all_reduce(c->comm, model->grads, n, NULL);
        double norm = mamba_grad_norm(model);
        norm_squared = norm * norm;
    }
    return (float)sqrt(norm_squared);
}

static void cpu_update(void *self, const AdamWSettings *h, float norm) {
    CPUCompute *c = (CPUCompute *)self;
    Mamba *model = &c->model;
    size_t n = model->layout.total;
    float scale = h->grad_clip > 0 && norm > h->grad_clip ? h->grad_clip / norm : 1.0f;
    mamba_update_range(model, c->lo, c->hi, h->lr, h->beta1, h->beta2, h->eps, h->weight_decay, scale, h->step);
    if (c->zero) {
        memcpy(c->padded + c->lo, model->params + c->lo, (c->hi - c->lo) * sizeof(float));
        c->comm->ops->all_gather(c->comm, c->padded, c->shard, NULL);
        memcpy(model->params, c->padded, n * sizeof(float));
    }
}

static void cpu_get_params(void *self, float *out) { mamba_get_params(&((CPUCompute *)self)->model, out); }

static void cpu_get_moments(void *self, size_t offset, size_t count, float *m, float *v) {
    Mamba *model = &((CPUCompute *)self)->model;
    memcpy(m, model->adam_m + offset, count * sizeof(float));
    memcpy(v, model->adam_v + offset, count * sizeof(float));
}

static void cpu_set_moments(void *self, size_t offset, size_t count, const float *m, const float *v) {
    Mamba *model = &((CPUCompute *)self)->model;
    memcpy(model->adam_m + offset, m, count * sizeof(float));
    memcpy(model->adam_v + offset, v, count * sizeof(float));
}

/* the floats of one stream's carried states: conv, then SSD, of every layer */
static size_t carry_conv_floats(const ModelConfig *m) { return (size_t)m->n_layer * (m->d_conv - 1) * m->conv_dim; }
static size_t carry_ssm_floats(const ModelConfig *m) {
    return (size_t)m->n_layer * m->nheads * m->headdim * m->d_state;
}

static void cpu_restart_carry(void *self) {
    CPUCompute *c = (CPUCompute *)self;
    for (int i = 0; i < c->carry_streams; i++) inference_state_reset(&c->carry[i], &c->model.config);
}

static void cpu_get_carry(void *self, float *out) {
    CPUCompute *c = (CPUCompute *)self;
    size_t nc = carry_conv_floats(&c->model.config), ns = carry_ssm_floats(&c->model.config);
    for (int i = 0; i < c->carry_streams; i++, out += nc + ns) {
        memcpy(out, c->carry[i].conv_state, nc * sizeof(float));
        memcpy(out + nc, c->carry[i].ssm_state, ns * sizeof(float));
    }
}

static void cpu_set_carry(void *self, const float *in) {
    CPUCompute *c = (CPUCompute *)self;
    size_t nc = carry_conv_floats(&c->model.config), ns = carry_ssm_floats(&c->model.config);
    for (int i = 0; i < c->carry_streams; i++, in += nc + ns) {
        memcpy(c->carry[i].conv_state, in, nc * sizeof(float));
        memcpy(c->carry[i].ssm_state, in + nc, ns * sizeof(float));
    }
}

/* MPI when mpirun started this process, else one process on its own */
static void comm_init(Comm *comm, int *argc, char ***argv, double rank_timeout) {
    LaunchInfo info;
    launch_info_from_env_or_exit(&info);
    if (!strcmp(info.launcher, "openmpi")) {
        if (comm_mpi_init(comm, argc, argv, &info, rank_timeout) != 0) exit(1);
    } else if (info.world_size > 1) {
        fprintf(stderr, "error: train_ssd runs several ranks under mpirun only (this is a %s launch of %d); "
                        "for GPUs use train_ssdcu\n", info.launcher, info.world_size);
        exit(1);
    } else {
        comm_single_init(comm);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* step lines appear as they happen, also in a piped log */
    stop_signals_install();          /* SIGINT, SIGTERM, SIGUSR1: stop after a step (train/stop.h) */
    TrainArgs args;
    args_defaults(&args);
    args_parse(&args, argc, argv, "train_ssd");
    if (args.num_threads > 0) omp_set_num_threads(args.num_threads);
    Comm comm;
    comm_init(&comm, &argc, &argv, args.rank_timeout);

    TrainRun run;
    train_run_init(&run, &args, &comm);
    printf("CPU threads: %d\n", omp_get_max_threads());
    CPUCompute c;
    memset(&c, 0, sizeof(c));
    c.comm = &comm;
    c.zero = args.zero;
    char what[128];
    snprintf(what, sizeof(what), "the CPU model (B %d, T %d%s)", args.B, args.T, args.zero ? ", ZeRO-1" : "");
    memory_check_or_exit(mamba_memory_bytes(&run.config, args.B, args.T, args.gen_T > 0), what);
    mamba_build(&c.model, &run.config, run.params);
    if (run.doc_eot >= 0) mamba_set_document_end(&c.model, run.doc_eot);
    size_t n = c.model.layout.total;
    mamba_alloc_moments(&c.model);
    c.lo = run.moments_offset;
    c.hi = run.moments_offset + run.moments_count;
    if (c.zero) {
        c.shard = comm_shard_size(n, comm.world);
        c.padded = (float *)callocCheck(c.shard * comm.world, sizeof(float));
    }
    if (args.carry_state && run.train) {
        c.carry_streams = run.grad_accum * args.B;
        c.carry = (MambaInferenceState *)mallocCheck(sizeof(MambaInferenceState) * c.carry_streams);
        for (int i = 0; i < c.carry_streams; i++) inference_state_init(&c.carry[i], &run.config);
    }
    c.B = args.B;
    c.T = args.T;

    TrainCompute compute = {&c, c.lo, c.hi - c.lo, cpu_zero_grad, cpu_train_micro, cpu_micro_loss, cpu_grad_norm,
                            cpu_update, mamba_evaluator_init(&c.evaluator, &c.model), cpu_get_params,
                            cpu_get_moments, cpu_set_moments, {NULL, NULL, NULL} /* samples from a copy */,
                            c.carry ? (carry_conv_floats(&run.config) + carry_ssm_floats(&run.config)) * c.carry_streams : 0,
                            cpu_restart_carry, cpu_get_carry, cpu_set_carry};
    train_loop_restore(&run, &compute);
    train_run_release_params(&run);
    int status = train_loop_run(&run, &compute);

    train_run_free(&run);
    mamba_evaluator_free(&c.evaluator);
    for (int i = 0; i < c.carry_streams; i++) inference_state_free(&c.carry[i]);
    free(c.carry);
    free(c.padded);
    mamba_free(&c.model);
    comm.ops->free(&comm);
    return status;
}
