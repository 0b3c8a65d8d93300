// bfloat16: rounding from float32, and the product of matrices rounded to bfloat16 with float32
// sums, by the AVX512_BF16 dot-product instruction where the CPU has it and by an exact float32
// emulation of that instruction elsewhere (see CKernels.h for the arithmetic both follow).
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

// MARK: - Conversion

// 16 floats' bits rounded to bfloat16 in place (into the low halves): to nearest, ties to even,
// by adding 0x7fff plus the lowest kept bit and keeping the top half (a carry into the exponent is
// the correct rounding up, infinity included); NaN becomes 0xffff. (Vectors go by pointer: by
// value they would change the baseline build's calling convention.)
__attribute__((always_inline)) static inline void round_bits(v16u *u) {
    v16u rounded = (*u + 0x7fffu + ((*u >> 16) & 1u)) >> 16;
    v16u nan = (v16u)((*u & 0x7fffffffu) > 0x7f800000u);  // all ones where NaN
    *u = (rounded & ~nan) | (nan & 0xffffu);
}

// y[l] = the bfloat16 of x[l], for `count` (at most 16) floats; with `flush`, a denormal result
// (exponent bits 0) becomes a zero of its sign, as the dot-product instruction reads its inputs.
__attribute__((always_inline)) static inline void round_16(uint16_t *y, const float *x, int64_t count, int flush) {
    float chunk[16] = {0};
    v16u u;
    if (count == 16) memcpy(&u, x, 64);
    else memcpy(chunk, x, (size_t)count * sizeof(float)), memcpy(&u, chunk, 64);
    round_bits(&u);
    if (flush) u &= ~((v16u)((u & 0x7f80u) == 0) & 0x7fffu);
    v16h h = __builtin_convertvector(u, v16h);
    if (count == 16) memcpy(y, &h, 32);
    else {
        uint16_t out[16];
        memcpy(out, &h, 32), memcpy(y, out, (size_t)count * sizeof(uint16_t));
    }
}

typedef struct {
    void *y;
    const void *x;
} conversion;

BP_MULTIVERSION
static void from_float_chunk(const void *context, int64_t begin, int64_t end) {
    const conversion *c = context;
    uint16_t *y = c->y;
    const float *x = c->x;
    for (int64_t i = begin; i < end; i += 16) round_16(y + i, x + i, end - i < 16 ? end - i : 16, 0);
}

BP_MULTIVERSION
static void to_float_chunk(const void *context, int64_t begin, int64_t end) {
    const conversion *c = context;
    float *y = c->y;
    const uint16_t *x = c->x;
    for (int64_t i = begin; i < end; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(y + i, &u, 4);
    }
}

void bp_bf16_from_float(uint16_t *y, const float *x, int64_t n) {
    bp_parallel_chunks(n, 1, from_float_chunk, &(conversion){y, x});
}

void bp_bf16_to_float(float *y, const uint16_t *x, int64_t n) {
    bp_parallel_chunks(n, 1, to_float_chunk, &(conversion){y, x});
}

// MARK: - The product's packing

// y[l] = x[l · stride] rounded and flushed as the product reads them, for l < count (at most 16),
// zeros after, to 16.
__attribute__((always_inline)) static inline void round_chunk(uint16_t y[16], const float *x, int64_t count,
                                                              int64_t stride) {
    if (stride == 1 && count == 16) {
        round_16(y, x, 16, 1);
        return;
    }
    float chunk[16] = {0};
    for (int64_t l = 0; l < count; l++) chunk[l] = x[l * stride];
    round_16(y, chunk, 16, 1);
}

enum { PAIR_COLUMNS = BP_BF16_COLUMNS, TILE_ROWS = BP_BF16_ROWS };

BP_MULTIVERSION
void bp_bf16_round_flushed(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) round_chunk(y + i, x + i, 16, 1);
    if (i == n) return;
    uint16_t tail[16];
    round_chunk(tail, x + i, n - i, 1);
    memcpy(y + i, tail, (size_t)(n - i) * sizeof(uint16_t));
}

BP_MULTIVERSION
void bp_bf16_pack_pairs(uint32_t *out, const float *x, int64_t k, int64_t step) {
    int64_t pairs = (k + 1) / 2;
    for (int64_t q = 0; q < pairs; q += 8) {
        uint16_t chunk[16];
        int64_t t = 2 * q, count = k - t < 16 ? k - t : 16;
        round_chunk(chunk, x + t * step, count, step);
        memcpy(out + q, chunk, (size_t)(pairs - q < 8 ? pairs - q : 8) * 4);
    }
}

BP_MULTIVERSION
void bp_bf16_pack_panel(uint32_t *out, const float *b, int64_t ldb, int64_t k, int64_t columns) {
    for (int64_t q = 0; q < (k + 1) / 2; q++)
        for (int64_t half = 0; half < PAIR_COLUMNS; half += 16) {
            uint16_t even[16] = {0}, odd[16] = {0};
            int64_t count = columns - half < 0 ? 0 : columns - half < 16 ? columns - half : 16;
            round_chunk(even, b + 2 * q * ldb + half, count, 1);
            if (2 * q + 1 < k) round_chunk(odd, b + (2 * q + 1) * ldb + half, count, 1);
            for (int64_t j = 0; j < 16; j++) out[q * PAIR_COLUMNS + half + j] = even[j] | (uint32_t)odd[j] << 16;
        }
}

// Eight columns at a time: each column's next 16 values rounded to 8 pairs, the 8 × 8 pairs
// transposed in registers (as floats' bits) into 8 rows of the panel.
BP_MULTIVERSION
void bp_bf16_pack_panel_columns(uint32_t *out, const float *b, int64_t ldb, int64_t k, int64_t columns) {
    int64_t pairs = (k + 1) / 2;
    for (int64_t j0 = 0; j0 < PAIR_COLUMNS; j0 += 8)
        for (int64_t q = 0; q < pairs; q += 8) {
            v8f x[8], rows[8];
            for (int64_t j = 0; j < 8; j++) {
                uint16_t chunk[16] = {0};
                int64_t t = 2 * q, count = k - t < 16 ? k - t : 16;
                if (j0 + j < columns) round_chunk(chunk, b + (j0 + j) * ldb + t, count, 1);
                memcpy(&x[j], chunk, 32);
            }
            bp_transpose_8x8(rows, x);
            for (int64_t r = 0; r < 8 && q + r < pairs; r++) memcpy(out + (q + r) * PAIR_COLUMNS + j0, &rows[r], 32);
        }
}

typedef struct {
    int trans_a, trans_b;
    int64_t m, n, k, pairs, lda, ldb, ldc;
    const float *a, *b;
    float *c;
    uint32_t *packed_a;  // [m][pairs]
    uint32_t *packed_b;  // [n / 32 panels][pairs][32]
    int accumulate, emulate;
} bf16_product;

// The number of C's columns in panel `panel` (32, or fewer in the last).
static int64_t panel_columns(const bf16_product *p, int64_t panel) {
    int64_t left = p->n - panel * PAIR_COLUMNS;
    return left < PAIR_COLUMNS ? left : PAIR_COLUMNS;
}

// `rows` (at most 16) rows of A from a's columns (row i of A is column i of a [k, lda]): a's rows
// read 16 values at a time and rounded, each 16 × 16 block turned into 16 rows of 8 pairs.
BP_MULTIVERSION
static void pack_a_columns(uint32_t *out, const float *a, int64_t lda, int64_t rows, int64_t k, int64_t pairs) {
    for (int64_t t = 0; t < k; t += 16) {
        uint16_t h[16][16] = {{0}};  // h[kk][i]: A(i, t + kk)
        for (int64_t kk = 0; kk < 16 && t + kk < k; kk++) round_chunk(h[kk], a + (t + kk) * lda, rows, 1);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t r = 0; r < 8 && t / 2 + r < pairs; r++)
                out[i * pairs + t / 2 + r] = h[2 * r][i] | (uint32_t)h[2 * r + 1][i] << 16;
    }
}

// A's rows [begin, end).
static void pack_a_rows(const bf16_product *p, int64_t begin, int64_t end) {
    if (p->trans_a)
        for (int64_t i = begin; i < end; i += 16)
            pack_a_columns(p->packed_a + i * p->pairs, p->a + i, p->lda, end - i < 16 ? end - i : 16, p->k, p->pairs);
    else
        for (int64_t i = begin; i < end; i++)
            bp_bf16_pack_pairs(p->packed_a + i * p->pairs, p->a + i * p->lda, p->k, 1);
}

// B's panel `panel`.
static void pack_b_panel(const bf16_product *p, int64_t panel) {
    uint32_t *out = p->packed_b + panel * p->pairs * PAIR_COLUMNS;
    int64_t first = panel * PAIR_COLUMNS, width = panel_columns(p, panel);
    if (p->trans_b) bp_bf16_pack_panel_columns(out, p->b + first * p->ldb, p->ldb, p->k, width);
    else bp_bf16_pack_panel(out, p->b + first, p->ldb, p->k, width);
}

// MARK: - The tiles: C rows [row, row + rows) × columns of one panel

// A float whose bits are below the smallest normal's becomes a zero of its sign (the instruction's
// treatment of its accumulator and of each result).
__attribute__((always_inline)) static inline void flush(v16f *x) {
    v16u u = (v16u)*x;
    v16u tiny = (v16u)((u & 0x7fffffffu) < 0x00800000u);
    *x = (v16f)(u & ~(tiny & 0x7fffffffu));
}

// A tile row's starting values: C's first `columns` (flushed, as the instruction reads its
// accumulator), zeros after.
static void load_start(float start[PAIR_COLUMNS], const float *c, int64_t columns) {
    memcpy(start, c, (size_t)columns * sizeof(float));
    v16f half[2];
    memcpy(&half[0], start, 64), memcpy(&half[1], start + 16, 64);
    flush(&half[0]), flush(&half[1]);
    memcpy(start, &half[0], 64), memcpy(start + 16, &half[1], 64);
}

// The emulation, a row at a time: for each pair, acc = flush(fma(a_odd, b_odd, acc)) then
// flush(fma(a_even, b_even, acc)): the product of two bfloat16 values is exact in float, so the
// fused multiply-add rounds once, as the instruction does.
BP_MULTIVERSION
static void tile_emulated(int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                          int accumulate, int64_t rows, int64_t columns) {
    for (int64_t i = 0; i < rows; i++) {
        float start[PAIR_COLUMNS] = {0};
        if (accumulate) load_start(start, c + i * ldc, columns);
        v16f acc[2];
        memcpy(&acc[0], start, 64), memcpy(&acc[1], start + 16, 64);
        for (int64_t q = 0; q < pairs; q++) {
            uint32_t pair = a[i * lda + q];
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
        float out[PAIR_COLUMNS];
        memcpy(out, &acc[0], 64), memcpy(out + 16, &acc[1], 64);
        memcpy(c + i * ldc, out, (size_t)columns * sizeof(float));
    }
}

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>

// x with the floats below 2^-126 in magnitude as zeros of their sign (flush, in registers).
__attribute__((target("avx512f"), always_inline)) static inline __m512 flushed_512(__m512 x) {
    __m512i bits = _mm512_castps_si512(x);
    __mmask16 tiny =
        _mm512_cmplt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x00800000));
    return _mm512_castsi512_ps(_mm512_mask_and_epi32(bits, tiny, bits, _mm512_set1_epi32((int)0x80000000u)));
}

// The instruction: `height` (a constant once inlined: 4, 8 or 12) rows × 16 · `vectors` (1 or 2)
// columns in height · vectors accumulators; each step broadcasts a row's pair of A and takes the
// vectors of 16 columns' pairs of B. Rows past `rows` repeat the last and are not stored.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) static inline void
tile_height(const int height, const int vectors, int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b,
            float *c, int64_t ldc, int accumulate, int64_t rows, int64_t columns) {
    const uint32_t *row[TILE_ROWS];
    __m512 acc[TILE_ROWS][2];
    // C's columns in the two halves: masked loads and stores touch no element past `columns`
    __mmask16 low = (__mmask16)(columns >= 16 ? 0xffff : (1u << columns) - 1);
    __mmask16 high = (__mmask16)(columns >= 32 ? 0xffff : columns <= 16 ? 0 : (1u << (columns - 16)) - 1);
    // Unrolled, with the accumulators touched only by intrinsics: indexed by a loop counter or
    // copied with memcpy they would get a stack home, stored on every step.
#pragma clang loop unroll(full)
    for (int i = 0; i < height; i++) {
        row[i] = a + (i < rows ? i : rows - 1) * lda;
        acc[i][0] = _mm512_setzero_ps(), acc[i][1] = _mm512_setzero_ps();
        if (i < rows && accumulate) {
            acc[i][0] = flushed_512(_mm512_maskz_loadu_ps(low, c + i * ldc));
            if (vectors == 2) acc[i][1] = flushed_512(_mm512_maskz_loadu_ps(high, c + i * ldc + 16));
        }
    }
    for (int64_t q = 0; q < pairs; q++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * PAIR_COLUMNS);
        __m512bh b1 = vectors == 2 ? (__m512bh)_mm512_loadu_si512(b + q * PAIR_COLUMNS + 16) : b0;
#pragma clang loop unroll(full)
        for (int i = 0; i < height; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)row[i][q]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            if (vectors == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
#pragma clang loop unroll(full)
    for (int i = 0; i < height; i++)
        if (i < rows) {
            _mm512_mask_storeu_ps(c + i * ldc, low, acc[i][0]);
            if (vectors == 2) _mm512_mask_storeu_ps(c + i * ldc + 16, high, acc[i][1]);
        }
}

// The smallest of the tiles of 4, 8 or 12 rows and 16 or 32 columns that covers rows × columns.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static void
tile_instruction(int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                 int accumulate, int64_t rows, int64_t columns) {
    if (columns <= 16) {
        if (rows > 8) tile_height(12, 1, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
        else if (rows > 4) tile_height(8, 1, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
        else tile_height(4, 1, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
    } else if (rows > 8) tile_height(12, 2, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
    else if (rows > 4) tile_height(8, 2, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
    else tile_height(4, 2, pairs, a, lda, b, c, ldc, accumulate, rows, columns);
}

// Asked once (cpuid is slow, under a hypervisor especially); the answer never changes.
int bp_bf16_has_instruction(void) {
    static _Atomic int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512bf16") && bp_cpu_vector_level() >= 2;
    }
    return known;
}
#else
static void tile_instruction(int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                             int accumulate, int64_t rows, int64_t columns) {
    tile_emulated(pairs, a, lda, b, c, ldc, accumulate, rows, columns);
}

int bp_bf16_has_instruction(void) { return 0; }
#endif

void bp_bf16_tile(int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                  int accumulate, int64_t rows, int64_t columns, int emulate) {
    if (emulate) tile_emulated(pairs, a, lda, b, c, ldc, accumulate, rows, columns);
    else tile_instruction(pairs, a, lda, b, c, ldc, accumulate, rows, columns);
}

int bp_bf16_emulating(int emulate) { return emulate || !bp_bf16_has_instruction(); }

// C's tile `tile`, panel-major (consecutive tiles share a panel of B, which stays in cache).
static void product_tile(const bf16_product *p, int64_t tile) {
    int64_t row_tiles = (p->m + TILE_ROWS - 1) / TILE_ROWS;
    int64_t panel = tile / row_tiles, row = (tile % row_tiles) * TILE_ROWS;
    int64_t rows = p->m - row < TILE_ROWS ? p->m - row : TILE_ROWS;
    bp_bf16_tile(p->pairs, p->packed_a + row * p->pairs, p->pairs, p->packed_b + panel * p->pairs * PAIR_COLUMNS,
                 p->c + row * p->ldc + panel * PAIR_COLUMNS, p->ldc, p->accumulate, rows, panel_columns(p, panel),
                 p->emulate);
}

int64_t bp_bf16_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                     const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate, int emulate) {
    if (m <= 0 || n <= 0) return 0;
    int64_t pairs = (k + 1) / 2, panels = (n + PAIR_COLUMNS - 1) / PAIR_COLUMNS, missing = 0;
    bf16_product p = {trans_a, trans_b, m, n, k,    pairs, lda,        ldb,
                      ldc,     a,       b, c, NULL, NULL,  accumulate, bp_bf16_emulating(emulate)};
    if (pairs == 0) {  // k = 0: C = 0 or C
        for (int64_t i = 0; i < m && !accumulate; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return 0;
    }
    p.packed_a = bp_malloc(m * pairs, sizeof(uint32_t), &missing);
    p.packed_b = bp_malloc(panels * pairs * PAIR_COLUMNS, sizeof(uint32_t), &missing);
    if (missing) return free(p.packed_a), free(p.packed_b), missing;
    int64_t tiles = panels * ((m + TILE_ROWS - 1) / TILE_ROWS);
    // Packing and tiles shared out among the threads (each writes its own rows, panels, tiles).
#pragma omp parallel if (m * n * k >= BP_PARALLEL_MIN)
    {
#pragma omp for schedule(static)
        for (int64_t group = 0; group < (m + 15) / 16; group++)
            pack_a_rows(&p, 16 * group, 16 * group + 16 < m ? 16 * group + 16 : m);
#pragma omp for schedule(static)
        for (int64_t panel = 0; panel < panels; panel++) pack_b_panel(&p, panel);
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; tile++) product_tile(&p, tile);
    }
    free(p.packed_a);
    free(p.packed_b);
    return 0;
}
