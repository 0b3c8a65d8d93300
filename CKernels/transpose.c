// Rows of floats turned into 16-lane columns, 16 × 16 at a time through the register transpose.
#include "internal.h"

#include <string.h>

// One block of 16 rows of 16 floats, straight from src into registers: with a test per row (as
// the edge blocks below have) the block lives on the stack (Zen 4, 1 thread: 62 -> 20 ns a block;
// conv_lenet1's weight gradient 1.19 -> 0.93 ms, minima of interleaved runs).
__attribute__((always_inline)) static inline void pack_whole_block(float *dst, const float *src, int64_t ld,
                                                                   int streamed) {
    v16f block[16];
#pragma clang loop unroll(full)
    for (int r = 0; r < 16; r++) {
        // the lines past `count` too: conv_stem7x7's weight gradient packs dy's rows in chunks of
        // 256 pixels (Zen 4, medians of interleaved runs: 1 thread 42.0 -> 41.0 ms, 2 22.5 -> 21.8)
        if (streamed) __builtin_prefetch(src + r * ld + 64);
        memcpy(&block[r], src + r * ld, sizeof block[r]);
    }
    bp_transpose_16x16(block);
#pragma clang loop unroll(full)
    for (int j = 0; j < 16; j++) memcpy(dst + j * 16, &block[j], sizeof block[j]);
}

BP_MULTIVERSION
void bp_pack_lanes16(float *dst, const float *src, int64_t ld, int64_t rows, int64_t count, int streamed) {
    for (int64_t j0 = 0; j0 < count; j0 += 16) {
        int64_t width = count - j0 < 16 ? count - j0 : 16;
        if (rows == 16 && width == 16) {
            pack_whole_block(dst + j0 * 16, src + j0, ld, streamed);
            continue;
        }
        v16f block[16];
        for (int64_t r = 0; r < 16; r++) {
            const float *from = src + r * ld + j0;
            if (streamed && r < rows) __builtin_prefetch(from + 64);
            float row[16] = {0};  // a short group's missing places and the rows past `rows` are 0
            if (r < rows) bp_copy_short(row, from, width);
            memcpy(&block[r], row, sizeof row);
        }
        bp_transpose_16x16(block);
        for (int64_t j = 0; j < width; j++) memcpy(dst + (j0 + j) * 16, &block[j], sizeof block[j]);
    }
}
