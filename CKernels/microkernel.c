// The register-blocked product behind the convolutions and the recurrent layers, for CPUs without
// AVX-512 (or with it, when asked): a 6 × 16 block of C from packed panels. microkernel_avx512.c
// has the 8 × 16 one; bp_micro_kernel picks.
//
//   C[i][j] (+)= Σ_t A[t][i] · B[t][j]    for i < 6, j < 16, t < kc
//
// A is packed as kc rows of 6 floats, B as kc rows of 16. Each step loads two 8-float vectors of
// B, broadcasts six floats of A and does 12 fused multiply-adds into 12 accumulators that stay in
// registers for the whole kc loop (AVX2: 12 of the 16 ymm registers); a block of at most 8
// columns (a row's or an image's last pixels) skips the second vector. Written with clang's
// portable vector types and multiversioned, so the same source is AVX-512, AVX2 + FMA or SSE
// code. The order of the sum over t is fixed: results do not depend on who calls it.
//
// Where a block's sum is added to C, C's lines are asked for before the product (both kernels), so
// that they arrive while it runs rather than stall its end. 1 thread, Zen 4, an LSTM's backward
// (32 rows of 64 steps, 256 → 256 units), medians: with this kernel the input gradient 13.5 →
// 11.5 ms and the weight gradient 23.5 → 22.6; with the AVX-512 one 10.5 → 10.3 and 20.7 → 20.2,
// the steps 11.9 → 11.7.
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum { MR = 6 };

// acc += A · B over kc steps for the first `mr` rows, with both 8-column halves of B or (halves =
// 1) the first only; row i of A at step t is rows[i][t · step], B's row t at b + t · ldb. Inlined
// with constants `mr`, `halves` and `step` (but for the columns form), so the loop has no test.
// Four steps per iteration, so that the loop's own instructions are a small part of a few hundred
// steps' work.
__attribute__((always_inline)) static inline void product(v8f acc[MR][2], int64_t kc, const float *const rows[MR],
                                                          int mr, int64_t step, const float *b, int64_t ldb,
                                                          int halves) {
#pragma clang loop unroll_count(4)
    for (int64_t t = 0; t < kc; t++) {
        const float *bt = b + t * ldb;
        v8f b0, b1 = {0};
        memcpy(&b0, bt, 32);
        if (halves == 2) memcpy(&b1, bt + 8, 32);
        for (int i = 0; i < mr; i++) {
            float v = rows[i][t * step];
            v8f ai = {v, v, v, v, v, v, v, v};
            acc[i][0] += ai * b0;
            if (halves == 2) acc[i][1] += ai * b1;
        }
    }
}

// The same for a block of `cols` columns: both halves of B, or the first alone when cols <= 8.
__attribute__((always_inline)) static inline void product_columns(v8f acc[MR][2], int64_t kc,
                                                                  const float *const rows[MR], int mr, int64_t step,
                                                                  const float *b, int64_t ldb, int64_t cols) {
    if (cols > 8) product(acc, kc, rows, mr, step, b, ldb, 2);
    else product(acc, kc, rows, mr, step, b, ldb, 1);
}

// C (+)= acc (+ bias), the first `rows` × `cols` of the block.
__attribute__((always_inline)) static inline void store(v8f acc[MR][2], float *c, int64_t ldc, int accumulate,
                                                        const float *bias, int64_t rows, int64_t cols) {
    // The stores are unrolled, so that every acc[i] is a register: indexed by a loop counter the
    // accumulators would get a stack home, and every call would spill them (costly when kc is 9).
    if (rows == MR && cols == BP_NR) {
#pragma clang loop unroll(full)
        for (int i = 0; i < MR; i++) {
            float *row = c + i * ldc;
            v8f lo = acc[i][0], hi = acc[i][1];
            if (accumulate) {
                v8f c0, c1;
                memcpy(&c0, row, 32), memcpy(&c1, row + 8, 32);
                lo = c0 + lo, hi = c1 + hi;
            }
            if (bias) lo += bias[i], hi += bias[i];
            memcpy(row, &lo, 32), memcpy(row + 8, &hi, 32);
        }
        return;
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < MR; i++) {
        if (i >= rows) break;
        float tile[BP_NR];
        v8f lo = acc[i][0], hi = acc[i][1];
        memcpy(tile, &lo, 32), memcpy(tile + 8, &hi, 32);
        for (int64_t j = 0; j < cols; j++) {
            float v = accumulate ? c[i * ldc + j] + tile[j] : tile[j];
            c[i * ldc + j] = bias ? v + bias[i] : v;
        }
    }
}

BP_MULTIVERSION
void bp_micro_6x16(int64_t kc, const float *a, const float *b, int64_t next, float *c, int64_t ldc, int accumulate,
                   const float *bias, int64_t rows, int64_t cols) {
    (void)next;  // one panel: cols ≤ 16
    v8f acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (v8f){0};
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);                  // C read after the product (see above)
    const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5};  // A packed: row i at a[t · 6 + i]
    // A matrix's last block of two rows or fewer (32 rows: five blocks and two) skips the other four.
    if (rows > 2) product_columns(acc, kc, lanes, MR, MR, b, BP_NR, cols);
    else product_columns(acc, kc, lanes, 2, MR, b, BP_NR, cols);
    store(acc, c, ldc, accumulate, bias, rows, cols);
}

BP_MULTIVERSION
void bp_micro_6x16_rows(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next, float *c,
                        int64_t ldc, int accumulate, int64_t rows, int64_t cols) {
    (void)next;
    v8f acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (v8f){0};
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);  // C read after the product (see above)
    const float *lanes[MR];  // rows past `rows` read the last row again, and are not stored
    for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1) * lda;
    // Four rows or fewer (the last rows of a batch) skip the work of the other two.
    if (rows > 4) product_columns(acc, kc, lanes, MR, 1, b, ldb, cols);
    else product_columns(acc, kc, lanes, 4, 1, b, ldb, cols);
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}

BP_MULTIVERSION
void bp_micro_6x16_columns(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next, float *c,
                           int64_t ldc, int accumulate, int64_t rows, int64_t cols) {
    (void)next;
    v8f acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = (v8f){0};
    if (accumulate) bp_prefetch_block(c, ldc, rows, cols);  // C read after the product (see above)
    if (rows == MR) {  // column i at a + i: one base register for the six broadcasts
        const float *const lanes[MR] = {a, a + 1, a + 2, a + 3, a + 4, a + 5};
        product_columns(acc, kc, lanes, MR, lda, b, ldb, cols);
    } else {
        const float *lanes[MR];  // columns past `rows` read the last column again, and are not stored
        for (int i = 0; i < MR; i++) lanes[i] = a + (i < rows ? i : rows - 1);
        // A short group (the last of a column gradient's rows: conv_lenet1's 25 taps are four
        // groups of 6 and one of 1) skips the work of the rows it does not store (its backward-data
        // with this kernel forced on Zen 4, 1 thread: 1.19 -> 1.09 ms).
        if (rows == 1) product_columns(acc, kc, lanes, 1, lda, b, ldb, cols);
        else if (rows <= 3) product_columns(acc, kc, lanes, 3, lda, b, ldb, cols);
        else product_columns(acc, kc, lanes, MR, lda, b, ldb, cols);
    }
    store(acc, c, ldc, accumulate, NULL, rows, cols);
}

// The product kernels asked for: -1 until BACKPROP_AVX2 is read, then 1 when the AVX2 one is forced.
static int avx2_forced = -1;

void bp_product_force_avx2(int force) { __atomic_store_n(&avx2_forced, force != 0, __ATOMIC_RELAXED); }

bp_micro bp_micro_kernel(void) {
#if BP_AVX512_KERNEL
    int has_avx512 = bp_cpu_vector_level() >= 2;
    int forced = __atomic_load_n(&avx2_forced, __ATOMIC_RELAXED);
    if (forced < 0) {
        const char *value = getenv("BACKPROP_AVX2");
        int expected = -1;
        forced = value && strcmp(value, "1") == 0;
        if (!__atomic_compare_exchange_n(&avx2_forced, &expected, forced, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            forced = expected;  // set meanwhile by bp_product_force_avx2
    }
    if (has_avx512 && !forced)
        return (bp_micro){8, 32, bp_micro_8x32, bp_micro_8x32_rows, bp_micro_8x32_columns, bp_micro_16x16_rows, 1, 4};
#endif
    return (bp_micro){MR, BP_NR, bp_micro_6x16, bp_micro_6x16_rows, bp_micro_6x16_columns, NULL, 0, 4};
}

int bp_product_vector_width(void) { return bp_micro_kernel().avx512 ? 16 : 8; }
