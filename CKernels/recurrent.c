// Recurrent layers: one direction of one layer of an Elman RNN, LSTM or GRU over a batch-first
// sequence, forward and backward through time (see bp_rnn_params in CKernels.h for the math).
//
// The steps run in pairs of blocks of 16 hidden units (panel_product.c; the last block may be
// alone): at each step, for each pair, the pair's hidden product (h_{t−1} · W_hhᵀ; backward the
// gates' gradients · W_hh), a kernel call taking two panels of W (or, for a W_hh too large for a
// core's cache, 16 rows with one: wide_steps), and then, while it is in cache, the cells of its
// units, writing the states the next step's products read. The threads share
// the batch's rows (each takes its rows through every step, meeting no other) or, where the rows
// are too few, each step's pairs (split_rows). The input projection x_t · W_ihᵀ is computed for a
// few steps ahead of them (or each step's where it is used, for a small W_ih); backward, dx, dW_ih
// and dW_hh are products over all steps after them (bp_layer_product), and the biases' gradients
// are summed as the cells produce them, chunk of rows by chunk. Each unit's numbers are computed
// the same way whichever thread computes them: no result depends on the thread count. The arrays
// the cells read and write in runs of 16 floats start on a cache line (64 bytes), so that no run
// straddles two.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// W_ih's packed panels up to which the forward computes each step's input product where it is
// used (1 thread, Intel Xeon, 128 rows of 28 steps, 28 inputs, 128 units: 5.6 → 5.3 ms; 32 rows
// of 64 steps, 64 inputs, 256 units: 11.5 → 11.0; but 256 inputs, 256 units: 16.1 → 17.4).
enum { BY_STEP_BYTES = 256 << 10 };

// Steps whose input products a run of rows computes at a time, ahead of them, where the threads
// share the steps by rows: they are still in cache when the steps read them (1 thread, Intel Xeon,
// 32 rows of 64 steps, 256 inputs, 256 units: 16.1–16.7 → 15.8–16.0 ms against every step's
// ahead of the steps; 4 at a time: 17.9; 2 threads: 8.5 → 8.1–8.4).
enum { STEP_CHUNK = 8 };

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t bp_rnn_gates(int32_t kind) { return kind == BP_LSTM ? 4 : kind == BP_GRU ? 3 : 1; }

// What the forward saves of one block of 16 units of one batch row at one step: LSTM i, f, g, o,
// c_t, tanh c_t (the backward reads it rather than computing it again); GRU r, z, n,
// W_hn h_{t−1} + b_hn; 16 floats each. The RNN saves nothing (its backward reads h_t from y).
static int64_t saved_per_unit(int32_t kind) { return kind == BP_LSTM ? BP_LSTM_SAVED_RUNS : kind == BP_GRU ? 4 : 0; }

int64_t bp_rnn_saved_per_row(const bp_rnn_params *p) {
    return saved_per_unit(p->kind) * bp_unit_blocks(p->hidden) * BP_NR;
}

// σ and tanh through bp_expf, so that the cells' loops vectorise (within a few float ulp of libm's).
__attribute__((always_inline)) static inline float sigmoid(float v) { return 1.0f / (1.0f + bp_expf(-v)); }
__attribute__((always_inline)) static inline float tanh_fast(float v) {
    return 1.0f - 2.0f / (bp_expf(2.0f * v) + 1.0f);
}

// The step of the forward that processes k-th: t − 1 − k for the reverse direction.
static int64_t step_at(const bp_rnn_params *p, int64_t k) { return p->reverse ? p->t - 1 - k : k; }

// The batch's rows in chunks of ROW_CHUNK (the last may be short): the runs over which the backward
// sums the biases' gradients, and the threads' shares where they split the rows (so that those sums
// do not depend on how the rows are shared). A thread takes its rows through the steps RUN_ROWS at
// a time (two kernel row groups): their states and products stay in its caches from step to step.
enum { ROW_CHUNK = 8, RUN_ROWS = 2 * ROW_CHUNK };

// Where in `saved` is block u of batch row b at step s: one run of saved_per_unit · 16 floats. The
// rows go in groups of RUN_ROWS (the last may be short), each group's runs step by step, block by
// block, row by row: the order in which a thread taking its rows RUN_ROWS at a time writes them,
// so that its stores are one stream (32 rows of 64 steps, 256 → 256 units, 1 thread, Intel Xeon:
// forward, medians 16.1 → 15.9 ms against the runs of a step's block side by side for the batch).
static int64_t saved_run(const bp_rnn_params *p, int64_t s, int64_t u, int64_t b) {
    int64_t first = b / RUN_ROWS * RUN_ROWS, rows = p->n - first < RUN_ROWS ? p->n - first : RUN_ROWS;
    return ((first * p->t + s * rows) * bp_unit_blocks(p->hidden) + u * rows + b - first) * saved_per_unit(p->kind) *
           BP_NR;
}

// The cells of one batch row at one step, for `units` hidden units (at most 16) from the block's
// first: the pre-activations xp + b_ih + hp + b_hh (GRU's n gate: xp_n + b_in + r ⊙ (hp_n + b_hn)),
// the gates, the new state h_t into h (and c_t into c, which holds c_{t−1}) from h_{t−1} in
// h_prev, what the backward needs into saved where `save`. Gate g of unit j is at g · 16 + j in xp
// and hp (the block's products) and saved, at g · H + j in the biases bi and bh (zeros where the
// layer has none).
__attribute__((always_inline)) static inline void cell_forward(float *restrict h, float *restrict c,
                                                               const float *restrict h_prev, float *restrict saved,
                                                               const float *restrict xp, const float *restrict hp,
                                                               const float *restrict bi, const float *restrict bh,
                                                               int64_t units, int save, const bp_rnn_params *p) {
    int64_t hidden = p->hidden;
    // The gates σ and tanh of (LSTM i, f, g, o; GRU r, z), into `saved` or, not saving, `local`: gate
    // by gate, units side by side, before the states that depend on them. Each is a chain of an
    // exponential and a division; unit by unit, a unit's gates and states make one chain longer
    // than the core's window of instructions in flight, which then stalls on it (1 thread, Zen 3,
    // LSTM, 128 rows of 28 steps, 28 → 128 units: the forward 9.15-9.30 → 8.73-8.87 ms).
    float local[4 * BP_NR], *gate = save ? saved : local;
#define X(g, j) (xp[(g)*BP_NR + (j)] + bi[(g)*hidden + (j)])  // x_t · W_ihᵀ + b_ih, gate g
#define H(g, j) (hp[(g)*BP_NR + (j)] + bh[(g)*hidden + (j)])  // h_{t−1} · W_hhᵀ + b_hh
    switch (p->kind) {
    case BP_RNN_TANH:
    case BP_RNN_RELU:
        for (int64_t j = 0; j < units; j++) {
            float a = X(0, j) + H(0, j);
            h[j] = p->kind == BP_RNN_TANH ? tanh_fast(a) : (a > 0.0f ? a : 0.0f);
        }
        break;
    case BP_LSTM:
        for (int64_t j = 0; j < units; j++) gate[j] = sigmoid(X(0, j) + H(0, j));
        for (int64_t j = 0; j < units; j++) gate[BP_NR + j] = sigmoid(X(1, j) + H(1, j));
        for (int64_t j = 0; j < units; j++) gate[2 * BP_NR + j] = tanh_fast(X(2, j) + H(2, j));
        for (int64_t j = 0; j < units; j++) gate[3 * BP_NR + j] = sigmoid(X(3, j) + H(3, j));
        for (int64_t j = 0; j < units; j++) {
            float i = gate[j], f = gate[BP_NR + j], g = gate[2 * BP_NR + j], o = gate[3 * BP_NR + j];
            c[j] = __builtin_fmaf(f, c[j], i * g);  // as recurrent_cells_avx512.c, at any optimisation level
            float tc = tanh_fast(c[j]);
            h[j] = o * tc;
            if (save) saved[4 * BP_NR + j] = c[j], saved[5 * BP_NR + j] = tc;
        }
        break;
    case BP_GRU:
        for (int64_t j = 0; j < units; j++) gate[j] = sigmoid(X(0, j) + H(0, j));
        for (int64_t j = 0; j < units; j++) gate[BP_NR + j] = sigmoid(X(1, j) + H(1, j));
        for (int64_t j = 0; j < units; j++) {
            float r = gate[j], z = gate[BP_NR + j], hn = H(2, j);
            float n = tanh_fast(X(2, j) + r * hn);
            if (save) saved[2 * BP_NR + j] = n, saved[3 * BP_NR + j] = hn;
            h[j] = (1.0f - z) * n + z * h_prev[j];
        }
        break;
    }
#undef X
#undef H
}

// cell_forward with the block's width a constant when the block is full (its loops then have no
// remainder) and whether it saves (saved non-NULL) a constant: a loop that tests it per element
// becomes masked stores, which on Intel cores take a slow assist per store where the address is
// not mapped (NULL + offset), every lane off or not (an LSTM's inference forward, 128 rows of 28
// steps, 28 → 128, 1 thread on an Intel Xeon: 7.2 ms against training's 5.2).
BP_MULTIVERSION
static void row_forward(float *restrict h, float *restrict c, const float *restrict h_prev, float *restrict saved,
                        const float *restrict xp, const float *restrict hp, const float *restrict bi,
                        const float *restrict bh, int64_t units, const bp_rnn_params *p) {
    if (units == BP_NR && saved) cell_forward(h, c, h_prev, saved, xp, hp, bi, bh, BP_NR, 1, p);
    else if (units == BP_NR) cell_forward(h, c, h_prev, saved, xp, hp, bi, bh, BP_NR, 0, p);
    else if (saved) cell_forward(h, c, h_prev, saved, xp, hp, bi, bh, units, 1, p);
    else cell_forward(h, c, h_prev, saved, xp, hp, bi, bh, units, 0, p);
}

// Rows of X for the step products: in bfloat16, `rows` rows of `depth` (row r at x + r · ldx) rounded
// to pairs into `pairs` (row r at pairs + r · (depth + 1) / 2), this thread's share of them (called
// by every thread of a parallel region; the loop's end waits for all). In float32 nothing to do.
static void round_rows(uint32_t *pairs, const float *x, int64_t ldx, int64_t rows, int64_t depth) {
    if (!pairs) return;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) bp_bf16_pack_pairs(pairs + r * ((depth + 1) / 2), x + r * ldx, depth, 1);
}

// Where the threads share the steps by blocks (split_rows: W_hh too large for a core's cache, read
// from the third-level cache or memory at every step) and the rows are 16 or more, the steps'
// hidden products take 16 rows at a time (bp_gate_block_product's `wide`), from a copy of the
// step's rows at a stride that spreads them over the first-level cache's sets (in place they are
// t · H apart, a multiple of 4 KB). 1 thread, Zen 4, LSTM, 16 rows of 32 steps, 1024 → 1024 units,
// minima of interleaved runs: forward 92-98 → 86-87 ms, backward 176-177 → 172-173; GRU, 32 rows of
// 50 steps, 512 → 512 units (W_hh 3 MB): the same within noise.
static int wide_steps(const bp_rnn_params *p, int by_rows) {
    return !by_rows && p->precision == BP_FP32 && p->n >= 16 && bp_micro_kernel().rows16;
}

// A row stride of at least `floats` floats, an odd number of 64-byte lines: any 64 rows in a row
// fall in different sets of the first-level cache.
static int64_t spread_stride(int64_t floats) { return ((floats + 15) / 16 | 1) * 16; }

// `rows` rows of `depth` (row r at x + r · ldx) copied to `staged` (row r at staged + r · lds) for
// the wide step products, this thread's share (the loop's end waits for all). NULL: nothing to do.
static void stage_rows(float *staged, int64_t lds, const float *x, int64_t ldx, int64_t rows, int64_t depth) {
    if (!staged) return;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) memcpy(staged + r * lds, x + r * ldx, (size_t)depth * sizeof(float));
}

// The unit blocks in pair `pair` of `blocks`: 2, or 1 for a last block alone.
static int64_t pair_blocks(int64_t blocks, int64_t pair) { return blocks - 2 * pair < 2 ? 1 : 2; }

// Pair `pair`'s x_t · W_ihᵀ for steps [s0, s0 + steps) and batch rows [b0, b0 + rows) into xp
// ([n][count · G · 16] a step, steps `step_floats` apart): x's row b of step s at
// x + (b · t + s) · input, or x_pairs (bfloat16).
static void input_products(float *xp, int64_t step_floats, const float *x, const uint32_t *x_pairs, int64_t s0,
                           int64_t steps, int64_t b0, int64_t rows, const bp_rnn_params *p, const bp_gate_panels *wih,
                           int64_t pair) {
    int64_t count = pair_blocks(bp_unit_blocks(p->hidden), pair), ldt = count * wih->gates * BP_NR;
    int64_t in = p->input, in_pairs = (in + 1) / 2, t = p->t;
    xp += b0 * ldt;
    if (x_pairs)
        bp_gate_block_product_pairs(xp, ldt, step_floats, x_pairs + (b0 * t + s0) * in_pairs, t * in_pairs, in_pairs,
                                    steps, rows, wih, 2 * pair, count);
    else if (steps == 1)
        bp_gate_block_product(xp, ldt, 0, x + (b0 * t + s0) * in, t * in, 0, 1, rows, wih, 2 * pair, count, 0);
    else  // a batch row's steps are neighbouring rows of x: each kernel call reads rows `in` apart
        bp_gate_block_product(xp, step_floats, ldt, x + (b0 * t + s0) * in, in, t * in, rows, steps, wih, 2 * pair,
                              count, 0);
}

// Work below which a step runs on one thread: multiply-adds of the hidden product.
static int step_in_parallel(const bp_rnn_params *p) {
    return p->n * bp_rnn_gates(p->kind) * p->hidden * (p->hidden + p->input) >= 4 * BP_PARALLEL_MIN;
}

static int64_t row_chunks(int64_t n) { return (n + ROW_CHUNK - 1) / ROW_CHUNK; }
static int64_t chunk_rows(int64_t n, int64_t chunk) {
    return n - chunk * ROW_CHUNK < ROW_CHUNK ? n - chunk * ROW_CHUNK : ROW_CHUNK;
}

// Share `share` of `shares` of the rows, whole chunks: rows [*b0, *b0 + *rows).
static void rows_share(int64_t n, int64_t share, int64_t shares, int64_t *b0, int64_t *rows) {
    int64_t chunks = row_chunks(n), end = (share + 1) * chunks / shares * ROW_CHUNK;
    *b0 = share * chunks / shares * ROW_CHUNK;
    *rows = min64(end, n) - *b0;
}

// Packed W_hh up to which the threads may share the steps by rows (each thread reads all of it at
// every step, from its core's second-level cache).
enum { SPLIT_ROWS_MOST_BYTES = 3 << 19 };

// How `threads` threads share the steps. By rows where the chunks go evenly (or in plenty) to the
// threads, each thread's rows fill the kernel's row groups (a multiple of them, or two at least)
// and W_hh fits in a core's cache: each thread runs every step for its rows, which depend on no
// other thread's, so no thread waits for another and each reads only the states and gradients
// its own core wrote. Otherwise by the unit blocks' pairs, for every row: a step's products need
// all of the previous step's states (backward: gradients), so the threads meet at every step and
// read each other's parts of them. Either way each number is computed the same way. By rows
// against by blocks, float32, 2 threads, Intel Xeon (forward / backward, ms): LSTM, 128 rows of 28
// steps, 28 → 128 units 2.96 / 6.31 → 2.65 / 5.27; 32 of 64, 256 → 256 9.00 / 17.6 → 8.41 / 16.6;
// 16 of 48, 128 → 128 0.93 / 2.16 → 0.87 / 1.81 (but with the AVX2 kernel, whose groups of 6 rows
// fit shares of 8 badly, 1.59 / 3.55 → 1.95 / 3.44); tanh RNN, 64 of 50, 256 → 256 3.71 / 9.78 →
// 2.97 / 8.64. On 1 thread the runs of rows are as fast as whole steps (backward 1–3% faster).
// Not in bfloat16, whose steps round the previous states to pairs for all rows at once.
static int split_rows(const bp_rnn_params *p, const bp_gate_panels *whh, int threads) {
    int64_t chunks = row_chunks(p->n), mr = bp_micro_kernel().mr;
    int64_t bytes = bp_unit_blocks(p->hidden) * whh->gates * BP_NR * whh->depth * (int64_t)sizeof(float);
    int even = chunks % threads == 0 || chunks >= 4 * threads;  // no thread waits long for another
    int fills = 1;                                              // every share fills the kernel's row groups
    for (int64_t share = 0; share < threads && threads > 1; share++) {
        int64_t b0, rows;
        rows_share(p->n, share, threads, &b0, &rows);
        fills &= rows % mr == 0 || rows >= 2 * mr;
    }
    return p->precision == BP_FP32 && bytes <= SPLIT_ROWS_MOST_BYTES && even && fills;
}

// What the forward's steps read and write besides the parameters (see bp_rnn_forward).
typedef struct {
    float *y, *saved, *xp, *hp;
    const float *start;  // the initial state h0 (or zeros), [n, H]
    float *c;            // the LSTM's cell state, [n, H]
    const float *x;
    const uint32_t *x_pairs;
    uint32_t *h_pairs;
    const bp_gate_panels *wih, *whh;
    const float *b_ih, *b_hh;  // zeros where the layer has none
    int by_step;
    int avx512_cells;  // an LSTM's full blocks through bp_lstm_cells_avx512
    float *h_rows;     // the wide steps' copy of h_{t−1}, rows ld_rows apart (NULL: read in place)
    int64_t ld_rows;
} forward_arrays;

// h_{t−1} of forward step k: row b at the result + b · *ld, the previous step's output or the initial state.
static const float *state_before(const forward_arrays *a, const bp_rnn_params *p, int64_t k, int64_t *ld) {
    *ld = k > 0 ? p->t * p->y_stride : p->hidden;
    return k > 0 ? a->y + step_at(p, k - 1) * p->y_stride + p->y_offset : a->start;
}

// Forward step k of unit-block pair `pair` for batch rows [b0, b0 + rows): the hidden product (and
// the input product, by step), then the cells. xp holds the input products of the steps from
// `xp_first` on (by step: of this step alone).
static void forward_pair(const forward_arrays *a, const bp_rnn_params *p, int64_t k, int64_t pair, int64_t b0,
                         int64_t rows, int64_t xp_first) {
    int64_t n = p->n, hidden = p->hidden, blocks = bp_unit_blocks(hidden), width = bp_rnn_gates(p->kind) * BP_NR;
    int64_t s = step_at(p, k), count = pair_blocks(blocks, pair), ldt = count * width, lp, ly = p->t * p->y_stride;
    const float *previous = state_before(a, p, k, &lp);
    float *out = a->y + s * p->y_stride + p->y_offset;  // h_t of batch row b at out + b · ly
    float *xs = a->xp + ((a->by_step ? 0 : s - xp_first) * blocks + 2 * pair) * n * width;
    float *hs = a->hp + 2 * pair * n * width;
    if (a->by_step) input_products(xs, 0, a->x, a->x_pairs, s, 1, b0, rows, p, a->wih, pair);
    if (a->h_pairs)
        bp_gate_block_product_pairs(hs + b0 * ldt, ldt, 0, a->h_pairs + b0 * ((hidden + 1) / 2), (hidden + 1) / 2, 0, 1,
                                    rows, a->whh, 2 * pair, count);
    else {  // h_{t−1} from the wide steps' copy, or in place
        int64_t ld = a->h_rows ? a->ld_rows : lp;
        const float *h = a->h_rows ? a->h_rows : previous;
        bp_gate_block_product(hs + b0 * ldt, ldt, 0, h + b0 * ld, ld, 0, 1, rows, a->whh, 2 * pair, count,
                              a->h_rows != NULL);
    }
    for (int64_t v = 0; v < count; v++) {
        int64_t u = 2 * pair + v, first = u * BP_NR, units = bp_block_units(hidden, u);
        if (a->avx512_cells && units == BP_NR)
            // The rows' saved runs are side by side within a group of RUN_ROWS rows (saved_run).
            for (int64_t b = b0, part; b < b0 + rows; b += part) {
                part = min64(b0 + rows, (b / RUN_ROWS + 1) * RUN_ROWS) - b;
                bp_lstm_cells_avx512(out + b * ly + first, ly, a->c + b * hidden + first, hidden,
                                     a->saved ? a->saved + saved_run(p, s, u, b) : NULL, xs + b * ldt + v * width,
                                     hs + b * ldt + v * width, ldt, a->b_ih + first, a->b_hh + first, hidden, part);
            }
        else
            for (int64_t b = b0; b < b0 + rows; b++)
                row_forward(out + b * ly + first, a->c + b * hidden + first, previous + b * lp + first,
                            a->saved ? a->saved + saved_run(p, s, u, b) : NULL, xs + b * ldt + v * width,
                            hs + b * ldt + v * width, a->b_ih + first, a->b_hh + first, units, p);
    }
}

int64_t bp_rnn_forward(float *y, float *h_n, float *c_n, float *saved, const float *x, const float *h0, const float *c0,
                       const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh,
                       const bp_rnn_params *p) {
    int64_t n = p->n, t = p->t, in = p->input, hidden = p->hidden, gates = bp_rnn_gates(p->kind), missing = 0;
    int64_t blocks = bp_unit_blocks(hidden), width = gates * BP_NR, ly = t * p->y_stride;
    int by_step = blocks * width * in * (int64_t)sizeof(float) <= BY_STEP_BYTES;
    float *hp = bp_aligned_alloc(64, blocks * n, width * (int64_t)sizeof(float), 0, &missing);
    float *start = bp_calloc(n * hidden, sizeof(float), &missing);
    float *c = bp_aligned_alloc(64, n * hidden, sizeof(float), 1, &missing);  // blocks' runs apart in cache lines
    // In bfloat16: x's rows and each step's h_{t−1} rows as pairs.
    int half = p->precision != BP_FP32;
    int64_t in_pairs = (in + 1) / 2, hidden_pairs = (hidden + 1) / 2;
    uint32_t *x_pairs = half ? bp_malloc(n * t * in_pairs, sizeof(uint32_t), &missing) : NULL;
    uint32_t *h_pairs = half ? bp_malloc(n * hidden_pairs, sizeof(uint32_t), &missing) : NULL;
    // A layer without biases adds zeros (x + 0 is x but for the sign of a zero, as before): the cells'
    // loops then read the biases unconditionally (a test per element would be masked loads from
    // NULL + offset: on an Intel Xeon the same LSTM's forward as above took 11.3 ms).
    float *zeros = !b_ih || !b_hh ? bp_calloc(gates * hidden, sizeof(float), &missing) : NULL;
    bp_gate_panels wih = {0}, whh = {0};  // W_ihᵀ [input, G·H], W_hhᵀ [H, G·H]
    if (!missing) missing = bp_pack_gate_panels(&wih, w_ih, in, 1, in, hidden, gates, p->precision);
    if (!missing) missing = bp_pack_gate_panels(&whh, w_hh, hidden, 1, hidden, hidden, gates, p->precision);
    int threads = step_in_parallel(p) ? bp_num_threads() : 1, by_rows = split_rows(p, &whh, threads);
    int64_t ld_rows = spread_stride(hidden);
    float *h_rows =
        wide_steps(p, by_rows) ? bp_aligned_alloc(64, n, ld_rows * (int64_t)sizeof(float), 0, &missing) : NULL;
    // Unit blocks go in pairs (the last may be alone: pair_blocks), so that one kernel call can
    // multiply with both blocks' panels where a block has one or three gates. hp: each pair's
    // h_{t−1} · W_hhᵀ at this step, [pair][n][count · G · 16]; xp: x_t · W_ihᵀ the same way
    // ([step][pair][n][count · G · 16]), where W_ih is small each step's where it is used (its
    // product is then short beside the cost of writing xp out and reading it back), else before
    // the steps: by rows, STEP_CHUNK steps at a time for a run's rows (in cache when its steps read
    // them), by blocks every step at once (W_ih's panels stay in cache while the rows pass).
    int64_t xp_steps = by_step ? 1 : by_rows ? min64(t, STEP_CHUNK) : t;
    float *xp = bp_aligned_alloc(64, xp_steps * blocks * n, width * (int64_t)sizeof(float), 0, &missing);
    if (missing) goto done;
    if (h0) memcpy(start, h0, (size_t)(n * hidden) * sizeof(float));
    if (c0 && p->kind == BP_LSTM) memcpy(c, c0, (size_t)(n * hidden) * sizeof(float));
    forward_arrays a = {
        y, saved, xp, hp, start, c, x, x_pairs, h_pairs, &wih, &whh, b_ih ? b_ih : zeros, b_hh ? b_hh : zeros, by_step};
    a.h_rows = h_rows, a.ld_rows = ld_rows;
    a.avx512_cells = p->kind == BP_LSTM && bp_micro_kernel().avx512;
    int64_t pairs = (blocks + 1) / 2, step_floats = blocks * n * width;
#pragma omp parallel if (threads > 1)
    {
        round_rows(x_pairs, x, in, n * t, in);
        if (by_rows)
#pragma omp for schedule(static)
            for (int64_t share = 0; share < threads; share++) {
                int64_t b0, rows;
                rows_share(n, share, threads, &b0, &rows);
                for (int64_t r = b0; r < b0 + rows; r += RUN_ROWS) {
                    int64_t run = min64(RUN_ROWS, b0 + rows - r);
                    for (int64_t k0 = 0; k0 < t; k0 += STEP_CHUNK) {
                        int64_t steps = min64(STEP_CHUNK, t - k0), first = p->reverse ? t - k0 - steps : k0;
                        for (int64_t pair = 0; pair < pairs && !by_step; pair++)
                            input_products(xp + 2 * pair * n * width, step_floats, x, x_pairs, first, steps, r, run, p,
                                           &wih, pair);
                        for (int64_t k = k0; k < k0 + steps; k++)
                            for (int64_t pair = 0; pair < pairs; pair++) forward_pair(&a, p, k, pair, r, run, first);
                    }
                }
            }
        else {
            if (!by_step)
#pragma omp for schedule(static)
                for (int64_t pair = 0; pair < pairs; pair++)
                    input_products(xp + 2 * pair * n * width, step_floats, x, x_pairs, 0, t, 0, n, p, &wih, pair);
            for (int64_t k = 0; k < t; k++) {
                int64_t lp;
                const float *previous = state_before(&a, p, k, &lp);
                round_rows(h_pairs, previous, lp, n, hidden);
                stage_rows(h_rows, ld_rows, previous, lp, n, hidden);
#pragma omp for schedule(static)
                for (int64_t pair = 0; pair < pairs; pair++) forward_pair(&a, p, k, pair, 0, n, 0);
            }
        }
    }
    for (int64_t b = 0; b < n && h_n; b++)
        memcpy(h_n + b * hidden,
               t > 0 ? y + b * ly + step_at(p, t - 1) * p->y_stride + p->y_offset : start + b * hidden,
               (size_t)hidden * sizeof(float));
    if (c_n && p->kind == BP_LSTM) memcpy(c_n, c, (size_t)(n * hidden) * sizeof(float));
done:
    free(xp), free(hp), free(start), free(c), free(x_pairs), free(h_pairs), free(h_rows), free(zeros);
    bp_gate_panels_free(&wih), bp_gate_panels_free(&whh);
    return missing;
}

// The cells of one batch row at one step backward, for `units` hidden units from the block's first
// (gate g of unit j at g · H + j in gi and gh, at g · 16 + j in saved). dh: ∂J/∂h_t in (the
// output's gradient added), ∂J/∂h_{t−1} out for the part that does not pass through W_hh (GRU's
// z ⊙ dh; 0 otherwise). dc: ∂J/∂c_t in, ∂J/∂c_{t−1} out (LSTM). gi, gh: the gradients of the input
// and the hidden pre-activations (the same array but for the GRU).
__attribute__((always_inline)) static inline void
cell_backward(float *restrict dh, float *restrict dc, float *gi, float *gh, const float *restrict h,
              const float *restrict h_prev, const float *restrict c_prev, const float *restrict saved, int64_t units,
              const bp_rnn_params *p) {
    int64_t hidden = p->hidden;
    switch (p->kind) {
    case BP_RNN_TANH:
    case BP_RNN_RELU:
        for (int64_t j = 0; j < units; j++) {
            gi[j] = p->kind == BP_RNN_TANH ? dh[j] * (1.0f - h[j] * h[j]) : (h[j] > 0.0f ? dh[j] : 0.0f);
            dh[j] = 0.0f;
        }
        break;
    case BP_LSTM:
        for (int64_t j = 0; j < units; j++) {
            float i = saved[j], f = saved[BP_NR + j], g = saved[2 * BP_NR + j], o = saved[3 * BP_NR + j];
            float tc = saved[5 * BP_NR + j];
            float dct = dc[j] + dh[j] * o * (1.0f - tc * tc);
            float di = dct * g, df = dct * c_prev[j], dg = dct * i, dout = dh[j] * tc;
            gi[j] = di * i * (1.0f - i);
            gi[hidden + j] = df * f * (1.0f - f);
            gi[2 * hidden + j] = dg * (1.0f - g * g);
            gi[3 * hidden + j] = dout * o * (1.0f - o);
            dc[j] = dct * f;
            dh[j] = 0.0f;
        }
        break;
    case BP_GRU:
        for (int64_t j = 0; j < units; j++) {
            float r = saved[j], z = saved[BP_NR + j], n = saved[2 * BP_NR + j], hn = saved[3 * BP_NR + j];
            float dn = dh[j] * (1.0f - z), dz = dh[j] * (h_prev[j] - n);
            float dan = dn * (1.0f - n * n), dr = dan * hn;
            gi[j] = gh[j] = dr * r * (1.0f - r);
            gi[hidden + j] = gh[hidden + j] = dz * z * (1.0f - z);
            gi[2 * hidden + j] = dan;
            gh[2 * hidden + j] = dan * r;
            dh[j] = dh[j] * z;
        }
        break;
    }
}

// sum[g · 16 + j] += v[g · H + j] for every gate g and `units` units.
__attribute__((always_inline)) static inline void add_runs(float *restrict sum, const float *restrict v, int64_t gates,
                                                           int64_t hidden, int64_t units) {
    for (int64_t g = 0; g < gates; g++)
        for (int64_t j = 0; j < units; j++) sum[g * BP_NR + j] += v[g * hidden + j];
}

// dh += tile (the later step's hidden gradients through W_hh; NULL: none), then dh += dy.
__attribute__((always_inline)) static inline void add_gradients(float *restrict dh, const float *restrict tile,
                                                                const float *restrict dy, int64_t units) {
    for (int64_t j = 0; j < units; j++) dh[j] = (tile ? dh[j] + tile[j] : dh[j]) + dy[j];
}

// dh's gradients added (add_gradients), cell_backward with the block's width a constant when the
// block is full, then the row's gi (and the GRU's gh) added to the block's sums for the biases'
// gradients, sum_i and sum_h ([G, 16]).
BP_MULTIVERSION
static void row_backward(float *restrict dh, const float *restrict tile, const float *restrict dy, float *restrict dc,
                         float *gi, float *gh, const float *restrict h, const float *restrict h_prev,
                         const float *restrict c_prev, const float *restrict saved, float *restrict sum_i,
                         float *restrict sum_h, int64_t units, const bp_rnn_params *p) {
    int64_t gates = bp_rnn_gates(p->kind);
    if (units == BP_NR) {
        add_gradients(dh, tile, dy, BP_NR);
        cell_backward(dh, dc, gi, gh, h, h_prev, c_prev, saved, BP_NR, p);
        add_runs(sum_i, gi, gates, p->hidden, BP_NR);
        if (p->kind == BP_GRU) add_runs(sum_h, gh, gates, p->hidden, BP_NR);
    } else {
        add_gradients(dh, tile, dy, units);
        cell_backward(dh, dc, gi, gh, h, h_prev, c_prev, saved, units, p);
        add_runs(sum_i, gi, gates, p->hidden, units);
        if (p->kind == BP_GRU) add_runs(sum_h, gh, gates, p->hidden, units);
    }
}

// sum[g · H + j] += step[g · 16 + j] for every gate g and the block's units j (sum at its first unit).
BP_MULTIVERSION
static void add_gates(double *restrict sum, const float *restrict step, int64_t gates, int64_t hidden, int64_t units) {
    for (int64_t g = 0; g < gates; g++)
        for (int64_t j = 0; j < units; j++) sum[g * hidden + j] += step[g * BP_NR + j];
}

// What the backward's steps read and write besides the weights (see bp_rnn_backward).
typedef struct {
    float *dh, *dc, *gi, *gh;  // dh, dc [n, H]; gi, gh rows [G · H] ldg apart (gh: the GRU's own, else gi)
    const float *h_prev;       // h_{t−1} of row b · t + s, ldh apart
    const float *dy, *y, *saved, *c0, *zeros;
    float *tiles;               // each pair's product of the later step's gradients with W_hh, [n, count · 16]
    uint32_t *later_pairs;      // bfloat16: the later step's gradient rows as pairs
    const bp_gate_panels *whh;  // W_hh [G·H, H]
    double *sums_i, *sums_h;    // the biases' gradients of each chunk of rows, [chunks][G · H]
    int64_t ldg, ldh;
    int prefetch_writes;  // the gate gradients' lines too (on AMD cores: prefetch_row_backward)
    float *later_rows;    // the wide steps' copy of the later step's gradient rows, ld_rows apart (NULL: none)
    int64_t ld_rows;
} backward_arrays;

// Asks for the lines that the cells of batch row b, block u will read at the backward's step k
// (the next one): its saved run and, for the LSTM, c_{t−1} from the run of the step before it in
// time (its own c_t is read by the step after it, which asked for it), its row of dy, and the
// RNN's row of y or the GRU's of h_{t−1}; and, on AMD cores, the runs of gi (and the GRU's gh) they
// will write. Their rows are far apart and out of cache; asked for a step ahead, they arrive while
// this step's products and cells run (1 thread, lstm_256 on Zen 4: the cells' time 4.5 → 2.3 ms
// for the reads; c_{t−1} asked for a step ahead rather than as it is read: their share of the
// backward 4.4% → 3.2%). Asking for the writes too, on Zen 4, 1 thread: the cells 7% of the
// backward's time → 3% (32 rows of 64 steps, 256 → 256 units: 45.2-45.8 → 43.8-43.9 ms; 128 rows
// of 28 steps, 28 → 128 units: 14.7-14.8 → 13.9-14.1; at 2 threads and for a GRU within noise); on
// an Intel Xeon it cost more than it gained (the 128-row LSTM's backward 10.4 → 10.9 ms).
static void prefetch_row_backward(const backward_arrays *a, int64_t k, int64_t u, int64_t b, const bp_rnn_params *p) {
    int64_t s = step_at(p, k), row = b * p->t + s, first = u * BP_NR, c_run = 4;  // c_t: saved run 4
    for (int64_t q = 0; a->saved && q < saved_per_unit(p->kind); q++)
        if (p->kind != BP_LSTM || q != c_run) __builtin_prefetch(a->saved + saved_run(p, s, u, b) + q * BP_NR);
    if (p->kind == BP_LSTM && k > 0)
        __builtin_prefetch(a->saved + saved_run(p, step_at(p, k - 1), u, b) + c_run * BP_NR);
    __builtin_prefetch(a->dy + row * p->y_stride + p->y_offset + first);
    if (p->kind == BP_RNN_TANH || p->kind == BP_RNN_RELU)
        __builtin_prefetch(a->y + row * p->y_stride + p->y_offset + first);
    if (p->kind == BP_GRU) __builtin_prefetch(a->h_prev + row * a->ldh + first);
    for (int64_t g = 0; a->prefetch_writes && g < bp_rnn_gates(p->kind); g++) {
        __builtin_prefetch(a->gi + row * a->ldg + g * p->hidden + first, 1);
        if (a->gh != a->gi) __builtin_prefetch(a->gh + row * a->ldg + g * p->hidden + first, 1);
    }
}

// Backward step k (−1: the step after step 0, only the product's part) of unit block u for batch
// rows [b0, b0 + rows), whole chunks: adds `tile` (the block's units of the later step's hidden
// gradients through W_hh, row b at tile + b · ldt; NULL at the last step) and the output's
// gradient to dh, asks for the next step's lines, runs the cells, and adds each chunk's sums of
// this step's gate gradients (over its rows, in order, in float) to the chunk's bias sums.
static void block_backward(const backward_arrays *a, const bp_rnn_params *p, int64_t k, int64_t u, const float *tile,
                           int64_t ldt, int64_t b0, int64_t rows) {
    int64_t hidden = p->hidden, gates = bp_rnn_gates(p->kind), first = u * BP_NR, units = bp_block_units(hidden, u);
    int64_t s = k >= 0 ? step_at(p, k) : 0;
    for (int64_t chunk = b0 / ROW_CHUNK; chunk * ROW_CHUNK < b0 + rows; chunk++) {
        float step_i[4 * BP_NR] = {0}, step_h[4 * BP_NR] = {0};  // this step's bias sums over the chunk
        for (int64_t b = chunk * ROW_CHUNK; b < chunk * ROW_CHUNK + chunk_rows(p->n, chunk); b++) {
            int64_t row = b * p->t + s;
            float *dhb = a->dh + b * hidden + first;
            const float *tile_b = tile ? tile + b * ldt : NULL;
            if (k < 0) {
                for (int64_t j = 0; j < units && tile_b; j++) dhb[j] += tile_b[j];
                continue;
            }
            const float *c_prev = p->kind != BP_LSTM ? NULL
                                  : k > 0            ? a->saved + saved_run(p, step_at(p, k - 1), u, b) + 4 * BP_NR
                                  : a->c0            ? a->c0 + b * hidden + first
                                                     : a->zeros;
            if (k > 0) prefetch_row_backward(a, k - 1, u, b, p);
            row_backward(dhb, tile_b, a->dy + row * p->y_stride + p->y_offset + first, a->dc + b * hidden + first,
                         a->gi + row * a->ldg + first, a->gh + row * a->ldg + first,
                         a->y + row * p->y_stride + p->y_offset + first, a->h_prev + row * a->ldh + first, c_prev,
                         a->saved ? a->saved + saved_run(p, s, u, b) : NULL, step_i, step_h, units, p);
        }
        if (k < 0) continue;
        int64_t gh = gates * hidden;
        add_gates(a->sums_i + chunk * gh + first, step_i, gates, hidden, units);
        if (a->sums_h != a->sums_i) add_gates(a->sums_h + chunk * gh + first, step_h, gates, hidden, units);
    }
}

// Backward step k of unit-block pair `pair` for batch rows [b0, b0 + rows) (whole chunks): the
// product of the later step's gate gradients with the pair's panels of W_hh, then each block's cells.
static void backward_pair(const backward_arrays *a, const bp_rnn_params *p, int64_t k, int64_t pair, int64_t b0,
                          int64_t rows) {
    int64_t n = p->n, t = p->t, blocks = bp_unit_blocks(p->hidden), gh = bp_rnn_gates(p->kind) * p->hidden;
    int64_t count = pair_blocks(blocks, pair), ldt = count * BP_NR;
    const float *later = k < t - 1 ? a->gh + step_at(p, k + 1) * a->ldg : NULL;  // rows t · ldg apart
    float *tiles_pair = a->tiles + 2 * pair * n * BP_NR;
    if (later && a->later_pairs)
        bp_gate_block_product_pairs(tiles_pair + b0 * ldt, ldt, 0, a->later_pairs + b0 * ((gh + 1) / 2), (gh + 1) / 2,
                                    0, 1, rows, a->whh, 2 * pair, count);
    else if (later) {  // the later step's gradient rows from the wide steps' copy, or in place
        int64_t ld = a->later_rows ? a->ld_rows : t * a->ldg;
        const float *g = a->later_rows ? a->later_rows : later;
        bp_gate_block_product(tiles_pair + b0 * ldt, ldt, 0, g + b0 * ld, ld, 0, 1, rows, a->whh, 2 * pair, count,
                              a->later_rows != NULL);
    }
    for (int64_t v = 0; v < count; v++)
        block_backward(a, p, k, 2 * pair + v, later ? tiles_pair + v * BP_NR : NULL, ldt, b0, rows);
}

int64_t bp_rnn_backward(float *dx, float *dh0, float *dc0, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh,
                        const float *dy, const float *dh_n, const float *dc_n, const float *saved, const float *y,
                        const float *x, const float *h0, const float *c0, const float *w_ih, const float *w_hh,
                        int accumulate_dx, const bp_rnn_params *p) {
    int64_t n = p->n, t = p->t, hidden = p->hidden, gates = bp_rnn_gates(p->kind), gh = gates * hidden, missing = 0;
    int64_t blocks = bp_unit_blocks(hidden);
    // gi, gh_rows: a row [G·H] per batch row and step, ldg apart; h_prev: h_{t−1} of row b · t + s, ldh apart.
    int64_t ldg = bp_unaliased_stride(gh), ldh = bp_unaliased_stride(hidden);
    float *gi = bp_aligned_alloc(64, n * t, ldg * (int64_t)sizeof(float), 0, &missing);
    float *gh_rows = p->kind == BP_GRU ? bp_aligned_alloc(64, n * t, ldg * (int64_t)sizeof(float), 0, &missing) : gi;
    float *h_prev = bp_aligned_alloc(64, n * t, ldh * (int64_t)sizeof(float), 0, &missing);
    float *dh = bp_aligned_alloc(64, n * hidden, sizeof(float), 1, &missing);
    float *dc = bp_aligned_alloc(64, n * hidden, sizeof(float), 1, &missing);
    float *zeros = bp_calloc(hidden, sizeof(float), &missing);
    float *tiles =
        bp_aligned_alloc(64, blocks * n, BP_NR * (int64_t)sizeof(float), 0, &missing);  // each block's products
    // The biases' gradients: Σ of gi (and the GRU's gh) over each chunk's rows (in float, step by
    // step), the steps (in double), then the chunks (in double, in order).
    int64_t chunks = row_chunks(n);
    double *sums_i = bp_aligned_alloc(64, chunks * gh, sizeof(double), 1, &missing);
    double *sums_h = p->kind == BP_GRU ? bp_aligned_alloc(64, chunks * gh, sizeof(double), 1, &missing) : sums_i;
    // In bfloat16: each step's rows of hidden gradients as pairs, for the product with W_hh.
    int half = p->precision != BP_FP32;
    uint32_t *later_pairs = half ? bp_malloc(n * ((gh + 1) / 2), sizeof(uint32_t), &missing) : NULL;
    float *later_rows = NULL;
    bp_gate_panels whh = {0};  // W_hh [G·H, H]
    if (!missing) missing = bp_pack_gate_panels(&whh, w_hh, hidden, 0, gh, hidden, 1, p->precision);
    int threads = step_in_parallel(p) ? bp_num_threads() : 1, by_rows = !missing && split_rows(p, &whh, threads);
    int64_t ld_rows = spread_stride(gh);
    if (!missing && wide_steps(p, by_rows))
        later_rows = bp_aligned_alloc(64, n, ld_rows * (int64_t)sizeof(float), 0, &missing);
    if (missing) goto done;
    if (dh_n) memcpy(dh, dh_n, (size_t)(n * hidden) * sizeof(float));
    if (dc_n && p->kind == BP_LSTM) memcpy(dc, dc_n, (size_t)(n * hidden) * sizeof(float));
    backward_arrays arrays = {dh,    dc,    gi,          gh_rows, h_prev, dy,     y,   saved, c0,
                              zeros, tiles, later_pairs, &whh,    sums_i, sums_h, ldg, ldh,   bp_cpu_is_amd()};
    arrays.later_rows = later_rows, arrays.ld_rows = ld_rows;
#pragma omp parallel if (threads > 1)
    {
        // h_{t−1} of every row and step, in x's row order, for dW_hh.
#pragma omp for schedule(static)
        for (int64_t b = 0; b < n; b++)
            for (int64_t k = 0; k < t; k++) {
                const float *prev = k > 0 ? y + (b * t + step_at(p, k - 1)) * p->y_stride + p->y_offset
                                    : h0  ? h0 + b * hidden
                                          : zeros;
                memcpy(h_prev + (b * t + step_at(p, k)) * ldh, prev, (size_t)hidden * sizeof(float));
            }
        // Step k adds to dh the product of step k + 1's hidden gradients with W_hh, then the output's
        // gradient, and runs the cells; the step after step 0 only the product. The threads share
        // the steps as in the forward (split_rows).
        if (by_rows)
#pragma omp for schedule(static)
            for (int64_t share = 0; share < threads; share++) {
                int64_t b0, rows;
                rows_share(n, share, threads, &b0, &rows);
                for (int64_t r = b0; r < b0 + rows; r += RUN_ROWS)
                    for (int64_t k = t - 1; k >= -1; k--)
                        for (int64_t pair = 0; pair < (blocks + 1) / 2; pair++)
                            backward_pair(&arrays, p, k, pair, r, min64(RUN_ROWS, b0 + rows - r));
            }
        else
            for (int64_t k = t - 1; k >= -1; k--) {
                if (k < t - 1) {
                    round_rows(later_pairs, gh_rows + step_at(p, k + 1) * ldg, t * ldg, n, gh);
                    stage_rows(later_rows, ld_rows, gh_rows + step_at(p, k + 1) * ldg, t * ldg, n, gh);
                }
#pragma omp for schedule(static)
                for (int64_t pair = 0; pair < (blocks + 1) / 2; pair++) backward_pair(&arrays, p, k, pair, 0, n);
            }
    }
    if (dh0) memcpy(dh0, dh, (size_t)(n * hidden) * sizeof(float));
    if (dc0 && p->kind == BP_LSTM) memcpy(dc0, dc, (size_t)(n * hidden) * sizeof(float));
    // dW_ih += giᵀ · x, dW_hh += ghᵀ · h_prev, over every row of every step at once: one pass over
    // gi for both where gh is gi (LSTM, RNN; on an Intel Xeon, 1 thread, 256 → 256 units, 2048
    // rows: 16.0 → 14.9 ms).
    bp_product_side by_input = {x, p->input, p->input, 0, dw_ih, p->input},
                    by_state = {h_prev, ldh, hidden, 0, dw_hh, hidden};
    if (gh_rows == gi)
        missing =
            bp_transposed_products(p->precision, gh, n * t, gi, ldg, (bp_product_side[]){by_input, by_state}, 2, 1);
    else {
        missing = bp_transposed_products(p->precision, gh, n * t, gi, ldg, &by_input, 1, 1);
        if (!missing) missing = bp_transposed_products(p->precision, gh, n * t, gh_rows, ldg, &by_state, 1, 1);
    }
    if (!missing && dx)
        missing = bp_layer_product(p->precision, 0, 0, n * t, p->input, gh, gi, ldg, w_ih, p->input, accumulate_dx, dx,
                                   p->input);
    for (int64_t j = 0; j < gh && !missing; j++) {
        double total_i = 0.0, total_h = 0.0;
        for (int64_t chunk = 0; chunk < chunks; chunk++)
            total_i += sums_i[chunk * gh + j], total_h += sums_h[chunk * gh + j];
        if (db_ih) db_ih[j] += (float)total_i;
        if (db_hh) db_hh[j] += (float)total_h;
    }
done:
    free(gi), free(h_prev), free(dh), free(dc), free(zeros), free(tiles), free(sums_i), free(later_pairs);
    free(later_rows);
    bp_gate_panels_free(&whh);
    if (gh_rows != gi) free(gh_rows);
    if (sums_h != sums_i) free(sums_h);
    return missing;
}
