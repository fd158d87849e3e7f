/*
 * Multi-process launch (train/launch.h), with forked processes on 127.0.0.1 and in a temp dir:
 *   - launcher environments: torchrun, Slurm srun (hostlists, per-node counts, a batch script that
 *     is not a multi-rank world), Open MPI, none, their precedence, and bad values (the error names
 *     the variable);
 *   - TCP rendezvous of 2 and 3 processes (peers start before rank 0 listens), a stray connection
 *     rejected, a missing rank named by rank 0, an unreachable rank 0 named by a peer;
 *   - file rendezvous of 2 and 3 processes, stale files of a killed run ignored, a missing rank, a
 *     missing dir;
 *   - watchdog over TCP and files: a rank that _exits is named (also rank 0, by a peer), a
 *     SIGSTOPped rank is named as hung, a clean launch_watchdog_stop reports nothing.
 * Timeouts are 2 s; waits are bounded generously, and every child is killed and reaped.
 */
#include "train/launch.h"
#include "tests/test.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLOB_BYTES 128
#define TIMEOUT 2.0

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- environment tables ---- */

typedef struct {
    const char *name, *value;
} Var;

static const char *table_get(const char *name, void *ctx) {
    for (const Var *v = ctx; v->name != NULL; v++)
        if (strcmp(v->name, name) == 0) return v->value;
    return NULL;
}

static int parse(const Var *vars, LaunchInfo *info, char *err, size_t errlen) {
    err[0] = '\0';
    return launch_info_parse(info, table_get, (void *)vars, err, errlen);
}

static int info_is(const LaunchInfo *i, const char *launcher, int rank, int world, int local, int local_world,
                   const char *addr, int port) {
    return strcmp(i->launcher, launcher) == 0 && i->rank == rank && i->world_size == world && i->local_rank == local &&
           i->local_world_size == local_world && strcmp(i->master_addr, addr) == 0 && i->master_port == port;
}

static void report_info(int ok, const char *name, const char *what, const LaunchInfo *i, int rc, const char *err) {
    test_report(ok, name, "%s: rc %d, %s rank %d/%d local %d/%d master \"%s\":%d%s%s", what, rc, i->launcher, i->rank,
                i->world_size, i->local_rank, i->local_world_size, i->master_addr, i->master_port, err[0] ? " err " : "",
                err);
}

static void test_parse_none_torchrun(void) {
    LaunchInfo i;
    char err[512];
    const Var none[] = {{"PATH", "/bin"}, {"RANK", ""}, {NULL, NULL}};
    int rc = parse(none, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "none", 0, 1, 0, 1, "", 0), "parse_none", "no launcher", &i, rc, err);

    const Var torchrun[] = {{"RANK", "3"},         {"WORLD_SIZE", "8"},     {"LOCAL_RANK", "1"},
                            {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "node1"}, {"MASTER_PORT", "29500"},
                            {NULL, NULL}};
    rc = parse(torchrun, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "torchrun", 3, 8, 1, 4, "node1", 29500), "parse_torchrun", "torchrun", &i, rc,
                err);
}

static void test_parse_slurm(void) {
    LaunchInfo i;
    char err[512];
    /* node 3 of "2(x3),1" runs one task; the job id gives port 20000 + 123456 % 20000 */
    const Var srun[] = {{"SLURM_PROCID", "6"},
                        {"SLURM_STEP_NUM_TASKS", "7"},
                        {"SLURM_NTASKS", "16"},
                        {"SLURM_LOCALID", "0"},
                        {"SLURM_NODEID", "3"},
                        {"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"},
                        {"SLURM_STEP_NODELIST", "gpu[003-005,9],login1"},
                        {"SLURM_JOB_NODELIST", "other[1-9]"},
                        {"SLURM_JOB_ID", "123456"},
                        {NULL, NULL}};
    int rc = parse(srun, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "slurm", 6, 7, 0, 1, "gpu003", 23456), "parse_slurm", "srun step", &i, rc, err);

    const char *lists[][2] = {{"a,b", "a"},
                              {"node7", "node7"},
                              {"gpu[003-005,9],login1", "gpu003"},
                              {"n[9]", "n9"},
                              {"rack[1-2]-gpu[07-08],x", "rack1-gpu07"},
                              {"login[01,02]", "login01"}};
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
        const Var v[] = {{"SLURM_PROCID", "0"},         {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "0"},
                         {"SLURM_JOB_NODELIST", lists[k][0]}, {"SLURM_JOB_ID", "7"},         {NULL, NULL}};
        rc = parse(v, &i, err, sizeof(err));
        char what[128];
        snprintf(what, sizeof(what), "SLURM_JOB_NODELIST=%s", lists[k][0]);
        report_info(rc == 0 && info_is(&i, "slurm", 0, 2, 0, 0, lists[k][1], 20007), "parse_slurm_hostlist", what, &i,
                    rc, err);
    }

    const Var explicit_master[] = {{"SLURM_PROCID", "1"},       {"SLURM_STEP_NUM_TASKS", "2"},
                                   {"SLURM_LOCALID", "1"},      {"SLURM_STEP_NODELIST", "gpu[1-2]"},
                                   {"SLURM_JOB_ID", "7"},       {"MASTER_ADDR", "10.0.0.5"},
                                   {"MASTER_PORT", "1234"},     {NULL, NULL}};
    rc = parse(explicit_master, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "slurm", 1, 2, 1, 0, "10.0.0.5", 1234), "parse_slurm_master_env",
                "MASTER_ADDR/MASTER_PORT win over the nodelist and job id", &i, rc, err);

    /* what an sbatch script itself sees: a plain process there is not rank 0 of 4 */
    const Var batch[] = {{"SLURM_PROCID", "0"},      {"SLURM_LOCALID", "0"},          {"SLURM_NTASKS", "4"},
                         {"SLURM_NPROCS", "4"},      {"SLURM_JOB_ID", "99"},          {"SLURM_JOB_NODELIST", "n[1-4]"},
                         {"SLURM_NODEID", "0"},      {"SLURM_TASKS_PER_NODE", "1(x4)"}, {NULL, NULL}};
    rc = parse(batch, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "none", 0, 1, 0, 1, "", 0), "parse_slurm_batch_script",
                "sbatch's batch step (no SLURM_STEP_NUM_TASKS)", &i, rc, err);
}

static void test_parse_openmpi(void) {
    LaunchInfo i, j;
    char err[512];
    const Var one_node[] = {{"OMPI_COMM_WORLD_RANK", "2"},       {"OMPI_COMM_WORLD_SIZE", "4"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                            {"PMIX_NAMESPACE", "prterun-host-4242@1"}, {NULL, NULL}};
    const Var one_node_rank0[] = {{"OMPI_COMM_WORLD_RANK", "0"},       {"OMPI_COMM_WORLD_SIZE", "4"},
                                  {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                  {"PMIX_NAMESPACE", "prterun-host-4242@1"}, {NULL, NULL}};
    int rc = parse(one_node, &i, err, sizeof(err));
    int rc0 = parse(one_node_rank0, &j, err, sizeof(err));
    int port = i.master_port;
    report_info(rc == 0 && rc0 == 0 && info_is(&i, "openmpi", 2, 4, 2, 4, "127.0.0.1", port) && port >= 20000 &&
                    port < 40000 && j.master_port == port,
                "parse_openmpi", "one node: 127.0.0.1 and a port both ranks derive from PMIX_NAMESPACE", &i, rc, err);

    const Var multi_node[] = {{"OMPI_COMM_WORLD_RANK", "3"},       {"OMPI_COMM_WORLD_SIZE", "4"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                              {NULL, NULL}};
    rc = parse(multi_node, &i, err, sizeof(err));
    report_info(rc == 0 && info_is(&i, "openmpi", 3, 4, 1, 2, "", 0), "parse_openmpi",
                "two nodes, no MASTER_ADDR: master unknown", &i, rc, err);

    const Var orte[] = {{"OMPI_COMM_WORLD_RANK", "1"},       {"OMPI_COMM_WORLD_SIZE", "4"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                        {"OMPI_MCA_ess_base_jobid", "3001548801"}, {"MASTER_ADDR", "head"}, {NULL, NULL}};
    rc = parse(orte, &i, err, sizeof(err));
    report_info(rc == 0 && strcmp(i.master_addr, "head") == 0 && i.master_port >= 20000 && i.master_port < 40000,
                "parse_openmpi", "MASTER_ADDR, port from OMPI_MCA_ess_base_jobid", &i, rc, err);
}

static void test_parse_precedence(void) {
    LaunchInfo i;
    char err[512];
    const Var all[] = {{"RANK", "1"},          {"WORLD_SIZE", "2"},         {"LOCAL_RANK", "1"},
                       {"SLURM_PROCID", "0"},  {"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_LOCALID", "0"},
                       {"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}, {NULL, NULL}};
    int rc = parse(all, &i, err, sizeof(err));
    report_info(rc == 0 && strcmp(i.launcher, "torchrun") == 0 && i.rank == 1, "parse_precedence",
                "torchrun over Slurm and Open MPI", &i, rc, err);
    const Var slurm_ompi[] = {{"SLURM_PROCID", "1"},         {"SLURM_STEP_NUM_TASKS", "3"}, {"SLURM_LOCALID", "0"},
                              {"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                              {NULL, NULL}};
    rc = parse(slurm_ompi, &i, err, sizeof(err));
    report_info(rc == 0 && strcmp(i.launcher, "slurm") == 0 && i.rank == 1 && i.world_size == 3, "parse_precedence",
                "Slurm over Open MPI", &i, rc, err);
}

static void test_parse_bad_values(void) {
    typedef struct {
        Var vars[8];
        const char *expect; /* in the error */
    } Case;
    static const Case cases[] = {
        {{{"RANK", "abc"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}}, "RANK=\"abc\""},
        {{{"RANK", "1x"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}}, "RANK=\"1x\""},
        {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}}, "RANK=2 is not below WORLD_SIZE=2"},
        {{{"RANK", "0"}, {"WORLD_SIZE", "0"}, {"LOCAL_RANK", "0"}}, "WORLD_SIZE=\"0\""},
        {{{"RANK", "0"}, {"WORLD_SIZE", "2"}}, "LOCAL_RANK is not set"},
        {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "-1"}}, "LOCAL_RANK=\"-1\""},
        {{{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
         "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"},
        {{{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}, {"MASTER_PORT", "70000"}}, "MASTER_PORT=\"70000\""},
        {{{"RANK", "0"}, {"WORLD_SIZE", "99999999999"}, {"LOCAL_RANK", "0"}}, "WORLD_SIZE=\"99999999999\""},
        {{{"SLURM_PROCID", "x"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "0"}}, "SLURM_PROCID=\"x\""},
        {{{"SLURM_PROCID", "4"}, {"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_LOCALID", "0"}},
         "SLURM_PROCID=4 is not below SLURM_STEP_NUM_TASKS=4"},
        {{{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_STEP_NODELIST", "gpu[1-2"}},
         "SLURM_STEP_NODELIST=\"gpu[1-2\""},
        {{{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "0"},
          {"SLURM_STEP_TASKS_PER_NODE", "2(x"}},
         "SLURM_STEP_TASKS_PER_NODE=\"2(x\""},
        {{{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_LOCALID", "0"}, {"SLURM_JOB_ID", "abc"}},
         "SLURM_JOB_ID=\"abc\""},
        {{{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "3"},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}},
         "OMPI_COMM_WORLD_LOCAL_RANK=3 is not below OMPI_COMM_WORLD_LOCAL_SIZE=2"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        LaunchInfo i;
        char err[512];
        int rc = parse(cases[k].vars, &i, err, sizeof(err));
        test_report(rc != 0 && strstr(err, cases[k].expect) != NULL, "parse_bad_values", "expect '%s': rc %d, err \"%s\"",
                    cases[k].expect, rc, err);
    }
}

static void test_parse_from_env(void) {
    LaunchInfo i;
    char err[512] = "";
    setenv("RANK", "1", 1), setenv("WORLD_SIZE", "2", 1), setenv("LOCAL_RANK", "1", 1);
    setenv("MASTER_ADDR", "localhost", 1), setenv("MASTER_PORT", "29501", 1);
    int rc = launch_info_from_env(&i, err, sizeof(err));
    unsetenv("RANK"), unsetenv("WORLD_SIZE"), unsetenv("LOCAL_RANK"), unsetenv("MASTER_ADDR"), unsetenv("MASTER_PORT");
    report_info(rc == 0 && info_is(&i, "torchrun", 1, 2, 1, 0, "localhost", 29501), "parse_from_env",
                "the process environment", &i, rc, err);
}

/* ---- processes ---- */

/* Runs fn(arg) in a child that dies with the test; its return value is the exit status. */
static pid_t spawn(int (*fn)(void *), void *arg) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(100);
        _exit(fn(arg));
    }
    return pid;
}

/* The child's exit status, or -1 (it is killed) if it has not exited within timeout_s or died of a signal. */
static int reap(pid_t pid, double timeout_s) {
    double deadline = now_s() + timeout_s;
    int status;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) return -1;
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
            return -1;
        }
        sleep_s(0.01);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t len = sizeof(a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free_port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static LaunchInfo local_info(int rank, int world, int port) {
    LaunchInfo i;
    memset(&i, 0, sizeof(i));
    i.rank = rank, i.world_size = world, i.local_rank = rank, i.local_world_size = world, i.master_port = port;
    snprintf(i.master_addr, sizeof(i.master_addr), "127.0.0.1");
    snprintf(i.launcher, sizeof(i.launcher), "test");
    return i;
}

static void fill_blob(unsigned char *b, int seed) {
    for (int k = 0; k < BLOB_BYTES; k++) b[k] = (unsigned char)(k * 31 + seed * 7 + 1);
}

/* One rank of a rendezvous; in a child. */
typedef struct {
    int rank, world, port, seed;
    double delay_s, timeout_s;
    const char *dir, *key; /* file rendezvous when dir != NULL */
} RankArg;

/* 0: got rank 0's blob (seed), 2: the rendezvous failed, 3: wrong bytes */
static int rank_main(void *p) {
    const RankArg *a = p;
    sleep_s(a->delay_s);
    LaunchInfo info = local_info(a->rank, a->world, a->port);
    unsigned char blob[BLOB_BYTES], expect[BLOB_BYTES];
    char err[512];
    fill_blob(expect, a->seed);
    if (a->rank == 0)
        memcpy(blob, expect, BLOB_BYTES);
    else
        memset(blob, 0, BLOB_BYTES);
    int rc = a->dir ? rendezvous_file(a->dir, a->key, &info, blob, BLOB_BYTES, a->timeout_s, err, sizeof(err))
                    : rendezvous_tcp(&info, blob, BLOB_BYTES, a->timeout_s, NULL, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "  (child rank %d: %s)\n", a->rank, err);
        return 2;
    }
    return memcmp(blob, expect, BLOB_BYTES) == 0 ? 0 : 3;
}

/* A rendezvous of world ranks: peers in children (started first, rank r after 0.1 r s), rank 0 here
 * after 0.3 s, so peers must retry. */
static void run_world(const char *name, int world, const char *dir, const char *key, int seed) {
    RankArg args[8];
    pid_t pids[8];
    int port = dir ? 0 : free_port();
    for (int r = 1; r < world; r++) {
        args[r] = (RankArg){r, world, port, seed, 0.1 * (r - 1), 10.0, dir, key};
        pids[r] = spawn(rank_main, &args[r]);
    }
    sleep_s(0.3);
    args[0] = (RankArg){0, world, port, seed, 0.0, 10.0, dir, key};
    double t0 = now_s();
    int rc0 = rank_main(&args[0]);
    double took = now_s() - t0;
    char status[128] = "";
    size_t n = 0;
    int ok = rc0 == 0;
    for (int r = 1; r < world; r++) {
        int rc = reap(pids[r], 10.0);
        ok &= rc == 0;
        n += (size_t)snprintf(status + n, sizeof(status) - n, " rank %d: %d", r, rc);
    }
    test_report(ok, name, "%d ranks, %d-byte blob, %.2f s: rank 0: %d%s (0 = got the blob)", world, BLOB_BYTES, took,
                rc0, status);
}

/* A stray client: connects (retrying), sends an HTTP request, expects rank 0 to close. 0 if it did. */
static int stray_main(void *p) {
    int port = *(const int *)p;
    double deadline = now_s() + 5.0;
    while (now_s() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            const char req[] = "GET / HTTP/1.0\r\n\r\n";
            char buf[64];
            struct timeval tv = {5, 0};
            if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) < 0 ||
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
                return 1;
            /* rank 0 closes after reading 16 bytes: the 2 unread ones make that a reset */
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            int closed = r == 0 || (r < 0 && errno == ECONNRESET);
            close(fd);
            return closed ? 0 : 2;
        }
        if (fd >= 0) close(fd);
        sleep_s(0.02);
    }
    return 3;
}

static void test_tcp(void) {
    run_world("tcp_rendezvous", 2, NULL, NULL, 1);
    run_world("tcp_rendezvous", 3, NULL, NULL, 2);

    /* a stray connection first, the real peer 0.3 s later */
    int port = free_port();
    RankArg peer = {1, 2, port, 3, 0.3, 10.0, NULL, NULL};
    pid_t stray = spawn(stray_main, &port);
    pid_t child = spawn(rank_main, &peer);
    RankArg me = {0, 2, port, 3, 0.1, 10.0, NULL, NULL};
    int rc0 = rank_main(&me), rc1 = reap(child, 10.0), rcs = reap(stray, 10.0);
    test_report(rc0 == 0 && rc1 == 0 && rcs == 0, "tcp_rendezvous_rejects_stray",
                "rank 0: %d, rank 1: %d, stray client closed by rank 0: %d (0 = yes)", rc0, rc1, rcs);

    /* world of 3 where rank 2 never comes */
    port = free_port();
    peer = (RankArg){1, 3, port, 4, 0.0, 10.0, NULL, NULL};
    child = spawn(rank_main, &peer);
    LaunchInfo info = local_info(0, 3, port);
    unsigned char blob[BLOB_BYTES] = {0};
    char err[512] = "";
    double t0 = now_s();
    int rc = rendezvous_tcp(&info, blob, BLOB_BYTES, TIMEOUT, NULL, err, sizeof(err));
    double took = now_s() - t0;
    rc1 = reap(child, 10.0);
    test_report(rc != 0 && strstr(err, "rank 2 ") != NULL && strstr(err, "rank 1") == NULL && took >= TIMEOUT - 0.1 &&
                    took < TIMEOUT + 5.0,
                "tcp_rendezvous_missing_rank", "%.2f s (timeout %.0f s): \"%s\"; rank 1 then fails: %d", took, TIMEOUT,
                err, rc1);

    /* a peer whose rank 0 never listens */
    port = free_port();
    info = local_info(1, 2, port);
    t0 = now_s();
    rc = rendezvous_tcp(&info, blob, BLOB_BYTES, 1.0, NULL, err, sizeof(err));
    took = now_s() - t0;
    char where[64];
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    test_report(rc != 0 && strstr(err, where) != NULL && took < 1.0 + 5.0, "tcp_rendezvous_no_master",
                "%.2f s: \"%s\"", took, err);

    info = local_info(0, 1, 0);
    rc = rendezvous_tcp(&info, blob, BLOB_BYTES, TIMEOUT, NULL, err, sizeof(err));
    test_report(rc == 0, "tcp_rendezvous_world_1", "returns at once without a port: rc %d", rc);
}

/* number of files in dir whose name starts with prefix */
static int count_files(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    if (d == NULL) return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* waits up to 5 s for path to exist */
static int wait_exists(const char *path) {
    struct stat st;
    for (double deadline = now_s() + 5.0; now_s() < deadline; sleep_s(0.01))
        if (stat(path, &st) == 0) return 1;
    return 0;
}

static void test_file(const char *dir) {
    run_world("file_rendezvous", 2, dir, "run2", 5);
    int left = count_files(dir, "ssd_rdzv.run2.");
    test_report(left == 0, "file_rendezvous_cleanup", "%d files of key run2 left in the dir", left);
    run_world("file_rendezvous", 3, dir, "run3", 6);

    /* stale files of an earlier run under the same key: rank 0 killed after writing its blob, then
     * rank 1 killed after writing its hello; the new run's peer starts before its rank 0 */
    char path[4200];
    RankArg old0 = {0, 2, 0, 7, 0.0, 30.0, dir, "stale"}, old1 = {1, 2, 0, 7, 0.0, 30.0, dir, "stale"};
    pid_t pid = spawn(rank_main, &old0);
    snprintf(path, sizeof(path), "%s/ssd_rdzv.stale.blob", dir);
    int had_blob = wait_exists(path);
    kill(pid, SIGKILL);
    reap(pid, 5.0);
    pid = spawn(rank_main, &old1);
    snprintf(path, sizeof(path), "%s/ssd_rdzv.stale.hello.1", dir);
    int had_hello = wait_exists(path);
    kill(pid, SIGKILL);
    reap(pid, 5.0);
    RankArg new1 = {1, 2, 0, 8, 0.0, 10.0, dir, "stale"}, new0 = {0, 2, 0, 8, 0.0, 10.0, dir, "stale"};
    pid = spawn(rank_main, &new1);
    sleep_s(0.5);
    int rc0 = rank_main(&new0), rc1 = reap(pid, 10.0);
    test_report(had_blob && had_hello && rc0 == 0 && rc1 == 0, "file_rendezvous_ignores_stale",
                "stale blob %d, stale hello %d; new run: rank 0: %d, rank 1: %d (0 = got this run's blob)", had_blob,
                had_hello, rc0, rc1);

    LaunchInfo info = local_info(0, 3, 0);
    unsigned char blob[BLOB_BYTES] = {0};
    char err[512] = "";
    double t0 = now_s();
    int rc = rendezvous_file(dir, "alone", &info, blob, BLOB_BYTES, 1.0, err, sizeof(err));
    double took = now_s() - t0;
    test_report(rc != 0 && strstr(err, "ranks 1, 2") != NULL && took < 1.0 + 5.0, "file_rendezvous_missing_rank",
                "%.2f s: \"%s\"", took, err);

    char missing[4200];
    snprintf(missing, sizeof(missing), "%s/no/such/dir", dir);
    rc = rendezvous_file(missing, "k", &info, blob, BLOB_BYTES, 1.0, err, sizeof(err));
    test_report(rc != 0 && strstr(err, missing) != NULL, "file_rendezvous_bad_dir", "missing dir: \"%s\"", err);
    snprintf(path, sizeof(path), "%s/ssd_rdzv.stale.blob", dir);
    FILE *f = fopen(path, "w");
    if (f != NULL) fclose(f);
    rc = rendezvous_file(path, "k", &info, blob, BLOB_BYTES, 1.0, err, sizeof(err));
    test_report(f != NULL && rc != 0 && strstr(err, "not a directory") != NULL, "file_rendezvous_bad_dir",
                "a file: \"%s\"", err);
    rc = rendezvous_file(dir, "../k", &info, blob, BLOB_BYTES, 1.0, err, sizeof(err));
    test_report(rc != 0 && strstr(err, "../k") != NULL, "file_rendezvous_bad_key", "\"%s\"", err);
}

/* ---- watchdog ---- */

static pthread_mutex_t failures_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures, failed_rank = -1;
static char failed_reason[512];

static void record_failure(int rank, const char *reason) {
    pthread_mutex_lock(&failures_lock);
    if (failures++ == 0) {
        failed_rank = rank;
        snprintf(failed_reason, sizeof(failed_reason), "%s", reason);
    }
    pthread_mutex_unlock(&failures_lock);
}

static int failure_count(void) {
    pthread_mutex_lock(&failures_lock);
    int n = failures;
    pthread_mutex_unlock(&failures_lock);
    return n;
}

static void reset_failures(void) {
    pthread_mutex_lock(&failures_lock);
    failures = 0, failed_rank = -1, failed_reason[0] = '\0';
    pthread_mutex_unlock(&failures_lock);
}

/* waits up to timeout_s for a failure report; the seconds it took, or -1 if none came */
static double wait_failure(double timeout_s) {
    double t0 = now_s();
    while (failure_count() == 0) {
        if (now_s() - t0 > timeout_s) return -1;
        sleep_s(0.01);
    }
    return now_s() - t0;
}

/* Rendezvous (TCP when dir is NULL) and watchdog for rank/world; 0 or -1 (message on stderr). */
static int watch(LaunchWatchdog **wd, int rank, int world, int port, const char *dir, const char *key) {
    LaunchInfo info = local_info(rank, world, port);
    unsigned char blob[BLOB_BYTES] = {0};
    LaunchLinks links;
    char err[512];
    int rc = dir ? launch_watchdog_start_file(wd, dir, key, &info, TIMEOUT, record_failure, err, sizeof(err))
                 : rendezvous_tcp(&info, blob, BLOB_BYTES, 10.0, &links, err, sizeof(err)) ||
                       launch_watchdog_start_tcp(wd, &links, TIMEOUT, record_failure, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "  (rank %d: %s)\n", rank, err);
    return rc;
}

/* A watched rank in a child: after run_s it _exits abruptly (stop == 0), or stops its watchdog and
 * exits (stop == 1), or waits to be killed (run_s < 0). Exit status: 0 if it saw no failure, 20 + r
 * if the first failure it saw was rank r's, 10 if its setup failed. */
typedef struct {
    int rank, world, port;
    const char *dir, *key;
    double run_s;
    int stop;
} WatchArg;

static int watched_main(void *p) {
    const WatchArg *a = p;
    LaunchWatchdog *wd;
    reset_failures();
    if (watch(&wd, a->rank, a->world, a->port, a->dir, a->key) != 0) return 10;
    if (a->run_s < 0)
        for (;;) pause();
    sleep_s(a->run_s);
    if (!a->stop) _exit(0);
    launch_watchdog_stop(wd);
    return failure_count() ? 20 + failed_rank : 0;
}

static void test_watchdog_exit(const char *name, int child_rank, const char *dir) {
    int port = dir ? 0 : free_port();
    WatchArg arg = {child_rank, 2, port, dir, "exit", 0.5, 0};
    reset_failures();
    pid_t pid = spawn(watched_main, &arg);
    LaunchWatchdog *wd = NULL;
    int setup = watch(&wd, 1 - child_rank, 2, port, dir, "exit");
    int status = reap(pid, 10.0);
    double took = wait_failure(TIMEOUT + 5.0);
    launch_watchdog_stop(wd);
    test_report(setup == 0 && status == 0 && took >= 0 && failed_rank == child_rank && took < TIMEOUT + 5.0, name,
                "rank %d _exited: reported rank %d %.2f s after its exit (timeout %.0f s): \"%s\"", child_rank,
                failed_rank, took, TIMEOUT, failed_reason);
}

static void test_watchdog_stopped(void) {
    int port = free_port();
    WatchArg arg = {1, 2, port, NULL, NULL, -1.0, 0};
    reset_failures();
    pid_t pid = spawn(watched_main, &arg);
    LaunchWatchdog *wd = NULL;
    int setup = watch(&wd, 0, 2, port, NULL, NULL);
    sleep_s(0.5);
    kill(pid, SIGSTOP);
    double took = wait_failure(TIMEOUT + 6.0);
    kill(pid, SIGKILL);
    reap(pid, 5.0);
    launch_watchdog_stop(wd);
    test_report(setup == 0 && failed_rank == 1 && strstr(failed_reason, "heartbeat") != NULL && took >= 1.0 &&
                    took < TIMEOUT + 6.0,
                "watchdog_tcp_hung", "SIGSTOPped rank 1: reported rank %d after %.2f s (timeout %.0f s): \"%s\"",
                failed_rank, took, TIMEOUT, failed_reason);
}

/* Over TCP with 3 ranks: rank 1 stops at 0.3 s and exits, rank 0 (here) stops at 1 s, rank 2
 * stops at 1.8 s: nobody may report anybody. Through files with 2 ranks: rank 1 stops at 0.3 s,
 * rank 0 watches until 2.8 s (past the timeout after rank 1's last heartbeat). */
static void test_watchdog_clean_stop(const char *name, const char *dir) {
    int port = dir ? 0 : free_port(), world = dir ? 2 : 3;
    WatchArg a1 = {1, world, port, dir, "clean", 0.3, 1}, a2 = {2, world, port, dir, "clean", 1.8, 1};
    reset_failures();
    pid_t p1 = spawn(watched_main, &a1), p2 = world == 3 ? spawn(watched_main, &a2) : -1;
    LaunchWatchdog *wd = NULL;
    int setup = watch(&wd, 0, world, port, dir, "clean");
    sleep_s(dir ? 2.8 : 1.0);
    launch_watchdog_stop(wd);
    int s1 = reap(p1, 10.0), s2 = world == 3 ? reap(p2, 10.0) : 0;
    test_report(setup == 0 && failure_count() == 0 && s1 == 0 && s2 == 0, name,
                "%d ranks; failures seen by rank 0: %d%s%s; rank 1's status %d, rank 2's %d (0: saw none)",
                world, failure_count(), failures ? " e.g. " : "", failed_reason, s1, world == 3 ? s2 : 0);
}

/* Over TCP with 3 ranks, rank 2 _exits: rank 0 (here) names it, and so does rank 1, told by rank 0. */
static void test_watchdog_forward(void) {
    int port = free_port();
    WatchArg a1 = {1, 3, port, NULL, NULL, 1.5, 1}, a2 = {2, 3, port, NULL, NULL, 0.3, 0};
    reset_failures();
    pid_t p1 = spawn(watched_main, &a1), p2 = spawn(watched_main, &a2);
    LaunchWatchdog *wd = NULL;
    int setup = watch(&wd, 0, 3, port, NULL, NULL);
    double took = wait_failure(TIMEOUT + 5.0);
    int s2 = reap(p2, 10.0), s1 = reap(p1, 10.0);
    launch_watchdog_stop(wd);
    test_report(setup == 0 && took >= 0 && failed_rank == 2 && s2 == 0 && s1 == 22, "watchdog_tcp_forward",
                "rank 2 _exited: rank 0 reported rank %d (\"%s\"); rank 1's status %d (22: it reported rank 2)",
                failed_rank, failed_reason, s1);
}

int main(void) {
    test_parse_none_torchrun();
    test_parse_slurm();
    test_parse_openmpi();
    test_parse_precedence();
    test_parse_bad_values();
    test_parse_from_env();

    test_tcp();
    char dir[] = "/tmp/test_launch.XXXXXX";
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    test_file(dir);

    test_watchdog_exit("watchdog_tcp_exit", 1, NULL);
    test_watchdog_exit("watchdog_tcp_rank0_exit", 0, NULL);
    test_watchdog_stopped();
    test_watchdog_forward();
    test_watchdog_clean_stop("watchdog_tcp_clean_stop", NULL);
    test_watchdog_exit("watchdog_file_exit", 1, dir);
    test_watchdog_clean_stop("watchdog_file_clean_stop", dir);

    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
    return test_exit_code();
}
