// The recurrent layers' products, a block of hidden units at a time:
//
//   tile [n, G · 16] = X [n, depth] · B[:, columns of block u]     for each of `steps` steps
//
// X is a batch's inputs or states, read in place (forward: x_t, depth input, and h_{t−1}, depth H;
// backward: the hidden pre-activations' gradients, depth G · H). The weights B are packed
// once per forward or backward in 16-column panels ordered unit block by unit block, each block's
// G gates side by side, so that one block's product holds every gate of its 16 units and the cell
// update can follow it while it is in cache. Each element sums over depth in a fixed order (blocks
// of DEPTH_BLOCK, in order): the bits do not depend on who computes which block.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum { DEPTH_BLOCK = 256 };  // reduction steps per micro-kernel call

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t bp_unit_blocks(int64_t hidden) { return (hidden + BP_NR - 1) / BP_NR; }

// Gate g of unit block u, depth block [t0, t0 + kc): kc rows of 16 floats. A block's panels are
// contiguous, depth block by depth block, gate by gate, in the order its product reads them.
static float *panel(const bp_gate_panels *w, int64_t u, int64_t g, int64_t t0) {
    int64_t kc = min64(DEPTH_BLOCK, w->depth - t0);
    return w->panels + (u * w->depth + t0) * w->gates * BP_NR + g * kc * BP_NR;
}

int64_t bp_pack_gate_panels(bp_gate_panels *w, const float *m, int64_t ld, int by_rows, int64_t depth, int64_t hidden,
                            int64_t gates) {
    int64_t missing = 0, blocks = bp_unit_blocks(hidden), panels = blocks * gates;
    *w = (bp_gate_panels){bp_malloc(panels * BP_NR * depth, sizeof(float), &missing), depth, hidden, gates};
    // Panel q = u · G + g: column jj of row k of depth block t0 is B[t0 + k][g · H + u · 16 + jj]
    // (0 past the last unit).
    if (!w->panels) return missing;
#pragma omp parallel for schedule(static) if (panels * depth * BP_NR >= BP_PARALLEL_MIN)
    for (int64_t q = 0; q < panels; q++)
        for (int64_t t0 = 0; t0 < depth; t0 += DEPTH_BLOCK) {
            int64_t kc = min64(DEPTH_BLOCK, depth - t0);
            float *dst = panel(w, q / gates, q % gates, t0);
            int64_t first = (q % gates) * hidden + (q / gates) * BP_NR;
            int64_t units = bp_block_units(hidden, q / gates);
            if (by_rows) {
                // Row first + jj of M is column jj of the panel, every 16th float.
                for (int64_t jj = 0; jj < BP_NR; jj++) {
                    const float *row = jj < units ? m + (first + jj) * ld + t0 : NULL;
                    for (int64_t k = 0; k < kc; k++) dst[k * BP_NR + jj] = row ? row[k] : 0.0f;
                }
            } else {
                // Row t0 + k of M holds row k of the panel.
                for (int64_t k = 0; k < kc; k++) {
                    memcpy(dst + k * BP_NR, m + (t0 + k) * ld + first, (size_t)units * sizeof(float));
                    memset(dst + k * BP_NR + units, 0, (size_t)(BP_NR - units) * sizeof(float));
                }
            }
        }
    return 0;
}

void bp_gate_panels_free(bp_gate_panels *w) {
    free(w->panels);
    *w = (bp_gate_panels){0};
}

void bp_gate_block_product(float *tile, int64_t ldt, int64_t tile_step, const float *x, int64_t ldx, int64_t x_step,
                           int64_t steps, int64_t n, const bp_gate_panels *w, int64_t block) {
    int64_t units = bp_block_units(w->hidden, block);
    // Six rows of X stay in L1 while the block's panels of B (from L2) pass them.
    for (int64_t s = 0; s < steps; s++)
        for (int64_t a = 0; a < n; a += BP_MR)
            for (int64_t t0 = 0; t0 < w->depth; t0 += DEPTH_BLOCK) {
                int64_t kc = min64(DEPTH_BLOCK, w->depth - t0);
                for (int64_t g = 0; g < w->gates; g++)
                    bp_micro_6x16_rows(kc, x + s * x_step + a * ldx + t0, ldx, panel(w, block, g, t0),
                                       tile + s * tile_step + a * ldt + g * BP_NR, ldt, t0 > 0, min64(BP_MR, n - a),
                                       units);
            }
}
