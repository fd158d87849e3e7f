/*
 * The MPI back end of train/comm.h, for the CPU trainer's ranks (mpirun -np W ./train_ssd ...).
 * Built only into train_ssd, and only with USE_MPI (the Makefile sets it when mpicc exists);
 * without it comm_mpi_init reports that this binary cannot join a multi-rank run.
 * Buffers are host floats; MPI's sums over ranks give every rank the same bits.
 *
 * MPI itself does not notice a rank that hangs (a stopped process): the ranks also meet over TCP
 * (train/launch.h; on one node 127.0.0.1 and a port from the job's id) and keep the links as a
 * watchdog, so that a rank silent for -to seconds is named and the others exit.
 */
#include "train/comm_mpi.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef USE_MPI
#include <mpi.h>

static void mpi_check(int status, const char *what) {
    if (status == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(status, msg, &len);
    fprintf(stderr, "error: MPI %s failed: %s\n", what, msg);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void mpi_sum_doubles(Comm *comm, double *x, int n) {
    mpi_check(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), "Allreduce");
}

static void mpi_broadcast(Comm *comm, void *bytes, size_t n) {
    mpi_check(MPI_Bcast(bytes, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD), "Bcast");
}

static void mpi_barrier(Comm *comm) { mpi_check(MPI_Barrier(MPI_COMM_WORLD), "Barrier"); }

/* MPI counts are int: long buffers go in pieces of at most 2^30 elements */
#define MPI_PIECE ((size_t)1 << 30)

static void mpi_all_reduce(Comm *comm, float *buf, size_t n, void *stream) {
    for (size_t off = 0; off < n; off += MPI_PIECE) {
        size_t count = n - off < MPI_PIECE ? n - off : MPI_PIECE;
        mpi_check(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "Allreduce");
    }
}

static void check_shard(size_t shard) {
    if (shard > (size_t)0x7fffffff) {
        fprintf(stderr, "error: MPI shard of %zu elements exceeds MPI's int count\n", shard);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

static void mpi_reduce_scatter(Comm *comm, float *buf, size_t shard, void *stream) {
    check_shard(shard);
    float *mine = buf + (size_t)comm->rank * shard;
    mpi_check(MPI_Reduce_scatter_block(MPI_IN_PLACE, buf, (int)shard, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
              "Reduce_scatter_block");
    /* MPI leaves the result at the start of buf; the shard belongs at this rank's offset */
    if (mine != buf) memmove(mine, buf, shard * sizeof(float));
}

static void mpi_all_gather(Comm *comm, float *buf, size_t shard, void *stream) {
    check_shard(shard);
    mpi_check(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)shard, MPI_FLOAT, MPI_COMM_WORLD),
              "Allgather");
}

/* MPI's collectives here are blocking: a group needs no launch of its own */
static void mpi_group(Comm *comm) {}

static void mpi_free(Comm *comm) {
    /* every rank reaches the end before any stops answering the watchdog */
    mpi_barrier(comm);
    launch_watchdog_stop((LaunchWatchdog *)comm->impl);
    MPI_Finalize();
}

static const CommOps mpi_ops = {mpi_sum_doubles, mpi_broadcast, mpi_barrier, mpi_all_reduce, mpi_reduce_scatter,
                                mpi_all_gather, mpi_group, mpi_group, mpi_free};

/* The watchdog's links, when the launcher gave a master address to meet at. */
static LaunchWatchdog *start_watchdog(const LaunchInfo *info, double rank_timeout) {
    if (info->master_addr[0] == '\0' || info->master_port == 0) {
        if (info->rank == 0)
            fprintf(stderr, "warning: no MASTER_ADDR/MASTER_PORT: a hung rank will not be detected\n");
        return NULL;
    }
    char err[512];
    uint64_t token = 0;
    LaunchLinks links;
    LaunchWatchdog *watchdog = NULL;
    if (rendezvous_tcp(info, &token, sizeof(token), 10 * rank_timeout, &links, err, sizeof(err)) != 0 ||
        launch_watchdog_start_tcp(&watchdog, &links, rank_timeout, launch_failure_exit, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: rank %d: %s\n", info->rank, err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return watchdog;
}

int comm_mpi_init(Comm *comm, int *argc, char ***argv, const LaunchInfo *info, double rank_timeout) {
    memset(comm, 0, sizeof(*comm));
    mpi_check(MPI_Init(argc, argv), "Init");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &comm->rank), "Comm_rank");
    mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &comm->world), "Comm_size");
    comm->backend = "mpi";
    comm->ops = &mpi_ops;
    comm->impl = start_watchdog(info, rank_timeout);
    return 0;
}

#else

int comm_mpi_init(Comm *comm, int *argc, char ***argv, const LaunchInfo *info, double rank_timeout) {
    fprintf(stderr, "error: this train_ssd was built without MPI, so it cannot run as one of several ranks; "
                    "install Open MPI (mpicc) and rebuild (make clean && make)\n");
    return 1;
}

#endif
