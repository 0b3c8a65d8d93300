// Deterministic parallel sums (see internal.h).
#include "internal.h"

#include <stdlib.h>

enum { BLOCK = 4096 };

double bp_blocked_sum(int64_t n, double (*block)(const void *ctx, int64_t begin, int64_t end),
                      const void *ctx) {
    int64_t blocks = (n + BLOCK - 1) / BLOCK;
    if (blocks <= 1) return n > 0 ? block(ctx, 0, n) : 0.0;
    double *partial = malloc((size_t)blocks * sizeof(double));
    #pragma omp parallel for schedule(static) if (n >= BP_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t end = (b + 1) * BLOCK < n ? (b + 1) * BLOCK : n;
        partial[b] = block(ctx, b * BLOCK, end);
    }
    double sum = 0.0;
    for (int64_t b = 0; b < blocks; b++) sum += partial[b];
    free(partial);
    return sum;
}
