// The forward of 3 × 3 convolutions with stride 2 on CPUs with AVX-512 or AVX2, read from x itself:
//
//   y[o][oh][ow] = Σ_{c, i, j} W[o][c][i][j] · x[c][2 · oh + i − pad][2 · ow + j − pad]
//
// for a segment of at most WIDTH pixels of one output row (q < W) and a block of BLOCK output
// channels, two accumulators a pixel: on AVX-512 14 pixels by 32 channels (two 16-lane vectors;
// 28 of the 32 registers), on AVX2 6 pixels by 16 channels (two 8-lane vectors; 12 of the 16
// registers, each broadcast serving two multiply-adds: with one broadcast per multiply-add the
// FMA units ran at half speed on Zen 3). The weights are packed as [taps][BLOCK]. Each input value
// is broadcast from x where it is: a stride of 2 costs a broadcast nothing, so there is no
// phase-split copy of the image and no column matrix to gather (on the Intel Xeon,
// conv_res3x3s2's forward spent a fifth of its time on those). The taps run in the order and
// blocks of conv2d.c's product (bp_kc_block), each block summed from 0 and added to the blocks
// before it, then the bias; a term that reads padding (a kernel row above or below the image, the
// first pixel's left tap, the last one's right tap) is skipped, which leaves the sum's bits as
// they are (see conv2d_direct.c). So every element is the product's sum, to the bit.
#include "conv2d_layout.h"

#if BP_AVX512_KERNEL
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

enum {
    WIDTH = 14,      // most pixels per segment (AVX-512)
    BLOCK = 32,      // output channels per block: two 16-lane accumulators a pixel (AVX-512)
    WIDTH_AVX2 = 6,  // the same on AVX2: two 8-lane accumulators a pixel
    BLOCK_AVX2 = 16,
    TAPS = 9,  // 3 × 3
    // Channels ahead whose input rows are asked for (1 thread, Intel Xeon, conv_res3x3s2's forward:
    // 13.1–13.5 ms without, 12.4–12.5 one ahead, 12.2–12.5 two, 12.1–12.4 four).
    AHEAD = 2,
    // The most packed weights (floats, 1.5 MB): every segment of every output row reads them
    // again, so they must stay in the second-level cache. 1 thread, Intel Xeon, 16 images, ms of
    // the product path → this one: 32 → 64 channels on 112 × 112, 21.4 → 13.9; 64 → 128 on
    // 56 × 56 (conv_res3x3s2), 14.9 → 13.9; 128 → 256 on 28 × 28 (1.2 MB), 14.6 → 12.4;
    // 128 → 128 on 16 × 16, 2.74 → 2.49; but 256 → 256 on 14 × 14 (2.4 MB), 9.64 → 10.2, and
    // 256 → 512 on 28 × 28 (8 images, 4.7 MB), 28.4 → 30.9.
    MOST_WEIGHTS = 3 << 17,
    // On AVX2 machines 384 KB, three quarters of Zen 3's 512 KB a core (chosen, not measured: with
    // at most 64 outputs only convolutions of over 166 input channels have more).
    MOST_WEIGHTS_AVX2 = 3 << 15,
    // The most output channels the AVX2 kernel takes. It runs at 76-81% of the FMA peak (Zen 3,
    // 1 thread) whatever the channels; the product's share grows with them (16 images, ms, product
    // -> this): 32 -> 16 channels on 56 x 56 2.8 -> 1.49, 32 -> 32 3.9 -> 3.0, 32 -> 64 6.3 -> 5.8,
    // 16 -> 32 on 112 x 112 7.1 either way; but 64 -> 96 on 28 x 28 4.88 -> 5.05, 32 -> 128 on
    // 56 x 56 11.5 either way, conv_res3x3s2 (64 -> 128) 22.6 -> 23.0.
    MOST_OUTPUTS_AVX2 = 64,
};

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))
#define AVX2 __attribute__((target("arch=x86-64-v3")))

// What a segment's sums read: x at input channel c0's plane and column 2 · ow0 (`plane`, `width`:
// x's plane and row lengths), the block's packed weights of c0 ([c][9][BLOCK]), the channels of this
// block of taps, the input row `top` = 2 · oh − pad under kernel row 0, the kernel rows [i0, i1)
// inside the image.
typedef struct {
    const float *x, *w;
    int64_t plane, width, pad, channels, top;
    int i0, i1;
} segment_taps;

// Where a segment's sums go after the last block of taps: y at the block's first channel and the
// segment's first pixel, hw floats from one channel to the next, the block's biases (or NULL), its
// channels (32 but in the last block).
typedef struct {
    float *y;
    const float *bias;
    int64_t hw, outputs;
} segment_out;

// sums[q][o] = (first ? 0 : total[q][o]) + the segment's sums over these taps, but for the first
// pixel's left tap where `left` and the last one's right tap where `right` (they read padding);
// into total, or after the last block of taps into y (+ bias), turned from [q][o] to [o][q] 16
// channels at a time in registers. W, left and right are constants when inlined, so that the
// accumulators are registers and the loop has no test.
AVX512 __attribute__((always_inline)) static inline void segment_sums(int W, int left, int right, float *total,
                                                                      int first, int last, const segment_taps *s,
                                                                      const segment_out *out) {
    v16f acc[WIDTH][2];
#pragma clang loop unroll(full)
    for (int q = 0; q < W; q++) acc[q][0] = acc[q][1] = (v16f){0};
    const float *x = s->x, *w = s->w;
    for (int64_t c = 0; c < s->channels; c++, x += s->plane, w += TAPS * BLOCK)
        for (int i = s->i0; i < s->i1; i++) {
            const float *row = x + (s->top + i) * s->width;  // pixel q's tap j at row[2q + j − pad]
            // The same row of the plane AHEAD channels on, into the first-level cache: the rows of
            // successive channels are a plane apart, a stride the hardware does not follow.
            if (c + AHEAD < s->channels) {
                __builtin_prefetch(row + AHEAD * s->plane - s->pad, 0, 3);
                __builtin_prefetch(row + AHEAD * s->plane - s->pad + 2 * W, 0, 3);
            }
#pragma clang loop unroll(disable)  // unrolled, the weights of all three are loaded early and spilled
            for (int j = 0; j < 3; j++) {
                v16f w0, w1;
                memcpy(&w0, w + (i * 3 + j) * BLOCK, 64);
                memcpy(&w1, w + (i * 3 + j) * BLOCK + 16, 64);
#pragma clang loop unroll(full)
                for (int q = 0; q < W; q++) {
                    if ((j == 0 && q == 0 && left) || (j == 2 && q == W - 1 && right)) continue;
                    float v = row[2 * q + j - s->pad];
                    acc[q][0] += v * w0;
                    acc[q][1] += v * w1;
                }
            }
        }
#pragma clang loop unroll(full)
    for (int q = 0; q < W; q++)
#pragma clang loop unroll(full)
        for (int h = 0; h < 2; h++) {
            if (!first) {
                v16f before;
                memcpy(&before, total + q * BLOCK + h * 16, 64);
                acc[q][h] = before + acc[q][h];
            }
            if (!last) memcpy(total + q * BLOCK + h * 16, &acc[q][h], 64);
        }
    if (!last) return;
    __mmask16 pixels = (__mmask16)((1u << W) - 1);
#pragma clang loop unroll(full)
    for (int h = 0; h < 2; h++) {
        if (h * 16 >= out->outputs) break;
        v16f sums[16];
#pragma clang loop unroll(full)
        for (int q = 0; q < 16; q++) sums[q] = q < W ? acc[q][h] : (v16f){0};
        bp_transpose_16x16(sums);  // sums[o]: channel h · 16 + o's pixels
        for (int64_t o = 0; o < 16 && h * 16 + o < out->outputs; o++) {
            v16f v = out->bias ? sums[o] + out->bias[h * 16 + o] : sums[o];
            _mm512_mask_storeu_ps(out->y + (h * 16 + o) * out->hw, pixels, (__m512)v);
        }
    }
}

// segment_sums with its width and edges constants.
AVX512 static void segment_sums_of(int64_t W, int left, int right, float *total, int first, int last,
                                   const segment_taps *s, const segment_out *out) {
    // clang-format off
    switch (W * 4 + left * 2 + right) {
#define EDGES(n) \
    case 4 * n: segment_sums(n, 0, 0, total, first, last, s, out); break; \
    case 4 * n + 1: segment_sums(n, 0, 1, total, first, last, s, out); break; \
    case 4 * n + 2: segment_sums(n, 1, 0, total, first, last, s, out); break; \
    case 4 * n + 3: segment_sums(n, 1, 1, total, first, last, s, out); break;
    EDGES(1) EDGES(2) EDGES(3) EDGES(4) EDGES(5) EDGES(6) EDGES(7)
    EDGES(8) EDGES(9) EDGES(10) EDGES(11) EDGES(12) EDGES(13) EDGES(14)
#undef EDGES
    }
    // clang-format on
}

// segment_sums on AVX2: 16 channels as two 8-lane halves, at most WIDTH_AVX2 pixels; after the
// last block of taps the sums turned from [q][o] to [o][q] 8 channels at a time.
AVX2 __attribute__((always_inline)) static inline void segment_sums_avx2(int W, int left, int right, float *total,
                                                                         int first, int last, const segment_taps *s,
                                                                         const segment_out *out) {
    v8f acc[WIDTH_AVX2][2];
#pragma clang loop unroll(full)
    for (int q = 0; q < W; q++) acc[q][0] = acc[q][1] = (v8f){0};
    const float *x = s->x, *w = s->w;
    for (int64_t c = 0; c < s->channels; c++, x += s->plane, w += TAPS * BLOCK_AVX2)
        for (int i = s->i0; i < s->i1; i++) {
            const float *row = x + (s->top + i) * s->width;  // pixel q's tap j at row[2q + j − pad]
            if (c + AHEAD < s->channels) __builtin_prefetch(row + AHEAD * s->plane - s->pad, 0, 3);
#pragma clang loop unroll(disable)
            for (int j = 0; j < 3; j++) {
                v8f w0, w1;
                memcpy(&w0, w + (i * 3 + j) * BLOCK_AVX2, 32);
                memcpy(&w1, w + (i * 3 + j) * BLOCK_AVX2 + 8, 32);
#pragma clang loop unroll(full)
                for (int q = 0; q < W; q++) {
                    if ((j == 0 && q == 0 && left) || (j == 2 && q == W - 1 && right)) continue;
                    float v = row[2 * q + j - s->pad];
                    acc[q][0] += v * w0;
                    acc[q][1] += v * w1;
                }
            }
        }
#pragma clang loop unroll(full)
    for (int q = 0; q < W; q++)
#pragma clang loop unroll(full)
        for (int h = 0; h < 2; h++) {
            if (!first) {
                v8f before;
                memcpy(&before, total + q * BLOCK_AVX2 + h * 8, 32);
                acc[q][h] = before + acc[q][h];
            }
            if (!last) memcpy(total + q * BLOCK_AVX2 + h * 8, &acc[q][h], 32);
        }
    if (!last) return;
#pragma clang loop unroll(full)
    for (int h = 0; h < 2; h++) {
        if (h * 8 >= out->outputs) break;
        v8f sums[8], columns[8];
#pragma clang loop unroll(full)
        for (int q = 0; q < 8; q++) sums[q] = q < W ? acc[q][h] : (v8f){0};
        bp_transpose_8x8(columns, sums);  // columns[o]: channel h · 8 + o's pixels
        for (int64_t o = 0; o < 8 && h * 8 + o < out->outputs; o++) {
            v8f v = out->bias ? columns[o] + out->bias[h * 8 + o] : columns[o];
            memcpy(out->y + (h * 8 + o) * out->hw, &v, (size_t)W * sizeof(float));  // W a constant: no call
        }
    }
}

AVX2 static void segment_sums_avx2_of(int64_t W, int left, int right, float *total, int first, int last,
                                      const segment_taps *s, const segment_out *out) {
    // clang-format off
    switch (W * 4 + left * 2 + right) {
#define EDGES(n) \
    case 4 * n: segment_sums_avx2(n, 0, 0, total, first, last, s, out); break; \
    case 4 * n + 1: segment_sums_avx2(n, 0, 1, total, first, last, s, out); break; \
    case 4 * n + 2: segment_sums_avx2(n, 1, 0, total, first, last, s, out); break; \
    case 4 * n + 3: segment_sums_avx2(n, 1, 1, total, first, last, s, out); break;
    EDGES(1) EDGES(2) EDGES(3) EDGES(4) EDGES(5) EDGES(6)
#undef EDGES
    }
    // clang-format on
}

// What the two kernels differ in: channels per block, pixels per segment, the segment's sums.
typedef struct {
    int64_t block, width;
    void (*sums)(int64_t W, int left, int right, float *total, int first, int last, const segment_taps *s,
                 const segment_out *out);
} stride2_kernel;

static stride2_kernel kernel_for(int avx512) {
    return avx512 ? (stride2_kernel){BLOCK, WIDTH, segment_sums_of}
                  : (stride2_kernel){BLOCK_AVX2, WIDTH_AVX2, segment_sums_avx2_of};
}

int bp_conv_stride2_fits(const bp_conv2d_params *p, int avx512) {
    int64_t lanes = kernel_for(avx512).block;  // output channels per block
    if (p->r != 3 || p->s != 3 || p->stride_h != 2 || p->stride_w != 2 || p->dilation_h != 1 || p->dilation_w != 1 ||
        p->groups != 1 || p->pad_h != p->pad_w || p->pad_h > 1 || p->k < lanes || p->c < 8 ||
        (!avx512 && p->k > MOST_OUTPUTS_AVX2))
        return 0;
    int64_t taps = bp_conv_taps(p);
    if ((p->k + lanes - 1) / lanes * lanes * taps > (avx512 ? MOST_WEIGHTS : MOST_WEIGHTS_AVX2)) return 0;
    for (int64_t block = 0; block < bp_kc_blocks(taps); block++) {
        int64_t t0, kc;
        bp_kc_block(taps, block, &t0, &kc);
        if (t0 % TAPS != 0) return 0;  // every block of taps whole input channels
    }
    return 1;
}

int64_t bp_conv2d_forward_stride2(float *y, const float *x, const float *weight, const float *bias,
                                  const bp_conv2d_params *p, int avx512) {
    stride2_kernel kernel = kernel_for(avx512);
    int64_t taps = bp_conv_taps(p), hw = bp_conv_pixels(p), plane = p->h * p->w, pad = p->pad_h, missing = 0;
    int64_t block = kernel.block, blocks = (p->k + block - 1) / block;
    int64_t segments = (p->out_w + kernel.width - 1) / kernel.width;
    float *packed = bp_aligned_alloc(64, blocks * taps * block, sizeof(float), 0, &missing);
    if (missing) return missing;
    bp_conv_pack_output_lanes(packed, weight, block, p);  // one group: [block][t][block's channels]
    // Work in output rows of every image: each writes only its own row of y.
#pragma omp parallel for schedule(static) if (p->n * p->k * hw * taps >= BP_PARALLEL_MIN)
    for (int64_t item = 0; item < p->n * p->out_h; item++) {
        int64_t image = item / p->out_h, oh = item % p->out_h, top = 2 * oh - pad;
        float total[WIDTH * BLOCK] __attribute__((aligned(64)));  // the larger kernel's [q][o]
        // The two input rows the next output row reads first, asked for now (into the second-level
        // cache): the hardware does not follow 2 · c streams of short rows.
        for (int64_t r = top + 3; r < top + 5 && r < p->h; r++)
            for (int64_t c = 0; c < p->c; c++)
                for (int64_t f = 0; f < p->w; f += 16)
                    __builtin_prefetch(x + ((image * p->c + c) * p->h + r) * p->w + f, 0, 2);
        segment_taps s = {.plane = plane, .width = p->w, .pad = pad, .top = top};
        s.i0 = top < 0 ? (int)-top : 0;
        s.i1 = top + 3 > p->h ? (int)(p->h - top) : 3;
        for (int64_t sgm = 0; sgm < segments; sgm++) {
            int64_t ow0 = sgm * p->out_w / segments, W = (sgm + 1) * p->out_w / segments - ow0;
            int left = 2 * ow0 - pad < 0, right = 2 * (ow0 + W - 1) + 2 - pad >= p->w;
            for (int64_t b = 0; b < blocks; b++) {
                segment_out out = {y + (image * p->k + b * block) * hw + oh * p->out_w + ow0,
                                   bias ? bias + b * block : NULL, hw,
                                   p->k - b * block < block ? p->k - b * block : block};
                for (int64_t kb = 0; kb < bp_kc_blocks(taps); kb++) {
                    int64_t t0, kc;
                    bp_kc_block(taps, kb, &t0, &kc);
                    s.x = x + (image * p->c + t0 / TAPS) * plane + 2 * ow0;
                    s.w = packed + (b * taps + t0) * block;
                    s.channels = kc / TAPS;
                    kernel.sums(W, left, right, total, kb == 0, kb == bp_kc_blocks(taps) - 1, &s, &out);
                }
            }
        }
    }
    free(packed);
    return 0;
}
#endif
