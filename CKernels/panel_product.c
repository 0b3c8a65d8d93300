// Products of a matrix packed once with narrow matrices, for the recurrent layers' step products:
// C [rows, n] = A [rows, depth] · Xᵀ with X [n, depth] a few rows (a batch's states). A is packed
// once per forward or backward into the panels bp_micro_6x16 reads; each product packs only X.
// OpenBLAS would pack A again at every step, which for a batch of 16 costs more than the product.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum { DEPTH_BLOCK = 256 };  // reduction steps per micro-kernel call: a 16-column panel of X stays in L1

static int64_t blocks_of(int64_t depth) { return (depth + DEPTH_BLOCK - 1) / DEPTH_BLOCK; }
static int64_t panels_of(int64_t rows) { return (rows + BP_MR - 1) / BP_MR; }

int64_t bp_pack(bp_packed *a, const float *m, int64_t ld, int64_t rows, int64_t depth, int transposed) {
    int64_t missing = 0, panels = panels_of(rows);
    *a = (bp_packed){bp_malloc(panels * BP_MR * depth, sizeof(float), &missing), rows, depth};
    if (!a->panels) return missing;
    // Block d, panel p: depth steps [d · DEPTH_BLOCK, …) of rows [p · MR, …), MR floats a step.
    for (int64_t d = 0; d < blocks_of(depth); d++) {
        int64_t t0 = d * DEPTH_BLOCK, kc = depth - t0 < DEPTH_BLOCK ? depth - t0 : DEPTH_BLOCK;
        for (int64_t p = 0; p < panels; p++) {
            float *dst = a->panels + t0 * panels * BP_MR + p * kc * BP_MR;
            for (int64_t t = 0; t < kc; t++)
                for (int64_t i = 0; i < BP_MR; i++) {
                    int64_t row = p * BP_MR + i;
                    dst[t * BP_MR + i] = row >= rows  ? 0.0f
                                         : transposed ? m[(t0 + t) * ld + row]
                                                      : m[row * ld + t0 + t];
                }
        }
    }
    return 0;
}

void bp_packed_free(bp_packed *a) {
    free(a->panels);
    *a = (bp_packed){0};
}

int64_t bp_packed_x_floats(int64_t n, int64_t depth) { return (n + BP_NR - 1) / BP_NR * BP_NR * depth + BP_NR; }

void bp_packed_times_rows(float *c, int64_t ldc, const bp_packed *a, const float *x, int64_t ldx, int64_t n, float *b) {
    int64_t groups = (n + BP_NR - 1) / BP_NR, panels = panels_of(a->rows), depth = a->depth;
    // X packed into b as 16-column panels: block d, group q: depth steps of columns [q · NR, …), NR
    // floats a step.
    for (int64_t d = 0; d < blocks_of(depth); d++) {
        int64_t t0 = d * DEPTH_BLOCK, kc = depth - t0 < DEPTH_BLOCK ? depth - t0 : DEPTH_BLOCK;
        for (int64_t q = 0; q < groups; q++) {
            float *dst = b + t0 * groups * BP_NR + q * kc * BP_NR;
            for (int64_t j = 0; j < BP_NR; j++) {
                int64_t column = q * BP_NR + j;
                const float *src = x + column * ldx + t0;
                for (int64_t t = 0; t < kc; t++) dst[t * BP_NR + j] = column < n ? src[t] : 0.0f;
            }
        }
    }
#pragma omp parallel for schedule(static) if (a->rows * n * depth >= BP_PARALLEL_MIN)
    for (int64_t p = 0; p < panels; p++) {
        int64_t rows = a->rows - p * BP_MR < BP_MR ? a->rows - p * BP_MR : BP_MR;
        for (int64_t q = 0; q < groups; q++) {
            int64_t cols = n - q * BP_NR < BP_NR ? n - q * BP_NR : BP_NR;
            for (int64_t d = 0; d < blocks_of(depth); d++) {
                int64_t t0 = d * DEPTH_BLOCK, kc = depth - t0 < DEPTH_BLOCK ? depth - t0 : DEPTH_BLOCK;
                bp_micro_6x16(kc, a->panels + t0 * panels * BP_MR + p * kc * BP_MR,
                              b + t0 * groups * BP_NR + q * kc * BP_NR, c + p * BP_MR * ldc + q * BP_NR, ldc, d > 0,
                              NULL, rows, cols);
            }
        }
    }
}
