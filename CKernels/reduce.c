// Parallel loops over fixed chunks and deterministic parallel sums (see internal.h).
#include "internal.h"

#include <string.h>

// Block sums are computed BATCH at a time into a stack array, in parallel, and added to the total
// in block order: no allocation, and the same order as one pass over all blocks.
enum { BATCH = 512 };

double bp_blocked_sum(int64_t n, int64_t block_size, int64_t cost,
                      double (*block)(const void *ctx, int64_t begin, int64_t end), const void *ctx) {
    int64_t blocks = (n + block_size - 1) / block_size;
    if (blocks <= 1) return n > 0 ? block(ctx, 0, n) : 0.0;
    double sum = 0.0, partial[BATCH];
    for (int64_t first = 0; first < blocks; first += BATCH) {
        int64_t count = blocks - first < BATCH ? blocks - first : BATCH;
#pragma omp parallel for schedule(static) if (n * cost >= BP_PARALLEL_MIN)
        for (int64_t b = 0; b < count; b++) {
            int64_t begin = (first + b) * block_size, end = begin + block_size < n ? begin + block_size : n;
            partial[b] = block(ctx, begin, end);
        }
        for (int64_t b = 0; b < count; b++) sum += partial[b];
    }
    return sum;
}

enum { CHUNK = 16384 };

void bp_parallel_chunks(int64_t n, int64_t cost, void (*chunk)(const void *ctx, int64_t begin, int64_t end),
                        const void *ctx) {
    int64_t chunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1 && n * cost >= BP_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) chunk(ctx, c * CHUNK, (c + 1) * CHUNK < n ? (c + 1) * CHUNK : n);
}

BP_MULTIVERSION
float bp_lane_sum(const float *x, int64_t n) { return bp_lane_sum_inline(x, n); }

// Four rows at a time: four independent chains of additions where one row's sum waits on each
// of its adds (conv_lenet1's bias gradient, 256-pixel runs: the weight gradient 0.93 -> 0.90 ms).
// Each row's lanes, tail and order are bp_lane_sum_inline's.
BP_MULTIVERSION
void bp_lane_sums(float *sums, const float *x, int64_t ld, int64_t rows, int64_t n) {
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        v8f lanes[4] = {{0}};
        for (int64_t i = 0; i + 8 <= n; i += 8)
            for (int q = 0; q < 4; q++) {
                v8f v;
                memcpy(&v, x + (r + q) * ld + i, sizeof v);
                lanes[q] += v;
            }
        for (int q = 0; q < 4; q++) {
            float row[8];
            memcpy(row, &lanes[q], sizeof row);
            sums[r + q] = bp_lane_sum_finish(row, x + (r + q) * ld, n);
        }
    }
    for (; r < rows; r++) sums[r] = bp_lane_sum_inline(x + r * ld, n);
}
