/*
 * Collectives between the ranks of a data-parallel run, behind one small interface with three back
 * ends: single (one process, every call a no-op), MPI (train/comm_mpi.c: the CPU trainer's ranks,
 * host buffers) and NCCL (train/comm_nccl.cuh: one process per GPU, device buffers on a stream).
 * The training loop (train/train_loop.c) calls only this; it does not know which back end runs.
 *
 * Host values (losses, token counts, evaluation sums) go through sum_doubles and broadcast; the
 * gradient and parameter buffers of the compute go through all_reduce, reduce_scatter and
 * all_gather, in place, with `stream` the compute's stream (NULL on the CPU). Sums are over ranks;
 * every rank gets the same bits.
 *
 * Sharding (ZeRO-1, and the optimizer-state files of checkpoints): a buffer of n elements is padded
 * to world x shard elements, shard = ceil(n / world); rank r owns [r x shard, (r+1) x shard).
 */
#ifndef SSD_TRAIN_COMM_H
#define SSD_TRAIN_COMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Comm Comm;
typedef struct {
    /* host values: x[0..n) is replaced by its sum over ranks */
    void (*sum_doubles)(Comm *comm, double *x, int n);
    /* host bytes: rank 0's reach every rank */
    void (*broadcast)(Comm *comm, void *bytes, size_t n);
    void (*barrier)(Comm *comm);
    /* compute buffers, in place: buf[0..n) summed over ranks */
    void (*all_reduce)(Comm *comm, float *buf, size_t n, void *stream);
    /* buf holds world x shard elements; afterwards rank r's shard [r x shard, +shard) holds the sums */
    void (*reduce_scatter)(Comm *comm, float *buf, size_t shard, void *stream);
    /* buf holds world x shard elements; rank r's shard is copied to every rank */
    void (*all_gather)(Comm *comm, float *buf, size_t shard, void *stream);
    /* the buffer collectives called between group_start and group_end are launched together at
     * group_end (one NCCL launch); work that must follow them is enqueued after group_end */
    void (*group_start)(Comm *comm);
    void (*group_end)(Comm *comm);
    void (*free)(Comm *comm);
} CommOps;

struct Comm {
    int rank, world, local_rank;
    const char *backend;  /* "single", "mpi", "nccl" */
    const CommOps *ops;
    void *impl;
};

/* One process: rank 0 of a world of 1. */
void comm_single_init(Comm *comm);
/* Elements per shard of an n-element buffer over world ranks: ceil(n / world). */
size_t comm_shard_size(size_t n, int world);

#ifdef __cplusplus
}
#endif
#endif
