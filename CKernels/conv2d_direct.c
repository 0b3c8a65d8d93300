// The forward convolution on CPUs with AVX-512, read directly from the phase-split padded buffer
// (conv2d_layout.h) with 16 output channels in the lanes of each accumulator:
//
//   y[m + o][oh][ow0 + q] = Σ_t W[m + o][t] · buffer[offset[t] + oh · wq + ow0 + q]
//
// for a segment of at most 16 pixels of one output row (q < W, an accumulator each) and a block
// of 16 output channels (o, the lanes; the weights packed as [taps][16]). The taps run in the order
// and the blocks (bp_kc_block) of conv2d.c's product, each block summed from 0 and added to
// the blocks before it, then the bias: every element is the sum conv2d.c computes, to the bit.
//
// What the product over the column matrix cannot skip, this does: a tap whose kernel row falls
// in the padding above or below the image for the whole output row, and, for the segment's first
// and last EDGE pixels, a tap whose kernel column falls in the padding left or right. Those terms
// are 0 · w, which leaves a sum unchanged (a sum that starts at +0 never becomes −0), so the bits
// are the same as the product's for finite weights (an infinite weight times a padding zero would
// be NaN there). On a 14 × 14 image, a 3 × 3 kernel with padding 1 reads padding in 9% of its
// multiply-adds, a 5 × 5 with padding 2 in 16%.
#include "conv2d_layout.h"

#if BP_AVX512_KERNEL
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

enum {
    WEIGHT_TAPS = 25,  // most taps per block of the weight gradient: 25 accumulators (a 5 × 5 kernel)
    LANES = 16,        // output channels per accumulator
    SEGMENT = 16,      // most pixels per segment: 16 accumulators, of the 32 registers
    EDGE = 3,          // pixels at each end of a segment whose padding taps are skipped
    SLACK = 16,        // floats after the buffer, as conv2d.c allocates it
};

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))

// What one output row's segments share: the taps, and which of them read inside the image.
typedef struct {
    const int64_t *offset;  // [R]: each tap's place in the buffer (conv_layout)
    const uint8_t *inside;  // [R]: the tap's kernel row is inside the image for this output row
    const int32_t *column;  // [R]: the tap's kernel column
    int64_t taps;           // R
} row_taps;

// y[o · hw + q] = the sums of one segment of W pixels and LANES (the first `outputs` stored)
// output channels; src is the buffer at the segment's first pixel, w this block's packed weights.
// Pixel q reads columns inside the image for kernel column j when first[j] <= q < end[j].
AVX512 __attribute__((always_inline)) static inline void segment(int W, float *y, int64_t hw, const float *src,
                                                                 const float *w, const row_taps *row,
                                                                 const int64_t *first, const int64_t *end,
                                                                 const float *bias, int64_t outputs) {
    float total[SEGMENT * LANES] __attribute__((aligned(64)));  // [q][o]: the blocks' sums so far
    for (int64_t block = 0; block < bp_kc_blocks(row->taps); block++) {
        int64_t t0, kc;
        bp_kc_block(row->taps, block, &t0, &kc);
        v16f acc[SEGMENT];
#pragma clang loop unroll(full)
        for (int q = 0; q < W; q++) acc[q] = (v16f){0};
        for (int64_t t = t0; t < t0 + kc; t++) {
            if (!row->inside[t]) continue;
            v16f wt;
            memcpy(&wt, w + t * LANES, 64);
            const float *x = src + row->offset[t];
            int64_t lo = first[row->column[t]], hi = end[row->column[t]];
#pragma clang loop unroll(full)
            for (int q = 0; q < W; q++) {
                if ((q < EDGE && q < lo) || (q >= W - EDGE && q >= hi)) continue;
                acc[q] += x[q] * wt;
            }
        }
#pragma clang loop unroll(full)
        for (int q = 0; q < W; q++) {
            v16f sum = acc[q];
            if (block > 0) {
                v16f before;
                memcpy(&before, total + q * LANES, 64);
                sum = before + sum;
            }
            memcpy(total + q * LANES, &sum, 64);  // in memory: registers hold the accumulators
        }
    }
    // Rows q become rows o (lanes q < W are the channel's pixels).
    v16f sums[SEGMENT] = {{0}};
    memcpy(sums, total, (size_t)W * sizeof(v16f));
    bp_transpose_16x16(sums);
    __mmask16 pixels = (__mmask16)((1u << W) - 1);
    for (int64_t o = 0; o < outputs; o++)
        _mm512_mask_storeu_ps(y + o * hw, pixels, (__m512)(bias ? sums[o] + bias[o] : sums[o]));
}

// segment() with its width a constant, so that the accumulators are registers.
AVX512 static void segment_of(int64_t W, float *y, int64_t hw, const float *src, const float *w, const row_taps *row,
                              const int64_t *first, const int64_t *end, const float *bias, int64_t outputs) {
    // clang-format off
    switch (W) {
#define WIDTH(n) case n: segment(n, y, hw, src, w, row, first, end, bias, outputs); break;
    WIDTH(1) WIDTH(2) WIDTH(3) WIDTH(4) WIDTH(5) WIDTH(6) WIDTH(7) WIDTH(8)
    WIDTH(9) WIDTH(10) WIDTH(11) WIDTH(12) WIDTH(13) WIDTH(14) WIDTH(15) WIDTH(16)
#undef WIDTH
    }
    // clang-format on
}

// Whether kernel row i of output row oh reads a row of the image (not padding).
static int row_inside(const bp_conv2d_params *p, int64_t oh, int64_t i) {
    return bp_conv_reads_inside(oh, p->stride_h, p->pad_h, i, p->dilation_h, p->h);
}

// Whether output rows a and b read the image with the same kernel rows (the interior rows all do).
static int same_rows_inside(const bp_conv2d_params *p, int64_t a, int64_t b) {
    for (int64_t i = 0; i < p->r; i++)
        if (row_inside(p, a, i) != row_inside(p, b, i)) return 0;
    return 1;
}

int64_t bp_conv2d_forward_direct(float *y, const float *x, const float *weight, const float *bias,
                                 const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, taps = bp_conv_taps(p), hw = bp_conv_pixels(p), missing = 0;
    int64_t blocks = (kg + LANES - 1) / LANES, segments = (p->out_w + SEGMENT - 1) / SEGMENT;
    float *packed = bp_aligned_alloc(64, p->groups * blocks * taps * LANES, sizeof(float), 0, &missing);
    int32_t *column = bp_malloc(taps, sizeof(int32_t), &missing);
    conv_layout l = bp_conv_layout_build(p, &missing);
    if (missing) return free(packed), free(column), free(l.offset), missing;
    bp_conv_pack_output_lanes(packed, weight, LANES, p);
    for (int64_t t = 0; t < taps; t++) column[t] = (int32_t)(t % p->s);
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *buffer = bp_calloc(l.size + SLACK, sizeof(float), &missing);
        uint8_t *inside = bp_malloc(taps, sizeof(uint8_t), &missing);
        int64_t *first = bp_malloc(2 * p->s, sizeof(int64_t), &missing), *end = first ? first + p->s : NULL;
        int ready = buffer && inside && first;
        row_taps row = {l.offset, inside, column, taps};
#pragma omp for schedule(static)
        for (int64_t item = 0; item < p->n * p->groups; item++) {
            if (!ready) continue;
            int64_t image = item / p->groups, g = item % p->groups;
            bp_conv_copy_in(buffer, x + (image * p->c + g * cg) * p->h * p->w, &l, p);
            float *yg = y + (image * p->k + g * kg) * hw;
            int64_t filled = -1;  // the output row `inside` was filled for
            for (int64_t oh = 0; oh < p->out_h; oh++) {
                if (filled < 0 || !same_rows_inside(p, filled, oh)) {
                    for (int64_t ci = 0, t = 0; ci < cg; ci++)
                        for (int64_t i = 0; i < p->r; i++, t += p->s)
                            memset(inside + t, row_inside(p, oh, i), (size_t)p->s);
                    filled = oh;
                }
                for (int64_t sgm = 0; sgm < segments; sgm++) {
                    int64_t ow0 = sgm * p->out_w / segments, width = (sgm + 1) * p->out_w / segments - ow0;
                    // Pixel ow0 + q reads input column (ow0 + q) · stride − pad + j · dilation.
                    for (int64_t j = 0; j < p->s; j++) {
                        int64_t shift = j * p->dilation_w - p->pad_w, lo = 0, hi = width;
                        while (lo < width && (ow0 + lo) * p->stride_w + shift < 0) lo++;
                        while (hi > lo && (ow0 + hi - 1) * p->stride_w + shift >= p->w) hi--;
                        first[j] = lo, end[j] = hi;
                    }
                    for (int64_t block = 0; block < blocks; block++)
                        segment_of(width, yg + block * LANES * hw + oh * p->out_w + ow0, hw, buffer + oh * l.wq + ow0,
                                   packed + (g * blocks + block) * taps * LANES, &row, first, end,
                                   bias ? bias + g * kg + block * LANES : NULL,
                                   kg - block * LANES < LANES ? kg - block * LANES : LANES);
                }
            }
        }
        free(buffer);
        free(inside);
        free(first);
    }
    free(packed);
    free(column);
    free(l.offset);
    return missing;
}

// MARK: - The weight gradient
//
//   partial[t][o] += Σ_{p in chunk} dy[o][p] · x[c_t][oh · SH − pad_h + i_t][ow · SW − pad_w + j_t]
//
// for each chunk of pixels p = oh · out_w + ow, with 16 output channels o in the lanes (dy packed
// pixel-major, [p][16]) and a block of taps t as accumulators: C input rows × the S taps of one
// kernel row (dilation 1, stride SW of 1 or 2), each input row read straight from x: the taps'
// inputs are broadcast one at a time, so no padded, phase-split copy is made (conv_res3x3s2's
// weight gradient, 1 thread, Zen 4, minima of interleaved runs: 18.1 -> 17.2 ms; the stem's and
// conv_lenet1's within 1%). The pixels run in the product's chunks and order (conv2d.c's weight
// gradient: chunks of pixels in row-major order, each summed from 0 and added to the partial), so
// every element is the product's sum to the bit. An output row whose input row for the block's
// kernel row is padding is skipped whole, and at a row's first and last pixels the taps whose
// input column is padding (their terms are 0 · dy). Where every tap of the group fits in one block
// (C · R · S <= WEIGHT_TAPS: few input channels), a block holds all the kernel rows instead, as
// C · R rows of S taps, and a row in the padding reads a row of zeros (its terms 0 · dy, which
// leave every sum's bits as they are).

// The pixels [p0, p1) whose dy is packed, and the lines of the next piece of dy, asked for a share
// before each chunk's sums.
typedef struct {
    int64_t p0, p1;
    bp_lines next;
    int64_t share, call;
} dy_piece;

// The input rows of a block: row q is channel plane[q]'s kernel row i[q].
typedef struct {
    const float *plane[WEIGHT_TAPS];
    int64_t i[WEIGHT_TAPS];
} block_rows;

// The block's sums over the chunk's pixels [p0, p1), added to partial at the taps
// first + q · taps_per_channel + j for input row q; dyt holds dy's pixels from `base`; `skip` says
// whether an output row whose input row is padding is skipped (else it reads `zeros`, at least
// SW · out_w + S floats).
AVX512 __attribute__((always_inline)) static inline void
weight_chunk(int C, int S, int SW, float *partial, int64_t ld, const block_rows *rows, const float *zeros, int skip,
             const float *dyt, int64_t base, int64_t first, int64_t taps_per_channel, int64_t p0, int64_t p1,
             const bp_conv2d_params *p) {
    v16f acc[WEIGHT_TAPS];
#pragma clang loop unroll(full)
    for (int t = 0; t < C * S; t++) acc[t] = (v16f){0};
    for (int64_t oh = p0 / p->out_w; oh * p->out_w < p1; oh++) {
        // src[q][SW · ow + j − pad_w]: input row q's column SW · ow − pad_w + j
        const float *src[WEIGHT_TAPS];
        int padding = 0;
        for (int q = 0; q < C; q++) {
            int64_t ih = oh * p->stride_h - p->pad_h + rows->i[q];
            int inside = ih >= 0 && ih < p->h;
            padding |= !inside;
            src[q] = inside ? rows->plane[q] + ih * p->w : zeros + p->pad_w;
        }
        if (skip && padding) continue;
        int64_t from = oh * p->out_w < p0 ? p0 - oh * p->out_w : 0;
        int64_t to = (oh + 1) * p->out_w > p1 ? p1 - oh * p->out_w : p->out_w;
        const float *d = dyt + (oh * p->out_w - base) * LANES;  // pixel ow of this row at d[ow · 16]
        // Pixel ow reads input column SW · ow − pad_w + j: inside for every j from `inner` to
        // `outer`, for fewer before and after (those terms are skipped).
        int64_t inner = (p->pad_w + SW - 1) / SW, reach = p->w + p->pad_w - S;
        int64_t outer = reach >= 0 ? reach / SW + 1 : 0;
        for (int64_t ow = from; ow < to; ow++) {
            v16f g;
            memcpy(&g, d + ow * LANES, 64);
            if (ow >= inner && ow < outer) {
#pragma clang loop unroll(full)
                for (int q = 0; q < C; q++)
#pragma clang loop unroll(full)
                    for (int j = 0; j < S; j++) acc[q * S + j] += src[q][SW * ow + j - p->pad_w] * g;
            } else {
#pragma clang loop unroll(full)
                for (int j = 0; j < S; j++) {
                    if (SW * ow + j < p->pad_w || SW * ow + j >= p->w + p->pad_w) continue;
#pragma clang loop unroll(full)
                    for (int q = 0; q < C; q++) acc[q * S + j] += src[q][SW * ow + j - p->pad_w] * g;
                }
            }
        }
    }
#pragma clang loop unroll(full)
    for (int q = 0; q < C; q++)
#pragma clang loop unroll(full)
        for (int j = 0; j < S; j++) {
            float *at = partial + (first + q * taps_per_channel + j) * ld;
            v16f before;
            memcpy(&before, at, 64);
            before = before + acc[q * S + j];
            memcpy(at, &before, 64);
        }
}

// clang-format off
#define BLOCK(S, C, SW) case (S * 16 + C) * 2 + SW - 1: for (int64_t p0 = piece->p0; p0 < piece->p1; p0 += chunk) { bp_prefetch_share(piece->next, piece->call++, piece->share); weight_chunk(C, S, SW, partial, ld, rows, zeros, skip, dyt, piece->p0, first, taps_per_channel, p0, p0 + chunk < piece->p1 ? p0 + chunk : piece->p1, p); } break;
#define STRIDES(S, C) BLOCK(S, C, 1) BLOCK(S, C, 2)
AVX512 static void weight_block(int64_t S, int64_t C, int64_t SW, float *partial, int64_t ld, const block_rows *rows,
                                const float *zeros, int skip, const float *dyt, int64_t first,
                                int64_t taps_per_channel, int64_t chunk, dy_piece *piece, const bp_conv2d_params *p) {
    switch ((S * 16 + C) * 2 + SW - 1) {
    STRIDES(3, 1) STRIDES(3, 2) STRIDES(3, 3) STRIDES(3, 4) STRIDES(3, 5) STRIDES(3, 6) STRIDES(3, 7) STRIDES(3, 8)
    STRIDES(5, 1) STRIDES(5, 2) STRIDES(5, 3) STRIDES(5, 4) STRIDES(5, 5) STRIDES(7, 1) STRIDES(7, 2) STRIDES(7, 3)
    }
}
#undef STRIDES
#undef BLOCK
// clang-format on

// Where the direct weight gradient serves and pays: dilation 1, kernels 3, 5 or 7 wide, and a
// gradient (taps × channels rounded up to 16) of at most 1 MB, which every image adds to in
// scattered 64-byte pieces: measured on Zen 4 (1 thread), 3 × 3 kernels on 14 × 14 images with 64
// output channels (74 KB) run 12% faster than the product, 5 × 5 (205–410 KB) 10–13%, 3 × 3 on
// 28 × 28 with 128 channels (590 KB) 4%; with 256 channels (2.4 MB) 6% slower, 512 (9.4 MB) 15%.
// Then where skipping the padding pays, or (stride 1) where every tap of a group fits one block:
// 1 → 32 channels of 3 × 3 on 28 × 28, 2.11 → 1.72 ms; 2 → 32, 2.86 → 2.19; 1 → 32 of 5 × 5
// (conv_lenet1, 64 images, its 25 taps in one block) 1.60 → 1.23; and with stride 2
// (16 images, medians of the fastest of interleaved runs): conv_stem7x7 (3 → 64, 7 × 7 on
// 224 × 224) 44.4 → 42.7 ms, conv_res3x3s2 19.3 → 19.0, 32 → 64 of 3 × 3 on 112 × 112 21.3 → 20.6.
int bp_conv_weights_direct_pays(const bp_conv2d_params *p) {
    int fits = bp_conv_weights_direct_fits(p) && (p->s == 3 || p->s == 5 || p->s == 7) &&
               (p->stride_w == 1 || p->stride_w == 2);
    int stride_1 = p->stride_h == 1 && p->stride_w == 1, stride_2 = p->stride_h == 2 && p->stride_w == 2;
    return fits && (bp_conv_padding_pays(p) || (stride_1 && bp_conv_taps(p) <= WEIGHT_TAPS) || stride_2);
}

void bp_conv_weights_direct(float *partial, int64_t ld, double *dbias, const float *x, const float *zeros,
                            const float *dy, float *dyt, int64_t chunk, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, most = WEIGHT_TAPS / p->s, blocks = (cg + most - 1) / most;
    int64_t hw = bp_conv_pixels(p), taps_per_channel = p->r * p->s, plane = p->h * p->w;
    int64_t size = bp_conv_weights_direct_piece(chunk), all_rows = bp_conv_taps(p) <= WEIGHT_TAPS;
    int64_t passes = ld / LANES * (all_rows ? 1 : p->r * blocks);
    block_rows rows;
    for (int64_t q = 0; all_rows && q < cg * p->r; q++)  // input row q = c · r + i: channel c's kernel row i
        rows.plane[q] = x + q / p->r * plane, rows.i[q] = q % p->r;
    // A piece of pixels at a time: dyt[kb][pixel − p0][16], packed a chunk at a time with its bias
    // sums while it is in cache, then every pass's sums over the piece. dy is read from memory once,
    // kg streams kilobytes apart that the hardware does not fetch ahead: the first piece's lines are
    // asked for as it is packed, the next piece's while this one's sums run (conv_stem7x7's weight
    // gradient, Zen 4, medians of interleaved runs, against the whole image packed first: 1 thread
    // 39.4 -> 37.8 ms, 2 threads 20.6 -> 18.7).
    for (int64_t p0 = 0; p0 < hw; p0 += size) {
        dy_piece piece = {p0, p0 + size < hw ? p0 + size : hw};
        piece.next = piece.p1 < hw ? (bp_lines){dy + piece.p1, kg, hw, hw - piece.p1 < size ? hw - piece.p1 : size}
                                   : (bp_lines){0};
        int64_t calls = passes * ((piece.p1 - p0 + chunk - 1) / chunk);
        piece.share = (bp_line_count(piece.next) + calls - 1) / calls;
        for (int64_t q0 = p0; q0 < piece.p1; q0 += chunk) {
            int64_t count = piece.p1 - q0 < chunk ? piece.p1 - q0 : chunk;
            for (int64_t kb = 0; kb < (kg + LANES - 1) / LANES; kb++)
                bp_pack_lanes16(dyt + (kb * size + q0 - p0) * LANES, dy + kb * LANES * hw + q0, hw,
                                kg - kb * LANES < LANES ? kg - kb * LANES : LANES, count, p0 == 0);
            if (dbias) bp_conv_add_bias_sums(dbias, dy, kg, hw, q0, q0 + count);
        }
        if (all_rows) {
            for (int64_t o = 0; o < ld; o += LANES)
                weight_block(p->s, cg * p->r, p->stride_w, partial + o, ld, &rows, zeros, 0, dyt + o * size, 0, p->s,
                             chunk, &piece, p);
            continue;
        }
        for (int64_t o = 0; o < ld; o += LANES)
            for (int64_t i = 0; i < p->r; i++)
                for (int64_t b = 0; b < blocks; b++) {
                    int64_t c0 = b * cg / blocks, count = (b + 1) * cg / blocks - c0;
                    for (int64_t c = 0; c < count; c++) rows.plane[c] = x + (c0 + c) * plane, rows.i[c] = i;
                    weight_block(p->s, count, p->stride_w, partial + o, ld, &rows, zeros, 1, dyt + o * size,
                                 (c0 * p->r + i) * p->s, taps_per_channel, chunk, &piece, p);
                }
    }
}
#endif
