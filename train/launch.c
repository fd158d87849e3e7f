/*
 * Multi-process launch (see launch.h): rank/world from the launcher's environment, rank 0's blob to
 * every rank over TCP or shared files, and a watchdog thread that names a dead or hung rank.
 *
 * Launchers' variables:
 *   torchrun: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
 *   Slurm srun: SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID; the local size is this node's
 *     entry (SLURM_NODEID) of SLURM_STEP_TASKS_PER_NODE ("2(x3),1"). Detected by
 *     SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: the batch script of an sbatch job (and salloc's shell)
 *     also has SLURM_PROCID=0, SLURM_LOCALID=0 and SLURM_NTASKS=<the allocation's task count>
 *     (Slurm's env_array_for_batch_job), so those would turn a plain process in the script into
 *     rank 0 of a world that never comes; the SLURM_STEP_* variables are only set for the tasks of
 *     a step srun launched (env_array_for_step), where SLURM_STEP_NUM_TASKS is the step's size
 *     (SLURM_NTASKS may still hold the allocation's under srun --preserve-env).
 *     Master: MASTER_ADDR, else the first host of SLURM_STEP_NODELIST (else SLURM_JOB_NODELIST),
 *     which holds task 0 under the block and cyclic distributions; MASTER_PORT, else
 *     20000 + SLURM_JOB_ID % 20000 (two steps of one job running at once need MASTER_PORT).
 *   Open MPI mpirun: OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK,
 *     OMPI_COMM_WORLD_LOCAL_SIZE. Master: MASTER_ADDR, else 127.0.0.1 when every rank is on one
 *     node (LOCAL_SIZE == SIZE), else unknown; MASTER_PORT, else 20000..39999 hashed from the job's
 *     id, which every rank of the job shares: PMIX_NAMESPACE (Open MPI 4 and 5), else
 *     OMPI_MCA_ess_base_jobid (Open MPI <= 4), else unknown.
 *
 * Wire format (TCP, big-endian u32s): a peer sends {magic, version, rank, world}; rank 0 answers
 * {magic, version, bytes >> 32, bytes & 0xffffffff} and the blob; the peer acknowledges with one
 * byte. The watchdog then sends single bytes: 'h' heartbeat, 'g' goodbye, and (rank 0 to peers)
 * 'f' + a u32 rank: that rank failed.
 */
#include "train/launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WIRE_MAGIC 0x53534431u /* "SSD1" */
#define WIRE_VERSION 1u
#define FILE_MAGIC "SSDRDZV1"
#define PORT_BASE 20000
#define PORT_RANGE 20000

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(err, errlen, fmt, args);
        va_end(args);
    }
    return -1;
}

/* CLOCK_MONOTONIC always exists on Linux, so clock_gettime cannot fail here. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* milliseconds from now to deadline for poll(), rounded up, never negative */
static int poll_ms(double deadline) {
    double ms = (deadline - now_s()) * 1000.0;
    if (ms <= 0) return 0;
    if (ms > INT_MAX - 1) return INT_MAX - 1;
    return (int)ms + 1;
}

/* nanosleep returning early on a signal is fine: every caller loops on a deadline */
static void sleep_s(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int random_nonzero_u64(uint64_t *out) {
    do {
        if (getrandom(out, sizeof(*out), 0) != (ssize_t)sizeof(*out)) return -1;
    } while (*out == 0);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* environment */

typedef struct {
    LaunchGetenv get;
    void *ctx;
} Env;

static const char *env_get(const Env *env, const char *name) {
    const char *v = env->get(name, env->ctx);
    return (v != NULL && v[0] != '\0') ? v : NULL;
}

/* a whole decimal integer in [lo, hi] */
static int parse_int(const char *name, const char *s, long lo, long hi, int *out, char *err, size_t errlen) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    int digits = (s[0] >= '0' && s[0] <= '9') || ((s[0] == '-' || s[0] == '+') && s[1] >= '0' && s[1] <= '9');
    if (!digits || *end != '\0' || errno != 0 || v < lo || v > hi)
        return fail(err, errlen, "%s=\"%s\" is not an integer in [%ld, %ld]", name, s, lo, hi);
    *out = (int)v;
    return 0;
}

/* an integer variable that must be set */
static int env_int(const Env *env, const char *name, long lo, long hi, int *out, char *err, size_t errlen) {
    const char *v = env_get(env, name);
    if (v == NULL) return fail(err, errlen, "%s is not set", name);
    return parse_int(name, v, lo, hi, out, err, errlen);
}

/* The first host of a Slurm hostlist: "gpu[003-005,9],login1" -> "gpu003", "a,b" -> "a",
 * "r[1-2]-n[07-08]" -> "r1-n07". The first number of each bracket keeps its zero padding. */
static int hostlist_first(const char *list, char *out, size_t outlen) {
    size_t n = 0;
    const char *p = list;
    while (*p != '\0' && *p != ',') {
        const char *from = p, *to = p + 1;
        if (*p == '[') {
            from = ++p;
            while (*p != '\0' && *p != '-' && *p != ',' && *p != ']') p++;
            to = p;
            while (*p != '\0' && *p != ']') p++;
            if (*p != ']' || to == from) return -1;
            p++;
        } else if (*p == ']') {
            return -1;
        } else {
            p++;
        }
        if (n + (size_t)(to - from) >= outlen) return -1;
        memcpy(out + n, from, (size_t)(to - from));
        n += (size_t)(to - from);
    }
    if (n == 0) return -1;
    out[n] = '\0';
    return 0;
}

/* Entry `node` of Slurm's compressed per-node counts: "2(x3),1" is 2,2,2,1. -1 if malformed or short. */
static int per_node_count(const char *s, int node) {
    const char *p = s;
    while (*p != '\0') {
        char *end;
        long count = strtol(p, &end, 10), reps = 1;
        if (end == p || count < 0 || count > INT_MAX) return -1;
        p = end;
        if (*p == '(') {
            if (p[1] != 'x') return -1;
            reps = strtol(p + 2, &end, 10);
            if (end == p + 2 || *end != ')' || reps < 1) return -1;
            p = end + 1;
        }
        if (node < reps) return (int)count;
        node -= (int)(reps < INT_MAX ? reps : INT_MAX);
        if (*p == ',') p++;
        else if (*p != '\0') return -1;
    }
    return -1;
}

/* FNV-1a: a port every rank derives alike from a string they share */
static int port_from_string(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
    return PORT_BASE + (int)(h % PORT_RANGE);
}

static int parse_slurm(LaunchInfo *info, const Env *env, char *err, size_t errlen) {
    if (env_int(env, "SLURM_PROCID", 0, INT_MAX, &info->rank, err, errlen) ||
        env_int(env, "SLURM_STEP_NUM_TASKS", 1, INT_MAX, &info->world_size, err, errlen) ||
        env_int(env, "SLURM_LOCALID", 0, INT_MAX, &info->local_rank, err, errlen))
        return -1;
    info->local_world_size = 0;
    const char *per_node = env_get(env, "SLURM_STEP_TASKS_PER_NODE");
    const char *node_id = env_get(env, "SLURM_NODEID");
    if (per_node != NULL && node_id != NULL) {
        int node;
        if (parse_int("SLURM_NODEID", node_id, 0, INT_MAX, &node, err, errlen)) return -1;
        info->local_world_size = per_node_count(per_node, node);
        if (info->local_world_size < 1)
            return fail(err, errlen, "SLURM_STEP_TASKS_PER_NODE=\"%s\" has no valid entry for SLURM_NODEID=%d",
                        per_node, node);
    }
    if (info->master_addr[0] == '\0') {
        const char *name = "SLURM_STEP_NODELIST";
        const char *list = env_get(env, name);
        if (list == NULL) list = env_get(env, name = "SLURM_JOB_NODELIST");
        if (list != NULL && hostlist_first(list, info->master_addr, sizeof(info->master_addr)))
            return fail(err, errlen, "%s=\"%s\" is not a Slurm hostlist", name, list);
    }
    const char *job_id = env_get(env, "SLURM_JOB_ID");
    if (info->master_port == 0 && job_id != NULL) {
        int id;
        if (parse_int("SLURM_JOB_ID", job_id, 0, INT_MAX, &id, err, errlen)) return -1;
        info->master_port = PORT_BASE + id % PORT_RANGE;
    }
    return 0;
}

static int parse_openmpi(LaunchInfo *info, const Env *env, char *err, size_t errlen) {
    if (env_int(env, "OMPI_COMM_WORLD_RANK", 0, INT_MAX, &info->rank, err, errlen) ||
        env_int(env, "OMPI_COMM_WORLD_SIZE", 1, INT_MAX, &info->world_size, err, errlen) ||
        env_int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0, INT_MAX, &info->local_rank, err, errlen) ||
        env_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, INT_MAX, &info->local_world_size, err, errlen))
        return -1;
    if (info->master_addr[0] == '\0' && info->local_world_size == info->world_size)
        snprintf(info->master_addr, sizeof(info->master_addr), "127.0.0.1");
    const char *job = env_get(env, "PMIX_NAMESPACE");
    if (job == NULL) job = env_get(env, "OMPI_MCA_ess_base_jobid");
    if (info->master_port == 0 && job != NULL) info->master_port = port_from_string(job);
    return 0;
}

int launch_info_parse(LaunchInfo *info, LaunchGetenv get, void *ctx, char *err, size_t errlen) {
    Env env = {get, ctx};
    memset(info, 0, sizeof(*info));
    info->world_size = 1;
    info->local_world_size = 1;
    snprintf(info->launcher, sizeof(info->launcher), "none");
    const char *addr = env_get(&env, "MASTER_ADDR");
    if (addr != NULL && snprintf(info->master_addr, sizeof(info->master_addr), "%s", addr) >=
                            (int)sizeof(info->master_addr))
        return fail(err, errlen, "MASTER_ADDR=\"%.40s...\" is longer than %zu characters", addr,
                    sizeof(info->master_addr) - 1);
    const char *port = env_get(&env, "MASTER_PORT");
    if (port != NULL && parse_int("MASTER_PORT", port, 1, 65535, &info->master_port, err, errlen)) return -1;

    /* the names that validation errors quote */
    const char *rank_var = "RANK", *world_var = "WORLD_SIZE", *local_var = "LOCAL_RANK", *local_world_var = "LOCAL_WORLD_SIZE";
    if (env_get(&env, "RANK") != NULL && env_get(&env, "WORLD_SIZE") != NULL) {
        snprintf(info->launcher, sizeof(info->launcher), "torchrun");
        if (env_int(&env, "RANK", 0, INT_MAX, &info->rank, err, errlen) ||
            env_int(&env, "WORLD_SIZE", 1, INT_MAX, &info->world_size, err, errlen) ||
            env_int(&env, "LOCAL_RANK", 0, INT_MAX, &info->local_rank, err, errlen))
            return -1;
        const char *lws = env_get(&env, "LOCAL_WORLD_SIZE");
        info->local_world_size = 0;
        if (lws != NULL && parse_int("LOCAL_WORLD_SIZE", lws, 1, INT_MAX, &info->local_world_size, err, errlen))
            return -1;
    } else if (env_get(&env, "SLURM_STEP_NUM_TASKS") != NULL && env_get(&env, "SLURM_PROCID") != NULL) {
        snprintf(info->launcher, sizeof(info->launcher), "slurm");
        rank_var = "SLURM_PROCID", world_var = "SLURM_STEP_NUM_TASKS", local_var = "SLURM_LOCALID";
        local_world_var = "SLURM_STEP_TASKS_PER_NODE";
        if (parse_slurm(info, &env, err, errlen)) return -1;
    } else if (env_get(&env, "OMPI_COMM_WORLD_SIZE") != NULL && env_get(&env, "OMPI_COMM_WORLD_RANK") != NULL) {
        snprintf(info->launcher, sizeof(info->launcher), "openmpi");
        rank_var = "OMPI_COMM_WORLD_RANK", world_var = "OMPI_COMM_WORLD_SIZE";
        local_var = "OMPI_COMM_WORLD_LOCAL_RANK", local_world_var = "OMPI_COMM_WORLD_LOCAL_SIZE";
        if (parse_openmpi(info, &env, err, errlen)) return -1;
    }
    if (info->rank >= info->world_size)
        return fail(err, errlen, "%s=%d is not below %s=%d", rank_var, info->rank, world_var, info->world_size);
    if (info->local_world_size > info->world_size)
        return fail(err, errlen, "%s=%d is above %s=%d", local_world_var, info->local_world_size, world_var,
                    info->world_size);
    if (info->local_world_size > 0 && info->local_rank >= info->local_world_size)
        return fail(err, errlen, "%s=%d is not below %s=%d", local_var, info->local_rank, local_world_var,
                    info->local_world_size);
    return 0;
}

static const char *process_getenv(const char *name, void *ctx) {
    (void)ctx;
    return getenv(name);
}

int launch_info_from_env(LaunchInfo *info, char *err, size_t errlen) {
    return launch_info_parse(info, process_getenv, NULL, err, errlen);
}

void launch_info_from_env_or_exit(LaunchInfo *info) {
    char err[512];
    if (launch_info_from_env(info, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: %s\n", err);
        exit(1);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* sockets: non-blocking, every wait bounded by a deadline */

enum { IO_OK = 0, IO_ERR = -1, IO_EOF = -2, IO_TIMEOUT = -3 };

static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -1;
    return 0;
}

/* 1 ready, 0 deadline passed, -1 error */
static int wait_fd(int fd, short events, double deadline) {
    for (;;) {
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, poll_ms(deadline));
        if (r > 0) return 1;
        if (r < 0 && errno != EINTR) return -1;
        if (r == 0 && now_s() >= deadline) return 0;
    }
}

static int send_all(int fd, const void *buf, size_t n, double deadline) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            p += w, n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r <= 0) return r == 0 ? IO_TIMEOUT : IO_ERR;
        } else if (!(w < 0 && errno == EINTR)) {
            return IO_ERR;
        }
    }
    return IO_OK;
}

static int recv_all(int fd, void *buf, size_t n, double deadline) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r > 0) {
            p += r, n -= (size_t)r;
        } else if (r == 0) {
            return IO_EOF;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_fd(fd, POLLIN, deadline);
            if (w <= 0) return w == 0 ? IO_TIMEOUT : IO_ERR;
        } else if (errno != EINTR) {
            return IO_ERR;
        }
    }
    return IO_OK;
}

static const char *io_what(int rc) {
    if (rc == IO_EOF) return "the connection was closed";
    if (rc == IO_TIMEOUT) return "timed out";
    return strerror(errno);
}

static void put_u32s(unsigned char *out, const uint32_t *v, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t be = htonl(v[i]);
        memcpy(out + 4 * i, &be, 4);
    }
}

static void get_u32s(const unsigned char *in, uint32_t *v, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t be;
        memcpy(&be, in + 4 * i, 4);
        v[i] = ntohl(be);
    }
}

/* "1, 4, 7" (at most 16, then "...") of the ranks 1..world-1 with fds[r] < 0 */
static void list_missing(const int *fds, int world, char *out, size_t outlen) {
    size_t n = 0;
    int shown = 0;
    out[0] = '\0';
    for (int r = 1; r < world && n < outlen; r++) {
        if (fds[r] >= 0) continue;
        if (shown++ == 16) {
            snprintf(out + n, outlen - n, ", ...");
            break;
        }
        n += (size_t)snprintf(out + n, outlen - n, "%s%d", shown > 1 ? ", " : "", r);
    }
}

/* A connection accepted by rank 0 whose hello has not fully arrived. */
typedef struct {
    int fd;
    double expires;
    size_t got;
    unsigned char hello[16];
} Pending;

/* Rank 0: accept world-1 peers (fds[r]), send them the blob, wait for their acknowledgments. */
static int tcp_master(const LaunchInfo *info, const void *blob, size_t bytes, double timeout_s, int *fds, char *err,
                      size_t errlen) {
    int world = info->world_size, port = info->master_port, rc = -1, arrived = 0, strays = 0, npending = 0;
    double deadline = now_s() + timeout_s;
    int max_pending = world + 16;
    Pending *pending = calloc((size_t)max_pending, sizeof(Pending));
    struct pollfd *pfds = calloc((size_t)max_pending + 1, sizeof(struct pollfd));
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (pending == NULL || pfds == NULL) {
        fail(err, errlen, "rendezvous: out of memory for %d ranks", world);
        goto done;
    }
    if (lfd < 0) {
        fail(err, errlen, "rendezvous: socket: %s", strerror(errno));
        goto done;
    }
    int one = 1;
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, world) < 0 || set_nonblocking(lfd) < 0) {
        fail(err, errlen, "rendezvous: rank 0 cannot listen on port %d (master_port): %s", port, strerror(errno));
        goto done;
    }
    while (arrived < world - 1) {
        double now = now_s();
        if (now >= deadline) {
            char missing[256];
            list_missing(fds, world, missing, sizeof(missing));
            fail(err, errlen,
                 "rendezvous: rank 0 timed out after %.1f s on port %d: rank%s %s of %d never connected%s",
                 timeout_s, port, world - 1 - arrived > 1 ? "s" : "", missing, world,
                 strays ? " (stray connections were rejected)" : "");
            goto done;
        }
        /* a connection that does not say hello in time is dropped (a port scanner, a hung peer) */
        for (int i = 0; i < npending; i++) {
            if (pending[i].expires > now) continue;
            close(pending[i].fd);
            pending[i--] = pending[--npending];
        }
        pfds[0] = (struct pollfd){lfd, POLLIN, 0};
        for (int i = 0; i < npending; i++) pfds[1 + i] = (struct pollfd){pending[i].fd, POLLIN, 0};
        int ready = poll(pfds, (nfds_t)npending + 1, poll_ms(deadline < now + 1.0 ? deadline : now + 1.0));
        if (ready < 0 && errno != EINTR) {
            fail(err, errlen, "rendezvous: poll: %s", strerror(errno));
            goto done;
        }
        if (ready <= 0) continue;
        /* hellos first: the accept below reorders pending */
        for (int i = npending - 1; i >= 0; i--) {
            if (pfds[1 + i].revents == 0) continue;
            Pending *c = &pending[i];
            ssize_t r = recv(c->fd, c->hello + c->got, sizeof(c->hello) - c->got, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
            if (r > 0) c->got += (size_t)r;
            if (r > 0 && c->got < sizeof(c->hello)) continue;
            uint32_t h[4] = {0, 0, 0, 0};
            if (r > 0) get_u32s(c->hello, h, 4);
            int fd = c->fd;
            pending[i] = pending[--npending];
            if (r <= 0 || h[0] != WIRE_MAGIC || h[1] != WIRE_VERSION) {
                strays++;
                close(fd);
                continue;
            }
            int peer = (int)h[2], peer_world = (int)h[3];
            if (h[3] != (uint32_t)world) {
                fail(err, errlen, "rendezvous: rank %d says the world has %d ranks, rank 0 has %d", peer, peer_world,
                     world);
            } else if (h[2] < 1 || h[2] >= (uint32_t)world) {
                fail(err, errlen, "rendezvous: a peer claims rank %u, outside 1..%d", h[2], world - 1);
            } else if (fds[peer] >= 0) {
                fail(err, errlen, "rendezvous: rank %d connected twice (a process left from an earlier run?)", peer);
            } else {
                fds[peer] = fd;
                arrived++;
                continue;
            }
            close(fd);
            goto done;
        }
        if (pfds[0].revents != 0) {
            for (;;) {
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
                if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                if (fd < 0) {
                    fail(err, errlen, "rendezvous: accept on port %d: %s", port, strerror(errno));
                    goto done;
                }
                if (npending == max_pending || set_nonblocking(fd) < 0) {
                    strays++;
                    close(fd);
                    continue;
                }
                pending[npending++] = (Pending){fd, now_s() + 10.0, 0, {0}};
            }
        }
    }
    unsigned char header[16];
    uint32_t h[4] = {WIRE_MAGIC, WIRE_VERSION, (uint32_t)((uint64_t)bytes >> 32), (uint32_t)bytes};
    put_u32s(header, h, 4);
    for (int r = 1; r < world; r++) {
        int io = send_all(fds[r], header, sizeof(header), deadline);
        if (io == IO_OK) io = send_all(fds[r], blob, bytes, deadline);
        if (io != IO_OK) {
            fail(err, errlen, "rendezvous: sending the blob to rank %d: %s", r, io_what(io));
            goto done;
        }
    }
    for (int r = 1; r < world; r++) {
        unsigned char ack;
        int io = recv_all(fds[r], &ack, 1, deadline);
        if (io != IO_OK || ack != 'a') {
            fail(err, errlen, "rendezvous: rank %d did not acknowledge the blob: %s", r,
                 io != IO_OK ? io_what(io) : "bad reply");
            goto done;
        }
    }
    rc = 0;
done:
    for (int i = 0; i < npending; i++) close(pending[i].fd);
    if (lfd >= 0) close(lfd);
    free(pending);
    free(pfds);
    return rc;
}

/* A peer: connect to rank 0 (retrying until the deadline), say hello, receive the blob into *fd0. */
static int tcp_peer(const LaunchInfo *info, void *blob, size_t bytes, double timeout_s, int *fd0, char *err,
                    size_t errlen) {
    double deadline = now_s() + timeout_s;
    const char *host = info->master_addr;
    int port = info->master_port;
    char port_str[16], last[160] = "no attempt";
    snprintf(port_str, sizeof(port_str), "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    for (;;) { /* getaddrinfo has no timeout of its own; only temporary failures are retried */
        int g = getaddrinfo(host, port_str, &hints, &res);
        if (g == 0) break;
        if (g != EAI_AGAIN || now_s() >= deadline)
            return fail(err, errlen, "rendezvous: rank %d cannot resolve master address %s: %s", info->rank, host,
                        gai_strerror(g));
        sleep_s(0.2);
    }
    int fd = -1;
    while (fd < 0) {
        if (now_s() >= deadline) {
            freeaddrinfo(res);
            return fail(err, errlen, "rendezvous: rank %d could not reach rank 0 at %s:%d within %.1f s (%s)",
                        info->rank, host, port, timeout_s, last);
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || set_nonblocking(fd) < 0) {
            snprintf(last, sizeof(last), "socket: %s", strerror(errno));
        } else if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
            break;
        } else if (errno != EINPROGRESS) {
            snprintf(last, sizeof(last), "%s", strerror(errno));
        } else {
            double attempt = now_s() + 2.0; /* a SYN that is dropped is retried on a fresh socket */
            int w = wait_fd(fd, POLLOUT, attempt < deadline ? attempt : deadline);
            int so_err = 0;
            socklen_t len = sizeof(so_err);
            if (w > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &len) != 0) so_err = errno;
            if (w > 0 && so_err == 0) break;
            snprintf(last, sizeof(last), "%s", w == 0 ? "connect timed out" : strerror(w < 0 ? errno : so_err));
        }
        if (fd >= 0) close(fd);
        fd = -1;
        sleep_s(0.1);
    }
    freeaddrinfo(res);
    unsigned char hello[16], header[16];
    uint32_t h[4] = {WIRE_MAGIC, WIRE_VERSION, (uint32_t)info->rank, (uint32_t)info->world_size};
    put_u32s(hello, h, 4);
    int io = send_all(fd, hello, sizeof(hello), deadline);
    if (io == IO_OK) io = recv_all(fd, header, sizeof(header), deadline);
    if (io != IO_OK) {
        close(fd);
        if (io == IO_EOF)
            return fail(err, errlen,
                        "rendezvous: rank 0 at %s:%d closed the connection before sending the blob "
                        "(it gave up: see rank 0's error)",
                        host, port);
        return fail(err, errlen, "rendezvous: rank %d waiting for the blob from %s:%d: %s", info->rank, host, port,
                    io_what(io));
    }
    get_u32s(header, h, 4);
    uint64_t sent = ((uint64_t)h[2] << 32) | h[3];
    if (h[0] != WIRE_MAGIC || h[1] != WIRE_VERSION || sent != (uint64_t)bytes) {
        close(fd);
        return fail(err, errlen, "rendezvous: unexpected reply from %s:%d (not this program's rank 0, or %llu bytes "
                                 "instead of %zu)", host, port, (unsigned long long)sent, bytes);
    }
    unsigned char ack = 'a';
    io = recv_all(fd, blob, bytes, deadline);
    if (io == IO_OK) io = send_all(fd, &ack, 1, deadline);
    if (io != IO_OK) {
        close(fd);
        return fail(err, errlen, "rendezvous: rank %d receiving the blob from %s:%d: %s", info->rank, host, port,
                    io_what(io));
    }
    *fd0 = fd;
    return 0;
}

void launch_links_close(LaunchLinks *links) {
    if (links->fds != NULL)
        for (int r = 0; r < links->world_size; r++)
            if (links->fds[r] >= 0) close(links->fds[r]);
    free(links->fds);
    links->fds = NULL;
}

int rendezvous_tcp(const LaunchInfo *info, void *blob, size_t bytes, double timeout_s, LaunchLinks *keep,
                   char *err, size_t errlen) {
    LaunchLinks links = {info->rank, info->world_size, NULL};
    if (keep != NULL) *keep = links;
    if (info->world_size == 1) return 0;
    if (info->master_port <= 0)
        return fail(err, errlen, "rendezvous: the master port is unknown (set MASTER_PORT, or use the file rendezvous)");
    if (info->rank != 0 && info->master_addr[0] == '\0')
        return fail(err, errlen,
                    "rendezvous: the master address is unknown (set MASTER_ADDR to rank 0's host, or use the file "
                    "rendezvous)");
    links.fds = malloc((size_t)info->world_size * sizeof(int));
    if (links.fds == NULL) return fail(err, errlen, "rendezvous: out of memory");
    for (int r = 0; r < info->world_size; r++) links.fds[r] = -1;
    int rc = info->rank == 0 ? tcp_master(info, blob, bytes, timeout_s, links.fds, err, errlen)
                             : tcp_peer(info, blob, bytes, timeout_s, &links.fds[0], err, errlen);
    if (rc != 0 || keep == NULL)
        launch_links_close(&links);
    else
        *keep = links;
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* files in a shared directory
 *
 * Stale files (same dir and key, left by a run that crashed mid-rendezvous) are never mistaken for
 * this run's because every process makes a fresh random nonce: peer r writes hello.<r> = {its nonce
 * Nr}; rank 0 (nonce N0) writes blob = {N0, world, bytes, every peer's Nr, data}, rewritten whenever
 * a hello changes; a peer takes the blob only when it holds its own Nr, then writes ack.<r> =
 * {N0, Nr}; rank 0 is done when every ack holds N0 and the matching Nr, and removes the files. So a
 * peer cannot take an old blob (it lacks the fresh Nr) and rank 0 cannot take an old ack (it lacks
 * N0). Every file is written to "<name>.tmp" and renamed, so no reader sees half a file. */

static int check_dir_key(const char *dir, const char *key, char *err, size_t errlen) {
    struct stat st;
    if (stat(dir, &st) != 0) return fail(err, errlen, "rendezvous dir %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return fail(err, errlen, "rendezvous dir %s is not a directory", dir);
    size_t n = strlen(key);
    if (n == 0 || n > 128 || strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != n)
        return fail(err, errlen, "rendezvous key \"%s\" must be 1 to 128 characters of [A-Za-z0-9._-]", key);
    return 0;
}

/* dir/ssd_rdzv.<key>.<what>[.<rank>] */
static int file_path(char *out, size_t outlen, const char *dir, const char *key, const char *what, int rank,
                     char *err, size_t errlen) {
    int n = rank < 0 ? snprintf(out, outlen, "%s/ssd_rdzv.%s.%s", dir, key, what)
                     : snprintf(out, outlen, "%s/ssd_rdzv.%s.%s.%d", dir, key, what, rank);
    if (n < 0 || (size_t)n >= outlen) return fail(err, errlen, "rendezvous dir %s: path too long", dir);
    return 0;
}

/* write a then b to path.tmp and rename it over path; -1 with errno on failure */
static int write_atomic(const char *path, const void *a, size_t na, const void *b, size_t nb) {
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    const void *parts[2] = {a, b};
    size_t sizes[2] = {na, nb};
    for (int i = 0; i < 2; i++) {
        const char *p = parts[i];
        size_t n = sizes[i];
        while (n > 0) {
            ssize_t w = write(fd, p, n);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
                int e = errno;
                close(fd);
                unlink(tmp);
                errno = e;
                return -1;
            }
            p += w, n -= (size_t)w;
        }
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* Reads up to cap bytes: the count read, 0 when the file does not exist, -1 with errno on error. */
static long read_some(const char *path, void *buf, size_t cap) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return errno == ENOENT ? 0 : -1;
    size_t got = 0;
    while (got < cap) {
        ssize_t r = read(fd, (char *)buf + got, cap - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    close(fd);
    return (long)got;
}

/* A nonce record (hello, ack): magic, then two u64s. */
typedef struct {
    char magic[8];
    uint64_t a, b;
} NonceRecord;

/* Blob file header; then world u64 nonces (slot r: peer r's Nr; slot 0 unused), then the data. */
typedef struct {
    char magic[8];
    uint64_t n0;
    uint64_t world;
    uint64_t bytes;
} BlobHeader;

static int read_record(const char *path, NonceRecord *rec) {
    long n = read_some(path, rec, sizeof(*rec));
    return n == (long)sizeof(*rec) && memcmp(rec->magic, FILE_MAGIC, 8) == 0;
}

/* 10 ms, growing to 200 ms: quick on a local disk, gentle on a shared filesystem's server */
static double backoff(double wait) { return wait * 1.5 < 0.2 ? wait * 1.5 : 0.2; }

static int file_master(const char *dir, const char *key, int world, const void *blob, size_t bytes,
                       double timeout_s, char *err, size_t errlen) {
    double deadline = now_s() + timeout_s, wait = 0.01;
    size_t size = sizeof(BlobHeader) + (size_t)world * 8;
    BlobHeader *file = calloc(1, size);
    char *acked = calloc((size_t)world, 1);
    char blob_path[4096], path[4096];
    int rc = -1, written = 0;
    if (file == NULL || acked == NULL) {
        fail(err, errlen, "rendezvous: out of memory for %d ranks", world);
        goto done;
    }
    uint64_t *slots = (uint64_t *)(file + 1);
    memcpy(file->magic, FILE_MAGIC, 8);
    file->world = (uint64_t)world;
    file->bytes = (uint64_t)bytes;
    if (random_nonzero_u64(&file->n0)) {
        fail(err, errlen, "rendezvous: getrandom: %s", strerror(errno));
        goto done;
    }
    if (file_path(blob_path, sizeof(blob_path), dir, key, "blob", -1, err, errlen)) goto done;
    for (;;) {
        int changed = !written, all = 1;
        for (int r = 1; r < world; r++) {
            NonceRecord rec;
            if (file_path(path, sizeof(path), dir, key, "hello", r, err, errlen)) goto done;
            if (read_record(path, &rec) && rec.a != slots[r]) {
                slots[r] = rec.a;
                acked[r] = 0;
                changed = 1;
            }
        }
        if (changed && write_atomic(blob_path, file, size, blob, bytes) != 0) {
            fail(err, errlen, "rendezvous: cannot write %s: %s", blob_path, strerror(errno));
            goto done;
        }
        written = 1;
        for (int r = 1; r < world; r++) {
            NonceRecord rec;
            if (file_path(path, sizeof(path), dir, key, "ack", r, err, errlen)) goto done;
            if (!acked[r] && slots[r] != 0 && read_record(path, &rec) && rec.a == file->n0 && rec.b == slots[r])
                acked[r] = 1;
            all &= acked[r];
        }
        if (all) break;
        if (now_s() >= deadline) {
            char missing[256] = "", silent[256] = "";
            size_t nm = 0, ns = 0;
            for (int r = 1; r < world; r++) {
                if (acked[r]) continue;
                char *out = slots[r] ? silent : missing;
                size_t *n = slots[r] ? &ns : &nm;
                if (*n < sizeof(missing) - 16)
                    *n += (size_t)snprintf(out + *n, sizeof(missing) - *n, "%s%d", *n ? ", " : "", r);
            }
            fail(err, errlen, "rendezvous: rank 0 timed out after %.1f s in %s (key %s): %s%s%s%s%s", timeout_s, dir,
                 key, nm ? "never came: ranks " : "", missing, nm && ns ? "; " : "",
                 ns ? "said hello but never took the blob: ranks " : "", silent);
            goto done;
        }
        sleep_s(wait);
        wait = backoff(wait);
    }
    rc = 0;
done:
    /* everyone who will ever read them has: remove the blob, hellos and acks (a failed removal only
     * leaves a harmless stale file) */
    if (written) unlink(blob_path);
    for (int r = 1; r < world && written; r++) {
        if (file_path(path, sizeof(path), dir, key, "hello", r, NULL, 0) == 0) unlink(path);
        if (file_path(path, sizeof(path), dir, key, "ack", r, NULL, 0) == 0) unlink(path);
    }
    free(file);
    free(acked);
    return rc;
}

static int file_peer(const char *dir, const char *key, int rank, int world, void *blob, size_t bytes,
                     double timeout_s, char *err, size_t errlen) {
    double deadline = now_s() + timeout_s, wait = 0.01;
    size_t size = sizeof(BlobHeader) + (size_t)world * 8 + bytes;
    BlobHeader *file = malloc(size);
    char blob_path[4096], path[4096];
    const char *seen = "it does not exist";
    NonceRecord rec;
    int rc = -1;
    if (file == NULL) return fail(err, errlen, "rendezvous: out of memory");
    memcpy(rec.magic, FILE_MAGIC, 8);
    if (random_nonzero_u64(&rec.a)) {
        fail(err, errlen, "rendezvous: getrandom: %s", strerror(errno));
        goto done;
    }
    rec.b = 0;
    if (file_path(blob_path, sizeof(blob_path), dir, key, "blob", -1, err, errlen) ||
        file_path(path, sizeof(path), dir, key, "hello", rank, err, errlen))
        goto done;
    if (write_atomic(path, &rec, sizeof(rec), NULL, 0) != 0) {
        fail(err, errlen, "rendezvous: cannot write %s: %s", path, strerror(errno));
        goto done;
    }
    for (;;) {
        long n = read_some(blob_path, file, size);
        if (n < 0) {
            fail(err, errlen, "rendezvous: cannot read %s: %s", blob_path, strerror(errno));
            goto done;
        }
        if (n > 0) {
            const uint64_t *slots = (const uint64_t *)(file + 1);
            if (n < (long)sizeof(BlobHeader) || memcmp(file->magic, FILE_MAGIC, 8) != 0)
                seen = "it is not a rendezvous file";
            else if (file->world != (uint64_t)world || file->bytes != (uint64_t)bytes)
                seen = "it is for another world size or blob size (left from another run?)";
            else if (n != (long)size || slots[rank] != rec.a)
                seen = "it is not for this rank yet (or left from another run)";
            else
                break;
        }
        if (now_s() >= deadline) {
            fail(err, errlen, "rendezvous: rank %d timed out after %.1f s waiting for rank 0's %s: %s", rank,
                 timeout_s, blob_path, seen);
            goto done;
        }
        sleep_s(wait);
        wait = backoff(wait);
    }
    memcpy(blob, (const char *)(file + 1) + (size_t)world * 8, bytes);
    rec.b = rec.a;
    rec.a = file->n0;
    if (file_path(path, sizeof(path), dir, key, "ack", rank, err, errlen)) goto done;
    if (write_atomic(path, &rec, sizeof(rec), NULL, 0) != 0) {
        fail(err, errlen, "rendezvous: cannot write %s: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(file);
    return rc;
}

int rendezvous_file(const char *dir, const char *key, const LaunchInfo *info, void *blob, size_t bytes,
                    double timeout_s, char *err, size_t errlen) {
    if (check_dir_key(dir, key, err, errlen)) return -1;
    if (info->world_size == 1) return 0;
    return info->rank == 0 ? file_master(dir, key, info->world_size, blob, bytes, timeout_s, err, errlen)
                           : file_peer(dir, key, info->rank, info->world_size, blob, bytes, timeout_s, err, errlen);
}

/* ---------------------------------------------------------------------------------------------- */
/* watchdog */

struct LaunchWatchdog {
    pthread_t thread;
    int stop_pipe[2];
    int rank, world_size;
    double timeout_s, interval_s;
    LaunchFailureFn on_failure;
    /* per rank: still watched, and when it was last heard from (a byte, or its file changing) */
    char *watched;
    double *last_heard;
    /* TCP: the sockets (launch.h's LaunchLinks layout); a partial 'f' message per rank */
    int *fds;
    unsigned char (*partial)[5];
    int *partial_len;
    struct pollfd *pfds;
    int *pfd_rank;
    /* files: dir/ssd_rdzv.<key>.alive.<rank> holds "alive <nonce> <count>" or "done ..." */
    char dir[4096], key[130];
    char (*content)[64];
    uint64_t nonce, count;
};

void launch_failure_exit(int failed_rank, const char *reason) {
    fprintf(stderr, "error: rank %d failed: %s\n", failed_rank, reason);
    _exit(1);
}

static void watchdog_free(LaunchWatchdog *wd) {
    if (wd->fds != NULL)
        for (int r = 0; r < wd->world_size; r++)
            if (wd->fds[r] >= 0) close(wd->fds[r]);
    if (wd->stop_pipe[0] >= 0) close(wd->stop_pipe[0]);
    if (wd->stop_pipe[1] >= 0) close(wd->stop_pipe[1]);
    free(wd->watched);
    free(wd->last_heard);
    free(wd->fds);
    free(wd->partial);
    free(wd->partial_len);
    free(wd->pfds);
    free(wd->pfd_rank);
    free(wd->content);
    free(wd);
}

/* A rank failed: stop watching it, tell the other peers (rank 0), then the callback. */
static void report(LaunchWatchdog *wd, int rank, const char *reason) {
    wd->watched[rank] = 0;
    if (wd->fds != NULL && wd->fds[rank] >= 0) {
        close(wd->fds[rank]);
        wd->fds[rank] = -1;
    }
    if (wd->fds != NULL && wd->rank == 0) {
        unsigned char msg[5] = {'f'};
        uint32_t be = htonl((uint32_t)rank);
        memcpy(msg + 1, &be, 4);
        for (int r = 1; r < wd->world_size; r++) {
            if (wd->fds[r] < 0) continue;
            /* drain what the peer sent (closing with unread bytes would reset the connection and
             * could drop this message if the callback ends the process), minding a goodbye */
            unsigned char sink[256];
            ssize_t n;
            int bye = 0;
            while ((n = recv(wd->fds[r], sink, sizeof(sink), MSG_DONTWAIT)) > 0) {
                wd->last_heard[r] = now_s();
                bye |= memchr(sink, 'g', (size_t)n) != NULL;
            }
            if (bye) {
                wd->watched[r] = 0;
                close(wd->fds[r]);
                wd->fds[r] = -1;
                continue;
            }
            /* best effort: the peer may be gone too */
            if (send(wd->fds[r], msg, sizeof(msg), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {}
        }
    }
    wd->on_failure(rank, reason);
}

/* Reads what rank r sent: heartbeats, a goodbye, forwarded failures; a closed socket is a failure. */
static void tcp_read(LaunchWatchdog *wd, int r) {
    unsigned char buf[256];
    for (;;) {
        ssize_t n = recv(wd->fds[r], buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            report(wd, r, "its connection closed: the process exited or was killed");
            return;
        }
        wd->last_heard[r] = now_s();
        for (ssize_t i = 0; i < n; i++) {
            if (wd->partial_len[r] > 0) {
                wd->partial[r][wd->partial_len[r]++] = buf[i];
                if (wd->partial_len[r] < 5) continue;
                uint32_t be;
                memcpy(&be, wd->partial[r] + 1, 4);
                wd->partial_len[r] = 0;
                wd->on_failure((int)ntohl(be), "rank 0 reported that it failed");
            } else if (buf[i] == 'f') {
                wd->partial[r][0] = 'f';
                wd->partial_len[r] = 1;
            } else if (buf[i] == 'g') {
                wd->watched[r] = 0;
                close(wd->fds[r]);
                wd->fds[r] = -1;
                return;
            }
        }
    }
}

static void check_hung(LaunchWatchdog *wd, int r, double now, const char *path) {
    if (!wd->watched[r] || now - wd->last_heard[r] <= wd->timeout_s) return;
    char reason[4300];
    if (path == NULL)
        snprintf(reason, sizeof(reason), "no heartbeat for %.1f s: the process is hung or stopped", wd->timeout_s);
    else
        snprintf(reason, sizeof(reason), "its heartbeat file %s did not change for %.1f s: exited, hung or stopped",
                 path, wd->timeout_s);
    report(wd, r, reason);
}

static void *tcp_watch(void *arg) {
    LaunchWatchdog *wd = arg;
    double next_beat = 0;
    for (;;) {
        double now = now_s();
        if (now >= next_beat) {
            unsigned char beat = 'h';
            for (int r = 0; r < wd->world_size; r++)
                if (wd->fds[r] >= 0 && send(wd->fds[r], &beat, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                    /* a full buffer or a dead peer: the reading side notices either */
                }
            next_beat = now + wd->interval_s;
        }
        double wake = next_beat;
        int n = 0;
        wd->pfds[n++] = (struct pollfd){wd->stop_pipe[0], POLLIN, 0};
        for (int r = 0; r < wd->world_size; r++) {
            check_hung(wd, r, now, NULL);
            if (!wd->watched[r]) continue;
            if (wd->last_heard[r] + wd->timeout_s < wake) wake = wd->last_heard[r] + wd->timeout_s;
            wd->pfd_rank[n] = r;
            wd->pfds[n++] = (struct pollfd){wd->fds[r], POLLIN, 0};
        }
        int ready = poll(wd->pfds, (nfds_t)n, poll_ms(wake));
        if (ready < 0 && errno != EINTR) {
            fprintf(stderr, "warning: the watchdog stops: poll: %s\n", strerror(errno));
            break;
        }
        if (ready <= 0) continue;
        if (wd->pfds[0].revents != 0) break;
        for (int i = 1; i < n; i++)
            if (wd->pfds[i].revents != 0 && wd->fds[wd->pfd_rank[i]] >= 0) tcp_read(wd, wd->pfd_rank[i]);
    }
    unsigned char bye = 'g';
    for (int r = 0; r < wd->world_size; r++)
        if (wd->fds[r] >= 0 && send(wd->fds[r], &bye, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
            /* the peer is gone already: nothing to tell it */
        }
    return NULL;
}

/* rewrites this rank's heartbeat file with "<state> <nonce> <count>" */
static int file_beat(LaunchWatchdog *wd, const char *state) {
    char path[4096], text[64];
    if (file_path(path, sizeof(path), wd->dir, wd->key, "alive", wd->rank, NULL, 0)) return -1;
    int n = snprintf(text, sizeof(text), "%s %016llx %llu\n", state, (unsigned long long)wd->nonce,
                     (unsigned long long)++wd->count);
    return write_atomic(path, text, (size_t)n, NULL, 0);
}

/* Rank r is heard from when its file changes (the nonce makes a fresh run's file differ from a
 * stale one); it stopped cleanly when its file changes to "done" (a stale "done" does not count). */
static void file_check(LaunchWatchdog *wd, int r, double now) {
    char path[4096], text[64] = {0};
    if (file_path(path, sizeof(path), wd->dir, wd->key, "alive", r, NULL, 0)) return;
    long n = read_some(path, text, sizeof(text) - 1);
    if (n > 0 && strcmp(text, wd->content[r]) != 0) {
        memcpy(wd->content[r], text, sizeof(text));
        wd->last_heard[r] = now;
        if (strncmp(text, "done ", 5) == 0) wd->watched[r] = 0;
    }
    check_hung(wd, r, now, path);
}

static void *file_watch(void *arg) {
    LaunchWatchdog *wd = arg;
    char path[4096];
    int beat_failed = 0;
    for (;;) {
        double now = now_s();
        if (file_beat(wd, "alive") != 0 && !beat_failed) {
            /* the others will soon report this rank: say why here, once */
            int e = errno;
            beat_failed = 1;
            file_path(path, sizeof(path), wd->dir, wd->key, "alive", wd->rank, NULL, 0);
            char reason[4300];
            snprintf(reason, sizeof(reason), "it cannot write its heartbeat file %s: %s", path, strerror(e));
            report(wd, wd->rank, reason);
        }
        for (int r = 0; r < wd->world_size; r++)
            if (r != wd->rank && wd->watched[r]) file_check(wd, r, now);
        struct pollfd p = {wd->stop_pipe[0], POLLIN, 0};
        int ready = poll(&p, 1, poll_ms(now + wd->interval_s));
        if (ready < 0 && errno != EINTR) {
            fprintf(stderr, "warning: the watchdog stops: poll: %s\n", strerror(errno));
            break;
        }
        if (ready > 0) break;
    }
    if (file_beat(wd, "done") != 0) {
        /* the others will report this rank as failed: nothing better to do on the way out */
        fprintf(stderr, "warning: cannot mark rank %d done in %s\n", wd->rank, wd->dir);
    }
    return NULL;
}

static LaunchWatchdog *watchdog_new(int rank, int world, double timeout_s, LaunchFailureFn on_failure, char *err,
                                    size_t errlen) {
    LaunchWatchdog *wd = calloc(1, sizeof(LaunchWatchdog));
    if (wd == NULL) {
        fail(err, errlen, "watchdog: out of memory");
        return NULL;
    }
    wd->stop_pipe[0] = wd->stop_pipe[1] = -1;
    wd->rank = rank;
    wd->world_size = world;
    wd->timeout_s = timeout_s;
    wd->interval_s = timeout_s / 4 < 1.0 ? timeout_s / 4 : 1.0;
    wd->on_failure = on_failure;
    wd->watched = calloc((size_t)world, 1);
    wd->last_heard = calloc((size_t)world, sizeof(double));
    if (wd->watched == NULL || wd->last_heard == NULL) {
        fail(err, errlen, "watchdog: out of memory");
        watchdog_free(wd);
        return NULL;
    }
    if (pipe(wd->stop_pipe) != 0) {
        fail(err, errlen, "watchdog: pipe: %s", strerror(errno));
        watchdog_free(wd);
        return NULL;
    }
    double now = now_s();
    for (int r = 0; r < world; r++) wd->last_heard[r] = now;
    return wd;
}

static int watchdog_run(LaunchWatchdog **out, LaunchWatchdog *wd, void *(*fn)(void *), char *err, size_t errlen) {
    int e = pthread_create(&wd->thread, NULL, fn, wd);
    if (e != 0) {
        watchdog_free(wd);
        return fail(err, errlen, "watchdog: pthread_create: %s", strerror(e));
    }
    *out = wd;
    return 0;
}

int launch_watchdog_start_tcp(LaunchWatchdog **out, LaunchLinks *links, double timeout_s, LaunchFailureFn on_failure,
                              char *err, size_t errlen) {
    *out = NULL;
    if (!(timeout_s > 0)) return fail(err, errlen, "watchdog: timeout %g s must be positive", timeout_s);
    if (links->world_size == 1) return 0;
    if (links->fds == NULL) return fail(err, errlen, "watchdog: no sockets (rendezvous_tcp without keep?)");
    LaunchWatchdog *wd = watchdog_new(links->rank, links->world_size, timeout_s, on_failure, err, errlen);
    if (wd == NULL) return -1;
    int world = links->world_size;
    wd->fds = links->fds;
    links->fds = NULL;
    wd->partial = calloc((size_t)world, sizeof(*wd->partial));
    wd->partial_len = calloc((size_t)world, sizeof(int));
    wd->pfds = calloc((size_t)world + 1, sizeof(struct pollfd));
    wd->pfd_rank = calloc((size_t)world + 1, sizeof(int));
    if (wd->partial == NULL || wd->partial_len == NULL || wd->pfds == NULL || wd->pfd_rank == NULL) {
        watchdog_free(wd);
        return fail(err, errlen, "watchdog: out of memory");
    }
    for (int r = 0; r < world; r++) wd->watched[r] = wd->fds[r] >= 0;
    return watchdog_run(out, wd, tcp_watch, err, errlen);
}

int launch_watchdog_start_file(LaunchWatchdog **out, const char *dir, const char *key, const LaunchInfo *info,
                               double timeout_s, LaunchFailureFn on_failure, char *err, size_t errlen) {
    *out = NULL;
    if (!(timeout_s > 0)) return fail(err, errlen, "watchdog: timeout %g s must be positive", timeout_s);
    if (check_dir_key(dir, key, err, errlen)) return -1;
    if (info->world_size == 1) return 0;
    LaunchWatchdog *wd = watchdog_new(info->rank, info->world_size, timeout_s, on_failure, err, errlen);
    if (wd == NULL) return -1;
    snprintf(wd->dir, sizeof(wd->dir), "%s", dir);
    snprintf(wd->key, sizeof(wd->key), "%s", key);
    wd->content = calloc((size_t)info->world_size, sizeof(*wd->content));
    if (wd->content == NULL) {
        watchdog_free(wd);
        return fail(err, errlen, "watchdog: out of memory");
    }
    if (random_nonzero_u64(&wd->nonce)) {
        watchdog_free(wd);
        return fail(err, errlen, "watchdog: getrandom: %s", strerror(errno));
    }
    char path[4096];
    if (file_path(path, sizeof(path), dir, key, "alive", info->rank, err, errlen)) {
        watchdog_free(wd);
        return -1;
    }
    if (file_beat(wd, "alive") != 0) {
        int e = errno;
        watchdog_free(wd);
        return fail(err, errlen, "watchdog: cannot write %s: %s", path, strerror(e));
    }
    /* the others' files as they are now: only a change counts as a sign of life */
    for (int r = 0; r < info->world_size; r++) {
        if (r == info->rank) continue;
        wd->watched[r] = 1;
        if (file_path(path, sizeof(path), dir, key, "alive", r, err, errlen)) {
            watchdog_free(wd);
            return -1;
        }
        if (read_some(path, wd->content[r], sizeof(wd->content[r]) - 1) < 0) {
            int e = errno;
            watchdog_free(wd);
            return fail(err, errlen, "watchdog: cannot read %s: %s", path, strerror(e));
        }
    }
    return watchdog_run(out, wd, file_watch, err, errlen);
}

void launch_watchdog_stop(LaunchWatchdog *wd) {
    if (wd == NULL) return;
    char byte = 's';
    ssize_t w;
    do w = write(wd->stop_pipe[1], &byte, 1);
    while (w < 0 && errno == EINTR);
    if (w == 1) {
        pthread_join(wd->thread, NULL);
    } else {
        /* cannot happen with an empty pipe; stop the thread the hard way rather than hang */
        pthread_cancel(wd->thread);
        pthread_join(wd->thread, NULL);
    }
    watchdog_free(wd);
}
