// r × r convolutions with stride 1 (r = 2, 3 or 5) by Winograd's minimal filtering F(2 × 2, r × r)
// (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015): a 2 × 2 tile of one
// output channel costs α² = (r + 1)² multiply-adds per input channel instead of 4r² (9 instead of
// 16 for 2 × 2, 16 instead of 36 for 3 × 3, 36 instead of 100 for 5 × 5).
//
// Output tile (th, tw) is rows 2th, 2th + 1 and columns 2tw, 2tw + 1; its input patch d[c] is the
// α × α block of the zero-padded image at padded rows 2th … 2th + α − 1 (columns alike). With the
// matrices G [α, r], Bᵀ [α, α] and Aᵀ [2, α] of the interpolation points 0, 1 (and −1 for r = 3,
// and ±1, ±2 for r = 5) and ∞, spelled out in the apply_* functions below:
//
//   U[k][c] = G · w[k][c] · Gᵀ           (α × α per channel pair, once per call)
//   V[c]    = Bᵀ · d[c] · B              (α × α per tile and input channel)
//   M[k]    = Σ_c U[k][c] ⊙ V[c]         (for each of the α² positions ξ a product [K, C] · [C, tiles])
//   y[k]    = Aᵀ · M[k] · A (+ bias[k])  (the tile; rows and columns past the output are dropped)
//
// The rounding differs from the direct sum's (relative differences of a few float epsilons for
// 3 × 3, some more for 5 × 5, whose transforms multiply by up to 5 and divide by 24). Every step
// is elementwise in a fixed order: each transform multiplies on the left first (its matrix applied
// to each column of the tile), then on the right (to each row of the result), each sum in the order
// written, and the Σ_c runs in channel order with one fused multiply-add per term (contracted on
// AVX2 and AVX-512 alike). So the bits do not depend on the vector width, the
// product's chunk of tiles or the thread count. Whether a shape runs here depends on the shape
// alone (bp_conv_winograd_fits).
//
// Layout. Output channels go in blocks of 16, one per vector lane (U[kb][ξ][c][16]). Each thread
// takes whole images, and an image's tiles in bands of whole tile rows whose transformed input
// V[ξ][c][tile] stays in the second-level cache (BAND_BYTES). For each block of 16 channels, the
// α² products fill M[tile][ξ][16] a chunk of at most CHUNK tiles at a time (an accumulator per
// tile); the output transform turns each tile's M into four 16-channel pixel vectors, each output
// row's pixels are transposed 16 at a time into channel rows of a staging area, and the band's
// rows, contiguous in each output plane, are copied out.
#include "conv2d_layout.h"

#include <stdlib.h>
#include <string.h>

enum {
    LANES = 16,               // output channels per block
    MAX_ALPHA = 6,            // α = r + 1: the transformed tile's side
    CHUNK_AVX512 = 16,        // tiles per product call: 16 accumulators of 32 registers
    CHUNK_PAIRED = 12,        // tiles per call for two blocks of output channels: 24 accumulators
    CHUNK_AVX2 = 6,           // 6 accumulators of two 8-float registers each, of 16
    BAND_BYTES = 256 * 1024,  // most bytes of V per band
    SUM_RUN = 4096,           // floats of the weight gradient's sums added up at a time
};

typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));
typedef float v16f_unaligned __attribute__((vector_size(64), aligned(4)));

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The most accumulators of one lane_products call on this CPU (the chunking never changes a bit).
static int64_t chunk_width(void) { return bp_micro_kernel().avx512 ? CHUNK_AVX512 : CHUNK_AVX2; }

int bp_conv_winograd_fits(const bp_conv2d_params *p) {
    return p->r == p->s && (p->r == 2 || p->r == 3 || p->r == 5) && p->stride_h == 1 && p->stride_w == 1 &&
           p->dilation_h == 1 && p->dilation_w == 1 && p->groups == 1 && p->pad_h < p->r && p->pad_w < p->r &&
           p->c >= 16 && p->k >= 16;
}

// MARK: - The transforms' matrices, each applied to one row or column of a tile
//
// Filters (scalar, once per call): y = G x, x of r values, y of α; and back, y = Gᵀ x (α → r).
// Tiles (vectors of tiles or channels): y = Bᵀ x (α → α), y = Aᵀ x (α → 2), y = A x (2 → α).

static void apply_g(int64_t r, float *y, int64_t ys, const float *x, int64_t xs) {
    float x0 = x[0], x1 = x[xs];
    if (r == 2) {  // G = [1 0; 1 1; 0 1]
        y[0] = x0, y[ys] = x0 + x1, y[2 * ys] = x1;
        return;
    }
    float x2 = x[2 * xs];
    if (r == 3) {  // G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
        y[0] = x0, y[ys] = (x0 + x1 + x2) * 0.5f, y[2 * ys] = (x0 - x1 + x2) * 0.5f, y[3 * ys] = x2;
        return;
    }
    // G = [¼ 0 0 0 0; −⅙ −⅙ −⅙ −⅙ −⅙; −⅙ ⅙ −⅙ ⅙ −⅙; (1 2 4 8 16)/24; (1 −2 4 −8 16)/24; 0 0 0 0 1]
    float x3 = x[3 * xs], x4 = x[4 * xs];
    y[0] = x0 * 0.25f;
    y[ys] = -(x0 + x1 + x2 + x3 + x4) / 6.0f;
    y[2 * ys] = -(x0 - x1 + x2 - x3 + x4) / 6.0f;
    y[3 * ys] = (x0 + 2.0f * x1 + 4.0f * x2 + 8.0f * x3 + 16.0f * x4) / 24.0f;
    y[4 * ys] = (x0 - 2.0f * x1 + 4.0f * x2 - 8.0f * x3 + 16.0f * x4) / 24.0f;
    y[5 * ys] = x4;
}

static void apply_gt(int64_t r, float *y, int64_t ys, const float *x, int64_t xs) {
    float x0 = x[0], x1 = x[xs], x2 = x[2 * xs];
    if (r == 2) {
        y[0] = x0 + x1, y[ys] = x1 + x2;
        return;
    }
    float x3 = x[3 * xs];
    if (r == 3) {
        y[0] = x0 + (x1 + x2) * 0.5f, y[ys] = (x1 - x2) * 0.5f, y[2 * ys] = (x1 + x2) * 0.5f + x3;
        return;
    }
    float x4 = x[4 * xs], x5 = x[5 * xs];
    y[0] = x0 * 0.25f - (x1 + x2) / 6.0f + (x3 + x4) / 24.0f;
    y[ys] = (x2 - x1) / 6.0f + (x3 - x4) / 12.0f;
    y[2 * ys] = ((x3 + x4) - (x1 + x2)) / 6.0f;
    y[3 * ys] = (x2 - x1) / 6.0f + (x3 - x4) / 3.0f;
    y[4 * ys] = (x3 + x4) * 2.0f / 3.0f - (x1 + x2) / 6.0f + x5;
}

// Bᵀ = [1 −1 0; 0 1 0; 0 −1 1] for α = 3, [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1] for α = 4; for α = 6
// [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1].
__attribute__((always_inline)) static inline void apply_bt(int alpha, v8f *y, const v8f *x) {
    if (alpha == 3) {
        y[0] = x[0] - x[1], y[1] = x[1], y[2] = x[2] - x[1];
        return;
    }
    if (alpha == 4) {
        y[0] = x[0] - x[2], y[1] = x[1] + x[2], y[2] = x[2] - x[1], y[3] = x[1] - x[3];
        return;
    }
    y[0] = 4.0f * x[0] - 5.0f * x[2] + x[4];
    y[1] = (x[3] + x[4]) - 4.0f * (x[1] + x[2]);
    y[2] = (x[4] - x[3]) + 4.0f * (x[1] - x[2]);
    y[3] = (x[4] - x[2]) + 2.0f * (x[3] - x[1]);
    y[4] = (x[4] - x[2]) - 2.0f * (x[3] - x[1]);
    y[5] = 4.0f * x[1] - 5.0f * x[3] + x[5];
}

// Aᵀ = [1 1 0; 0 1 1] for α = 3, [1 1 1 0; 0 1 −1 −1] for α = 4, [1 1 1 1 1 0; 0 1 −1 2 −2 1] for α = 6.
__attribute__((always_inline)) static inline void apply_at(int alpha, v16f *y, const v16f *x) {
    if (alpha == 3) {
        y[0] = x[0] + x[1], y[1] = x[1] + x[2];
        return;
    }
    if (alpha == 4) {
        y[0] = x[0] + x[1] + x[2], y[1] = x[1] - x[2] - x[3];
        return;
    }
    y[0] = x[0] + x[1] + x[2] + x[3] + x[4];
    y[1] = (x[1] - x[2]) + 2.0f * (x[3] - x[4]) + x[5];
}

// A = (Aᵀ)ᵀ: from two values g0, g1 the α values g0, g0 + g1, g1 (α = 3), g0, g0 + g1, g0 − g1, −g1
// (α = 4) or g0, g0 + g1, g0 − g1, g0 + 2g1, g0 − 2g1, g1 (α = 6).
__attribute__((always_inline)) static inline void apply_a(int alpha, v16f *y, const v16f *g0, const v16f *g1) {
    y[0] = *g0, y[1] = *g0 + *g1;
    if (alpha == 3) {
        y[2] = *g1;
        return;
    }
    y[2] = *g0 - *g1;
    if (alpha == 4) {
        y[3] = -*g1;
        return;
    }
    y[3] = *g0 + 2.0f * *g1, y[4] = *g0 - 2.0f * *g1, y[5] = *g1;
}

// The tiling of an image: TH × TW tiles of α × α positions, the padded planes hp × wp (rows and
// columns enough for every tile's patch and for the input transform's 16-float reads), bands of
// `band_rows` tile rows.
typedef struct {
    int64_t r, alpha, positions, th, tw, hp, wp, band_rows, band_tiles, v_stride, blocks;
} tiling;

static tiling tiling_of(const bp_conv2d_params *p) {
    tiling t;
    t.r = p->r, t.alpha = p->r + 1, t.positions = t.alpha * t.alpha;
    t.th = (p->out_h + 1) / 2, t.tw = (p->out_w + 1) / 2;
    t.hp = 2 * t.th + t.alpha - 2;
    // Tiles tw0 … tw0 + 7 read columns 2 · tw0 … 2 · tw0 + 2⌈α / 2⌉ + 13 (16 floats from 2 · tw0 + 2s,
    // s < ⌈α / 2⌉).
    t.wp = 2 * round_up(t.tw, 8) + round_up(t.alpha, 2) - 2;
    int64_t row_bytes = t.positions * p->c * t.tw * (int64_t)sizeof(float);
    // Bands of at least CHUNK_AVX512 tiles, so that the products' chunks are full.
    t.band_rows =
        min64(t.th, row_bytes * ((CHUNK_AVX512 + t.tw - 1) / t.tw) >= BAND_BYTES ? (CHUNK_AVX512 + t.tw - 1) / t.tw
                                                                                 : BAND_BYTES / row_bytes);
    t.band_tiles = t.band_rows * t.tw;
    t.v_stride = t.band_tiles + 8;  // a row's last 8-tile vector may reach 7 tiles past the band
    t.blocks = (p->k + LANES - 1) / LANES;
    return t;
}

// The blocks of output channels one lane_products call takes from block kb0 on: two on AVX-512
// where two are left, else one; *span is then the call's most tiles or channels.
static int64_t blocks_at_once(const tiling *t, int64_t kb0, int64_t *span) {
    int64_t pair = bp_micro_kernel().avx512 && kb0 + 1 < t->blocks ? 2 : 1;
    *span = pair == 2 ? CHUNK_PAIRED : chunk_width();
    return pair;
}

// U[kb][ξ][c][o] = (G · w[kb · 16 + o][c] · Gᵀ)[ξ], 0 past the last output channel: G applied to
// the columns of w, then to the rows of G w.
static void transform_weights(float *u, const float *weight, const bp_conv2d_params *p, const tiling *t) {
    int64_t r = t->r, alpha = t->alpha;
    // One item per block of 16 output channels and input channel: its 16 lanes of each position are
    // one cache line of u, written whole.
#pragma omp parallel for schedule(static) if (p->k * p->c >= BP_PARALLEL_MIN / 16)
    for (int64_t item = 0; item < t->blocks * p->c; item++) {
        int64_t kb = item / p->c, c = item % p->c;
        float lanes[MAX_ALPHA * MAX_ALPHA][LANES];
        for (int64_t o = 0; o < LANES; o++) {
            int64_t k = kb * LANES + o;
            float gw[MAX_ALPHA][MAX_ALPHA - 1], out[MAX_ALPHA][MAX_ALPHA] = {{0}};
            if (k < p->k) {
                const float *w = weight + (k * p->c + c) * r * r;
                for (int64_t j = 0; j < r; j++) apply_g(r, &gw[0][j], MAX_ALPHA - 1, w + j, r);
                for (int64_t i = 0; i < alpha; i++) apply_g(r, out[i], 1, gw[i], 1);
            }
            for (int64_t xi = 0; xi < t->positions; xi++) lanes[xi][o] = out[xi / alpha][xi % alpha];
        }
        for (int64_t xi = 0; xi < t->positions; xi++)
            memcpy(u + ((kb * t->positions + xi) * p->c + c) * LANES, lanes[xi], sizeof lanes[xi]);
    }
}

// Image `image`'s channels into the padded planes (whose padding is never written, so a buffer
// zeroed once serves every image): plane c, row pad_h + ih, column pad_w + iw holds x[c][ih][iw].
// Rows copied inline (bp_copy_short): a memcpy call per short row costs more than the copy. With
// `phases`, x is that stride-2 convolution's input and p's channels its stacked phases.
BP_MULTIVERSION
static void copy_in(float *planes, const float *x, int64_t image, const tiling *t, const bp_conv2d_params *p,
                    const bp_conv2d_params *phases) {
    if (phases) {
        bp_phases_copy_in(planes, t->hp, t->wp, x + image * phases->c * phases->h * phases->w, phases, p);
        return;
    }
    x += image * p->c * p->h * p->w;
    for (int64_t c = 0; c < p->c; c++)
        for (int64_t ih = 0; ih < p->h; ih++)
            bp_copy_short(planes + (c * t->hp + p->pad_h + ih) * t->wp + p->pad_w, x + (c * p->h + ih) * p->w, p->w);
}

// Even and odd lanes of a 16-float vector.
#define EVEN(v) __builtin_shufflevector(v, v, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODD(v) __builtin_shufflevector(v, v, 1, 3, 5, 7, 9, 11, 13, 15)

// V[ξ][c][row · TW + tw] = (Bᵀ d B)[ξ] for the tile rows th0 … th0 + rows − 1, 8 tiles of a row
// at a time: patch column 2s (2s + 1, if below α) of tiles tw0 … tw0 + 7 is the even (odd) lanes of
// 16 floats read from column 2 · tw0 + 2s; Bᵀ is applied to the patch's columns, then to the rows of the
// result. A row's last vector may write up to 7 tiles past it, into the next row's place (written
// after) or the slack.
__attribute__((always_inline)) static inline void input_tiles(int alpha, float *v, const float *planes, const tiling *t,
                                                              int64_t channels, int64_t th0, int64_t rows) {
    int64_t position = channels * t->v_stride;  // floats between positions ξ
    for (int64_t c = 0; c < channels; c++)
        for (int64_t row = 0; row < rows; row++) {
            const float *d = planes + (c * t->hp + 2 * (th0 + row)) * t->wp;
            for (int64_t tw0 = 0; tw0 < t->tw; tw0 += 8) {
                v8f patch[MAX_ALPHA][MAX_ALPHA], column[MAX_ALPHA], bt[MAX_ALPHA][MAX_ALPHA];  // [row][column]
                for (int i = 0; i < alpha; i++)
                    for (int s = 0; 2 * s < alpha; s++) {
                        v16f pair = *(const v16f_unaligned *)(d + i * t->wp + 2 * tw0 + 2 * s);
                        patch[i][2 * s] = EVEN(pair);
                        if (2 * s + 1 < alpha) patch[i][2 * s + 1] = ODD(pair);
                    }
                for (int j = 0; j < alpha; j++) {  // Bᵀ d, column by column
                    v8f in[MAX_ALPHA];
                    for (int i = 0; i < alpha; i++) in[i] = patch[i][j];
                    apply_bt(alpha, column, in);
                    for (int i = 0; i < alpha; i++) bt[i][j] = column[i];
                }
                float *out = v + c * t->v_stride + row * t->tw + tw0;
                for (int i = 0; i < alpha; i++) {  // (Bᵀ d) B, row by row
                    apply_bt(alpha, column, bt[i]);
                    for (int j = 0; j < alpha; j++) *(v8f_unaligned *)(out + (i * alpha + j) * position) = column[j];
                }
            }
        }
}

BP_MULTIVERSION
static void transform_input(float *v, const float *planes, const tiling *t, int64_t channels, int64_t th0,
                            int64_t rows) {
    if (t->alpha == 3) input_tiles(3, v, planes, t, channels, th0, rows);
    else if (t->alpha == 4) input_tiles(4, v, planes, t, channels, th0, rows);
    else input_tiles(6, v, planes, t, channels, th0, rows);
}

// out[q · out_next + j · ld] (+)= Σ_i a[q · a_next + i · 16] · b[i · bi + j · bj] for q < P, j < W
// and i < count, summed in order from 0 (added to out when `accumulate`): 16 output channels in the
// lanes of each of P · W accumulators. The forward's M (i a channel, j a tile, q a block of output
// channels) and the weight gradient's S (i a tile, j a channel). Two blocks (P = 2) share each
// broadcast of b: 2 + W loads per 2 · W multiply-adds, where one block takes 1 + W per W (more
// than an Intel core's two loads a cycle can feed its two FMA units).
__attribute__((always_inline)) static inline void lane_products(int P, int W, float *out, int64_t ld, int64_t out_next,
                                                                int accumulate, const float *a, int64_t a_next,
                                                                const float *b, int64_t bi, int64_t bj, int64_t count) {
    v16f acc[2][CHUNK_AVX512];
#pragma clang loop unroll(full)
    for (int q = 0; q < P; q++)
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) acc[q][j] = (v16f){0};
    for (int64_t i = 0; i < count; i++) {
        v16f a0 = *(const v16f *)(a + i * LANES), a1 = P == 2 ? *(const v16f *)(a + a_next + i * LANES) : a0;
        const float *bs = b + i * bi;
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) {
            float bv = bs[j * bj];
            acc[0][j] += a0 * bv;
            if (P == 2) acc[1][j] += a1 * bv;
        }
    }
#pragma clang loop unroll(full)
    for (int q = 0; q < P; q++)
#pragma clang loop unroll(full)
        for (int j = 0; j < W; j++) {
            v16f *o = (v16f *)(out + q * out_next + j * ld);
            *o = accumulate ? *o + acc[q][j] : acc[q][j];
        }
}

// lane_products with its sizes constants, so that the accumulators are registers: P = 1 with W up
// to CHUNK_AVX512, P = 2 with W up to CHUNK_PAIRED.
BP_MULTIVERSION
static void lane_products_of(int64_t P, int64_t W, float *out, int64_t ld, int64_t out_next, int accumulate,
                             const float *a, int64_t a_next, const float *b, int64_t bi, int64_t bj, int64_t count) {
    // clang-format off
#define WIDTH(p, n) case n: lane_products(p, n, out, ld, out_next, accumulate, a, a_next, b, bi, bj, count); break;
    if (P == 2)
        switch (W) {
        WIDTH(2, 1) WIDTH(2, 2) WIDTH(2, 3) WIDTH(2, 4) WIDTH(2, 5) WIDTH(2, 6)
        WIDTH(2, 7) WIDTH(2, 8) WIDTH(2, 9) WIDTH(2, 10) WIDTH(2, 11) WIDTH(2, 12)
        }
    else
        switch (W) {
        WIDTH(1, 1) WIDTH(1, 2) WIDTH(1, 3) WIDTH(1, 4) WIDTH(1, 5) WIDTH(1, 6) WIDTH(1, 7) WIDTH(1, 8)
        WIDTH(1, 9) WIDTH(1, 10) WIDTH(1, 11) WIDTH(1, 12) WIDTH(1, 13) WIDTH(1, 14) WIDTH(1, 15) WIDTH(1, 16)
        }
#undef WIDTH
    // clang-format on
}

// The band's tiles' Aᵀ M A + bias for one block of output channels, into stage[o][row · out_w + ow]
// (output row oh0 + row): Aᵀ applied to the columns of each tile's M, then to the rows of the
// result. A tile row's pixels are gathered in `pixels` [2][2 · TW rounded up to 16][16], transposed
// 16 at a time and stored as 16 floats per channel in increasing order, so a store past a row's end
// lands in the next row (written after) or the slack.
__attribute__((always_inline)) static inline void output_tiles(int alpha, float *stage, int64_t stage_stride,
                                                               v16f *pixels, const float *m, const float *bias,
                                                               const tiling *t, int64_t th0, int64_t rows,
                                                               int64_t outputs, const bp_conv2d_params *p) {
    int64_t width = round_up(2 * t->tw, 16);
    v16f b = {0};
    for (int64_t o = 0; o < outputs && bias; o++) b[o] = bias[o];
    for (int64_t row = 0; row < rows; row++) {
        for (int64_t tw = 0; tw < t->tw; tw++) {
            const v16f *mt = (const v16f *)(m + (row * t->tw + tw) * alpha * alpha * LANES);
            v16f at[2][MAX_ALPHA];  // Aᵀ M
            for (int j = 0; j < alpha; j++) {
                v16f in[MAX_ALPHA], out[2];
                for (int i = 0; i < alpha; i++) in[i] = mt[i * alpha + j];
                apply_at(alpha, out, in);
                at[0][j] = out[0], at[1][j] = out[1];
            }
            for (int a = 0; a < 2; a++) {
                v16f y[2];
                apply_at(alpha, y, at[a]);
                pixels[a * width + 2 * tw] = bias ? y[0] + b : y[0];
                pixels[a * width + 2 * tw + 1] = bias ? y[1] + b : y[1];
            }
        }
        for (int a = 0; a < 2; a++) {
            int64_t oh = 2 * (th0 + row) + a, line = 2 * row + a;
            if (oh >= p->out_h) break;
            for (int64_t ow0 = 0; ow0 < p->out_w; ow0 += 16) {
                v16f block[16];
                memcpy(block, pixels + a * width + ow0, sizeof block);
                bp_transpose_16x16(block);
                for (int64_t o = 0; o < outputs; o++)
                    *(v16f_unaligned *)(stage + o * stage_stride + line * p->out_w + ow0) = block[o];
            }
        }
    }
}

BP_MULTIVERSION
static void transform_output(float *stage, int64_t stage_stride, v16f *pixels, const float *m, const float *bias,
                             const tiling *t, int64_t th0, int64_t rows, int64_t outputs, const bp_conv2d_params *p) {
    if (t->alpha == 3) output_tiles(3, stage, stage_stride, pixels, m, bias, t, th0, rows, outputs, p);
    else if (t->alpha == 4) output_tiles(4, stage, stage_stride, pixels, m, bias, t, th0, rows, outputs, p);
    else output_tiles(6, stage, stage_stride, pixels, m, bias, t, th0, rows, outputs, p);
}

int64_t bp_conv2d_forward_winograd(float *y, const float *x, const float *weight, const float *bias,
                                   const bp_conv2d_params *p, const bp_conv2d_params *in_phases,
                                   const bp_conv2d_params *out_phases) {
    tiling t = tiling_of(p);
    int64_t hw = bp_conv_pixels(p), missing = 0;
    int64_t m_size = t.band_tiles * t.positions * LANES;
    int64_t stage_stride = 2 * t.band_rows * p->out_w + 16, width = round_up(2 * t.tw, 16);
    float *u = bp_aligned_alloc(64, t.blocks * t.positions * p->c * LANES, sizeof(float), 0, &missing);
    if (!u) return missing;
    transform_weights(u, weight, p, &t);
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *planes = bp_calloc(p->c * t.hp * t.wp + 16, sizeof(float), &missing);
        float *v = bp_malloc(t.positions * p->c * t.v_stride, sizeof(float), &missing);
        float *m = bp_aligned_alloc(64, 2 * m_size, sizeof(float), 0, &missing);  // [2][band_tiles][ξ][16]
        float *stage = bp_malloc(LANES * stage_stride, sizeof(float), &missing);
        v16f *pixels = bp_aligned_alloc(64, 2 * width * LANES, sizeof(float), 1, &missing);
        int ready = planes && v && m && stage && pixels;
#pragma omp for schedule(static)
        for (int64_t image = 0; image < p->n; image++) {
            if (!ready) continue;
            copy_in(planes, x, image, &t, p, in_phases);
            float *dx = out_phases ? y + image * out_phases->c * out_phases->h * out_phases->w : NULL;
            if (dx) bp_phases_fill(dx, bias, out_phases);
            for (int64_t th0 = 0; th0 < t.th; th0 += t.band_rows) {
                int64_t rows = min64(t.band_rows, t.th - th0), tiles = rows * t.tw;
                int64_t oh0 = 2 * th0, lines = min64(2 * rows, p->out_h - oh0);
                transform_input(v, planes, &t, p->c, th0, rows);
                for (int64_t kb0 = 0, pair; kb0 < t.blocks; kb0 += pair) {
                    // M[q] for blocks kb0 + q of output channels: two at a time on AVX-512.
                    int64_t span;
                    pair = blocks_at_once(&t, kb0, &span);
                    int64_t chunks = (tiles + span - 1) / span;
                    for (int64_t xi = 0; xi < t.positions; xi++)
                        for (int64_t i = 0; i < chunks; i++) {
                            int64_t j0 = i * tiles / chunks, j1 = (i + 1) * tiles / chunks;
                            lane_products_of(pair, j1 - j0, m + (j0 * t.positions + xi) * LANES, t.positions * LANES,
                                             m_size, 0, u + (kb0 * t.positions + xi) * p->c * LANES,
                                             t.positions * p->c * LANES, v + xi * p->c * t.v_stride + j0, t.v_stride, 1,
                                             p->c);
                        }
                    for (int64_t kb = kb0; kb < kb0 + pair; kb++) {
                        int64_t outputs = min64(LANES, p->k - kb * LANES);
                        // Into dx the sums alone: bp_phases_copy_out adds the bias.
                        transform_output(stage, stage_stride, pixels, m + (kb - kb0) * m_size,
                                         bias && !dx ? bias + kb * LANES : NULL, &t, th0, rows, outputs, p);
                        for (int64_t o = 0; o < outputs; o++)
                            if (dx)
                                bp_phases_copy_out(dx, stage + o * stage_stride, kb * LANES + o, oh0, lines, bias,
                                                   out_phases, p);
                            else
                                memcpy(y + (image * p->k + kb * LANES + o) * hw + oh0 * p->out_w,
                                       stage + o * stage_stride, (size_t)(lines * p->out_w) * sizeof(float));
                    }
                }
            }
        }
        free(planes);
        free(v);
        free(m);
        free(stage);
        free(pixels);
    }
    free(u);
    return missing;
}

// MARK: - The weight gradient
//
// With a tile's y = Aᵀ M A and M[k] = Σ_c U[k][c] ⊙ V[c], U = G w Gᵀ, the gradient of the tile's M
// is A · dy_tile · Aᵀ (α × α from its 2 × 2 output gradient, 0 past the output's edge), so
//
//   S[k][c] = Σ_images Σ_tiles (A dy_tile Aᵀ)[k] ⊙ V_tile[c]   (for each ξ a product [K, tiles] · [tiles, C])
//   dW[k][c] += Gᵀ · S[k][c] · G                                (r × r)
//
// The images go in the weight gradient's fixed blocks (bp_conv_weight_blocks), each block with its
// own S, summed image by image in order and within an image band by band (each band's sum over its
// tiles taken in order from 0, then added); the blocks' S are added in block order before the last
// transform. Channels go in chunks of at most CHUNK_AVX512 (CHUNK_AVX2; CHUNK_PAIRED for two blocks of
// output channels at once), an accumulator each.

// D[ξ][tile][16] (ξ `stride` floats apart) = (A · dy_tile · Aᵀ)[ξ] for the band's tiles and one
// channel block: A applied to the tile's two columns, then to the rows of the result.
__attribute__((always_inline)) static inline void gradient_tiles(int alpha, float *d, int64_t stride, const float *dyt,
                                                                 const tiling *t, int64_t th0, int64_t rows) {
    int64_t row = 2 * t->tw * LANES;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t tw = 0; tw < t->tw; tw++) {
            const float *g = dyt + 2 * (th0 + r) * row + 2 * tw * LANES;
            v16f left[MAX_ALPHA], right[MAX_ALPHA], out[MAX_ALPHA];  // A g over the tile's columns
            apply_a(alpha, left, (const v16f *)g, (const v16f *)(g + row));
            apply_a(alpha, right, (const v16f *)(g + LANES), (const v16f *)(g + row + LANES));
            float *at = d + (r * t->tw + tw) * LANES;
            for (int i = 0; i < alpha; i++) {
                apply_a(alpha, out, &left[i], &right[i]);
                for (int j = 0; j < alpha; j++) *(v16f *)(at + (i * alpha + j) * stride) = out[j];
            }
        }
}

BP_MULTIVERSION
static void transform_gradient(float *d, int64_t stride, const float *dyt, const tiling *t, int64_t th0, int64_t rows) {
    if (t->alpha == 3) gradient_tiles(3, d, stride, dyt, t, th0, rows);
    else if (t->alpha == 4) gradient_tiles(4, d, stride, dyt, t, th0, rows);
    else gradient_tiles(6, d, stride, dyt, t, th0, rows);
}

// dweight[k][c] += Gᵀ · S[k][c] · G, S[kb][ξ][c][o] the blocks' sum: Gᵀ applied to the columns of
// S, then to the rows of the result.
static void weights_from_sums(float *dweight, const float *sums, const bp_conv2d_params *p, const tiling *t) {
    int64_t r = t->r, alpha = t->alpha;
    // One item per block of 16 output channels and input channel, as transform_weights.
#pragma omp parallel for schedule(static) if (p->k * p->c >= BP_PARALLEL_MIN / 16)
    for (int64_t item = 0; item < t->blocks * p->c; item++) {
        int64_t kb = item / p->c, c = item % p->c;
        float lanes[MAX_ALPHA * MAX_ALPHA][LANES];
        for (int64_t xi = 0; xi < t->positions; xi++)
            memcpy(lanes[xi], sums + ((kb * t->positions + xi) * p->c + c) * LANES, sizeof lanes[xi]);
        for (int64_t k = kb * LANES; k < p->k && k < (kb + 1) * LANES; k++) {
            float s[MAX_ALPHA][MAX_ALPHA], gs[MAX_ALPHA - 1][MAX_ALPHA], dw[MAX_ALPHA - 1];
            for (int64_t xi = 0; xi < t->positions; xi++) s[xi / alpha][xi % alpha] = lanes[xi][k % LANES];
            for (int64_t j = 0; j < alpha; j++) apply_gt(r, &gs[0][j], MAX_ALPHA, &s[0][j], MAX_ALPHA);
            float *w = dweight + (k * p->c + c) * r * r;
            for (int64_t i = 0; i < r; i++) {
                apply_gt(r, dw, 1, gs[i], 1);
                for (int64_t j = 0; j < r; j++) w[i * r + j] += dw[j];
            }
        }
    }
}

// to[i] += from[i] for i < count.
BP_MULTIVERSION
static void add_run(float *restrict to, const float *restrict from, int64_t count) {
    for (int64_t i = 0; i < count; i++) to[i] += from[i];
}

int64_t bp_conv2d_backward_weights_winograd(float *dweight, float *dbias, const float *dy, const float *x,
                                            const bp_conv2d_params *p, const bp_conv2d_params *in_phases) {
    tiling t = tiling_of(p);
    int64_t blocks = bp_conv_weight_blocks(p), hw = bp_conv_pixels(p), missing = 0;
    int64_t size = t.blocks * t.positions * p->c * LANES, plane = 4 * t.th * t.tw * LANES;  // S; a block of dyt
    int64_t d_size = t.positions * t.band_tiles * LANES;
    float *sums = bp_aligned_alloc(64, blocks * size, sizeof(float), 1, &missing);
    double *bias_partial = bp_calloc(blocks * p->k, sizeof(double), &missing);  // [block][k]: Σ dy
    if (missing) return free(sums), free(bias_partial), missing;
#pragma omp parallel if (blocks > 1 && p->n * p->k * hw * p->c * p->r * p->s >= BP_PARALLEL_MIN)
    {
        float *planes = bp_calloc(p->c * t.hp * t.wp + 16, sizeof(float), &missing);
        float *v = bp_malloc(t.positions * p->c * t.v_stride, sizeof(float), &missing);
        float *dyt = bp_aligned_alloc(64, t.blocks * plane, sizeof(float), 1, &missing);
        float *d = bp_aligned_alloc(64, 2 * d_size, sizeof(float), 0, &missing);  // [2][ξ][band_tiles][16]
        int ready = planes && v && dyt && d;
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; block++)
            for (int64_t image = block * p->n / blocks; ready && image < (block + 1) * p->n / blocks; image++) {
                const float *dyi = dy + image * p->k * hw;
                float *s = sums + block * size;
                copy_in(planes, x, image, &t, p, in_phases);
                // dyt[kb][oh][ow][16] on rows of 2 · TW pixels, 2 · TH rows: 0 past the output's edge.
                bp_conv_pack_pixel_major(dyt, dyi, p->k, p->out_h, p->out_w, 2 * t.tw, 2 * t.th);
                if (dbias) bp_conv_add_bias_sums(bias_partial + block * p->k, dyi, p->k, hw, 0, hw);
                for (int64_t th0 = 0; th0 < t.th; th0 += t.band_rows) {
                    int64_t rows = min64(t.band_rows, t.th - th0), tiles = rows * t.tw;
                    transform_input(v, planes, &t, p->c, th0, rows);
                    for (int64_t kb0 = 0, pair; kb0 < t.blocks; kb0 += pair) {
                        // S of blocks kb0 + q of output channels: two at a time on AVX-512.
                        int64_t span;
                        pair = blocks_at_once(&t, kb0, &span);
                        int64_t chunks = (p->c + span - 1) / span;
                        for (int64_t q = 0; q < pair; q++)
                            transform_gradient(d + q * d_size, t.band_tiles * LANES, dyt + (kb0 + q) * plane, &t, th0,
                                               rows);
                        for (int64_t xi = 0; xi < t.positions; xi++)
                            for (int64_t i = 0; i < chunks; i++) {
                                int64_t c0 = i * p->c / chunks, c1 = (i + 1) * p->c / chunks;
                                lane_products_of(pair, c1 - c0, s + ((kb0 * t.positions + xi) * p->c + c0) * LANES,
                                                 LANES, t.positions * p->c * LANES, 1, d + xi * t.band_tiles * LANES,
                                                 d_size, v + (xi * p->c + c0) * t.v_stride, 1, t.v_stride, tiles);
                            }
                    }
                }
            }
        free(planes);
        free(v);
        free(dyt);
        free(d);
    }
    if (missing) return free(sums), free(bias_partial), missing;  // nothing changed
    // sums[e] += sums[b · size + e] for b = 1, 2, … in order: runs of SUM_RUN floats, each run's
    // blocks added while it is in cache.
    int64_t runs = (size + SUM_RUN - 1) / SUM_RUN;
#pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < runs; r++)
        for (int64_t b = 1; b < blocks; b++)
            add_run(sums + r * SUM_RUN, sums + b * size + r * SUM_RUN, min64(SUM_RUN, size - r * SUM_RUN));
    weights_from_sums(dweight, sums, p, &t);
    if (dbias) bp_conv_bias_finish(dbias, bias_partial, blocks, p->k);
    free(sums);
    free(bias_partial);
    return 0;
}
