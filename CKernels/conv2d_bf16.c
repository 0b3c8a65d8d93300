// 2-D convolution with bfloat16 products: the float32 convolution's shape (conv2d.c), with the
// column matrix read in place from a bfloat16 copy of the phase-split buffer (conv2d_layout.h) and
// the products done by bp_bf16_tile on operands of bfloat16 pairs.
//
// For image b and group g (kg = k / groups output channels, R taps, P pixels):
//   forward:           y[b, g] [kg, P] = W_g [kg, R] · col + bias: pairs of taps (2q, 2q + 1);
//                      A = W_g's rows, packed once; B = a panel of 32 pixels gathered from the buffer.
//   backward-data:     dcol [R, P] = W_gᵀ · dy[b, g]: pairs of output channels; A = W_g's columns,
//                      packed once; B = panels of dy. dx = col2im(dcol) (+ bias), as in conv2d.c.
//   backward-weights:  dW_gᵀ [R, kg] += col · dy[b, g]ᵀ: pairs of pixels (2q, 2q + 1) of each image;
//                      A = col's rows, copied from the buffer's runs; B = panels of dyᵀ.
// Every output element is one tile's sum over its pairs in order (blocks of pairs carry the sum
// through C), so it is bp_bf16_gemm's sum over the same operands. The forward and backward-data run
// images in parallel (each writes its own output); the weight gradient sums the blocks of images of
// bp_conv_weight_blocks, each image after image into its own partial (from 0), and adds the partials
// in block order: the same bits for any thread count.
#include "conv2d_layout.h"

#include <stdlib.h>
#include <string.h>

enum {
    COLUMNS = BP_BF16_COLUMNS,
    ROWS = BP_BF16_ROWS,
    QC = 160,         // most pairs per product block: a panel of B (QC · 32 pairs) stays in L1
    PC = 256,         // pixels per chunk of the weight gradient (even: chunks keep the image's pairs)
    HALF_SLACK = 16,  // bfloat16 values after a buffer that the gathers may read, or a row they may write
};

typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t pairs_of(int64_t k) { return (k + 1) / 2; }

// The reduction's pairs [0, pairs) in equal blocks of at most QC: block `index` is [*start, *start + *size).
static int64_t qc_blocks(int64_t pairs) { return (pairs + QC - 1) / QC; }
static void qc_block(int64_t pairs, int64_t index, int64_t *start, int64_t *size) {
    int64_t blocks = qc_blocks(pairs);
    *start = index * pairs / blocks;
    *size = (index + 1) * pairs / blocks - *start;
}

// The weights as rows of pairs, per group: the forward's A = W_g's kg rows over the R taps, or the
// backward-data's A = W_g's R columns over the kg channels. NULL when they could not be allocated.
static uint32_t *pack_weights(const float *weight, const bp_conv2d_params *p, int transposed, int64_t *lda,
                              int64_t *missing) {
    int64_t kg = p->k / p->groups, taps = bp_conv_taps(p), rows = transposed ? taps : kg;
    *lda = pairs_of(transposed ? kg : taps);
    uint32_t *packed = bp_malloc(p->groups * rows * *lda, sizeof(uint32_t), missing);
    if (!packed) return NULL;
    for (int64_t g = 0; g < p->groups; g++)
        for (int64_t i = 0; i < rows; i++) {
            const float *w = weight + g * kg * taps;
            if (transposed) bp_bf16_pack_pairs(packed + (g * rows + i) * *lda, w + i, kg, taps);
            else bp_bf16_pack_pairs(packed + (g * rows + i) * *lda, w + i * taps, taps, 1);
        }
    return packed;
}

// A thread's copies of one image-group: the float buffer (zeroed once: its padding is never written)
// and its bfloat16 rounding, as the product reads it.
typedef struct {
    float *buffer;
    uint16_t *half;
} image_copy;

static int image_copy_alloc(image_copy *copy, const conv_layout *l, int64_t *missing) {
    copy->buffer = bp_calloc(l->size + HALF_SLACK, sizeof(float), missing);
    copy->half = bp_calloc(l->size + HALF_SLACK, sizeof(uint16_t), missing);
    return copy->buffer && copy->half;
}

static void image_copy_free(image_copy *copy) { free(copy->buffer), free(copy->half); }

static void image_copy_fill(image_copy *copy, const float *x, const conv_layout *l, const bp_conv2d_params *p) {
    bp_conv_copy_in(copy->buffer, x, l, p);
    bp_bf16_round_flushed(copy->half, copy->buffer, l->size);
}

// A forward panel of B [taps / 2 pairs][32 pixels]: b[q][run.q + e] = (col[2q][pixel], col[2q + 1][pixel])
// for the block's taps (offsets[0 … taps)), read along the runs 16 pixels at a time. A run's last
// vector keeps the lanes past the run as they are in b (it may read up to 15 values past the run in
// the buffer's slack, and write b's next row, or its slack, with what was there).
BP_MULTIVERSION
static void gather_pairs(uint32_t *b, const uint16_t *half, const int64_t *offsets, int64_t taps, const pixel_run *runs,
                         int64_t n) {
    const v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int64_t r = 0; r < n; r++)
        for (int64_t e = 0; e < runs[r].len; e += 16) {
            const uint16_t *src = half + runs[r].v + e;
            uint32_t *dst = b + runs[r].q + e;
            v16u inside = (v16u)(lane < (int32_t)(runs[r].len - e));
            for (int64_t t = 0; t < taps; t += 2) {
                v16h even, odd = {0};
                memcpy(&even, src + offsets[t], 32);
                if (t + 1 < taps) memcpy(&odd, src + offsets[t + 1], 32);
                v16u pair = __builtin_convertvector(even, v16u) | __builtin_convertvector(odd, v16u) << 16, old;
                memcpy(&old, dst + t / 2 * COLUMNS, 64);
                pair = (pair & inside) | (old & ~inside);
                memcpy(dst + t / 2 * COLUMNS, &pair, 64);
            }
        }
}

// The weight gradient's A [R][row pairs]: row t holds col[t][pixel] for the chunk's pixels in order,
// two to a pair (pixel 2q in the low half), a zero after an odd count. Copied along the runs 16
// values at a time, runs in order: a vector past a run's end writes values that a later run, or the
// next row, overwrites (the last row's go to A's slack).
BP_MULTIVERSION
static void copy_col_rows(uint32_t *a, int64_t row_pairs, const uint16_t *half, const int64_t *offsets, int64_t taps,
                          const pixel_run *runs, int64_t n, int64_t count) {
    for (int64_t t = 0; t < taps; t++) {
        uint16_t *row = (uint16_t *)(a + t * row_pairs);
        for (int64_t r = 0; r < n; r++)
            for (int64_t e = 0; e < runs[r].len; e += 16) {
                v16h v;
                memcpy(&v, half + offsets[t] + runs[r].v + e, 32);
                memcpy(row + runs[r].q + e, &v, 32);
            }
        if (count % 2) row[count] = 0;
    }
}

// plane[channel][·] += bias[channel] over `channels` planes of `size`.
static void add_bias(float *planes, const float *bias, int64_t channels, int64_t size) {
    for (int64_t ch = 0; ch < channels; ch++)
        for (int64_t q = 0; q < size; q++) planes[ch * size + q] += bias[ch];
}

int64_t bp_conv2d_forward_bf16(float *y, const float *x, const float *weight, const float *bias,
                               const bp_conv2d_params *p, int emulate) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, taps = bp_conv_taps(p), hw = bp_conv_pixels(p);
    int64_t lda = 0, missing = 0, pairs = pairs_of(taps);
    uint32_t *a = pack_weights(weight, p, 0, &lda, &missing);
    conv_layout l = bp_conv_layout_build(p, &missing);
    if (missing) return free(a), free(l.offset), missing;
    emulate = bp_bf16_emulating(emulate);
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        image_copy copy;
        int ready = image_copy_alloc(&copy, &l, &missing);
        uint32_t *b = bp_aligned_alloc(64, min64(QC, pairs) * COLUMNS + HALF_SLACK, sizeof(uint32_t), 1, &missing);
        ready = ready && b;
        pixel_run runs[COLUMNS + 2];
#pragma omp for schedule(static)
        for (int64_t item = 0; item < p->n * p->groups; item++) {
            if (!ready) continue;
            int64_t image = item / p->groups, g = item % p->groups;
            image_copy_fill(&copy, x + (image * p->c + g * cg) * p->h * p->w, &l, p);
            float *yg = y + (image * p->k + g * kg) * hw;
            for (int64_t p0 = 0; p0 < hw; p0 += COLUMNS) {
                int64_t count = min64(COLUMNS, hw - p0), n = bp_conv_pixel_runs(runs, &l, p, p0, count);
                for (int64_t block = 0; block < qc_blocks(pairs); block++) {
                    int64_t q0, qc;
                    qc_block(pairs, block, &q0, &qc);
                    // b [qc, 32] = col's pairs q0 … for pixels p0 … (a short last panel leaves columns never stored)
                    gather_pairs(b, copy.half, l.offset + 2 * q0, min64(2 * qc, taps - 2 * q0), runs, n);
                    // y_g[m rows, pixels p0 …] (+)= W_g[m rows, pairs q0 …] · b
                    for (int64_t m = 0; m < kg; m += ROWS)
                        bp_bf16_tile(qc, a + (g * kg + m) * lda + q0, lda, b, yg + m * hw + p0, hw, block > 0,
                                     min64(ROWS, kg - m), count, emulate);
                }
            }
            if (bias) add_bias(yg, bias + g * kg, kg, hw);
        }
        image_copy_free(&copy);
        free(b);
    }
    free(l.offset);
    free(a);
    return missing;
}

int64_t bp_conv2d_backward_data_bf16(float *dx, const float *dy, const float *weight, const float *bias,
                                     const bp_conv2d_params *p, int emulate) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, taps = bp_conv_taps(p), hw = bp_conv_pixels(p);
    int64_t lda = 0, missing = 0, pairs = pairs_of(kg), panels = (hw + COLUMNS - 1) / COLUMNS;
    uint32_t *a = pack_weights(weight, p, 1, &lda, &missing);
    conv_layout l = bp_conv_layout_build(p, &missing);
    col2im_plan plan = {0};
    if (!missing) missing = bp_col2im_plan_build(&plan, &l, p);
    if (missing) return free(a), free(l.offset), missing;
    emulate = bp_bf16_emulating(emulate);
    int64_t slack = bp_col2im_slack(&l);
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *rows = bp_malloc(bp_col2im_row_floats(&plan, p), sizeof(float), &missing);
        uint32_t *b = bp_aligned_alloc(64, panels * pairs * COLUMNS, sizeof(uint32_t), 0, &missing);
        float *dcol_space = bp_calloc(taps * hw + 2 * slack, sizeof(float), &missing);
        tap_reach *reaching = bp_malloc(p->r * p->s, sizeof(tap_reach), &missing);
        int ready = rows && b && dcol_space && reaching;
        float *dcol = ready ? dcol_space + slack : NULL;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < p->n * p->groups; item++) {
            if (!ready) continue;
            int64_t image = item / p->groups, g = item % p->groups;
            const float *dyg = dy + (image * p->k + g * kg) * hw;
            // b [panels][pairs][32]: panel i = dy_g's channel pairs for pixels 32i …
            for (int64_t i = 0; i < panels; i++)
                bp_bf16_pack_panel(b + i * pairs * COLUMNS, dyg + i * COLUMNS, hw, kg,
                                   min64(COLUMNS, hw - i * COLUMNS));
            // dcol[taps m …, pixels 32i …] = W_gᵀ[taps m …, pairs] · panel i, over the QC blocks of pairs
            for (int64_t i = 0; i < panels; i++)
                for (int64_t m = 0; m < taps; m += ROWS)
                    for (int64_t block = 0; block < qc_blocks(pairs); block++) {
                        int64_t q0, qc;
                        qc_block(pairs, block, &q0, &qc);
                        bp_bf16_tile(qc, a + (g * taps + m) * lda + q0, lda, b + (i * pairs + q0) * COLUMNS,
                                     dcol + m * hw + i * COLUMNS, hw, block > 0, min64(ROWS, taps - m),
                                     min64(COLUMNS, hw - i * COLUMNS), emulate);
                    }
            bp_col2im_rows(dx + (image * p->c + g * cg) * p->h * p->w, bias ? bias + g * cg : NULL,
                           (dcol_rows){dcol, hw, p->out_h}, 0, l.hq, &l, &plan, reaching, rows, p);
        }
        free(rows);
        free(b);
        free(dcol_space);
        free(reaching);
    }
    bp_col2im_plan_free(&plan);
    free(l.offset);
    free(a);
    return missing;
}

int64_t bp_conv2d_backward_weights_bf16(float *dweight, float *dbias, const float *dy, const float *x,
                                        const bp_conv2d_params *p, int emulate) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, taps = bp_conv_taps(p), hw = bp_conv_pixels(p);
    int64_t size = p->k * taps, blocks = bp_conv_weight_blocks(p), missing = 0;
    int64_t row_pairs = PC / 2, channel_panels = (kg + COLUMNS - 1) / COLUMNS;
    conv_layout l = bp_conv_layout_build(p, &missing);
    float *partial = bp_calloc(blocks * size, sizeof(float), &missing);  // [block][group][R][kg]: dW_gᵀ
    if (missing) return free(l.offset), free(partial), missing;
    emulate = bp_bf16_emulating(emulate);
#pragma omp parallel if (blocks > 1 && p->n * p->k * hw * taps >= BP_PARALLEL_MIN)
    {
        image_copy copy;
        int ready = image_copy_alloc(&copy, &l, &missing);
        uint32_t *a = bp_aligned_alloc(64, taps * row_pairs + HALF_SLACK, sizeof(uint32_t), 0, &missing);
        uint32_t *b = bp_aligned_alloc(64, channel_panels * row_pairs * COLUMNS, sizeof(uint32_t), 0, &missing);
        pixel_run *runs = bp_malloc(PC + 2, sizeof(pixel_run), &missing);
        ready = ready && a && b && runs;
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; block++)
            for (int64_t image = block * p->n / blocks; ready && image < (block + 1) * p->n / blocks; image++)
                for (int64_t g = 0; g < p->groups; g++) {
                    image_copy_fill(&copy, x + (image * p->c + g * cg) * p->h * p->w, &l, p);
                    const float *dyg = dy + (image * p->k + g * kg) * hw;
                    float *dwg = partial + block * size + g * kg * taps;  // dW_gᵀ [R][kg]
                    for (int64_t p0 = 0; p0 < hw; p0 += PC) {
                        int64_t pc = min64(PC, hw - p0), pairs = pairs_of(pc),
                                n = bp_conv_pixel_runs(runs, &l, p, p0, pc);
                        copy_col_rows(a, row_pairs, copy.half, l.offset, taps, runs, n, pc);
                        // panel j = dy_gᵀ's pixel pairs for channels 32j …
                        for (int64_t j = 0; j < channel_panels; j++)
                            bp_bf16_pack_panel_columns(b + j * pairs * COLUMNS, dyg + j * COLUMNS * hw + p0, hw, pc,
                                                       min64(COLUMNS, kg - j * COLUMNS));
                        // dW_gᵀ[taps m …, channels 32j …] += col[taps m …, pixel pairs] · panel j
                        for (int64_t j = 0; j < channel_panels; j++)
                            for (int64_t m = 0; m < taps; m += ROWS)
                                bp_bf16_tile(pairs, a + m * row_pairs, row_pairs, b + j * pairs * COLUMNS,
                                             dwg + m * kg + j * COLUMNS, kg, 1, min64(ROWS, taps - m),
                                             min64(COLUMNS, kg - j * COLUMNS), emulate);
                    }
                }
        image_copy_free(&copy);
        free(a);
        free(b);
        free(runs);
    }
    if (missing) return free(l.offset), free(partial), missing;  // dweight and dbias unchanged
#pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
    for (int64_t e = 0; e < size; e++) {  // dweight[g][o][t] += Σ over blocks in order of partial[block][g][t][o]
        int64_t g = e / (kg * taps), o = e / taps % kg, t = e % taps, at = g * kg * taps + t * kg + o;
        float sum = partial[at];
        for (int64_t block = 1; block < blocks; block++) sum += partial[block * size + at];
        dweight[e] += sum;
    }
    if (dbias) bp_channel_bias_backward(dbias, dy, p->n, p->k, hw);
    free(partial);
    free(l.offset);
    return 0;
}
