// The recurrent layers' step products, a block of hidden units at a time:
//
//   tile [n, G · 16] = X [n, depth] · B[:, columns of block u]
//
// X is a batch's inputs or states, read in place (forward: x_t, depth input, and h_{t−1}, depth H;
// backward: the hidden pre-activations' gradients, depth G · H). The weights B are packed
// once per forward or backward in 16-column panels ordered unit block by unit block, each block's
// G gates side by side, so that one block's product holds every gate of its 16 units and the cell
// update can follow it while it is in cache. Each element sums over depth in a fixed order (blocks
// of DEPTH_BLOCK, in order): the bits do not depend on who computes which block.
#include "internal.h"

#include <stdlib.h>

enum { DEPTH_BLOCK = 256 };  // reduction steps per micro-kernel call: a 16-column panel stays in L1

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t bp_unit_blocks(int64_t hidden) { return (hidden + BP_NR - 1) / BP_NR; }

int64_t bp_pack_gate_panels(bp_gate_panels *w, const float *m, int64_t ld, int by_rows, int64_t depth, int64_t hidden,
                            int64_t gates) {
    int64_t missing = 0, blocks = bp_unit_blocks(hidden), panels = blocks * gates;
    *w = (bp_gate_panels){bp_malloc(panels * BP_NR * depth, sizeof(float), &missing), depth, hidden, gates};
    if (!w->panels) return missing;
    // Depth block [t0, t0 + kc), panel q = u · G + g: kc rows of 16 floats, column jj of row k
    // being B[t0 + k][g · H + u · 16 + jj] (0 past the last unit).
    for (int64_t t0 = 0; t0 < depth; t0 += DEPTH_BLOCK) {
        int64_t kc = min64(DEPTH_BLOCK, depth - t0);
        for (int64_t q = 0; q < panels; q++) {
            float *dst = w->panels + t0 * panels * BP_NR + q * kc * BP_NR;
            int64_t first = (q % gates) * hidden + (q / gates) * BP_NR, units = hidden - (q / gates) * BP_NR;
            for (int64_t jj = 0; jj < BP_NR; jj++)
                for (int64_t k = 0; k < kc; k++)
                    dst[k * BP_NR + jj] = jj >= units ? 0.0f
                                          : by_rows   ? m[(first + jj) * ld + t0 + k]
                                                      : m[(t0 + k) * ld + first + jj];
        }
    }
    return 0;
}

void bp_gate_panels_free(bp_gate_panels *w) {
    free(w->panels);
    *w = (bp_gate_panels){0};
}

void bp_gate_block_product(float *tile, int64_t ldt, const float *x, int64_t ldx, int64_t n, const bp_gate_panels *w,
                           int64_t block) {
    int64_t panels = bp_unit_blocks(w->hidden) * w->gates, units = min64(BP_NR, w->hidden - block * BP_NR);
    for (int64_t g = 0; g < w->gates; g++)
        for (int64_t t0 = 0; t0 < w->depth; t0 += DEPTH_BLOCK) {
            int64_t kc = min64(DEPTH_BLOCK, w->depth - t0);
            const float *b = w->panels + t0 * panels * BP_NR + (block * w->gates + g) * kc * BP_NR;
            // The panel of B stays in L1 while every 6 rows of X pass it.
            for (int64_t a = 0; a < n; a += BP_MR)
                bp_micro_6x16_rows(kc, x + a * ldx + t0, ldx, b, tile + a * ldt + g * BP_NR, ldt, t0 > 0,
                                   min64(BP_MR, n - a), units);
        }
}
