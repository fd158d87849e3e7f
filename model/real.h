/*
 * The CPU reference computes in `real`: float for train_ssd, double for the tests
 * (built with -DSSD_DOUBLE) so that gradient checks and duality tests can be tight.
 */
#ifndef SSD_MODEL_REAL_H
#define SSD_MODEL_REAL_H

#ifdef SSD_DOUBLE
typedef double real;
#else
typedef float real;
#endif

#endif
