/* The MPI back end of train/comm.h (CPU trainer only): rank and world from MPI_COMM_WORLD. */
#ifndef SSD_TRAIN_COMM_MPI_H
#define SSD_TRAIN_COMM_MPI_H

#include "train/comm.h"
#include "train/launch.h"

/* Calls MPI_Init and starts the watchdog (a rank silent for rank_timeout seconds ends the run);
 * non-zero (with a message) when the binary was built without MPI. */
int comm_mpi_init(Comm *comm, int *argc, char ***argv, const LaunchInfo *info, double rank_timeout);

#endif
