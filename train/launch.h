/*
 * Multi-process launch for data parallelism, one process per GPU, without linking an MPI library.
 *
 * launch_info_*: each process learns its rank, world size and local rank (which GPU of its node)
 *   from its launcher's environment. Precedence: torchrun (RANK and WORLD_SIZE set) > Slurm srun
 *   (SLURM_STEP_NUM_TASKS and SLURM_PROCID set) > Open MPI mpirun (OMPI_COMM_WORLD_SIZE and
 *   OMPI_COMM_WORLD_RANK set) > none (rank 0 of a world of 1). See launch.c for each launcher's
 *   variables and how the master address/port is found when MASTER_ADDR/MASTER_PORT are unset.
 * rendezvous_*: rank 0's small blob (the 128-byte NCCL unique id) reaches every rank, either over TCP
 *   (rank 0 listens on master_port) or through files in a directory all ranks share.
 * launch_watchdog_*: a background thread in every process that names a rank which died (its socket
 *   closed) or hung (no heartbeat for timeout_s), over the rendezvous sockets or heartbeat files.
 *
 * Errors: functions return 0, or -1 with a message in err that names the variable, file or address.
 */
#ifndef SSD_TRAIN_LAUNCH_H
#define SSD_TRAIN_LAUNCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int rank, world_size;
    int local_rank, local_world_size; /* local_world_size: 0 when the launcher does not say */
    char master_addr[256];            /* "" when unknown */
    int master_port;                  /* 0 when unknown */
    char launcher[16];                /* "none", "torchrun", "slurm", "openmpi" */
} LaunchInfo;

/* A getenv-like lookup (tests pass a table); NULL or "" means unset. */
typedef const char *(*LaunchGetenv)(const char *name, void *ctx);
int launch_info_parse(LaunchInfo *info, LaunchGetenv get, void *ctx, char *err, size_t errlen);
/* launch_info_parse over the process environment */
int launch_info_from_env(LaunchInfo *info, char *err, size_t errlen);
/* launch_info_from_env that prints the message and exits on error (the trainers) */
void launch_info_from_env_or_exit(LaunchInfo *info);

/* The rendezvous's open sockets, kept for the TCP watchdog: rank 0 holds fds[r] for every peer r,
 * a peer holds fds[0]; -1 elsewhere. fds is NULL for a world of 1. */
typedef struct {
    int rank, world_size;
    int *fds;
} LaunchLinks;
void launch_links_close(LaunchLinks *links);

/* Rank 0's `bytes` bytes of blob reach every rank's blob (all ranks pass the same `bytes`); a
 * barrier too: rank 0 returns once every rank has the blob. Rank 0 listens on info->master_port
 * (all interfaces); the others connect to master_addr:master_port, retrying until the deadline
 * (rank 0 may start later). timeout_s bounds the whole call; on timeout rank 0's message lists the
 * ranks that never came and a peer's names the address it could not reach. keep: NULL closes the
 * sockets, else they are handed over for launch_watchdog_start_tcp. A world of 1 returns at once. */
int rendezvous_tcp(const LaunchInfo *info, void *blob, size_t bytes, double timeout_s, LaunchLinks *keep,
                   char *err, size_t errlen);
/* The same through files in dir (which must exist and be shared by all ranks), named
 * "ssd_rdzv.<key>.*". key ([A-Za-z0-9._-], e.g. the job id) separates runs that use dir at the
 * same time; files left by an earlier run under the same key are never mistaken for this run's
 * (every file carries random nonces of this run, see launch.c). Rank 0 removes the files at the end. */
int rendezvous_file(const char *dir, const char *key, const LaunchInfo *info, void *blob, size_t bytes,
                    double timeout_s, char *err, size_t errlen);

/* Called from the watchdog thread with the rank that failed and why. It may return (the watchdog
 * then stops watching that rank) or end the process. */
typedef void (*LaunchFailureFn)(int failed_rank, const char *reason);
/* The trainer's on_failure: prints "error: rank N failed: <reason>" to stderr and _exit(1)s. */
void launch_failure_exit(int failed_rank, const char *reason);

/* Heartbeats every min(1 s, timeout_s / 4). Over TCP, rank 0 watches every peer and a peer watches
 * rank 0: a closed socket (the process died: its kernel closes it) or no heartbeat for timeout_s
 * (hung, e.g. SIGSTOP) calls on_failure; rank 0 also forwards a failure to the other peers, so
 * they name the rank that failed. Through files, every rank rewrites dir/ssd_rdzv.<key>.alive.<rank>
 * and watches every other rank's file: one that does not change for timeout_s is a failure
 * (that covers death and hangs alike). */
typedef struct LaunchWatchdog LaunchWatchdog;
/* Takes over links' sockets (links->fds becomes NULL). *wd is NULL for a world of 1. */
int launch_watchdog_start_tcp(LaunchWatchdog **wd, LaunchLinks *links, double timeout_s, LaunchFailureFn on_failure,
                              char *err, size_t errlen);
int launch_watchdog_start_file(LaunchWatchdog **wd, const char *dir, const char *key, const LaunchInfo *info,
                               double timeout_s, LaunchFailureFn on_failure, char *err, size_t errlen);
/* Clean shutdown: says goodbye (a byte on each socket, or "done" in the heartbeat file) so the other
 * ranks do not report this one as failed, then joins the thread and frees wd. NULL is a no-op. */
void launch_watchdog_stop(LaunchWatchdog *wd);

#ifdef __cplusplus
}
#endif
#endif
