// Fixed windows that overlap or leave gaps: each input row reduced once over its tap columns (the
// row pass), then each output row over its tap rows (the column pass); see fixed_layout in pool2d.h.
#include "pool2d.h"

int64_t fixed_layout_build(fixed_layout *f, const bp_pool2d_params *p, const windows *win) {
    *f = (fixed_layout){0};
    int64_t s = p->stride_w, kw = p->kernel_w, missing = 0;
    f->lanes = (p->out_w + 31) / 32 * 32;
    int64_t span = (p->kernel_h - 1) * p->dilation_h + 1, slots = 1;
    while (slots < span) slots *= 2;
    f->ring_mask = slots - 1;
    const axis_windows *r = &win->rows;
    int64_t taps = 0;  // the tap rows inside the input, over every output row
    for (int64_t oh = 0; oh < p->out_h; oh++) taps += r->hi[oh] > r->lo[oh] ? r->hi[oh] - r->lo[oh] : 0;
    int64_t *first_need = bp_malloc(p->h, sizeof(int64_t), &missing);
    int64_t *filled = bp_calloc(p->out_h, sizeof(int64_t), &missing);
    f->new_first = bp_calloc(p->out_h + 1, sizeof(int64_t), &missing);
    f->new_rows = bp_malloc(p->h + 1, sizeof(int64_t), &missing);
    f->window_first = bp_malloc(p->out_h + 1, sizeof(int64_t), &missing);
    f->window_slot = bp_malloc(taps + 1, sizeof(int64_t), &missing);
    f->window_ti = bp_malloc(taps + 1, sizeof(int64_t), &missing);
    f->line = bp_malloc(kw, sizeof(int64_t), &missing);
    f->first_tap = bp_malloc(f->lanes, sizeof(int32_t), &missing);
    f->columns_part = bp_malloc(f->lanes, sizeof(float), &missing);
    if (missing) {
        free(first_need), free(filled);
        return missing;
    }
    // Each input row's first window, then the schedule in output-row order.
    for (int64_t ih = 0; ih < p->h; ih++) first_need[ih] = -1;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
            int64_t ih = r->first[oh] + ti * p->dilation_h;
            if (first_need[ih] < 0) first_need[ih] = oh;
        }
    for (int64_t ih = 0; ih < p->h; ih++)
        if (first_need[ih] >= 0) f->new_first[first_need[ih] + 1]++;
    for (int64_t oh = 0; oh < p->out_h; oh++) f->new_first[oh + 1] += f->new_first[oh];
    for (int64_t ih = 0; ih < p->h; ih++)
        if (first_need[ih] >= 0) f->new_rows[f->new_first[first_need[ih]] + filled[first_need[ih]]++] = ih;
    free(filled), free(first_need);
    taps = 0;
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        f->window_first[oh] = taps;
        for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++, taps++)
            f->window_slot[taps] = (r->first[oh] + ti * p->dilation_h) & f->ring_mask, f->window_ti[taps] = ti;
    }
    f->window_first[p->out_h] = taps;
    int64_t min_shift = 0, max_end = (p->w + s - 1) / s;
    for (int64_t tj = 0; tj < kw; tj++) {
        int64_t shift = floor_div(tj * p->dilation_w - p->pad_w, s);
        min_shift = shift < min_shift ? shift : min_shift;
        max_end = shift + f->lanes > max_end ? shift + f->lanes : max_end;
    }
    f->left = -min_shift;
    f->phase_length = f->left + max_end;
    f->size = s * f->phase_length;
    for (int64_t tj = 0; tj < kw; tj++) {
        int64_t offset = tj * p->dilation_w - p->pad_w, shift = floor_div(offset, s);
        f->line[tj] = (offset - shift * s) * f->phase_length + f->left + shift;
    }
    const axis_windows *c = &win->cols;
    for (int64_t ow = 0; ow < f->lanes; ow++) {
        int inside = ow < p->out_w && c->lo[ow] < c->hi[ow];
        f->first_tap[ow] = inside ? (int32_t)c->lo[ow] : -1;
        f->columns_part[ow] = ow >= p->out_w            ? 1
                              : p->divisor_override > 0 ? (float)p->divisor_override
                                                        : (float)divisor_part(p, c, ow);
    }
    return 0;
}

void fixed_layout_free(fixed_layout *f) {
    free(f->line), free(f->first_tap), free(f->columns_part);
    free(f->new_first), free(f->new_rows), free(f->window_first), free(f->window_slot), free(f->window_ti);
    *f = (fixed_layout){0};
}

// Input row `src` into the data slots of the padded row (phase q, slot left + m = column m·sw + q).
__attribute__((always_inline)) static inline void pad_row(float *padded, const float *src, const bp_pool2d_params *p,
                                                          const fixed_layout *f) {
    int64_t s = p->stride_w;
    float *data = padded + f->left;
    if (s == 1) {
        bp_copy_short(data, src, p->w);
    } else if (s == 2) {  // the common case: 16 floats split into 8 even and 8 odd at a time
        float *even = data, *odd = data + f->phase_length;
        int64_t pairs = p->w / 2, m = 0;
        for (; m + 8 <= pairs; m += 8) {
            v8f e, o;
            split_pairs(&e, &o, src + 2 * m);
            memcpy(even + m, &e, 32), memcpy(odd + m, &o, 32);
        }
        for (; m < pairs; m++) even[m] = src[2 * m], odd[m] = src[2 * m + 1];
        if (p->w % 2) even[pairs] = src[p->w - 1];
    } else {
        for (int64_t q = 0; q < s; q++)
            for (int64_t m = 0; m * s + q < p->w; m++) data[q * f->phase_length + m] = src[m * s + q];
    }
}

// The row pass over the padded row: for each output column, the maximum over the kw tap columns
// and the tap column it came from (is_max), or the sum, into f->lanes floats, a block of runs
// of 8 columns from column ow at a time. Inlined with constant is_max, vectors and (for the
// common kernels) kw, so no loop tests them.
__attribute__((always_inline)) static inline void row_reduce_block(float *out, int32_t *tap, const float *padded,
                                                                   const fixed_layout *f, int64_t kw, int64_t ow,
                                                                   int vectors, int is_max) {
    v8f acc[MAX_VECTORS];
    v8i arg[MAX_VECTORS];
    // Max starts from tap column 0 and the first tap column inside the input: what comparing it
    // with −∞ would give (taken unless it is −∞; if it is −∞, padding or not, the first tap inside
    // keeps the argmax). Sums start from 0 (so that −0 + … + −0 is +0, as the reference's).
    for (int r = 0; r < vectors; r++) {
        if (is_max) {
            memcpy(&acc[r], padded + f->line[0] + ow + 8 * r, 32);
            memcpy(&arg[r], f->first_tap + ow + 8 * r, 32);
        } else {
            acc[r] = (v8f){0};
        }
    }
    for (int64_t tj = is_max; tj < kw; tj++)
        for (int r = 0; r < vectors; r++) {
            v8f v;
            memcpy(&v, padded + f->line[tj] + ow + 8 * r, 32);
            if (is_max) {
                v8i take = (v > acc[r]) | (v != v);  // larger, or NaN: PyTorch's rule
                acc[r] = BLEND(take, v, acc[r]);
                arg[r] = (take & (int32_t)tj) | (arg[r] & ~take);
            } else {
                acc[r] += v;
            }
        }
    for (int r = 0; r < vectors; r++) {
        memcpy(out + ow + 8 * r, &acc[r], 32);
        if (is_max) memcpy(tap + ow + 8 * r, &arg[r], 32);
    }
}

__attribute__((always_inline)) static inline void row_reduce(float *out, int32_t *tap, const float *padded,
                                                             const fixed_layout *f, int64_t kw, int is_max) {
    int64_t ow = 0;
    for (; ow + 64 <= f->lanes && !is_max; ow += 64) row_reduce_block(out, tap, padded, f, kw, ow, 8, is_max);
    for (; ow < f->lanes; ow += 32) row_reduce_block(out, tap, padded, f, kw, ow, 4, is_max);
}

// The column pass of one output row over its `count` row results rows[i] (taps row_taps[i], tap
// row ti[i]): max into y and the window tap number ti · kw + tj into tap (is_max; −1 for a window
// with no tap inside the input), or the sum divided by the divisor into y; a block of runs of 8
// columns from column ow at a time, as the row pass.
__attribute__((always_inline)) static inline void column_reduce_block(float *y, int32_t *tap, float *const *rows,
                                                                      int32_t *const *row_taps, const int64_t *ti,
                                                                      int64_t count, int32_t divisor_rows,
                                                                      const fixed_layout *f, int64_t kw, int64_t ow,
                                                                      int vectors, int is_max) {
    v8f acc[MAX_VECTORS];
    v8i arg[MAX_VECTORS];
    for (int r = 0; r < vectors; r++) acc[r] = (v8f){0} + (is_max ? -INFINITY : 0.0f), arg[r] = (v8i){0} - 1;
    for (int64_t i = 0; i < count; i++)
        for (int r = 0; r < vectors; r++) {
            v8f v;
            memcpy(&v, rows[i] + ow + 8 * r, 32);
            if (is_max) {
                v8i t;
                memcpy(&t, row_taps[i] + ow + 8 * r, 32);
                // The first row's result is taken whatever it is (it may be −∞ with a valid tap).
                v8i take = i == 0 ? (v8i){0} - 1 : (v > acc[r]) | (v != v);
                acc[r] = BLEND(take, v, acc[r]);
                arg[r] = (take & (t + (int32_t)(ti[i] * kw))) | (arg[r] & ~take);
            } else {
                acc[r] += v;
            }
        }
    for (int r = 0; r < vectors; r++) {
        if (is_max) {
            v8i first;
            memcpy(&first, f->first_tap + ow + 8 * r, 32);
            arg[r] = (first < 0) | arg[r];  // no tap column inside the input: no tap at all
            memcpy(tap + ow + 8 * r, &arg[r], 32);
        } else {
            v8f d;
            divisors(&d, f->columns_part, ow + 8 * r, divisor_rows);
            acc[r] /= d;
        }
        memcpy(y + ow + 8 * r, &acc[r], 32);
    }
}

__attribute__((always_inline)) static inline void column_reduce(float *y, int32_t *tap, float *const *rows,
                                                                int32_t *const *row_taps, const int64_t *ti,
                                                                int64_t count, int32_t divisor_rows,
                                                                const fixed_layout *f, int64_t kw, int is_max) {
    int64_t ow = 0;
    for (; ow + 64 <= f->lanes && !is_max; ow += 64)
        column_reduce_block(y, tap, rows, row_taps, ti, count, divisor_rows, f, kw, ow, 8, is_max);
    for (; ow < f->lanes; ow += 32)
        column_reduce_block(y, tap, rows, row_taps, ti, count, divisor_rows, f, kw, ow, 4, is_max);
}

// One plane of fixed-window pooling: max with argmax tap numbers (is_max: into index8 or
// index32) or average. kh × kw is the kernel: constants for the common 3 × 3, so that the row
// pass and the column pass of a row of whole windows unroll their tap loops.
__attribute__((always_inline)) static inline void fixed_forward(float *y, uint8_t *index8, int32_t *index32,
                                                                const float *x, const bp_pool2d_params *p,
                                                                const windows *win, const fixed_layout *f,
                                                                fixed_scratch *s, int64_t kh, int64_t kw, int is_max) {
    plane_locals local = plane_locals_of(p, f, s);
    p = &local.p, f = &local.f, s = &local.s;
    int64_t out_w = p->out_w;
    // The next plane's input, prefetched a share per output row.
    next_plane next = next_plane_of(x + p->h * p->w, 4 * p->h * p->w, p->out_h);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        prefetch_share(next, oh);
        for (int64_t k = f->new_first[oh]; k < f->new_first[oh + 1]; k++) {  // the row pass's schedule
            int64_t ih = f->new_rows[k], slot = ih & f->ring_mask;
            pad_row(s->padded, x + ih * p->w, p, f);
            row_reduce(s->ring + slot * f->lanes, s->ring_taps + slot * f->lanes, s->padded, f, kw, is_max);
        }
        int64_t k = f->window_first[oh], count = f->window_first[oh + 1] - k;
        float *const *rows = s->window_ring + k;
        int32_t *const *row_taps = s->window_ring_taps + k;
        const int64_t *ti = f->window_ti + k;
        int32_t divisor_rows = rows_part(p, win, oh);
        // The pass writes f->lanes values: straight into y while they stay inside the plane (the
        // values past out_w land where the next rows go, which are written after), else via out.
        float *values = (oh * out_w + f->lanes <= p->out_h * out_w) ? y + oh * out_w : s->out;
        if (count == kh) column_reduce(values, s->out_taps, rows, row_taps, ti, kh, divisor_rows, f, kw, is_max);
        else column_reduce(values, s->out_taps, rows, row_taps, ti, count, divisor_rows, f, kw, is_max);
        if (values == s->out) bp_copy_short(y + oh * out_w, s->out, out_w);
        if (index32) {
            memcpy(index32 + oh * out_w, s->out_taps, (size_t)out_w * sizeof(int32_t));
        } else if (index8) {
            uint8_t *out = index8 + oh * out_w;
            int64_t ow = 0;
            for (; ow + 8 <= out_w; ow += 8) {
                v8i taps;
                memcpy(&taps, s->out_taps + ow, 32);
                narrow_taps(out + ow, &taps);
            }
            for (; ow < out_w; ow++) out[ow] = (uint8_t)s->out_taps[ow];
        }
    }
}

BP_MULTIVERSION
void plane_fixed(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p,
                 const windows *win, const fixed_layout *f, fixed_scratch *s) {
    int three = p->kernel_h == 3 && p->kernel_w == 3;
    if ((index8 || index32) && three) fixed_forward(y, index8, index32, x, p, win, f, s, 3, 3, 1);
    else if (index8 || index32) fixed_forward(y, index8, index32, x, p, win, f, s, p->kernel_h, p->kernel_w, 1);
    else if (three) fixed_forward(y, NULL, NULL, x, p, win, f, s, 3, 3, 0);
    else fixed_forward(y, NULL, NULL, x, p, win, f, s, p->kernel_h, p->kernel_w, 0);
}
