// The float32 matrix product on the register-blocked kernels (microkernel.c), A read in place:
//
//   C [m, n] (+)= op(A) [m, k] · op(B) [k, n],   op(A)(i, t) = trans_a ? a[t · lda + i] : a[i · lda + t],
//                                                op(B)(t, j) = trans_b ? b[j · ldb + t] : b[t · ldb + j]
//
// The reduction runs in the products' blocks (bp_kc_block: equal blocks of at most 320 steps), in
// order: C(i, j) = (… ((C or 0) + s_0) + s_1 …) + s_last, where each s_q is the kernel's sum over its
// block (terms in order of t, one fused multiply-add each, from 0): the sums of the convolutions'
// column-matrix products. No element's sum depends on who computes it, so the bits do not depend
// on the thread count, nor on the kernel (8 × 32 or 6 × 16: the same sums).
//
// A as it is (rows_product): for each group of columns and block of steps (a pass) each thread
// packs B's rows into 16-column panels of its own (at most 1 MB, packed_group: they stay in its
// core's second-level cache; packing costs little beside the product), the threads wait for each
// other, then take C's strips of 2 · mr rows one at a time and multiply them with their panels, the
// kernel reading a strip's rows of A where they are (its `rows` form), from the first-level cache
// after the first panel. A core slowed by another process takes fewer strips (2 threads on a shared
// Intel Xeon, 1024 × 1024 × 1024, medians of 31 runs while one core was disturbed: 10.4–11.2 ms
// with the halves fixed in advance, 7.6–9.7 with strips taken; quiet, 7.1 either way). On a Zen 4
// core this runs at 107–114 GF/s where OpenBLAS runs at 95–102 (a recurrent layer's input gradient,
// every step's rows at once; a linear layer of 1024 features), and with few columns (28) at 97
// against 74. Where B is read from memory once (a 1 × 1 convolution's image), packing it waits for
// every line of it before the first multiply-add: bp_matrix_product_streamed reads B in place (the
// kernel's `rows` form takes B's row stride too; the AVX-512 kernel only) and asks for the next
// product's lines meanwhile.
//
// A transposed (a weight gradient, Σ over examples of a gradient row times an input row), B with
// fewer than NC columns: at step t the kernel's `columns` form broadcasts mr neighbouring floats of
// A's row t and multiplies them with 16 neighbouring floats of B's row t, both read in place:
// nothing is packed. Per block of steps, C's strips (each thread its own) go across B's columns in
// groups of NC, so that a strip's lines of A stay in the first-level cache and the group's lines of
// B in the second. Operands whose rows are a multiple of 4 KB apart are copied first
// (bp_unaliased_stride), and B transposed. On a Zen 4 core, a recurrent layer's weight gradient
// (K = 3584, 512 × 128) runs at 115 GF/s against OpenBLAS's 97–101; on an Intel Xeon at 150. With
// B of NC columns or more, each kernel step read in place would touch a line of A and two of B on
// three pages (rows kilobytes apart), page after page: there both are packed, B's group of columns
// as rows_product packs it and A's strips as [kc][mr] (mr floats from each row), four strips at a
// time, once for all the group's panels. On an Intel Xeon (1 thread) 1024 × 1024 by K = 1024 (a
// linear layer's weight gradient) and 1024 × 256 by K = 2048 (an LSTM's) went from 105–115 GF/s in
// place to 139–145. Packing copies fixed sizes where it can (16 or 8 floats): a vector move where a
// memcpy of a variable size would be a call (a fifth of the product's time before).
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

// NC: B's columns per group of columns_product in place. Where B is packed, a group is as many
// columns as make PACKED_BYTES of its panels for a block of steps (at least NC), which stay in a
// second-level cache: the fewer groups, the fewer passes over A (1 thread, Intel Xeon, 1024 × 1024
// by K = 1024: a weight gradient 140 GF/s with groups of 256, 150 with 1024; rows_product 151 →
// 154-157).
// AHEAD: the rows of A ahead of the one it packs whose lines bp_pack_a_strips asks for (each of A's
// rows a new page where they are kilobytes apart, which the hardware's prefetchers do not follow).
enum { NC = 256, STRIPS = 4, PACKED_BYTES = 1 << 20, AHEAD = 8 };

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The columns of a packed group of B (see above) for a product of n columns and k steps, a
// multiple of `nr` (or all n, rounded up to 16).
static int64_t packed_group(int64_t n, int64_t k, int64_t nr) {
    int64_t kc_most = (k + bp_kc_blocks(k) - 1) / bp_kc_blocks(k);  // the longest block of steps
    int64_t group = PACKED_BYTES / ((int64_t)sizeof(float) * kc_most) / nr * nr;
    return min64(group < NC ? NC : group, (n + BP_NR - 1) / BP_NR * BP_NR);
}

// B's rows [k0, k0 + kc), columns [j0, j0 + cols) as panels of 16 columns, each kc rows of 16,
// kc · 16 floats apart (zeros past `cols` in the last). Each of B's rows is read along once for
// all the panels: a walk down one panel's 16 columns would touch a new page at every row where
// B's rows are kilobytes apart. With `trans_b` B's column j is b's row j: 16 of b's rows are read
// along and transposed in registers, 16 steps at a time (bp_pack_lanes16).
static void pack_b_panels(float *out, const float *b, int64_t ldb, int trans_b, int64_t k0, int64_t kc, int64_t j0,
                          int64_t cols) {
    int64_t whole = cols / BP_NR, rest = cols - whole * BP_NR;
    if (trans_b) {
        for (int64_t q = 0; q * BP_NR < cols; q++)
            bp_pack_lanes16(out + q * kc * BP_NR, b + (j0 + q * BP_NR) * ldb + k0, ldb, min64(BP_NR, cols - q * BP_NR),
                            kc, 0);
        return;
    }
    for (int64_t t = 0; t < kc; t++) {
        const float *row = b + (k0 + t) * ldb + j0;
        for (int64_t q = 0; q < whole; q++)  // a fixed size: a vector copy, not a call
            memcpy(out + q * kc * BP_NR + t * BP_NR, row + q * BP_NR, BP_NR * sizeof(float));
        if (rest) {
            float *to = out + whole * kc * BP_NR + t * BP_NR;
            memcpy(to, row + whole * BP_NR, (size_t)rest * sizeof(float));
            memset(to + rest, 0, (size_t)(BP_NR - rest) * sizeof(float));
        }
    }
}

// The threads of a product whose C's rows go in strips of `strip` rows: as many as the OpenMP
// threads (but not more than strips), or one inside a parallel region (a convolution's, over
// images: this thread does it all) or for a small product.
static int64_t product_threads(int64_t m, int64_t n, int64_t k, int64_t strip) {
    int64_t strips = (m + strip - 1) / strip;
    return m * n * k >= BP_PARALLEL_MIN && !bp_in_parallel() ? min64(bp_num_threads(), strips) : 1;
}

// columns_product's share of the rows for thread `chunk` of `chunks`: rows [*first, *last), whole strips.
static void chunk_rows(int64_t m, int64_t strip, int64_t chunk, int64_t chunks, int64_t *first, int64_t *last) {
    int64_t strips = (m + strip - 1) / strip;
    *first = chunk * strips / chunks * strip;
    *last = min64(m, (chunk + 1) * strips / chunks * strip);
}

// C's rows [first, last), columns [n0, n0 + nc) += bias[j] in column j.
static void add_column_bias(float *c, int64_t ldc, int64_t first, int64_t last, int64_t n0, int64_t nc,
                            const float *bias) {
    for (int64_t i = first; i < last; i++)
        for (int64_t j = n0; j < n0 + nc; j++) c[i * ldc + j] += bias[j];
}

// What rows_product does besides the product. `column_bias` (unless NULL): bias[j] added to
// column j after its sum. `b_in_place`: B (not transposed) read where it is, its last columns
// (past a multiple of the kernel's width, which the kernel would read past the row) packed; for a
// product whose B is read from memory once, where packing it would wait for every line of it
// before the first multiply-add. `ahead` (unless its `at` is NULL): what a product after this one
// reads (the next image's B), asked for a few lines before each kernel call, so that it arrives
// while this product runs.
typedef struct {
    const float *column_bias;
    int b_in_place;
    bp_lines ahead;
} rows_extras;

// C (+)= A · op(B) (+ the extras), A read in place (see above). The bias goes into a strip of C's
// rows as soon as their last block of steps is summed, while they are in cache. No strip of a pass
// starts before every strip of the pass before is done (the wait after packing), so each
// element's blocks of steps are added in order whoever computes them.
static int64_t rows_product(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                            int64_t ldb, int accumulate, const rows_extras *extras, float *c, int64_t ldc) {
    bp_micro micro = bp_micro_kernel();
    int64_t mr = micro.mr, strip = 2 * mr, strips = (m + strip - 1) / strip, missing = 0;
    int64_t threads = product_threads(m, n, k, strip), blocks = bp_kc_blocks(k);
    int64_t group = packed_group(n, k, micro.nr), panel_floats = min64(BP_KC, k) * group;
    int64_t passes = (n + group - 1) / group * blocks, per_call = micro.nr / BP_NR;
    // Columns from `whole` on are packed (all where B is not read in place).
    int64_t whole = extras->b_in_place && !trans_b ? n / micro.nr * micro.nr : 0;
    // Kernel calls are numbered pass, strip, columns, rows: `calls` of them, each before `share` lines ahead.
    int64_t call_columns = (group + micro.nr - 1) / micro.nr, calls = passes * strips * call_columns * 2;
    int64_t share = (bp_line_count(extras->ahead) + calls - 1) / calls;
    float *packed_b = bp_aligned_alloc(64, threads, panel_floats * (int64_t)sizeof(float), 0, &missing);
    int64_t *taken = bp_calloc(passes, sizeof(int64_t), &missing);  // each pass's strips handed out
    if (missing) return free(packed_b), free(taken), missing;
#pragma omp parallel num_threads(threads) if (threads > 1)
    for (int64_t pass = 0; pass < passes; pass++) {
        int64_t n0 = pass / blocks * group, block = pass % blocks, k0, kc;
        int64_t nc = min64(group, n - n0), panels = (nc + BP_NR - 1) / BP_NR;
        int64_t packed0 = whole > n0 ? whole - n0 : 0;  // the group's first packed column
        float *panels_b = packed_b + bp_thread_index() * panel_floats;
        bp_kc_block(k, block, &k0, &kc);
        if (packed0 < nc) pack_b_panels(panels_b, b, ldb, trans_b, k0, kc, n0 + packed0, nc - packed0);
#pragma omp barrier
        int add = accumulate || block > 0;
        for (int64_t s; (s = __atomic_fetch_add(taken + pass, 1, __ATOMIC_RELAXED)) < strips;) {
            int64_t i0 = s * strip, last = min64(m, i0 + strip);
            for (int64_t q = 0; q < panels; q += per_call) {
                int in_place = q * BP_NR < packed0;
                const float *bq = in_place ? b + k0 * ldb + n0 + q * BP_NR : panels_b + (q * BP_NR - packed0) * kc;
                for (int64_t i = i0; i < last; i += mr) {
                    if (share)
                        bp_prefetch_share(extras->ahead,
                                          ((pass * strips + s) * call_columns + q / per_call) * 2 + (i - i0) / mr,
                                          share);
                    micro.rows(kc, a + i * lda + k0, lda, bq, in_place ? ldb : BP_NR, in_place ? BP_NR : kc * BP_NR,
                               c + i * ldc + n0 + q * BP_NR, ldc, add, min64(mr, last - i),
                               min64(micro.nr, nc - q * BP_NR));
                }
            }
            if (extras->column_bias && block == blocks - 1)
                add_column_bias(c, ldc, i0, last, n0, nc, extras->column_bias);
        }
    }
    free(packed_b), free(taken);
    return 0;
}

// A copy of the rows × cols matrix x (row r at x + r · ldx, or column r when `transposed`), its rows
// bp_unaliased_stride(cols) apart. NULL (and *missing set) if it cannot be allocated.
static float *unaliased_copy(const float *x, int64_t ldx, int transposed, int64_t rows, int64_t cols,
                             int64_t *missing) {
    int64_t ld = bp_unaliased_stride(cols);
    float *copy = bp_aligned_alloc(64, rows, ld * (int64_t)sizeof(float), 0, missing);
    if (!copy) return NULL;
#pragma omp parallel for schedule(static) if (rows * cols >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) copy[r * ld + j] = transposed ? x[j * ldx + r] : x[r * ldx + j];
    return copy;
}

// (internal.h) Each of A's rows is read along, its `cols` floats at once, AHEAD rows after the lines
// of the row it reads have been asked for.
void bp_pack_a_strips(float *out, const float *a, int64_t lda, int64_t k0, int64_t kc, int64_t i0, int64_t cols,
                      int64_t mr) {
    int64_t strips = (cols + mr - 1) / mr;
    for (int64_t t = 0; t < kc; t++) {
        const float *row = a + (k0 + t) * lda + i0;
        if (t + AHEAD < kc) bp_prefetch_block(row + AHEAD * lda, lda, 1, cols);
        for (int64_t s = 0; s < strips; s++) {
            float *to = out + s * kc * mr + t * mr;
            int64_t width = min64(mr, cols - s * mr);
            // A fixed size for the kernels' widths: a vector copy, not a library call.
            if (width == 8 && mr == 8) memcpy(to, row + s * 8, 8 * sizeof(float));
            else if (width == 6 && mr == 6) memcpy(to, row + s * 6, 6 * sizeof(float));
            else {
                memcpy(to, row + s * mr, (size_t)width * sizeof(float));
                memset(to + width, 0, (size_t)(mr - width) * sizeof(float));
            }
        }
    }
}

// C's rows [first, last) += Aᵀ · B over steps [k0, k0 + kc), both read in place: B's columns in
// groups of the kernel's width, then its last columns (past the last multiple of that width) from
// `edge`, packed there in panels kc × 16 apart.
static void in_place_block(const bp_micro *micro, int64_t first, int64_t last, int64_t n, int64_t k0, int64_t kc,
                           const float *a, int64_t lda, const float *b, int64_t ldb, const float *edge, int add,
                           float *c, int64_t ldc) {
    int64_t whole = n / micro->nr * micro->nr;
    for (int64_t n0 = 0; n0 < n; n0 += NC)
        for (int64_t i = first; i < last; i += micro->mr)
            for (int64_t j = n0; j < min64(n, n0 + NC); j += micro->nr) {
                if (j < whole)
                    micro->columns(kc, a + k0 * lda + i, lda, b + k0 * ldb + j, ldb, BP_NR, c + i * ldc + j, ldc, add,
                                   min64(micro->mr, last - i), micro->nr);
                else
                    micro->columns(kc, a + k0 * lda + i, lda, edge, BP_NR, kc * BP_NR, c + i * ldc + j, ldc, add,
                                   min64(micro->mr, last - i), n - j);
            }
}

// The side holding column j of the sides' columns numbered one after another, and j's column in it.
static const bp_product_side *side_at(const bp_product_side *sides, int64_t j, int64_t *column) {
    for (; j >= sides->n; sides++) j -= sides->n;
    *column = j;
    return sides;
}

// The same with both packed, for every side at once (`columns` in all): per group of `group` of
// the sides' columns, B's panels as rows_product packs them (`panels_b`), then A's columns STRIPS
// strips of mr at a time as [kc][mr] each (`strips_a`), each strip multiplied with every panel of
// the group. A side's columns start on a multiple of the kernel's width (bp_transposed_products),
// so that no panel and no kernel call spans two sides. While a group of strips is multiplied, the
// next group's lines of A are asked for, a share of its rows before each kernel call, so that
// packing it reads them from cache (an LSTM's weight gradient, 1024 × 512 by K = 2048 on one Zen 4
// core: the packing's share of the time 4.2% → 3.2%, medians 22.2 → 21.6 ms).
static void packed_block(const bp_micro *micro, int64_t first, int64_t last, const bp_product_side *sides,
                         int64_t columns, int64_t group, int64_t k0, int64_t kc, const float *a, int64_t lda,
                         float *panels_b, float *strips_a, int add) {
    int64_t mr = micro->mr, per_call = micro->nr / BP_NR, j;
    for (int64_t n0 = 0; n0 < columns; n0 += group) {
        int64_t nc = min64(group, columns - n0), panels = (nc + BP_NR - 1) / BP_NR;
        for (int64_t c0 = n0, width; c0 < n0 + nc; c0 += width) {  // a side's columns in the group
            const bp_product_side *side = side_at(sides, c0, &j);
            width = min64(side->n - j, n0 + nc - c0);
            pack_b_panels(panels_b + (c0 - n0) * kc, side->b, side->ldb, side->trans_b, k0, kc, j, width);
        }
        for (int64_t i0 = first; i0 < last; i0 += STRIPS * mr) {
            int64_t next = i0 + STRIPS * mr, next_cols = min64(STRIPS * mr, last - next);
            int64_t calls = (min64(last, next) - i0 + mr - 1) / mr * ((panels + per_call - 1) / per_call);
            int64_t share = (kc + calls - 1) / calls, call = 0;
            bp_pack_a_strips(strips_a, a, lda, k0, kc, i0, min64(STRIPS * mr, last - i0), mr);
            for (int64_t i = i0; i < min64(last, next); i += mr)
                for (int64_t q = 0; q < panels; q += per_call, call++) {
                    bp_prefetch_block(a + (k0 + call * share) * lda + next, lda, min64(share, kc - call * share),
                                      next_cols);
                    const bp_product_side *side = side_at(sides, n0 + q * BP_NR, &j);
                    micro->block(kc, strips_a + (i - i0) * kc, panels_b + q * kc * BP_NR, kc * BP_NR,
                                 side->c + i * side->ldc + j, side->ldc, add, NULL, min64(mr, last - i),
                                 min64(micro->nr, side->n - j));
                }
        }
    }
}

// Whether columns_product packs both operands: for several sides, for a B of NC columns or more,
// and, on the 6 × 16 kernel, for 24 rows or more over 256 steps or more, where B's in-place panel
// (up to BP_KC rows of 16 floats, two lines a row where they straddle) and A's lines (one a step)
// outgrow the first-level cache. Zen 3, 1 thread, medians of 199 (ms, m × n by k): 256 × 196 by
// 256 0.37 → 0.32, 1024 × 64 by 2048 5.21 → 3.78, 128 × 64 by 2048 0.58 → 0.49; but 120 × 84 by
// 128 0.03 → 0.04 and 16 × 25 by 784 0.02 → 0.03 packed.
static int packs_operands(const bp_micro *micro, int64_t m, int64_t k, int64_t columns, int count) {
    return count > 1 || columns >= NC || (!micro->avx512 && m >= 4 * micro->mr && k >= 256);
}

// C (+)= Aᵀ · op(B) with A [k, m] (see above) for each of `count` sides on the kernel `micro` (the
// one whose width placed the sides): packed (packs_operands), A's strips once for all the sides,
// or in place.
static int64_t columns_product(bp_micro micro, int64_t m, int64_t k, const float *a, int64_t lda,
                               const bp_product_side *sides, int count, int accumulate) {
    int64_t columns = 0, mr = micro.mr, strip = 2 * mr, missing = 0;
    for (int s = 0; s < count; s++) columns += sides[s].n;
    int64_t chunks = product_threads(m, columns, k, strip), group = packed_group(columns, k, micro.nr);
    int packed = packs_operands(&micro, m, k, columns, count);
    const float *b = sides[0].b;
    int64_t ldb = sides[0].ldb, n = sides[0].n;
    int trans_b = sides[0].trans_b;
    // In place, operands with rows a multiple of 4 KB apart are copied (see bp_unaliased_stride), B
    // transposed; each thread's scratch is B's edge panels. Packed, it is B's panels and A's strips.
    float *a_copy = NULL, *b_copy = NULL;
    if (!packed && bp_unaliased_stride(lda) != lda) a_copy = unaliased_copy(a, lda, 0, k, m, &missing);
    if (!packed && (trans_b || bp_unaliased_stride(ldb) != ldb))
        b_copy = unaliased_copy(b, ldb, trans_b, k, n, &missing);
    int64_t panel_floats = packed ? min64(BP_KC, k) * group : min64(BP_KC, k) * micro.nr;
    int64_t scratch = panel_floats + (packed ? STRIPS * BP_KC * mr : 0);
    float *scratches = bp_aligned_alloc(64, chunks, scratch * (int64_t)sizeof(float), 0, &missing);
    if (missing) return free(a_copy), free(b_copy), free(scratches), missing;
    if (a_copy) a = a_copy, lda = bp_unaliased_stride(m);
    if (b_copy) b = b_copy, ldb = bp_unaliased_stride(n);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t chunk = 0; chunk < chunks; chunk++) {
        float *panels_b = scratches + chunk * scratch;
        int64_t first, last;
        chunk_rows(m, strip, chunk, chunks, &first, &last);
        for (int64_t block = 0; block < bp_kc_blocks(k); block++) {
            int64_t k0, kc;
            bp_kc_block(k, block, &k0, &kc);
            int add = accumulate || block > 0;
            if (packed) {
                packed_block(&micro, first, last, sides, columns, group, k0, kc, a, lda, panels_b,
                             panels_b + panel_floats, add);
                continue;
            }
            pack_b_panels(panels_b, b, ldb, 0, k0, kc, n / micro.nr * micro.nr, n % micro.nr);
            in_place_block(&micro, first, last, n, k0, kc, a, lda, b, ldb, panels_b, add, sides[0].c, sides[0].ldc);
        }
    }
    free(a_copy), free(b_copy), free(scratches);
    return 0;
}

int64_t bp_matrix_product(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                          const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0) {  // C = 0, or C unchanged
        for (int64_t i = 0; i < m && !accumulate; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return 0;
    }
    if (trans_a)
        return columns_product(bp_micro_kernel(), m, k, a, lda, &(bp_product_side){b, ldb, n, trans_b, c, ldc}, 1,
                               accumulate);
    return rows_product(trans_b, m, n, k, a, lda, b, ldb, accumulate, &(rows_extras){0}, c, ldc);
}

int64_t bp_matrix_product_bias(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                               const float *b, int64_t ldb, const float *column_bias, float *c, int64_t ldc) {
    if (m > 0 && n > 0 && k > 0)
        return rows_product(trans_b, m, n, k, a, lda, b, ldb, 0, &(rows_extras){.column_bias = column_bias}, c, ldc);
    bp_matrix_product(0, trans_b, m, n, k, a, lda, b, ldb, 0, c, ldc);  // C = 0 (or nothing to do)
    add_column_bias(c, ldc, 0, m, 0, n, column_bias);
    return 0;
}

int64_t bp_matrix_product_streamed(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, int accumulate, bp_lines next, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0 || k <= 0) return bp_matrix_product(0, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
    // In place only for the AVX-512 kernel: the AVX2 one reads 16 floats of a row per step, which
    // straddle two lines where rows are not a multiple of 64 bytes apart (14 × 14 pixels), and
    // packing wins there (conv_1x1's forward, 256 → 256 channels on 14 × 14, 16 images, Zen 3,
    // medians of 41: 1 thread 5.07-5.17 → 4.69-4.76 ms, 2 threads 2.68-2.73 → 2.58-2.60).
    int in_place = bp_micro_kernel().avx512 && !trans_b && n < NC && bp_unaliased_stride(ldb) == ldb;
    rows_extras extras = {.b_in_place = in_place, .ahead = next};
    return rows_product(trans_b, m, n, k, a, lda, b, ldb, accumulate, &extras, c, ldc);
}

int64_t bp_layer_product(int32_t precision, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc) {
    if (precision != BP_FP32)
        return bp_bf16_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate,
                            precision == BP_BF16_EMULATED);
    return bp_matrix_product(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
}

int64_t bp_transposed_products(int32_t precision, int64_t m, int64_t k, const float *a, int64_t lda,
                               const bp_product_side *sides, int count, int accumulate) {
    // Together where every side but the last starts its columns on a multiple of the kernel's
    // width (a side whose width is not one goes last): then one pass packs A for all.
    bp_product_side ordered[BP_MOST_SIDES];
    bp_micro micro = bp_micro_kernel();  // one choice for the placing and the product
    int nr = (int)micro.nr, together = precision == BP_FP32 && m > 0 && k > 0 && count <= BP_MOST_SIDES;
    int placed = 0, ragged = -1;
    for (int s = 0; s < count && together; s++) {
        if (sides[s].n <= 0 || (sides[s].n % nr != 0 && ragged >= 0)) together = 0;
        else if (sides[s].n % nr != 0) ragged = s;
        else ordered[placed++] = sides[s];
    }
    if (together) {
        if (ragged >= 0) ordered[placed++] = sides[ragged];
        return columns_product(micro, m, k, a, lda, ordered, count, accumulate);
    }
    int64_t missing = 0;
    for (int s = 0; s < count && !missing; s++)
        missing = bp_layer_product(precision, 1, sides[s].trans_b, m, sides[s].n, k, a, lda, sides[s].b, sides[s].ldb,
                                   accumulate, sides[s].c, sides[s].ldc);
    return missing;
}
