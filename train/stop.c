/* Stopping a run by signal (see stop.h): the handlers only record the signal and say so on stderr. */
#include "train/stop.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;

static void write_stderr(const char *text) {
    ssize_t written = write(STDERR_FILENO, text, strlen(text));
    (void)written; /* nothing to do about a failed write inside a signal handler */
}

static void on_stop_signal(int signo) {
    if (signo == SIGINT && stop_signal != 0) {
        write_stderr("second SIGINT: exiting now\n");
        signal(SIGINT, SIG_DFL);
        raise(SIGINT);
        return;
    }
    if (stop_signal == 0) stop_signal = signo;
    write_stderr(signo == SIGINT    ? "received SIGINT: stopping after this step (again to exit at once)\n"
                 : signo == SIGTERM ? "received SIGTERM: stopping after this step\n"
                                    : "received SIGUSR1: stopping after this step\n");
}

void stop_signals_install(void) {
    const int signals[] = {SIGINT, SIGTERM, SIGUSR1};
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART; /* file and socket I/O carry on; the loop looks at the flag after the step */
    for (int i = 0; i < 3; i++) {
        if (sigaction(signals[i], &action, NULL) != 0) {
            perror("error: sigaction");
            exit(1);
        }
    }
}

int stop_signal_received(void) { return stop_signal; }
