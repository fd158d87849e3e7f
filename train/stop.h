/*
 * Stopping a run by signal. SIGINT, SIGTERM and SIGUSR1 (what Slurm sends before preemption, with
 * --signal=USR1@<seconds>) only set a flag; the training loop reads it once per step, combined over the
 * ranks (train/train_loop.c), so that every rank stops after the same step, writes the checkpoint of
 * that step when there is an output dir, and the trainer exits with EXIT_INTERRUPTED (train/args.h).
 * A second SIGINT (Ctrl-C twice) ends the process at once. The trainers install the handlers first thing
 * in main(); a signal before that ends the process as usual (nothing has started then).
 */
#ifndef SSD_TRAIN_STOP_H
#define SSD_TRAIN_STOP_H

#ifdef __cplusplus
extern "C" {
#endif

/* Installs the handlers; exits with a message if it cannot. */
void stop_signals_install(void);
/* The first signal that asked this process to stop, or 0. */
int stop_signal_received(void);

#ifdef __cplusplus
}
#endif
#endif
