/* The MPI back end of model/comm.h (CPU trainer only): rank and world from MPI_COMM_WORLD. */
#ifndef SSD_MODEL_COMM_MPI_H
#define SSD_MODEL_COMM_MPI_H

#include "comm.h"
#include "launch.h"

/* Calls MPI_Init and starts the watchdog (a rank silent for rank_timeout seconds ends the run);
 * non-zero (with a message) when the binary was built without MPI. */
int comm_mpi_init(Comm *comm, int *argc, char ***argv, const LaunchInfo *info, double rank_timeout);

#endif
