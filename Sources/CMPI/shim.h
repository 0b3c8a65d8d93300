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
static inline int bp_mpi_allgather_double(double *all, const double *local, int count) {
    return MPI_Allgather(local, count, MPI_DOUBLE, all, count, MPI_DOUBLE, MPI_COMM_WORLD);
}

/// all = every rank's `local` of counts[rank] floats, concatenated in rank order (displacements:
/// the running sums of counts).
static inline int bp_mpi_allgatherv_float(float *all, const float *local, const int *counts, const int *displacements,
                                          int count) {
    return MPI_Allgatherv(local, count, MPI_FLOAT, all, counts, displacements, MPI_FLOAT, MPI_COMM_WORLD);
}

/// Each rank sends send_counts[d] floats from send + send_displacements[d] to rank d, and receives
/// receive_counts[s] floats from rank s at received + receive_displacements[s].
static inline int bp_mpi_alltoallv_float(float *received, const int *receive_counts, const int *receive_displacements,
                                         const float *send, const int *send_counts, const int *send_displacements) {
    return MPI_Alltoallv(send, send_counts, send_displacements, MPI_FLOAT, received, receive_counts,
                         receive_displacements, MPI_FLOAT, MPI_COMM_WORLD);
}

/// Ends every process of the job with `code` (a rank that failed: the others would wait forever).
static inline void bp_mpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

static inline int bp_mpi_finish(void) { return MPI_Finalize(); }
