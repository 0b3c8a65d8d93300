// The register-blocked product for CPUs with AVX-512: an 8 × 32 block of C from packed panels,
//
//   C[i][j] (+)= Σ_t A[t][i] · B[t][j]    for i < 8, j < 32, t < kc
//
// A packed as kc rows of 8 floats; B's columns as two panels of kc rows of 16 (microkernel.c's
// panels), the second `next` floats after the first. Each step loads B's two rows into two
// 16-float registers and does 16 fused multiply-adds, each broadcasting one float of A from
// memory, into 16 accumulators: two FMA units, each with four cycles of latency, need eight
// independent sums in flight, and ten loads per 16 multiply-adds leave the load ports room
// (one panel, 8 × 16, is nine loads per eight). A block of 16 columns or fewer skips the second
// panel; one of 8 or fewer runs in 8-float registers (see product_panels). Each element is the
// sum microkernel.c computes (terms in order of t from 0, one fused multiply-add each, then + C,
// then + bias), so the two kernels give the same bits.
//
// bp_micro_16x16_rows is the kernel for 16 rows of A read in place and one panel of B: the same 16
// accumulators, one load of B and 16 broadcasts per step. It reads each panel once per 16 rows
// rather than per 8: half the traffic of B from wherever it comes from, at a steady pace.
//
// The functions are compiled for x86-64-v4 only, with 512-bit vectors (clang keeps to 256 bits
// otherwise), and called only where the CPU has AVX-512 (bp_micro_kernel).
#include "internal.h"

#if BP_AVX512_KERNEL
#include <string.h>

enum { MR = 8, NR2 = 2 * BP_NR };

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))

// acc += A · B over kc steps for the first `mr` rows and `panels` (1 or 2) panels of B; row i of A
// at step t is rows[i][t · step], panel p's row t at b + p · next + t · ldb. Inlined with constants
// `mr`, `panels` and `step` (but for the columns form), so the loop has no test.
AVX512 __attribute__((always_inline)) static inline void product(v16f acc[MR][2], int64_t kc,
                                                                 const float *const rows[MR], int mr, int64_t step,
                                                                 const float *b, int64_t ldb, int64_t next,
                                                                 int panels) {
#pragma clang loop unroll_count(4)
    for (int64_t t = 0; t < kc; t++) {
        v16f b0, b1 = {0};
        memcpy(&b0, b + t * ldb, 64);
        if (panels == 2) memcpy(&b1, b + next + t * ldb, 64);
        for (int i = 0; i < mr; i++) {
            float v = rows[i][t * step];
            v16f ai = {v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v};
            acc[i][0] += ai * b0;
            if (panels == 2) acc[i][1] += ai * b1;
        }
    }
}

// The same for the first 8 columns of one panel, in 8-float vectors, into acc[i][0]'s first half.
AVX512 __attribute__((always_inline)) static inline void product_half(v16f acc[MR][2], int64_t kc,
                                                                      const float *const rows[MR], int mr, int64_t step,
                                                                      const float *b, int64_t ldb) {
    v8f sums[MR] = {{0}};
#pragma clang loop unroll_count(4)
    for (int64_t t = 0; t < kc; t++) {
        v8f b0;
        memcpy(&b0, b + t * ldb, 32);
        for (int i = 0; i < mr; i++) {
            float v = rows[i][t * step];
            v8f ai = {v, v, v, v, v, v, v, v};
            sums[i] += ai * b0;
        }
    }
    for (int i = 0; i < mr; i++)
        acc[i][0] = __builtin_shufflevector(sums[i], (v8f){0}, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

// The product of the first `mr` rows (constant when inlined) with one or both panels, or with 8
// columns or fewer in 8-float vectors: 512-bit operations go through 256-bit units in two passes on
// some CPUs (Zen 4), where this halves the multiply-adds' work of a block's last few columns (a
// 14 × 14 image's last 4 pixels: conv_1x1, 1 thread, Zen 4, medians of the fastest of interleaved
// runs, forward 4.24 -> 4.16 ms, backward-data 3.91 -> 3.78).
AVX512 __attribute__((always_inline)) static inline void product_panels(v16f acc[MR][2], int64_t kc,
                                                                        const float *const rows[MR], int mr,
                                                                        int64_t step, const float *b, int64_t ldb,
                                                                        int64_t next, int64_t cols) {
    if (cols > BP_NR) product(acc, kc, rows, mr, step, b, ldb, next, 2);
    else if (cols > 8) product(acc, kc, rows, mr, step, b, ldb, next, 1);
    else product_half(acc, kc, rows, mr, step, b, ldb);
}

// C (+)= acc (+ bias), the first `rows` × `cols` of the block.
AVX512 __attribute__((always_inline)) static inline void store(v16f acc[MR][2], float *c, int64_t ldc, int accumulate,
                                                               const float *bias, int64_t rows, int64_t cols) {
    // Unrolled, so that every acc[i] stays a register (see microkernel.c).
    if (rows == MR && (cols == BP_NR || cols == NR2)) {
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++)
#pragma clang loop unroll(full)
            for (int p = 0; p < 2; p++) {
                if (p * BP_NR >= cols) break;
                v16f v = acc[i][p];
                if (accumulate) {
                    v16f old;
                    memcpy(&old, c + i * ldc + p * BP_NR, 64);
                    v = old + v;
                }
                if (bias) v += bias[i];
                memcpy(c + i * ldc + p * BP_NR, &v, 64);
            }
        return;
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if (i >= rows) break;
        float tile[NR2];
        memcpy(tile, &acc[i][0], 64), memcpy(tile + BP_NR, &acc[i][1], 64);
        for (int64_t j = 0; j < cols; j++) {
            float v = accumulate ? c[i * ldc + j] + tile[j] : tile[j];
            c[i * ldc + j] = bias ? v + bias[i] : v;
        }
    }
}

AVX512 void bp_micro_8x32(int64_t kc, const float *a, const float *b, int64_t next, float *c, int64_t ldc,
                          int accumulate, const float *bias, int64_t rows, int64_t cols) {
    v16f acc[MR][2] = {{{0}}};
    const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7};  // row i at a[t · 8 + i]
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);  // C read after the product (microkernel.c)
    product_panels(acc, kc, lanes, MR, MR, b, BP_NR, next, cols);
    store(acc, c, ldc, accumulate, bias, rows, cols);
}

AVX512 void bp_micro_8x32_rows(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next,
                               float *c, int64_t ldc, int accumulate, int64_t rows, int64_t cols) {
    v16f acc[MR][2] = {{{0}}};
    const float *lanes[MR];  // rows past `rows` read the last row again, and are not stored
    for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1) * lda;
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);  // C read after the product (microkernel.c)
    // Four rows or fewer (the last rows of a batch) skip the work of the other four.
    if (rows > 4) product_panels(acc, kc, lanes, MR, 1, b, ldb, next, cols);
    else product_panels(acc, kc, lanes, 4, 1, b, ldb, next, cols);
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}

AVX512 void bp_micro_8x32_columns(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next,
                                  float *c, int64_t ldc, int accumulate, int64_t rows, int64_t cols) {
    v16f acc[MR][2] = {{{0}}};
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);  // C read after the product (microkernel.c)
    if (rows == MR) {  // column i at a + i: one base register for the eight broadcasts
        const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5, a + 6, a + 7};
        product_panels(acc, kc, lanes, MR, lda, b, ldb, next, cols);
    } else {
        const float *lanes[MR];  // columns past `rows` read the last column again, and are not stored
        for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1);
        // A short group (the last of a column gradient's rows: conv_lenet1's 25 taps are three
        // groups of 8 and one of 1) skips the work of the rows it does not store (its backward-data,
        // 1 thread, Zen 4: 1.17 -> 1.00 ms; conv_stem7x7's 147 rows, 41.1 -> 40.2 ms).
        if (rows == 1) product_panels(acc, kc, lanes, 1, lda, b, ldb, next, cols);
        else if (rows <= 4) product_panels(acc, kc, lanes, 4, lda, b, ldb, next, cols);
        else product_panels(acc, kc, lanes, MR, lda, b, ldb, next, cols);
    }
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}
// B's rows asked for ahead of the one the step reads (4 KB for a packed panel; past its end the
// next panel in memory, the next one a recurrent step reads): where B comes from memory, its lines
// arrive in time. An LSTM's hidden products, 16 rows, 1024 → 1024 units (W_hh 16 MB), 32 steps, 1
// thread, Zen 4: 8 × 32 kernel 41-45 ms; 16 × 16 without asking 40-43, asking 16 rows ahead 38-42,
// 32: 38-39, 64: 37.8-38.0, 128: 37.8-38.2.
enum { AHEAD_ROWS = 64 };

AVX512 void bp_micro_16x16_rows(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                                int64_t ldc, int accumulate, int64_t cols) {
    v16f acc[16] = {{0}};
    if (accumulate) bp_prefetch_block(c, ldc, 16, cols);  // C read after the product (microkernel.c)
#pragma clang loop unroll_count(2)
    for (int64_t t = 0; t < kc; t++) {
        v16f bt;
        memcpy(&bt, b + t * ldb, 64);
        __builtin_prefetch(b + (t + AHEAD_ROWS) * ldb);
#pragma clang loop unroll(full)
        for (int i = 0; i < 16; i++) {
            float v = a[i * lda + t];
            acc[i] += (v16f){v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v} * bt;
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < 16; i++) {
        float *ci = c + i * ldc, row[BP_NR];
        if (cols == BP_NR) {
            v16f old = {0};
            if (accumulate) memcpy(&old, ci, 64);
            acc[i] = accumulate ? old + acc[i] : acc[i];
            memcpy(ci, &acc[i], 64);
            continue;
        }
        memcpy(row, &acc[i], 64);
        for (int64_t j = 0; j < cols; j++) ci[j] = accumulate ? ci[j] + row[j] : row[j];
    }
}
#endif
