// The register-blocked product for CPUs with AVX-512: an 8 × 16 block of C from packed panels,
//
//   C[i][j] (+)= Σ_t A[t][i] · B[t][j]    for i < 8, j < 16, t < kc
//
// A packed as kc rows of 8 floats, B as kc rows of 16 (the panels of microkernel.c's 6 × 16
// kernel, with 8-row panels of A). Each step loads B's row into one 16-float register and does 8
// fused multiply-adds, each broadcasting one float of A from memory, into 8 accumulators. Each
// element is the sum microkernel.c computes (terms in order of t from 0, one fused multiply-add
// each, then + C, then + bias), so the two kernels give the same bits; this one does twice the
// work per instruction, and its 8 rows divide the usual channel counts.
//
// The functions are compiled for x86-64-v4 only, with 512-bit vectors (clang keeps to 256 bits
// otherwise), and called only where the CPU has AVX-512 (bp_micro_kernel).
#include "internal.h"

#if BP_AVX512_KERNEL
#include <string.h>

enum { MR = 8 };

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))

// acc += A · B over kc steps for the first `mr` rows; row i of A at step t is rows[i][t · step],
// B's row t at b + t · ldb. Inlined with constants `mr` and `step` (but for the columns form),
// so the loop has no test.
AVX512 __attribute__((always_inline)) static inline void product(v16f acc[MR], int64_t kc, const float *const rows[MR],
                                                                 int mr, int64_t step, const float *b, int64_t ldb) {
#pragma clang loop unroll_count(4)
    for (int64_t t = 0; t < kc; t++) {
        v16f bt;
        memcpy(&bt, b + t * ldb, 64);
        for (int i = 0; i < mr; i++) {
            float v = rows[i][t * step];
            acc[i] += (v16f){v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v} * bt;
        }
    }
}

// C (+)= acc (+ bias), the first `rows` × `cols` of the block.
AVX512 __attribute__((always_inline)) static inline void store(v16f acc[MR], float *c, int64_t ldc, int accumulate,
                                                               const float *bias, int64_t rows, int64_t cols) {
    // Unrolled, so that every acc[i] stays a register (see microkernel.c).
    if (rows == MR && cols == BP_NR) {
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            v16f v = acc[i];
            if (accumulate) {
                v16f old;
                memcpy(&old, c + i * ldc, 64);
                v = old + v;
            }
            if (bias) v += bias[i];
            memcpy(c + i * ldc, &v, 64);
        }
        return;
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if (i >= rows) break;
        float tile[BP_NR];
        memcpy(tile, &acc[i], 64);
        for (int64_t j = 0; j < cols; j++) {
            float v = accumulate ? c[i * ldc + j] + tile[j] : tile[j];
            c[i * ldc + j] = bias ? v + bias[i] : v;
        }
    }
}

AVX512 void bp_micro_8x16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int accumulate,
                          const float *bias, int64_t rows, int64_t cols) {
    v16f acc[MR] = {{0}};
    const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7};  // row i at a[t · 8 + i]
    product(acc, kc, lanes, MR, MR, b, BP_NR);
    store(acc, c, ldc, accumulate, bias, rows, cols);
}

AVX512 void bp_micro_8x16_rows(int64_t kc, const float *a, int64_t lda, const float *b, float *c, int64_t ldc,
                               int accumulate, int64_t rows, int64_t cols) {
    v16f acc[MR] = {{0}};
    const float *lanes[MR];  // rows past `rows` read the last row again, and are not stored
    for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1) * lda;
    // Four rows or fewer (the last rows of a batch) skip the work of the other four.
    if (rows > 4) product(acc, kc, lanes, MR, 1, b, BP_NR);
    else product(acc, kc, lanes, 4, 1, b, BP_NR);
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}

AVX512 void bp_micro_8x16_columns(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                                  int64_t ldc, int accumulate, int64_t rows, int64_t cols) {
    v16f acc[MR] = {{0}};
    if (rows == MR) {  // column i at a + i: one base register for the eight broadcasts
        const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7};
        product(acc, kc, lanes, MR, lda, b, ldb);
    } else {
        const float *lanes[MR];  // columns past `rows` read the last column again, and are not stored
        for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1);
        product(acc, kc, lanes, MR, lda, b, ldb);
    }
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}
#endif
