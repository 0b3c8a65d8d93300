// The phase-split buffer of the convolutions: its layout, the copies in and out, the runs of
// output pixels and col2im (see conv2d_layout.h).
#include "conv2d_layout.h"

#include <stdlib.h>
#include <string.h>

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

conv_layout bp_conv_layout_build(const bp_conv2d_params *p, int64_t *missing) {
    conv_layout l;
    int64_t cg = p->c / p->groups;
    // The padded extent: the input after its top/left padding, or as far as the last tap reads.
    int64_t hp = max64(p->h + p->pad_h, (p->out_h - 1) * p->stride_h + (p->r - 1) * p->dilation_h + 1);
    int64_t wp = max64(p->w + p->pad_w, (p->out_w - 1) * p->stride_w + (p->s - 1) * p->dilation_w + 1);
    l.hq = (hp + p->stride_h - 1) / p->stride_h;
    l.wq = (wp + p->stride_w - 1) / p->stride_w;
    l.plane = l.hq * l.wq;
    l.channel = p->stride_h * p->stride_w * l.plane;
    l.size = cg * l.channel;
    l.offset = bp_malloc(bp_conv_taps(p), sizeof(int64_t), missing);
    if (!l.offset) return l;
    for (int64_t ci = 0, t = 0; ci < cg; ci++)
        for (int64_t i = 0; i < p->r; i++)
            for (int64_t j = 0; j < p->s; j++, t++) {
                int64_t di = i * p->dilation_h, dj = j * p->dilation_w;
                int64_t phase = di % p->stride_h * p->stride_w + dj % p->stride_w;
                l.offset[t] = ci * l.channel + phase * l.plane + di / p->stride_h * l.wq + dj / p->stride_w;
            }
    return l;
}

// 16 (then 8) at a time as the even lanes of 32 (16) floats read from x: a gather instruction is
// slower.
BP_MULTIVERSION
void bp_gather_stride2(float *restrict row, const float *restrict x, int64_t width, int64_t off, int64_t v0,
                       int64_t v1) {
    int64_t v = v0;
    for (; v + 16 <= v1 && 2 * v + off + 32 <= width; v += 16) {
        v16f lo, hi;
        memcpy(&lo, x + 2 * v + off, sizeof lo);
        memcpy(&hi, x + 2 * v + off + 16, sizeof hi);
        v16f even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        memcpy(row + v, &even, sizeof even);
    }
    for (; v + 8 <= v1 && 2 * v + off + 16 <= width; v += 8) {
        v16f pair;
        memcpy(&pair, x + 2 * v + off, sizeof pair);
        v8f even = __builtin_shufflevector(pair, pair, 0, 2, 4, 6, 8, 10, 12, 14);
        memcpy(row + v, &even, sizeof even);
    }
    for (; v < v1; v++) row[v] = x[2 * v + off];
}

BP_MULTIVERSION
void bp_scatter_stride2(float *restrict x, int64_t off, const float *restrict row, int64_t v0, int64_t v1,
                        const float *bias, float b) {
    if (bias)
        for (int64_t v = v0; v < v1; v++) x[2 * v + off] = row[v] + b;
    else
        for (int64_t v = v0; v < v1; v++) x[2 * v + off] = row[v];
}

enum { AHEAD = 24 };  // rows of x between the one copied and the one prefetched

// Copies an image into the buffer or back. Input row ih is padded row
// hp = ih + pad_h, in row phase hp mod sh at index hp / sh (both stepped along, not divided);
// each row goes phase by phase, input column iw = m · sw + q − pad_w going to index m of column
// phase q (q · plane floats further on).
BP_MULTIVERSION
static void copy_rows(float *buffer, float *x, const float *bias, const conv_layout *l, const bp_conv2d_params *p,
                      int into_buffer) {
    int64_t s = p->stride_w, cg = p->c / p->groups;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t ih = 0, row_phase = p->pad_h % p->stride_h, index = p->pad_h / p->stride_h; ih < p->h; ih++) {
            float *row = buffer + ci * l->channel + row_phase * s * l->plane + index * l->wq;
            float *image = x + (ci * p->h + ih) * p->w;
            // The image's row AHEAD rows on (planes follow each other), asked for early: the hardware
            // does not see the stream of short rows in time (conv_res3x3s2's forward, 1 thread: −2%).
            for (int64_t f = 0; into_buffer && ci * p->h + ih + AHEAD < cg * p->h && f < p->w; f += 16)
                __builtin_prefetch(image + AHEAD * p->w + f);
            if (++row_phase == p->stride_h) row_phase = 0, index++;
            if (s == 1) {
                if (into_buffer) bp_copy_short(row + p->pad_w, image, p->w);
                else bp_copy_short(image, row + p->pad_w, p->w);
            } else {
                for (int64_t q = 0; q < s; q++) {
                    float *phase = row + q * l->plane;
                    float *in = image + q - p->pad_w;  // in[m · s] is column m · s + q − pad_w
                    int64_t first = q >= p->pad_w ? 0 : (p->pad_w - q + s - 1) / s;
                    int64_t end = (p->w + p->pad_w - q + s - 1) / s;  // first m past the row
                    if (into_buffer && s == 2) bp_gather_stride2(phase, image, p->w, q - p->pad_w, first, end);
                    else if (into_buffer)
                        for (int64_t m = first; m < end; m++) phase[m] = in[m * s];
                    else
                        for (int64_t m = first; m < end; m++) in[m * s] = phase[m];
                }
            }
            if (!into_buffer && bias)
                for (int64_t iw = 0; iw < p->w; iw++) image[iw] += bias[ci];
        }
}

void bp_conv_pack_output_lanes(float *packed, const float *weight, int64_t lanes, const bp_conv2d_params *p) {
    int64_t kg = p->k / p->groups, taps = bp_conv_taps(p), blocks = (kg + lanes - 1) / lanes;
    // Written in order (written by channel, every float would land on another line).
#pragma omp parallel for schedule(static) if (p->k * taps >= BP_PARALLEL_MIN)
    for (int64_t gb = 0; gb < p->groups * blocks; gb++) {
        int64_t g = gb / blocks, first = gb % blocks * lanes;  // the block's first channel in its group
        for (int64_t t = 0; t < taps; t++)
            for (int64_t o = 0; o < lanes; o++)
                packed[(gb * taps + t) * lanes + o] = first + o < kg ? weight[(g * kg + first + o) * taps + t] : 0.0f;
    }
}

void bp_conv_pack_pixel_major(float *dyt, const float *dy, int64_t k, int64_t out_h, int64_t out_w, int64_t row_len,
                              int64_t rows) {
    // Rows as long as dyt's follow each other in both: the plane goes as one row. dy comes from
    // memory: its lines asked for ahead (conv_res3x3's Winograd weight gradient, 1 thread, Zen 4,
    // 24.1 -> 23.7 ms; conv_lenet2's 6.18 -> 6.05).
    int64_t whole = row_len == out_w, lines = whole ? 1 : out_h, length = whole ? out_h * out_w : out_w;
    for (int64_t kb = 0; kb < (k + 15) / 16; kb++)
        for (int64_t oh = 0; oh < lines; oh++)
            bp_pack_lanes16(dyt + (kb * rows + oh) * row_len * 16, dy + (kb * 16 * out_h + oh) * out_w, out_h * out_w,
                            k - kb * 16 < 16 ? k - kb * 16 : 16, length, 1);
}

void bp_conv_copy_in(float *buffer, const float *x, const conv_layout *l, const bp_conv2d_params *p) {
    copy_rows(buffer, (float *)x, NULL, l, p, 1);
}

void bp_conv_copy_out(float *dx, const float *buffer, const float *bias, const conv_layout *l,
                      const bp_conv2d_params *p) {
    copy_rows((float *)buffer, dx, bias, l, p, 0);
}

int64_t bp_conv_pixel_runs(pixel_run *runs, const conv_layout *l, const bp_conv2d_params *p, int64_t p0,
                           int64_t count) {
    int64_t n = 0;
    for (int64_t q = 0; q < count;) {
        int64_t oh = (p0 + q) / p->out_w, ow = (p0 + q) % p->out_w, len = min64(p->out_w - ow, count - q);
        runs[n++] = (pixel_run){q, oh * l->wq + ow, len};
        q += len;
    }
    return n;
}

// sums[8v …] = Σ over the taps reaching a row of their masked dcol vectors, two vectors at a time:
// two independent chains of adds. The pairs of vectors [inner_lo, inner_hi) are output columns of
// every tap: there the masks (all ones) are not read (conv_stem7x7's backward-data, 1 thread, Zen
// 4, medians of the fastest of interleaved runs: 40.1 -> 39.3 ms; rows of 28 have no such pair).
// The pair of vectors from v, `masked` a constant where inlined.
__attribute__((always_inline)) static inline void gather_pair(float *sums, const tap_reach *reaching, int64_t found,
                                                              int64_t v, int masked) {
    v8f sum0 = {0}, sum1 = {0};
    for (int64_t e = 0; e < found; e++) {
        v8f x0, x1;
        memcpy(&x0, reaching[e].src + 8 * v, 32), memcpy(&x1, reaching[e].src + 8 * v + 8, 32);
        if (masked) {
            x0 = (v8f)((v8i)x0 & reaching[e].mask[v]);
            x1 = (v8f)((v8i)x1 & reaching[e].mask[v + 1]);
        }
        sum0 += x0, sum1 += x1;
    }
    memcpy(sums + 8 * v, &sum0, 32), memcpy(sums + 8 * v + 8, &sum1, 32);
}

BP_MULTIVERSION
static void gather_row(float *sums, const tap_reach *reaching, int64_t found, int64_t vectors, int64_t inner_lo,
                       int64_t inner_hi) {
    for (int64_t v = 0; v < vectors; v += 2) {
        if (v >= inner_lo && v < inner_hi) gather_pair(sums, reaching, found, v, 0);
        else gather_pair(sums, reaching, found, v, 1);
    }
}

BP_MULTIVERSION
void bp_col2im_rows(float *dx, const float *bias, dcol_rows d, int64_t h0, int64_t h1, const conv_layout *l,
                    const col2im_plan *plan, tap_reach *reaching, float *rows, const bp_conv2d_params *p) {
    int64_t taps = p->r * p->s, vectors = plan->vectors, sw = p->stride_w, span = 8 * vectors;
    float *padded = rows + sw * span;  // the padded input row: column m · sw + q from phase q's column m
    const tap_place *place = plan->place;
    for (int64_t ci = 0; ci < p->c / p->groups; ci++)
        for (int64_t row_phase = 0; row_phase < p->stride_h; row_phase++)
            for (int64_t hrow = h0; hrow < h1; hrow++) {
                int64_t ih = hrow * p->stride_h + row_phase - p->pad_h;  // the input row these make
                if (ih < 0 || ih >= p->h) continue;                      // padding
                // The row written two rows later asked for now: dx's lines arrive while these
                // rows are gathered (conv_res3x3s2's backward-data, 1 thread, Zen 4, medians of
                // the fastest of 9 interleaved runs: 20.2 -> 19.8 ms; conv_stem7x7's 44.5 -> 42.7).
                if (ih + 2 * p->stride_h < p->h)
                    for (int64_t f = 0; f < p->w; f += 16)
                        __builtin_prefetch(dx + (ci * p->h + ih + 2 * p->stride_h) * p->w + f, 1);
                for (int64_t q = 0; q < sw; q++) {
                    int64_t phase = row_phase * sw + q, found = 0;  // the taps that reach this row
                    for (int64_t t = 0; t < taps; t++) {
                        int64_t oh = hrow - place[t].row;
                        if (place[t].phase != phase || oh < 0 || oh >= p->out_h) continue;
                        reaching[found++] = (tap_reach){d.dcol + (ci * taps + t) * d.ld +
                                                            (oh < d.ring ? oh : oh % d.ring) * p->out_w - place[t].col,
                                                        plan->mask + t * vectors};
                    }
                    gather_row(sw == 1 ? padded : rows + q * span, reaching, found, vectors, plan->inner_lo,
                               plan->inner_hi);
                }
                if (sw == 2)
                    for (int64_t m = 0; m < span; m += 8) {
                        v8f even, odd;
                        memcpy(&even, rows + m, 32), memcpy(&odd, rows + span + m, 32);
                        v16f both =
                            __builtin_shufflevector(even, odd, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
                        memcpy(padded + 2 * m, &both, 64);
                    }
                else if (sw > 2)
                    for (int64_t q = 0; q < sw; q++)
                        for (int64_t m = 0; m < span; m++) padded[m * sw + q] = rows[q * span + m];
                float *out = dx + (ci * p->h + ih) * p->w;
                if (bias)
                    for (int64_t iw = 0; iw < p->w; iw++) out[iw] = padded[iw + p->pad_w] + bias[ci];
                else memcpy(out, padded + p->pad_w, (size_t)p->w * sizeof(float));
            }
}

int64_t bp_col2im_plan_build(col2im_plan *plan, const conv_layout *l, const bp_conv2d_params *p) {
    int64_t taps = p->r * p->s, missing = 0;
    plan->vectors = (l->wq + 15) / 16 * 2;
    plan->place = bp_malloc(taps, sizeof(tap_place), &missing);
    plan->mask = bp_aligned_alloc(32, taps * plan->vectors, sizeof(v8i), 0, &missing);
    if (missing) {
        bp_col2im_plan_free(plan);
        return missing;
    }
    for (int64_t t = 0; t < taps; t++) {
        int64_t in_channel = l->offset[t] % l->plane;  // channel 0's taps: offset = phase · plane + row · wq + col
        plan->place[t] = (tap_place){l->offset[t] / l->plane, in_channel / l->wq, in_channel % l->wq};
    }
    // mask[t][v]: lane i of buffer columns 8v … is an output column of tap t (0 <= 8v + i − col_t <
    // out_w); the last vector is all 0 when wq needs an odd number
    for (int64_t t = 0; t < taps; t++)
        for (int64_t v = 0; v < plan->vectors; v++)
            for (int i = 0; i < 8; i++)
                plan->mask[t * plan->vectors + v][i] =
                    (uint64_t)(8 * v + i - plan->place[t].col) < (uint64_t)p->out_w ? -1 : 0;
    // The pairs of vectors whose 16 columns are output columns of every tap: 16u >= col_t and
    // 16u + 15 − col_t < out_w for all t.
    int64_t most = 0, least = INT64_MAX;
    for (int64_t t = 0; t < taps; t++) {
        most = plan->place[t].col > most ? plan->place[t].col : most;
        least = plan->place[t].col < least ? plan->place[t].col : least;
    }
    plan->inner_lo = (most + 15) / 16 * 2;
    plan->inner_hi = p->out_w + least >= 16 ? (p->out_w + least - 16) / 16 * 2 + 2 : 0;
    return 0;
}

void bp_col2im_plan_free(col2im_plan *plan) {
    free(plan->place);
    free(plan->mask);
    plan->place = NULL, plan->mask = NULL;
}

// The share of the (output pixel, tap) pairs whose tap reads padding: 1 − (the share of kernel
// rows inside the image over the output rows) · (the same for columns).
static double padding_share(const bp_conv2d_params *p) {
    int64_t rows = 0, columns = 0;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t i = 0; i < p->r; i++)
            rows += bp_conv_reads_inside(oh, p->stride_h, p->pad_h, i, p->dilation_h, p->h);
    for (int64_t ow = 0; ow < p->out_w; ow++)
        for (int64_t j = 0; j < p->s; j++)
            columns += bp_conv_reads_inside(ow, p->stride_w, p->pad_w, j, p->dilation_w, p->w);
    return 1.0 - (double)rows / (double)(p->out_h * p->r) * (double)columns / (double)(p->out_w * p->s);
}

// Where skipping the padding pays for the direct forward's costs (a transposed store per segment
// and a row's setup, which the column-matrix product does not have). Measured on Zen 4, 1 thread,
// stride 1: 3 × 3 kernels with padding 1 run 13% faster on 14 × 14 images (9% of the taps on
// padding), 8% on 28 × 28 (4.7%), 3–5% on 56 × 56 (3.5%), 5 × 5 with padding 2 on 14 × 14 (16%)
// 22%; 1 × 1 (none) 5% slower, a 5 × 5 on one input channel (25 taps) 20% slower despite 8%. With
// stride 2 it lost on the shapes measured (3 × 3 on 56 × 56, 2.4%: 7%; 7 × 7 on 224 × 224: 1%).
int bp_conv_padding_pays(const bp_conv2d_params *p) {
    return p->stride_h == 1 && p->stride_w == 1 && bp_conv_taps(p) >= 64 && padding_share(p) >= 0.02;
}
