// The few MPI calls data-parallel training makes, as functions Swift can import (Open MPI's
// MPI_COMM_WORLD and MPI_FLOAT are macros over casts, which Swift cannot). Each returns MPI's
// error code (MPI_SUCCESS is 0); the default error handler aborts the job on a failed collective.
#include <mpi.h>
#include <stdint.h>

/// MPI_Init with calls from the main thread only (the OpenMP workers make none); this process's rank
/// and the number of processes.
static inline int bp_mpi_start(int *rank, int *size) {
    int provided = 0, code = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (code != MPI_SUCCESS) return code;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    return MPI_Comm_size(MPI_COMM_WORLD, size);
}

/// all [size · count] = every rank's local [count], in rank order.
static inline int bp_mpi_allgather_float(float *all, const float *local, int count) {
    return MPI_Allgather(local, count, MPI_FLOAT, all, count, MPI_FLOAT, MPI_COMM_WORLD);
}

static inline int bp_mpi_allgather_double(double *all, const double *local, int count) {
    return MPI_Allgather(local, count, MPI_DOUBLE, all, count, MPI_DOUBLE, MPI_COMM_WORLD);
}

/// Ends every process of the job with `code` (a rank that failed: the others would wait forever).
static inline void bp_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

static inline int bp_mpi_finish(void) { return MPI_Finalize(); }
