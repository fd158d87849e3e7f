/*
 * The NCCL back end of train/comm.h: one process per GPU, on one node or many.
 *
 * comm_nccl_init: rank 0 makes the NCCL unique id and hands it to the other ranks through the
 * rendezvous of train/launch.h (TCP at MASTER_ADDR:MASTER_PORT, or a file in a shared directory,
 * -rd), then every rank joins the communicator on its local rank's GPU. The rendezvous' links stay
 * open as a watchdog: a rank that dies or stops sending heartbeats for -to seconds is named by the
 * others, which exit non-zero.
 *
 * Buffer collectives are enqueued on the caller's stream and return at once. Host-value collectives
 * (sums of losses, broadcasts, barriers) run on the communicator's own stream through a small device
 * buffer and wait for it. Every wait on the host goes through comm_nccl_wait, which polls the stream
 * together with NCCL's asynchronous error state and gives up after -tc seconds: on an NCCL error or a
 * timeout the communicator is aborted and the process exits with a message, so no rank waits forever.
 */
#ifndef SSD_TRAIN_COMM_NCCL_CUH
#define SSD_TRAIN_COMM_NCCL_CUH

#include <nccl.h>
#include <time.h>
#include <unistd.h>

#include "kernels/common.cuh"
#include "train/comm.h"
#include "train/launch.h"
#include "common/utils.h"

typedef struct {
    ncclComm_t nccl;
    cudaStream_t stream;    /* host-value collectives */
    double *d_values;       /* device staging of host values */
    int values_capacity;
    double timeout_s;       /* -tc */
    LaunchWatchdog *watchdog;
} NcclComm;

static void nccl_fail(NcclComm *impl, int rank, const char *what, const char *detail) {
    fprintf(stderr, "error: rank %d: %s: %s; aborting the NCCL communicator\n", rank, what, detail);
    ncclCommAbort(impl->nccl);
    exit(1);
}

#define ncclCheck(comm, call)                                                                        \
    do {                                                                                             \
        ncclResult_t status_ = (call);                                                               \
        if (status_ != ncclSuccess && status_ != ncclInProgress)                                     \
            nccl_fail((NcclComm *)(comm)->impl, (comm)->rank, #call, ncclGetErrorString(status_));   \
    } while (0)

/* Waits for everything enqueued on stream, watching NCCL's error state and the -tc deadline. */
static void comm_nccl_wait(Comm *comm, cudaStream_t stream) {
    NcclComm *impl = (NcclComm *)comm->impl;
    double deadline = wall_seconds() + impl->timeout_s;
    for (;;) {
        cudaError_t status = cudaStreamQuery(stream);
        if (status == cudaSuccess) return;
        if (status != cudaErrorNotReady) cudaCheck(status);
        ncclResult_t async;
        ncclCheck(comm, ncclCommGetAsyncError(impl->nccl, &async));
        if (async != ncclSuccess && async != ncclInProgress)
            nccl_fail(impl, comm->rank, "NCCL reported an error", ncclGetErrorString(async));
        if (wall_seconds() > deadline) {
            char detail[160];
            snprintf(detail, sizeof(detail), "no progress for %.0f s (-tc); another rank is stuck or gone",
                     impl->timeout_s);
            nccl_fail(impl, comm->rank, "a collective timed out", detail);
        }
        usleep(50);
    }
}

static void nccl_reserve_values(NcclComm *impl, int n) {
    if (n <= impl->values_capacity) return;
    if (impl->d_values) cudaCheck(cudaFree(impl->d_values));
    impl->values_capacity = n > 64 ? n : 64;
    cudaCheck(cudaMalloc(&impl->d_values, impl->values_capacity * sizeof(double)));
}

static void nccl_sum_doubles(Comm *comm, double *x, int n) {
    NcclComm *impl = (NcclComm *)comm->impl;
    if (n <= 0) return;
    nccl_reserve_values(impl, n);
    cudaCheck(cudaMemcpyAsync(impl->d_values, x, n * sizeof(double), cudaMemcpyHostToDevice, impl->stream));
    ncclCheck(comm, ncclAllReduce(impl->d_values, impl->d_values, n, ncclDouble, ncclSum, impl->nccl, impl->stream));
    cudaCheck(cudaMemcpyAsync(x, impl->d_values, n * sizeof(double), cudaMemcpyDeviceToHost, impl->stream));
    comm_nccl_wait(comm, impl->stream);
}

static void nccl_broadcast(Comm *comm, void *bytes, size_t n) {
    NcclComm *impl = (NcclComm *)comm->impl;
    int doubles = (int)((n + sizeof(double) - 1) / sizeof(double));
    nccl_reserve_values(impl, doubles);
    cudaCheck(cudaMemcpyAsync(impl->d_values, bytes, n, cudaMemcpyHostToDevice, impl->stream));
    ncclCheck(comm, ncclBroadcast(impl->d_values, impl->d_values, n, ncclChar, 0, impl->nccl, impl->stream));
    cudaCheck(cudaMemcpyAsync(bytes, impl->d_values, n, cudaMemcpyDeviceToHost, impl->stream));
    comm_nccl_wait(comm, impl->stream);
}

static void nccl_barrier(Comm *comm) {
    double one = 1.0;
    nccl_sum_doubles(comm, &one, 1);
}

static void nccl_all_reduce(Comm *comm, float *buf, size_t n, void *stream) {
    ncclCheck(comm, ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, ((NcclComm *)comm->impl)->nccl, (cudaStream_t)stream));
}

static void nccl_reduce_scatter(Comm *comm, float *buf, size_t shard, void *stream) {
    ncclCheck(comm, ncclReduceScatter(buf, buf + (size_t)comm->rank * shard, shard, ncclFloat, ncclSum,
                                      ((NcclComm *)comm->impl)->nccl, (cudaStream_t)stream));
}

static void nccl_all_gather(Comm *comm, float *buf, size_t shard, void *stream) {
    ncclCheck(comm, ncclAllGather(buf + (size_t)comm->rank * shard, buf, shard, ncclFloat,
                                  ((NcclComm *)comm->impl)->nccl, (cudaStream_t)stream));
}

static void nccl_group_start(Comm *comm) { ncclCheck(comm, ncclGroupStart()); }
static void nccl_group_end(Comm *comm) { ncclCheck(comm, ncclGroupEnd()); }

static void nccl_free(Comm *comm) {
    NcclComm *impl = (NcclComm *)comm->impl;
    /* every rank reaches the end before any stops answering the watchdog */
    nccl_barrier(comm);
    launch_watchdog_stop(impl->watchdog);
    ncclCheck(comm, ncclCommDestroy(impl->nccl));
    cudaCheck(cudaStreamDestroy(impl->stream));
    if (impl->d_values) cudaCheck(cudaFree(impl->d_values));
    free(impl);
}

static const CommOps nccl_ops = {nccl_sum_doubles, nccl_broadcast, nccl_barrier, nccl_all_reduce,
                                 nccl_reduce_scatter, nccl_all_gather, nccl_group_start, nccl_group_end,
                                 nccl_free};

/* The file rendezvous' key: what the launcher gives every rank of one job alike. */
static const char *rendezvous_key(void) {
    const char *names[] = {"SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "MASTER_PORT"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(names[i]);
        if (v && v[0]) return v;
    }
    return "run";
}

/* Joins the ranks described by info on GPU info->local_rank; rendezvous_dir NULL: TCP. */
static void comm_nccl_init(Comm *comm, const LaunchInfo *info, const char *rendezvous_dir, double rank_timeout,
                           double collective_timeout) {
    memset(comm, 0, sizeof(*comm));
    NcclComm *impl = (NcclComm *)calloc(1, sizeof(NcclComm));
    if (!impl) {
        fprintf(stderr, "error: out of memory\n");
        exit(1);
    }
    comm->impl = impl;
    comm->rank = info->rank;
    comm->world = info->world_size;
    comm->local_rank = info->local_rank;
    comm->backend = "nccl";
    impl->timeout_s = collective_timeout;
    ncclUniqueId id;
    if (info->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
        fprintf(stderr, "error: ncclGetUniqueId failed\n");
        exit(1);
    }
    char err[512];
    /* the peers may start minutes apart (a busy node, a slow file system): the rendezvous waits longer
     * than a rank's heartbeat may lapse */
    double meet_timeout = 10 * rank_timeout;
    int status;
    if (rendezvous_dir) {
        const char *key = rendezvous_key();
        status = rendezvous_file(rendezvous_dir, key, info, &id, sizeof(id), meet_timeout, err, sizeof(err));
        if (status == 0)
            status = launch_watchdog_start_file(&impl->watchdog, rendezvous_dir, key, info, rank_timeout,
                                                launch_failure_exit, err, sizeof(err));
    } else {
        LaunchLinks links;
        status = rendezvous_tcp(info, &id, sizeof(id), meet_timeout, &links, err, sizeof(err));
        if (status == 0)
            status = launch_watchdog_start_tcp(&impl->watchdog, &links, rank_timeout, launch_failure_exit, err,
                                               sizeof(err));
    }
    if (status != 0) {
        fprintf(stderr, "error: rank %d: rendezvous failed: %s\n", info->rank, err);
        exit(1);
    }
    cudaCheck(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
    ncclResult_t init = ncclCommInitRank(&impl->nccl, info->world_size, id, info->rank);
    if (init != ncclSuccess) {
        fprintf(stderr, "error: rank %d: ncclCommInitRank: %s\n", info->rank, ncclGetErrorString(init));
        exit(1);
    }
    comm->ops = &nccl_ops;
}

#endif
