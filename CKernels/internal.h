// Helpers shared by the kernel files; not part of the public C API.
#ifndef BACKPROP_CKERNELS_INTERNAL_H
#define BACKPROP_CKERNELS_INTERNAL_H

#include <stdint.h>

// Loops this short run on the calling thread: a parallel region costs more than it saves.
#define BP_PARALLEL_MIN 32768

// Outputs of this many bytes or more may be written past the caches (bp_stream_copy): they would not
// stay cached for their reader, and a cached store first reads each line it writes.
#define BP_STREAM_MIN (16 << 20)

/// dst[i] = src[i] for i < n, dst's 64-byte lines stored past the caches (non-temporal). The
/// caller's parallel region ends with a fence (bp_stream_fence) before anyone reads dst.
void bp_stream_copy(float *dst, const float *src, int64_t n);
static inline void bp_stream_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// count · size bytes from malloc (bp_calloc: zeroed; bp_aligned_alloc: on an `alignment`-byte
/// boundary, the size rounded up to it, zeroed when `zero`), or NULL when they cannot be had: then
/// the bytes asked are recorded in *missing unless a failure is already recorded there (threads
/// may share it). A kernel that allocates returns *missing: 0, or the bytes of its first failure.
void *bp_malloc(int64_t count, int64_t size, int64_t *missing);
void *bp_calloc(int64_t count, int64_t size, int64_t *missing);
void *bp_aligned_alloc(int64_t alignment, int64_t count, int64_t size, int zero, int64_t *missing);

/// The failure a kernel has recorded so far (read while other threads may record one).
static inline int64_t bp_missing(const int64_t *missing) { return __atomic_load_n(missing, __ATOMIC_RELAXED); }

/// Sums `block(ctx, begin, end)` over consecutive blocks of `block_size` items covering [0, n):
/// the blocks are computed in parallel and their sums added in block order, so the result
/// does not depend on the thread count. `cost` is the work of one item, for the decision
/// whether to go parallel at all.
double bp_blocked_sum(int64_t n, int64_t block_size, int64_t cost,
                      double (*block)(const void *ctx, int64_t begin, int64_t end), const void *ctx);

/// Runs `chunk(ctx, begin, end)` over consecutive chunks of 16384 items covering [0, n), in
/// parallel when n · cost is large enough. The chunks do not depend on the thread count.
/// Hot loops go in chunk functions rather than in the parallel loop itself, because clang's
/// outlined OpenMP bodies do not inherit BP_MULTIVERSION's target features.
void bp_parallel_chunks(int64_t n, int64_t cost, void (*chunk)(const void *ctx, int64_t begin, int64_t end),
                        const void *ctx);

/// A mean as a pair of floats, pair[0] + pair[1] ≈ mean to double accuracy, so that centring
/// (x − pair[0]) − pair[1] in float keeps it.
static inline void bp_split_mean(double mean, float *pair) {
    pair[0] = (float)mean;
    pair[1] = (float)(mean - pair[0]);
}

/// Functions with this attribute are compiled for AVX-512, AVX2 and baseline x86-64, and the
/// best the CPU supports is picked at load time (SwiftPM compiles C without -march).
#if defined(__x86_64__) && defined(__clang__)
#define BP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define BP_MULTIVERSION
#endif

/// Whether microkernel_avx512.c's kernels are compiled (x86-64 with clang's target attributes).
#if defined(__x86_64__) && defined(__clang__)
#define BP_AVX512_KERNEL 1
#else
#define BP_AVX512_KERNEL 0
#endif

/// Eight lanes of floats or int32 as clang's portable vector types: they compile to AVX-512, AVX2
/// or SSE registers, whichever the multiversioned function around them targets. Pass them by
/// pointer between functions: by value they would change the baseline build's calling convention.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));
/// Sixteen float lanes: one AVX-512 register, two AVX2 ones.
typedef float v16f __attribute__((vector_size(64)));

/// dst[i] = src[i] for i < n: 8 floats at a time, then the tail as 4, 2 and 1. For short rows,
/// where a memcpy call (which a copy loop of variable length becomes) costs more than the copy.
__attribute__((always_inline)) static inline void bp_copy_short(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) __builtin_memcpy(dst + i, src + i, 32);
    if (i + 4 <= n) __builtin_memcpy(dst + i, src + i, 16), i += 4;
    if (i + 2 <= n) __builtin_memcpy(dst + i, src + i, 8), i += 2;
    if (i < n) dst[i] = src[i];
}

/// Asks for the lines of `rows` rows of `floats` floats, row i at m + i · ld (each row's last line
/// too, where it starts off a line).
__attribute__((always_inline)) static inline void bp_prefetch_block(const float *m, int64_t ld, int64_t rows,
                                                                    int64_t floats) {
    for (int64_t i = 0; i < rows && floats > 0; i++) {
        for (int64_t f = 0; f < floats; f += 16) __builtin_prefetch(m + i * ld + f);
        __builtin_prefetch(m + i * ld + floats - 1);
    }
}

/// bp_prefetch_block's lines asked for to be written (__builtin_prefetch takes its read-or-write
/// argument only as a constant, so the two are two functions).
__attribute__((always_inline)) static inline void bp_prefetch_write(float *m, int64_t ld, int64_t rows,
                                                                    int64_t floats) {
    for (int64_t i = 0; i < rows && floats > 0; i++) {
        for (int64_t f = 0; f < floats; f += 16) __builtin_prefetch(m + i * ld + f, 1);
        __builtin_prefetch(m + i * ld + floats - 1, 1);
    }
}

/// `rows` rows of `floats` floats, `ld` apart, from `at` (NULL: none); its lines numbered row by row.
typedef struct {
    const float *at;
    int64_t rows, ld, floats;
} bp_lines;

/// The lines of `lines` (0 where `at` is NULL).
static inline int64_t bp_line_count(bp_lines lines) { return lines.at ? lines.rows * ((lines.floats + 15) / 16) : 0; }

/// Asks for share `part` of `lines` (lines [part · share, (part + 1) · share)): what a later step
/// reads, a share before each of the kernel calls that run until then.
static inline void bp_prefetch_share(bp_lines lines, int64_t part, int64_t share) {
    int64_t row_lines = (lines.floats + 15) / 16, first = part * share;
    int64_t last = first + share < bp_line_count(lines) ? first + share : bp_line_count(lines);
    if (first >= last) return;
    const float *row = lines.at + first / row_lines * lines.ld;
    for (int64_t line = first, column = first % row_lines; line < last; line++) {
        __builtin_prefetch(row + column * 16);
        if (++column == row_lines) column = 0, row += lines.ld;
    }
}

/// columns[j][i] = x[i][j]: an 8 × 8 block transposed in three rounds of shuffles (pairs of rows
/// interleaved, then pairs of pairs, then the 128-bit halves).
__attribute__((always_inline)) static inline void bp_transpose_8x8(v8f columns[8], const v8f x[8]) {
    v8f u[8], v[8];
    for (int i = 0; i < 8; i += 2) {
        u[i] = __builtin_shufflevector(x[i], x[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        u[i + 1] = __builtin_shufflevector(x[i], x[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)
        for (int e = 0; e < 2; e++) {
            v[i + 2 * e] = __builtin_shufflevector(u[i + e], u[i + 2 + e], 0, 1, 8, 9, 4, 5, 12, 13);
            v[i + 2 * e + 1] = __builtin_shufflevector(u[i + e], u[i + 2 + e], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    for (int j = 0; j < 4; j++) {
        columns[j] = __builtin_shufflevector(v[j], v[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        columns[j + 4] = __builtin_shufflevector(v[j], v[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/// m[i][j] becomes m[j][i]: in each 2e × 2e block the upper-right and lower-left e × e blocks
/// swap, for e = 8, 4, 2, 1. Row a keeps its columns without bit e and takes row a + e's with it
/// (shifted left by e); row a + e takes row a's without it (shifted right) and keeps its own.
#define BP_UPPER_8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define BP_LOWER_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define BP_UPPER_4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define BP_LOWER_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define BP_UPPER_2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define BP_LOWER_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define BP_UPPER_1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define BP_LOWER_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define BP_SWAP(e)                                                                                                     \
    _Pragma("clang loop unroll(full)") for (int a = 0; a < 16; a++) if (!(a & e)) {                                    \
        v16f upper = m[a], lower = m[a + e];                                                                           \
        m[a] = __builtin_shufflevector(upper, lower, BP_UPPER_##e);                                                    \
        m[a + e] = __builtin_shufflevector(upper, lower, BP_LOWER_##e);                                                \
    }
__attribute__((always_inline)) static inline void bp_transpose_16x16(v16f m[16]) {
    BP_SWAP(8) BP_SWAP(4) BP_SWAP(2) BP_SWAP(1)
}
#undef BP_SWAP

/// dst[j · 16 + r] = src[r · ld + j] for j < count and r < 16 (0 for r ≥ rows; rows ≤ 16): up to 16
/// rows of `count` floats as `count` rows of 16 lanes, one lane per source row (transpose.c).
/// `streamed`: src comes from memory (each of its rows a stream the hardware follows poorly): each
/// row's line four lines ahead is asked for as a line is read, past `count` too (a caller packing a
/// row in chunks reads on there next; a prefetch past the row's end does no harm).
void bp_pack_lanes16(float *dst, const float *src, int64_t ld, int64_t rows, int64_t count, int streamed);

/// Σ x[i] for i < n in float, in 8 interleaved lanes (which vectorise; one running sum does not),
/// then the tail, then the lanes: a fixed order. Inline, for loops over many short runs inside a
/// multiversioned function; bp_lane_sum is the same as a function.
/// bp_lane_sum_finish is its last two steps: the tail x[n − n % 8 …) from 0, then the lanes.
__attribute__((always_inline)) static inline float bp_lane_sum_finish(const float lanes[8], const float *x, int64_t n) {
    float sum = 0.0f;
    for (int64_t i = n - n % 8; i < n; i++) sum += x[i];
    for (int l = 0; l < 8; l++) sum += lanes[l];
    return sum;
}
__attribute__((always_inline)) static inline float bp_lane_sum_inline(const float *x, int64_t n) {
    float lanes[8] = {0};
    for (int64_t i = 0; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) lanes[l] += x[i + l];
    return bp_lane_sum_finish(lanes, x, n);
}
BP_MULTIVERSION float bp_lane_sum(const float *x, int64_t n);
/// sums[r] = bp_lane_sum(x + r · ld, n) for r < rows.
BP_MULTIVERSION void bp_lane_sums(float *sums, const float *x, int64_t ld, int64_t rows, int64_t n);

/// A row stride (in floats) of at least `floats` that is not a multiple of 4 KB: the lines of rows
/// that far apart share the first-level cache's sets, and a kernel reading along a column of
/// them (the products' A transposed or B in place) misses on every row.
static inline int64_t bp_unaliased_stride(int64_t floats) { return floats % 1024 == 0 ? floats + 16 : floats; }

/// The register-blocked float32 product (microkernel.c): a block of `mr` rows of A by `nr` columns
/// of B per call, B in panels of BP_NR columns.
enum { BP_NR = 16 };

/// C (+)= A · B for one block: A packed [kc][mr], B packed in panels [kc][BP_NR], the second (columns
/// 16 … 31, read only when `cols` > 16) `next` floats after the first; C rows `ldc` apart.
/// `accumulate` adds to C instead of overwriting it (C + A·B); then `bias` (one float per row, or
/// NULL) is added. Only the first `rows` × `cols` of the block (at most mr × nr) are stored,
/// for the edges of a matrix.
typedef void bp_micro_block(int64_t kc, const float *a, const float *b, int64_t next, float *c, int64_t ldc,
                            int accumulate, const float *bias, int64_t rows, int64_t cols);
/// The same with A not packed: its `rows` rows `lda` apart (row i, step t at a[i · lda + t]), and
/// B's rows `ldb` apart (BP_NR for packed panels).
typedef void bp_micro_rows(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next, float *c,
                           int64_t ldc, int accumulate, int64_t rows, int64_t cols);
/// The same with neither packed: A's `rows` columns at a, a + 1, … (step t at a[t · lda + i]) and
/// B's rows `ldb` apart, each with 16 floats to read per panel (step t, column j < 16 at
/// b[t · ldb + j], column 16 + j at b[next + t · ldb + j]).
typedef void bp_micro_columns(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, int64_t next,
                              float *c, int64_t ldc, int accumulate, int64_t rows, int64_t cols);
/// C (+)= A · B for 16 rows of A in place (`lda` apart) and one panel of B (rows `ldb` apart), the
/// first `cols` columns of C (every row). The rows must fall in different sets of the first-level
/// cache (a stride of an odd number of 64-byte lines): 16 rows 4 KB apart would share one set's 8 ways.
typedef void bp_micro_rows16(int64_t kc, const float *a, int64_t lda, const float *b, int64_t ldb, float *c,
                             int64_t ldc, int accumulate, int64_t cols);

/// Whether the caller runs inside an active OpenMP parallel region (threads.c).
int bp_in_parallel(void);
/// The calling thread's number in its parallel region's team, from 0 (threads.c).
int bp_thread_index(void);
/// Whether the CPU's cores are AMD's, or bp_cpu_vendor_override's answer (cpu.c). Where two ways to
/// the same sums measured faster on one vendor's cores and slower on the other's, the kernels choose
/// by it (the recurrent backward's write prefetch); the bits are the same either way.
int bp_cpu_is_amd(void);
/// The same for AMD's cores with AVX-512 (Zen 4 and later; bp_cpu_vendor_override's answer where
/// it is set), where a choice measured differently on AMD's AVX2 cores (the layer-norm forward's rows).
int bp_cpu_is_amd_avx512(void);

/// C = A · op(B) + bias, bias[j] added to column j of C after its sum (as a separate pass would):
/// a linear layer's forward in float32, the bias added while C is in cache.
int64_t bp_matrix_product_bias(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                               const float *b, int64_t ldb, const float *column_bias, float *c, int64_t ldc);

/// C (+ C when `accumulate`) = A · op(B), for one of a run of products each of whose operands are
/// read from memory once (a 1 × 1 convolution's images): B read in place where it can be (by the
/// AVX-512 kernel, not transposed, fewer than 256 columns, rows not 4 KB apart), and the lines of what the next
/// product reads (`next`) asked for while this one runs. The bits of bp_matrix_product(0, trans_b,
/// …).
int64_t bp_matrix_product_streamed(int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                                   const float *b, int64_t ldb, int accumulate, bp_lines next, float *c, int64_t ldc);

/// out[s][t − k0][i] = a[t · lda + i0 + s · mr + i] for t in [k0, k0 + kc) and s · mr + i < cols
/// (0 past `cols`): columns [i0, i0 + cols) of A (a row a step) as strips of mr columns, each kc
/// rows of mr floats, kc · mr apart: the kernels' packed A (matrix_product.c).
void bp_pack_a_strips(float *out, const float *a, int64_t lda, int64_t k0, int64_t kc, int64_t i0, int64_t cols,
                      int64_t mr);

/// C [m, n] (+ C when `accumulate`) = op(A) · op(B), a layer's product in its `precision`
/// (BP_FP32, BP_BF16, BP_BF16_EMULATED): bfloat16 through bp_bf16_gemm, float32 through
/// bp_matrix_product (matrix_product.c). Returns the bytes of scratch it could not allocate.
int64_t bp_layer_product(int32_t precision, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc);

/// The register-blocked products' reductions (a convolution's taps or channels, a matrix product's
/// k) run in equal blocks of at most BP_KC steps, each summed from 0 and then added to the sum of
/// the blocks before it; block `index` of [0, total) is [*start, *start + *size). (320 rows of a
/// 16-float panel stay in the first-level cache.)
enum { BP_KC = 320 };
static inline int64_t bp_kc_blocks(int64_t total) { return (total + BP_KC - 1) / BP_KC; }
static inline void bp_kc_block(int64_t total, int64_t index, int64_t *start, int64_t *size) {
    int64_t blocks = bp_kc_blocks(total);
    *start = index * total / blocks;
    *size = (index + 1) * total / blocks - *start;
}

/// The kernel a product uses: 8 × 32 in 16-float registers where the CPU has AVX-512 (unless
/// bp_product_force_avx2 says otherwise), else 6 × 16 in 8-float registers. Every element is the
/// same sum in the same order in both (Σ_t in order, one fused multiply-add per term, then + C,
/// then + bias), so the choice never changes a bit. A kernel fetches it once, packs A for its
/// `mr` and passes up to `nr` columns (one or two panels) per call.
typedef struct {
    int64_t mr, nr;
    bp_micro_block *block;
    bp_micro_rows *rows;
    bp_micro_columns *columns;
    bp_micro_rows16 *rows16;  // NULL without AVX-512
    int avx512;               // the AVX-512 kernel: the convolutions' direct forward (conv2d_direct.c) runs too
    int64_t short_rows;       // `rows` does this many rows' work for this many rows or fewer (else mr's)
} bp_micro;

bp_micro bp_micro_kernel(void);
bp_micro_block bp_micro_6x16, bp_micro_8x32;
bp_micro_rows bp_micro_6x16_rows, bp_micro_8x32_rows;
bp_micro_columns bp_micro_6x16_columns, bp_micro_8x32_columns;
bp_micro_rows16 bp_micro_16x16_rows;

/// Weights packed for the recurrent layers' step products (panel_product.c): B [depth, G · H],
/// whose column g · H + j is gate g of hidden unit j, in 16-column panels grouped by blocks of
/// BP_NR units, each block's G gates side by side. For bfloat16 products (`pairs` instead of
/// `panels`) a block's G · 16 columns go in 32-column panels of pairs over the depth.
typedef struct {
    float *panels;
    uint32_t *pairs;
    int64_t depth, hidden, gates;
    int emulate;  // bfloat16 products by the emulation (see bp_bf16_emulating)
} bp_gate_panels;

/// The blocks of BP_NR hidden units (the last may be narrower).
static inline int64_t bp_unit_blocks(int64_t hidden) { return (hidden + BP_NR - 1) / BP_NR; }
/// The hidden units in block `block`: BP_NR, or fewer in the last.
static inline int64_t bp_block_units(int64_t hidden, int64_t block) {
    return hidden - block * BP_NR < BP_NR ? hidden - block * BP_NR : BP_NR;
}
/// Packs B[k][c] = M[c][k] (`by_rows`: M [G · H, depth], row c at m + c · ld) or B[k][c] = M[k][c]
/// (M [depth, G · H], row k at m + k · ld), for products in `precision` (BP_FP32, BP_BF16 or
/// BP_BF16_EMULATED). Returns 0 or the bytes it could not allocate.
int64_t bp_pack_gate_panels(bp_gate_panels *w, const float *m, int64_t ld, int by_rows, int64_t depth, int64_t hidden,
                            int64_t gates, int32_t precision);
void bp_gate_panels_free(bp_gate_panels *w);
/// tile[b][(v · G + g) · 16 + jj] = Σ_k X[b][k] · B[k][g · H + (block + v) · 16 + jj] for b < n,
/// each of `count` unit blocks v from `block`, every gate g and the block's units jj (rows of tile
/// `ldt` apart), X [n, depth] with rows `ldx` apart; for each of `steps` steps s, X at x + s · x_step
/// and the tile at tile + s · tile_step. `wide`: groups of 16 rows through the 16 × 16 kernel where
/// the CPU has it (bp_micro_rows16: X's rows then `ldx` apart by an odd number of cache lines), for
/// W read from memory at every step (a large W_hh: each of its lines then comes once per 16 rows).
void bp_gate_block_product(float *tile, int64_t ldt, int64_t tile_step, const float *x, int64_t ldx, int64_t x_step,
                           int64_t steps, int64_t n, const bp_gate_panels *w, int64_t block, int64_t count, int wide);
/// The same for weights packed in bfloat16, X given as rows of pairs (bp_bf16_pack_pairs of each
/// row): row b of step s at x + s · x_step + b · ldx (in pairs).
void bp_gate_block_product_pairs(float *tile, int64_t ldt, int64_t tile_step, const uint32_t *x, int64_t ldx,
                                 int64_t x_step, int64_t steps, int64_t n, const bp_gate_panels *w, int64_t block,
                                 int64_t count);

/// What an LSTM's forward saves of one block of 16 units of one batch row at one step for the
/// backward: i, f, g, o, c_t, tanh c_t, BP_NR floats each.
enum { BP_LSTM_SAVED_RUNS = 6 };

/// The LSTM's forward cells of one full block of 16 units for `rows` batch rows, on AVX-512 (only
/// where bp_micro_kernel() is the AVX-512 one; recurrent_cells_avx512.c), the bits of recurrent.c's
/// cells: row r's pre-activations' products at xp and hp + r · ldp (gate g's 16 units at g · 16),
/// the biases at bi and bh (gate g at g · hidden), c_{t−1} in and c_t out at c + r · ldc, h_t
/// out at h + r · ldh, what the backward reads (BP_LSTM_SAVED_RUNS runs) at saved +
/// r · BP_LSTM_SAVED_RUNS · BP_NR unless saved is NULL.
void bp_lstm_cells_avx512(float *h, int64_t ldh, float *c, int64_t ldc, float *saved, const float *xp, const float *hp,
                          int64_t ldp, const float *bi, const float *bh, int64_t hidden, int64_t rows);

/// The pieces of bp_bf16_gemm (bfloat16.c), for kernels that pack their own operands. Operands are
/// pairs: a uint32 holding bfloat16 values t = 2q (low half) and 2q + 1 (high half) of the reduction,
/// each rounded and flushed as the product reads them (see bp_bf16_gemm).
enum { BP_BF16_ROWS = 12, BP_BF16_COLUMNS = 32 };
/// y[i] = x[i] rounded to bfloat16, below 2^-126 in magnitude a zero of its sign, i < n.
void bp_bf16_round_flushed(uint16_t *y, const float *x, int64_t n);
/// One row of A: out[q] = the pair (x[2q · step], x[(2q + 1) · step]) for q < (k + 1) / 2, the
/// high half 0 past k.
void bp_bf16_pack_pairs(uint32_t *out, const float *x, int64_t k, int64_t step);
/// One panel of B [(k + 1) / 2][32]: out[q][j] = (B(2q, j), B(2q + 1, j)) for the first `columns`
/// (at most 32) columns of B [k, ·], zeros after: B(t, j) = b[t · ldb + j] (pack_panel) or
/// b[j · ldb + t] (pack_panel_columns).
void bp_bf16_pack_panel(uint32_t *out, const float *b, int64_t ldb, int64_t k, int64_t columns);
void bp_bf16_pack_panel_columns(uint32_t *out, const float *b, int64_t ldb, int64_t k, int64_t columns);
/// C [rows, columns] (+ C when `accumulate`) = A · B over `pairs` pairs, in bp_bf16_gemm's order:
/// A's rows `lda` pairs apart, B one panel [pairs][32], C's rows `ldc` floats apart; rows <= 12,
/// columns <= 32. `emulate` as bp_bf16_emulating returns it.
void bp_bf16_tile(int64_t pairs, const uint32_t *a, int64_t lda, const uint32_t *b, float *c, int64_t ldc,
                  int accumulate, int64_t rows, int64_t columns, int emulate);
/// Whether the product must be emulated: asked to (emulate), or the CPU lacks the instruction.
int bp_bf16_emulating(int emulate);

/// e^x within 2 ulp for x in [−87.3, 88.37], and vectorisable (no calls, no branches): e^x = 2^n e^r
/// with n = round(x / ln 2) and r = x − n ln 2 in [−ln 2 / 2, ln 2 / 2], e^r by a degree-6
/// polynomial (Cephes' coefficients). Inputs are clamped to [−87.3, 88.7]: below it the result is
/// about 1e-38 instead of a subnormal or 0; from 88.37 on (n = 128) it is infinity. The fused
/// multiply-adds are written out, so that the bits do not depend on the compiler's optimisation
/// level (which decides whether it contracts a · b + c) nor on the CPU (without FMA they are libm's).
static inline float bp_expf(float x) {
    x = x < -87.3f ? -87.3f : x > 88.7f ? 88.7f : x;
    const float round_magic = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer
    float n = __builtin_fmaf(x, 1.44269504088896341f, round_magic) - round_magic;
    float r = __builtin_fmaf(n, 2.12194440e-4f, __builtin_fmaf(-n, 0.693359375f, x));  // ln 2 in two parts
    float p = 1.9875691500e-4f;
    p = __builtin_fmaf(p, r, 1.3981999507e-3f);
    p = __builtin_fmaf(p, r, 8.3334519073e-3f);
    p = __builtin_fmaf(p, r, 4.1665795894e-2f);
    p = __builtin_fmaf(p, r, 1.6666665459e-1f);
    p = __builtin_fmaf(p, r, 5.0000001201e-1f);
    float er = __builtin_fmaf(p * r, r, r) + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) << 23};
    return er * scale.f;
}

#endif
