// The recurrent layers' products, one or more blocks of 16 hidden units at a time:
//
//   tile [n, count · G · 16] = X [n, depth] · B[:, columns of blocks u … u + count − 1]
//                                                                  for each of `steps` steps
//
// X is a batch's inputs or states, read in place (forward: x_t, depth input, and h_{t−1}, depth H;
// backward: the hidden pre-activations' gradients, depth G · H). The weights B are packed
// once per forward or backward in 16-column panels ordered unit block by unit block, each block's
// G gates side by side, so that one block's product holds every gate of its 16 units and the cell
// update can follow it while it is in cache. Each element sums over depth in a fixed order (blocks
// of DEPTH_BLOCK, in order): the bits do not depend on who computes which block. In bfloat16 the
// block's G · 16 columns go in 32-column panels of pairs for bp_bf16_tile, X comes as rows of pairs
// (rounded once by the caller, for every block), and each element is bp_bf16_gemm's sum over the depth.
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum { DEPTH_BLOCK = 256 };  // reduction steps per micro-kernel call

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Gate g of unit block u, depth block [t0, t0 + kc): kc rows of 16 floats. A block's panels are
// contiguous, depth block by depth block, gate by gate, in the order its product reads them.
static float *panel(const bp_gate_panels *w, int64_t u, int64_t g, int64_t t0) {
    int64_t kc = min64(DEPTH_BLOCK, w->depth - t0);
    return w->panels + (u * w->depth + t0) * w->gates * BP_NR + g * kc * BP_NR;
}

// B's first column in panel q = u · G + g: that of gate g of unit u · 16.
static int64_t column(const bp_gate_panels *w, int64_t q) { return (q % w->gates) * w->hidden + q / w->gates * BP_NR; }

// The 32-column panels of pairs of a block's G · 16 columns: panel pp holds gates 2pp and 2pp + 1.
static int64_t pair_panels(const bp_gate_panels *w) {
    return (w->gates * BP_NR + BP_BF16_COLUMNS - 1) / BP_BF16_COLUMNS;
}

// Panel pp of unit block u, depth block [t0, t0 + kc): (kc + 1) / 2 rows of 32 pairs, laid out as
// the float panels are.
static uint32_t *pair_panel(const bp_gate_panels *w, int64_t u, int64_t pp, int64_t t0) {
    int64_t kc = min64(DEPTH_BLOCK, w->depth - t0), panels = pair_panels(w);
    return w->pairs + (u * ((w->depth + 1) / 2) + t0 / 2) * panels * BP_BF16_COLUMNS +
           pp * ((kc + 1) / 2) * BP_BF16_COLUMNS;
}

// Panel pp of block u's pairs, every depth block: column jj is gate 2pp + jj / 16 of unit u · 16 + jj % 16
// (0 past the last gate or unit). With `by_rows` each column is a row of M, rounded to pairs along
// it; otherwise each pair of M's rows gives 16 contiguous columns per gate, rounded and interleaved.
static void pack_pair_panel(const bp_gate_panels *w, const float *m, int64_t ld, int by_rows, int64_t u, int64_t pp) {
    int64_t units = bp_block_units(w->hidden, u);
    for (int64_t t0 = 0; t0 < w->depth; t0 += DEPTH_BLOCK) {
        int64_t kc = min64(DEPTH_BLOCK, w->depth - t0), pairs = (kc + 1) / 2;
        uint32_t *dst = pair_panel(w, u, pp, t0);
        memset(dst, 0, (size_t)(pairs * BP_BF16_COLUMNS) * sizeof(uint32_t));
        for (int64_t half = 0; half < 2 && 2 * pp + half < w->gates; half++) {
            int64_t first = (2 * pp + half) * w->hidden + u * BP_NR;  // the gate's column of unit u · 16
            if (by_rows)
                for (int64_t jj = 0; jj < units; jj++) {
                    uint32_t column[DEPTH_BLOCK / 2];
                    bp_bf16_pack_pairs(column, m + (first + jj) * ld + t0, kc, 1);
                    for (int64_t q = 0; q < pairs; q++) dst[q * BP_BF16_COLUMNS + half * BP_NR + jj] = column[q];
                }
            else
                for (int64_t q = 0; q < pairs; q++) {
                    uint16_t even[BP_NR] = {0}, odd[BP_NR] = {0};
                    bp_bf16_round_flushed(even, m + (t0 + 2 * q) * ld + first, units);
                    if (t0 + 2 * q + 1 < w->depth) bp_bf16_round_flushed(odd, m + (t0 + 2 * q + 1) * ld + first, units);
                    for (int64_t jj = 0; jj < BP_NR; jj++)
                        dst[q * BP_BF16_COLUMNS + half * BP_NR + jj] = even[jj] | (uint32_t)odd[jj] << 16;
                }
        }
    }
}

int64_t bp_pack_gate_panels(bp_gate_panels *w, const float *m, int64_t ld, int by_rows, int64_t depth, int64_t hidden,
                            int64_t gates, int32_t precision) {
    int64_t missing = 0, blocks = bp_unit_blocks(hidden), panels = blocks * gates;
    *w = (bp_gate_panels){NULL, NULL, depth, hidden, gates, bp_bf16_emulating(precision == BP_BF16_EMULATED)};
    if (precision != BP_FP32) {
        int64_t count = blocks * pair_panels(w);
        w->pairs = bp_malloc(count * (depth + 1) / 2 * BP_BF16_COLUMNS, sizeof(uint32_t), &missing);
        if (!w->pairs) return missing;
#pragma omp parallel for schedule(static) if (count * depth * BP_BF16_COLUMNS >= BP_PARALLEL_MIN)
        for (int64_t q = 0; q < count; q++) pack_pair_panel(w, m, ld, by_rows, q / pair_panels(w), q % pair_panels(w));
        return 0;
    }
    w->panels = bp_malloc(panels * BP_NR * depth, sizeof(float), &missing);
    // Panel q = u · G + g: column jj of row k of depth block t0 is B[t0 + k][g · H + u · 16 + jj]
    // (0 past the last unit). M is read along its rows: a strided walk down M (a page a row) would
    // miss the TLB at every read.
    if (!w->panels) return missing;
    int parallel = panels * depth * BP_NR >= BP_PARALLEL_MIN;
    if (by_rows) {  // rows g · H + u · 16 + jj of M, jj < 16, are the columns of panel q
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t q = 0; q < panels; q++)
            for (int64_t t0 = 0; t0 < depth; t0 += DEPTH_BLOCK)
                bp_pack_lanes16(panel(w, q / gates, q % gates, t0), m + column(w, q) * ld + t0, ld,
                                bp_block_units(hidden, q / gates), min64(DEPTH_BLOCK, depth - t0), 0);
    } else {  // row k of M holds row k − t0 of every panel of depth block t0
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t k = 0; k < depth; k++)
            for (int64_t q = 0; q < panels; q++) {
                float row[BP_NR] = {0};
                bp_copy_short(row, m + k * ld + column(w, q), bp_block_units(hidden, q / gates));
                int64_t t0 = k - k % DEPTH_BLOCK;
                memcpy(panel(w, q / gates, q % gates, t0) + (k - t0) * BP_NR, row, sizeof row);
            }
    }
    return 0;
}

void bp_gate_panels_free(bp_gate_panels *w) {
    free(w->panels);
    free(w->pairs);
    *w = (bp_gate_panels){0};
}

void bp_gate_block_product(float *tile, int64_t ldt, int64_t tile_step, const float *x, int64_t ldx, int64_t x_step,
                           int64_t steps, int64_t n, const bp_gate_panels *w, int64_t block, int64_t count, int wide) {
    int64_t gates = w->gates, first = block * gates, last = (block + count) * gates;  // panel q = u · G + g
    bp_micro micro = bp_micro_kernel();
    // A kernel's rows of X stay in L1 while the blocks' panels of B (from L2, or memory) pass them.
    for (int64_t s = 0; s < steps; s++)
        for (int64_t a = 0, group; a < n; a += group) {
            // A batch's last rows that one call leaves over but two short calls cover go short_rows
            // at a time: with the 6-row kernel 7 or 8 rows as 4 + 3 or 4 + 4 rather than 6 + 1 or
            // 6 + 2 (32 rows: 64 rows' work, not 68).
            int64_t rest = n - a;
            group = wide && micro.rows16 && rest >= 16                ? 16
                    : rest > micro.mr && rest <= 2 * micro.short_rows ? micro.short_rows
                                                                      : micro.mr;
            for (int64_t t0 = 0; t0 < w->depth; t0 += DEPTH_BLOCK) {
                int64_t kc = min64(DEPTH_BLOCK, w->depth - t0);
                const float *xa = x + s * x_step + a * ldx + t0;
                float *ta = tile + s * tile_step + a * ldt;
                // Panels q and q + 1 in one call where the kernel takes two (then q's columns past its
                // block's units are stored too: zeros, or the tile's own value plus 0).
                for (int64_t q = first, pair; q < last; q += pair) {
                    pair = group < 16 && micro.nr > BP_NR && q + 1 < last ? 2 : 1;
                    const float *b = panel(w, q / gates, q % gates, t0);
                    int64_t next = pair == 2 ? panel(w, (q + 1) / gates, (q + 1) % gates, t0) - b : 0;
                    int64_t cols = (pair - 1) * BP_NR + bp_block_units(w->hidden, (q + pair - 1) / gates);
                    if (group == 16) micro.rows16(kc, xa, ldx, b, BP_NR, ta + (q - first) * BP_NR, ldt, t0 > 0, cols);
                    else
                        micro.rows(kc, xa, ldx, b, BP_NR, next, ta + (q - first) * BP_NR, ldt, t0 > 0,
                                   min64(group, n - a), cols);
                }
            }
        }
}

void bp_gate_block_product_pairs(float *tile, int64_t ldt, int64_t tile_step, const uint32_t *x, int64_t ldx,
                                 int64_t x_step, int64_t steps, int64_t n, const bp_gate_panels *w, int64_t block,
                                 int64_t count) {
    int64_t width = w->gates * BP_NR;
    for (int64_t v = 0; v < count; v++)
        for (int64_t s = 0; s < steps; s++)
            for (int64_t r = 0; r < n; r += BP_BF16_ROWS)
                for (int64_t t0 = 0; t0 < w->depth; t0 += DEPTH_BLOCK) {
                    int64_t pairs = (min64(DEPTH_BLOCK, w->depth - t0) + 1) / 2;
                    for (int64_t pp = 0; pp < pair_panels(w); pp++)
                        bp_bf16_tile(pairs, x + s * x_step + r * ldx + t0 / 2, ldx, pair_panel(w, block + v, pp, t0),
                                     tile + s * tile_step + r * ldt + v * width + pp * BP_BF16_COLUMNS, ldt, t0 > 0,
                                     min64(BP_BF16_ROWS, n - r), min64(BP_BF16_COLUMNS, width - pp * BP_BF16_COLUMNS),
                                     w->emulate);
                }
}
