// bfloat16: rounding from float32, and the product of matrices rounded to bfloat16 with float32
// sums, by the AVX512_BF16 dot-product instruction where the CPU has it and by an exact float32
// emulation of that instruction elsewhere (see CKernels.h for the arithmetic both follow).
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

// MARK: - Conversion

// Round to nearest, ties to even, on the bits: add 0x7fff plus the lowest kept bit, keep the top
// half (a carry into the exponent is the correct rounding up, infinity included). NaN: 0xffff.
__attribute__((always_inline)) static inline uint16_t round_bits(uint32_t u) {
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffff;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

BP_MULTIVERSION
void bp_bf16_from_float(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16u u;
        memcpy(&u, x + i, 64);
        v16u rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        v16u nan = (v16u)((u & 0x7fffffffu) > 0x7f800000u);  // all ones where NaN
        v16h h = __builtin_convertvector((rounded & ~nan) | (nan & 0xffffu), v16h);
        memcpy(y + i, &h, 32);
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        y[i] = round_bits(u);
    }
}

BP_MULTIVERSION
void bp_bf16_to_float(float *y, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(y + i, &u, 4);
    }
}

// MARK: - The product's packing

// A bfloat16 as the product reads it: rounded, and a denormal (exponent bits 0) flushed to a zero
// of its sign, as the instruction treats its inputs.
static inline uint32_t packed_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t h = round_bits(u);
    return (h & 0x7f80u) == 0 ? (h & 0x8000u) : h;
}

enum { PAIR_COLUMNS = 32, TILE_ROWS = 12 };

typedef struct {
    int trans_a, trans_b;
    int64_t m, n, k, pairs, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    uint32_t *packed_a;  // [m][pairs]: (A[i][2p], A[i][2p + 1]) in the low and high halves
    uint32_t *packed_b;  // [n / 32 panels][pairs][32]: (B[2p][j], B[2p + 1][j]) likewise
    int accumulate, emulate;
} bf16_product;

static float element_a(const bf16_product *p, int64_t i, int64_t t) {
    return t >= p->k ? 0.0f : p->trans_a ? p->a[t * p->lda + i] : p->a[i * p->lda + t];
}

static float element_b(const bf16_product *p, int64_t t, int64_t j) {
    return t >= p->k || j >= p->n ? 0.0f : p->trans_b ? p->b[j * p->ldb + t] : p->b[t * p->ldb + j];
}

static void pack_a_rows(const void *context, int64_t begin, int64_t end) {
    const bf16_product *p = context;
    for (int64_t i = begin; i < end; i++)
        for (int64_t q = 0; q < p->pairs; q++)
            p->packed_a[i * p->pairs + q] =
                packed_bits(element_a(p, i, 2 * q)) | packed_bits(element_a(p, i, 2 * q + 1)) << 16;
}

static void pack_b_pairs(const void *context, int64_t begin, int64_t end) {
    const bf16_product *p = context;
    for (int64_t index = begin; index < end; index++) {  // index = panel · pairs + q
        int64_t panel = index / p->pairs, q = index % p->pairs;
        uint32_t *out = p->packed_b + index * PAIR_COLUMNS;
        for (int64_t j = 0; j < PAIR_COLUMNS; j++) {
            int64_t column = panel * PAIR_COLUMNS + j;
            out[j] = packed_bits(element_b(p, 2 * q, column)) | packed_bits(element_b(p, 2 * q + 1, column)) << 16;
        }
    }
}

// MARK: - The tiles: C rows [row, row + rows) × columns of one panel

// A float whose bits are below the smallest normal's becomes a zero of its sign (the instruction's
// treatment of its accumulator and of each result).
// (Vectors go by pointer: by value they would change the baseline build's calling convention.)
__attribute__((always_inline)) static inline void flush(v16f *x) {
    v16u u = (v16u)*x;
    v16u tiny = (v16u)((u & 0x7fffffffu) < 0x00800000u);
    *x = (v16f)(u & ~(tiny & 0x7fffffffu));
}

// The start of a tile's accumulators: 0, or C (flushed) when accumulating.
static void load_tile(v16f acc[2], const float *c, int64_t columns, int accumulate) {
    float row[PAIR_COLUMNS] = {0};
    if (accumulate) memcpy(row, c, (size_t)columns * sizeof(float));
    memcpy(&acc[0], row, 64), memcpy(&acc[1], row + 16, 64);
    flush(&acc[0]), flush(&acc[1]);
}

static void store_tile(float *c, const v16f acc[2], int64_t columns) {
    float row[PAIR_COLUMNS];
    memcpy(row, &acc[0], 64), memcpy(row + 16, &acc[1], 64);
    memcpy(c, row, (size_t)columns * sizeof(float));
}

// The emulation, a row at a time: for each pair, acc = flush(fma(a_odd, b_odd, acc)) then
// flush(fma(a_even, b_even, acc)): the product of two bfloat16 values is exact in float, so the
// fused multiply-add rounds once, as the instruction does.
BP_MULTIVERSION
static void tile_emulated(const bf16_product *p, int64_t row, int64_t rows, int64_t panel) {
    const uint32_t *b = p->packed_b + panel * p->pairs * PAIR_COLUMNS;
    int64_t columns = p->n - panel * PAIR_COLUMNS < PAIR_COLUMNS ? p->n - panel * PAIR_COLUMNS : PAIR_COLUMNS;
    for (int64_t i = row; i < row + rows; i++) {
        const uint32_t *a = p->packed_a + i * p->pairs;
        float *c = p->c + i * p->ldc + panel * PAIR_COLUMNS;
        v16f acc[2];
        load_tile(acc, c, columns, p->accumulate);
        for (int64_t q = 0; q < p->pairs; q++) {
            uint32_t pair = a[q];
            uint32_t even_bits = pair << 16, odd_bits = pair & 0xffff0000u;
            float even, odd;
            memcpy(&even, &even_bits, 4), memcpy(&odd, &odd_bits, 4);
            for (int h = 0; h < 2; h++) {
                v16u bu;
                memcpy(&bu, b + q * PAIR_COLUMNS + 16 * h, 64);
                v16f b_even = (v16f)(bu << 16), b_odd = (v16f)(bu & 0xffff0000u);
                acc[h] = __builtin_elementwise_fma((v16f){} + odd, b_odd, acc[h]);
                flush(&acc[h]);
                acc[h] = __builtin_elementwise_fma((v16f){} + even, b_even, acc[h]);
                flush(&acc[h]);
            }
        }
        store_tile(c, acc, columns);
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

// The instruction: 12 rows × 32 columns in 24 accumulators; each step broadcasts a row's pair of
// A and takes two vectors of 16 columns' pairs of B. Rows past `rows` repeat the last and are not stored.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
tile_instruction(const bf16_product *p, int64_t row, int64_t rows, int64_t panel) {
    const uint32_t *b = p->packed_b + panel * p->pairs * PAIR_COLUMNS;
    int64_t columns = p->n - panel * PAIR_COLUMNS < PAIR_COLUMNS ? p->n - panel * PAIR_COLUMNS : PAIR_COLUMNS;
    const uint32_t *a[TILE_ROWS];
    __m512 acc[TILE_ROWS][2];
    for (int i = 0; i < TILE_ROWS; i++) {
        a[i] = p->packed_a + (row + (i < rows ? i : rows - 1)) * p->pairs;
        v16f start[2] = {{0}, {0}};
        if (i < rows) load_tile(start, p->c + (row + i) * p->ldc + panel * PAIR_COLUMNS, columns, p->accumulate);
        memcpy(&acc[i][0], &start[0], 64), memcpy(&acc[i][1], &start[1], 64);
    }
    for (int64_t q = 0; q < p->pairs; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * PAIR_COLUMNS);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + q * PAIR_COLUMNS + 16);
#pragma clang loop unroll(full)
        for (int i = 0; i < TILE_ROWS; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i][q]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < TILE_ROWS; i++) {
        if (i >= rows) break;
        v16f out[2];
        memcpy(&out[0], &acc[i][0], 64), memcpy(&out[1], &acc[i][1], 64);
        store_tile(p->c + (row + i) * p->ldc + panel * PAIR_COLUMNS, out, columns);
    }
}

int bp_bf16_has_instruction(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && bp_cpu_vector_level() >= 2;
}
#else
static void tile_instruction(const bf16_product *p, int64_t row, int64_t rows, int64_t panel) {
    tile_emulated(p, row, rows, panel);
}

int bp_bf16_has_instruction(void) { return 0; }
#endif

static void product_tiles(const void *context, int64_t begin, int64_t end) {
    const bf16_product *p = context;
    int64_t row_tiles = (p->m + TILE_ROWS - 1) / TILE_ROWS;
    for (int64_t tile = begin; tile < end; tile++) {  // panel-major: a panel of B stays in cache
        int64_t panel = tile / row_tiles, row = (tile % row_tiles) * TILE_ROWS;
        int64_t rows = p->m - row < TILE_ROWS ? p->m - row : TILE_ROWS;
        if (p->emulate) tile_emulated(p, row, rows, panel);
        else tile_instruction(p, row, rows, panel);
    }
}

int64_t bp_bf16_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                     const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate, int emulate) {
    if (m <= 0 || n <= 0) return 0;
    int64_t pairs = (k + 1) / 2, panels = (n + PAIR_COLUMNS - 1) / PAIR_COLUMNS, missing = 0;
    bf16_product p = {trans_a, trans_b, m, n, k,    pairs, lda,        ldb,
                      ldc,     a,       b, c, NULL, NULL,  accumulate, emulate || !bp_bf16_has_instruction()};
    if (pairs == 0) {  // k = 0: C = 0 or C
        for (int64_t i = 0; i < m && !accumulate; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return 0;
    }
    p.packed_a = bp_malloc(m * pairs, sizeof(uint32_t), &missing);
    p.packed_b = bp_malloc(panels * pairs * PAIR_COLUMNS, sizeof(uint32_t), &missing);
    if (missing) return free(p.packed_a), free(p.packed_b), missing;
    bp_parallel_chunks(m, pairs * 8, pack_a_rows, &p);
    bp_parallel_chunks(panels * pairs, PAIR_COLUMNS * 8, pack_b_pairs, &p);
    int64_t tiles = panels * ((m + TILE_ROWS - 1) / TILE_ROWS);
#pragma omp parallel for schedule(static) if (m * n * k >= BP_PARALLEL_MIN)
    for (int64_t tile = 0; tile < tiles; tile++) product_tiles(&p, tile, tile + 1);
    free(p.packed_a);
    free(p.packed_b);
    return 0;
}
