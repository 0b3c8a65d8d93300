// The kernels' threads: one OpenMP thread count for every kernel.
#include "CKernels.h"

#include "internal.h"

#ifdef _OPENMP
// Swift's clang ships no omp.h; these are libomp's entry points.
void omp_set_num_threads(int n);
int omp_get_max_threads(void);
int omp_in_parallel(void);
int omp_get_thread_num(void);
#endif

void bp_set_num_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

int bp_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int bp_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

int bp_thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int bp_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
