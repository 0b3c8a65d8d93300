// Max and average pooling, fixed and adaptive windows. Every kernel computes one (n, c) plane at a
// time on one thread (global pooling: a block of planes): a plane's outputs (and, in the backward,
// its input gradient) belong to one thread, so overlapping windows add up in a fixed order.
// Sections: fixed windows that overlap or leave gaps (a row pass and a column pass; a gathering
// backward), the stride-1 average over a padded image, windows that tile the input, global and
// adaptive windows. The plain-loop references are in pool2d_ref.c.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Lanes chosen by a mask (all ones or zeros per lane), without branches.
#define BLEND(take, yes, no) ((v8f)(((v8i)(yes) & (take)) | ((v8i)(no) & ~(take))))

// 16 consecutive floats split into their even and odd elements: even[i] = src[2i], odd[i] = src[2i + 1].
__attribute__((always_inline)) static inline void split_pairs(v8f *even, v8f *odd, const float *src) {
    v8f lo, hi;
    memcpy(&lo, src, 32), memcpy(&hi, src + 8, 32);
    *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
    *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
}

// split_pairs' inverse: dst[2i] = even[i], dst[2i + 1] = odd[i] for 16 floats.
__attribute__((always_inline)) static inline void join_pairs(float *dst, const v8f *even, const v8f *odd) {
    v8f lo = __builtin_shufflevector(*even, *odd, 0, 8, 1, 9, 2, 10, 3, 11);
    v8f hi = __builtin_shufflevector(*even, *odd, 4, 12, 5, 13, 6, 14, 7, 15);
    memcpy(dst, &lo, 32), memcpy(dst + 8, &hi, 32);
}

// The first `count` lanes of *v to out: all 8 when count is 8 or there is `room` (the lanes past
// count land where later stores overwrite them), else through a copy.
__attribute__((always_inline)) static inline void store_lanes(float *out, const v8f *v, int64_t count, int room) {
    if (count >= 8 || room) {
        memcpy(out, v, 32);
        return;
    }
    float lanes[8];
    memcpy(lanes, v, 32);
    bp_copy_short(out, lanes, count);
}

// 8 argmax tap numbers stored as bytes (windows of at most BP_ARGMAX8_MAX_TAPS taps), and loaded back.
__attribute__((always_inline)) static inline void narrow_taps(uint8_t *dst, const v8i *taps) {
    v8u8 bytes = __builtin_convertvector(*taps, v8u8);
    memcpy(dst, &bytes, 8);
}

__attribute__((always_inline)) static inline void widen_taps(v8i *taps, const uint8_t *src) {
    v8u8 bytes;
    memcpy(&bytes, src, 8);
    *taps = __builtin_convertvector(bytes, v8i);
}

// One axis's windows: window o has `taps[o]` taps at first + t · step for t < taps[o], of which
// those in [lo[o], hi[o]) lie inside the input (tap indices, not positions); `size[o]` is the
// window's extent clipped to the padded input (for count_include_pad).
typedef struct {
    int64_t *first, *taps, *lo, *hi, *size;
    int64_t step;
} axis_windows;

static void axis_build(axis_windows *a, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                       int64_t dilation, int adaptive) {
    int64_t *buffer = malloc((size_t)(5 * out) * sizeof(int64_t));
    a->first = buffer, a->taps = buffer + out, a->lo = buffer + 2 * out, a->hi = buffer + 3 * out,
    a->size = buffer + 4 * out;
    a->step = adaptive ? 1 : dilation;
    for (int64_t o = 0; o < out; o++) {
        if (adaptive) {
            int64_t start = o * in / out, end = ((o + 1) * in + out - 1) / out;
            a->first[o] = start, a->taps[o] = end - start, a->size[o] = end - start;
        } else {
            int64_t start = o * stride - pad;
            a->first[o] = start, a->taps[o] = kernel;
            int64_t end = start + (kernel - 1) * dilation + 1;
            a->size[o] = (end < in + pad ? end : in + pad) - start;
        }
        // Taps t with 0 <= first + t · step < in.
        int64_t lo = a->first[o] < 0 ? (-a->first[o] + a->step - 1) / a->step : 0;
        int64_t hi = in - a->first[o] <= 0 ? 0 : (in - a->first[o] + a->step - 1) / a->step;
        a->lo[o] = lo, a->hi[o] = hi < a->taps[o] ? hi : a->taps[o];
    }
}

static void axis_free(axis_windows *a) { free(a->first); }

typedef struct {
    axis_windows rows, cols;
} windows;

static windows windows_build(const bp_pool2d_params *p) {
    windows win;
    axis_build(&win.rows, p->h, p->out_h, p->kernel_h, p->stride_h, p->pad_h, p->dilation_h, p->adaptive);
    axis_build(&win.cols, p->w, p->out_w, p->kernel_w, p->stride_w, p->pad_w, p->dilation_w, p->adaptive);
    return win;
}

static void windows_free(windows *win) {
    axis_free(&win->rows);
    axis_free(&win->cols);
}

static int64_t max_taps(const axis_windows *a, int64_t out) {
    int64_t m = 0;
    for (int64_t o = 0; o < out; o++) m = a->taps[o] > m ? a->taps[o] : m;
    return m;
}

int64_t bp_pool2d_window_size(const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t size = max_taps(&win.rows, p->out_h) * max_taps(&win.cols, p->out_w);
    windows_free(&win);
    return size;
}

// One axis's factor of the average's divisor for window o: its extent clipped to the padded input
// (count_include_pad, fixed windows) or its taps inside the input. Without an override the divisor
// of window (oh, ow) is the product of the two axes' factors.
static int64_t divisor_part(const bp_pool2d_params *p, const axis_windows *a, int64_t o) {
    return p->count_include_pad && !p->adaptive ? a->size[o] : a->hi[o] - a->lo[o];
}

static int64_t divisor(const bp_pool2d_params *p, const windows *win, int64_t oh, int64_t ow) {
    if (p->divisor_override > 0) return p->divisor_override;
    return divisor_part(p, &win->rows, oh) * divisor_part(p, &win->cols, ow);
}

// MARK: - Fixed windows: a row pass, then a column pass
//
// Tap (ti, tj) of output (oh, ow) reads input row oh · sh − ph + ti · dh, column ow · sw − pw + tj · dw.
// The row pass reduces one input row over the kw tap columns of every output column (the maximum
// and its tap column, or the sum); the column pass reduces the kh row results of each output, in
// tap-row order. Both go in blocks of 8-column vectors. Visiting the taps row by row, each in
// window order, keeps PyTorch's rule bit for bit: the first maximum wins a tie and the last NaN
// wins over everything (the rule is associative, so reducing rows first changes nothing). Row
// results are kept in a ring of as many rows as a window spans (rounded up to a power of two),
// so with overlapping windows each input row is reduced once, on a schedule built per call.
//
// So that tap column tj of 8 consecutive outputs is one contiguous load whatever the stride, the
// row pass first copies the input row into a padded row split into stride phases: phase q holds
// input columns q, q + sw, q + 2 · sw, … after `left` slots of padding, and input column
// ow · sw + offset (offset = tj · dw − pw = shift · sw + q, 0 <= q < sw) sits at slot
// q · phase_length + left + shift + ow. The padding slots hold −∞ for max (never larger, never
// NaN) and 0 for sums, are written once per thread, and cover every slot the loads reach.

typedef struct {
    int64_t phase_length, left, size;  // size: floats in the padded row (stride_w phases)
    int64_t lanes;                     // out_w rounded up to 32: the columns the passes compute
    int64_t ring_mask;                 // ring slots − 1: a power of two >= the rows one window spans
    int64_t *line;                     // line[tj]: slot of tap column tj's tap for output 0
    int32_t *first_tap;                // [lanes]: the first tap column inside the input, −1 if none
    float *columns_part;               // [lanes]: the column factor of the average's divisor (a whole number)
    // The schedule of the row pass, the same for every plane: before output row oh, input rows
    // new_rows[new_first[oh] .. new_first[oh + 1]) are reduced, each into ring slot ih & ring_mask,
    // each once, when a window first needs it (a slot is reused only by a row at least `slots`
    // further down, which no window that still needs the first one reaches). Output row oh then
    // reduces its taps' rows window_slot[window_first[oh] ..] (ring slots), tap rows window_ti.
    int64_t *new_first, *new_rows, *window_first, *window_slot, *window_ti;
} fixed_layout;

static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

static fixed_layout fixed_layout_build(const bp_pool2d_params *p, const windows *win) {
    fixed_layout f;
    int64_t s = p->stride_w, kw = p->kernel_w;
    f.lanes = (p->out_w + 31) / 32 * 32;
    int64_t span = (p->kernel_h - 1) * p->dilation_h + 1, slots = 1;
    while (slots < span) slots *= 2;
    f.ring_mask = slots - 1;
    // Each input row's first window, then the schedule in output-row order.
    const axis_windows *r = &win->rows;
    int64_t *first_need = malloc((size_t)p->h * sizeof(int64_t)), taps = 0;
    for (int64_t ih = 0; ih < p->h; ih++) first_need[ih] = -1;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++, taps++) {
            int64_t ih = r->first[oh] + ti * p->dilation_h;
            if (first_need[ih] < 0) first_need[ih] = oh;
        }
    f.new_first = calloc((size_t)(p->out_h + 1), sizeof(int64_t));
    f.new_rows = malloc((size_t)(p->h + 1) * sizeof(int64_t));
    for (int64_t ih = 0; ih < p->h; ih++)
        if (first_need[ih] >= 0) f.new_first[first_need[ih] + 1]++;
    for (int64_t oh = 0; oh < p->out_h; oh++) f.new_first[oh + 1] += f.new_first[oh];
    int64_t *filled = calloc((size_t)p->out_h, sizeof(int64_t));
    for (int64_t ih = 0; ih < p->h; ih++)
        if (first_need[ih] >= 0) f.new_rows[f.new_first[first_need[ih]] + filled[first_need[ih]]++] = ih;
    free(filled), free(first_need);
    f.window_first = malloc((size_t)(p->out_h + 1) * sizeof(int64_t));
    f.window_slot = malloc((size_t)(taps + 1) * sizeof(int64_t));
    f.window_ti = malloc((size_t)(taps + 1) * sizeof(int64_t));
    taps = 0;
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        f.window_first[oh] = taps;
        for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++, taps++)
            f.window_slot[taps] = (r->first[oh] + ti * p->dilation_h) & f.ring_mask, f.window_ti[taps] = ti;
    }
    f.window_first[p->out_h] = taps;
    f.line = malloc((size_t)kw * sizeof(int64_t));
    int64_t min_shift = 0, max_end = (p->w + s - 1) / s;
    for (int64_t tj = 0; tj < kw; tj++) {
        int64_t shift = floor_div(tj * p->dilation_w - p->pad_w, s);
        min_shift = shift < min_shift ? shift : min_shift;
        max_end = shift + f.lanes > max_end ? shift + f.lanes : max_end;
    }
    f.left = -min_shift;
    f.phase_length = f.left + max_end;
    f.size = s * f.phase_length;
    for (int64_t tj = 0; tj < kw; tj++) {
        int64_t offset = tj * p->dilation_w - p->pad_w, shift = floor_div(offset, s);
        f.line[tj] = (offset - shift * s) * f.phase_length + f.left + shift;
    }
    f.first_tap = malloc((size_t)f.lanes * sizeof(int32_t));
    f.columns_part = malloc((size_t)f.lanes * sizeof(float));
    const axis_windows *c = &win->cols;
    for (int64_t ow = 0; ow < f.lanes; ow++) {
        int inside = ow < p->out_w && c->lo[ow] < c->hi[ow];
        f.first_tap[ow] = inside ? (int32_t)c->lo[ow] : -1;
        f.columns_part[ow] = ow >= p->out_w ? 1
                             : p->divisor_override > 0 ? (float)p->divisor_override
                                                       : (float)divisor_part(p, c, ow);
    }
    return f;
}

static void fixed_layout_free(fixed_layout *f) {
    free(f->line);
    free(f->first_tap);
    free(f->columns_part);
    free(f->new_first), free(f->new_rows), free(f->window_first), free(f->window_slot), free(f->window_ti);
}

// The row factor of output row oh's divisors: divisor(oh, ow) = rows_part · columns_part[ow].
static int32_t rows_part(const bp_pool2d_params *p, const windows *win, int64_t oh) {
    return p->divisor_override > 0 ? 1 : (int32_t)divisor_part(p, &win->rows, oh);
}

// The divisors of output columns [ow, ow + 8) of a row whose row factor is `rows`, from the
// layout's column factors (f->columns_part): products of whole numbers below 2^24, so exact in float.
__attribute__((always_inline)) static inline void divisors(v8f *d, const float *columns_part, int64_t ow, int32_t rows) {
    v8f columns;
    memcpy(&columns, columns_part + ow, 32);
    *d = columns * (float)rows;
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

// The backward gathers, one input-gradient row at a time and each element written once: element
// (ih, iw) of dx sums, over the taps (ti, tj) of the windows that contain it, dy of that window
// divided by its divisor (average) or dy where the window's argmax is that tap, else 0 (max).
// The windows containing it: ih = oh · sh − ph + ti · dh and iw = ow · sw − pw + tj · dw. Within
// phase q of the row (iw = m · sw + q, 0 <= q < sw) the compatible tap columns tj have
// ow = m + c[tj] with c = (q + pw − tj · dw) / sw exactly, so for each (ti, tj) the row's phase is
// a contiguous run of one row of dy, read in vectors again. The terms are added in output
// order (ti and tj descending: oh and ow ascending), as the reference adds them, so max gives the
// reference's bits; the unselected taps add +0, which changes no sum that starts from +0.
// dy and the argmax sit in a plane-sized grid with `grid_left` columns of padding (0 and no tap)
// so that every run is in bounds.

typedef struct {
    int64_t phase_length;                 // floats per phase of a gathered row: ⌈w / sw⌉ rounded up to 32
    int64_t *first;                       // [sw + 1]: phase q's tap columns are entries [first[q], first[q + 1])
    int64_t *tap_column, *column_shift;   // tj and c of each entry, tj descending within a phase
    int64_t grid_left, grid_width;        // columns of padding left of dy's row in the grid, and the
                                          // row length (a multiple of 32)
    int64_t sum_width;                    // the columns of a grid row the average's runs reach from the
                                          // input's columns, rounded up to 32
    int64_t *row_first;                   // [h + 1]: input row ih is a tap row of the windows
    int64_t *window_row, *tap_row;        // [row_first[ih], row_first[ih + 1]) of these: output row
                                          // oh (ascending) and the tap row ti it is in oh's windows
    // Max: the runs phase q of input row ih adds are terms [term_first[ih · sw + q],
    // term_first[ih · sw + q + 1]), in output order (oh ascending, then tj descending): the run
    // starts at term_offset in the grid and its argmax rows, and takes the gradients whose argmax
    // is window tap term_tap (ti · kw + tj).
    int64_t *term_first, *term_offset;
    int32_t *term_tap;
} gather_layout;

static gather_layout gather_layout_build(const bp_pool2d_params *p, const fixed_layout *f) {
    gather_layout g;
    int64_t s = p->stride_w, kw = p->kernel_w;
    g.phase_length = ((p->w + s - 1) / s + 31) / 32 * 32;
    g.first = malloc((size_t)(s + 1) * sizeof(int64_t));
    g.tap_column = malloc((size_t)(kw + 1) * sizeof(int64_t));
    g.column_shift = malloc((size_t)(kw + 1) * sizeof(int64_t));
    int64_t count = 0, min_shift = 0, max_shift = 0;
    for (int64_t q = 0; q < s; q++) {
        g.first[q] = count;
        for (int64_t tj = kw - 1; tj >= 0; tj--) {
            int64_t reach = q + p->pad_w - tj * p->dilation_w, c = floor_div(reach, s);
            if (c * s != reach) continue;
            g.tap_column[count] = tj, g.column_shift[count++] = c;
            min_shift = c < min_shift ? c : min_shift;
            max_shift = c > max_shift ? c : max_shift;
        }
    }
    g.first[s] = count;
    g.grid_left = -min_shift;
    int64_t reach = max_shift + g.phase_length > f->lanes ? max_shift + g.phase_length : f->lanes;
    g.grid_width = (g.grid_left + reach + 31) / 32 * 32;
    g.sum_width = (g.grid_left + max_shift + (p->w + s - 1) / s + 31) / 32 * 32;
    // ih = oh · sh − ph + ti · dh: for each ih, the (oh, ti) that reach it, oh ascending (ti descending).
    g.row_first = malloc((size_t)(p->h + 1) * sizeof(int64_t));
    g.window_row = malloc((size_t)(p->h * p->kernel_h) * sizeof(int64_t));
    g.tap_row = malloc((size_t)(p->h * p->kernel_h) * sizeof(int64_t));
    count = 0;
    for (int64_t ih = 0; ih < p->h; ih++) {
        g.row_first[ih] = count;
        for (int64_t ti = p->kernel_h - 1; ti >= 0; ti--) {
            int64_t reach = ih + p->pad_h - ti * p->dilation_h, oh = reach / p->stride_h;
            if (reach < 0 || oh * p->stride_h != reach || oh >= p->out_h) continue;
            g.window_row[count] = oh, g.tap_row[count++] = ti;
        }
    }
    g.row_first[p->h] = count;
    g.term_first = malloc((size_t)(p->h * s + 1) * sizeof(int64_t));
    g.term_offset = malloc((size_t)(count * kw + 1) * sizeof(int64_t));
    g.term_tap = malloc((size_t)(count * kw + 1) * sizeof(int32_t));
    int64_t terms = 0;
    for (int64_t ih = 0; ih < p->h; ih++)
        for (int64_t q = 0; q < s; q++) {
            g.term_first[ih * s + q] = terms;
            for (int64_t k = g.row_first[ih]; k < g.row_first[ih + 1]; k++)
                for (int64_t e = g.first[q]; e < g.first[q + 1]; e++, terms++) {
                    g.term_offset[terms] = g.window_row[k] * g.grid_width + g.grid_left + g.column_shift[e];
                    g.term_tap[terms] = (int32_t)(g.tap_row[k] * kw + g.tap_column[e]);
                }
        }
    g.term_first[p->h * s] = terms;
    return g;
}

static void gather_layout_free(gather_layout *g) {
    free(g->first);
    free(g->tap_column);
    free(g->column_shift);
    free(g->row_first);
    free(g->window_row);
    free(g->tap_row);
    free(g->term_first);
    free(g->term_offset);
    free(g->term_tap);
}

// Blocks of the passes: `vectors` independent runs of 8 columns, so that the chains fill the
// pipeline and the loops around them run a few times per row: 8 or 4 for sums, 4 for max (which
// keeps a maximum and its tap per run: 8 would not fit the 16 AVX2 registers). f->lanes is a
// multiple of 32: sums take 64 columns at a time and the last 32 alone.
enum { MAX_VECTORS = 8 };

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

// The stride-1 average's image (see "Stride-1 average" below).
typedef struct {
    int64_t rows, pitch, top, left;  // the image: rows × pitch, the plane's rows from `top`, columns from `left`
    int64_t length;                  // floats the flat pass computes, a multiple of 32
    int64_t size;                    // floats of the image: every one the flat pass reads
} image_layout;

static image_layout image_layout_of(const bp_pool2d_params *p, int backward) {
    image_layout m;
    if (backward) {
        m.top = (p->kernel_h - 1) * p->dilation_h, m.left = (p->kernel_w - 1) * p->dilation_w;
        m.rows = p->out_h + 2 * m.top, m.pitch = p->out_w + 2 * m.left;
        m.length = (p->h * m.pitch + 31) / 32 * 32;  // column sums of the input rows
        m.size = m.length + (p->pad_h + m.top) * m.pitch;
    } else {
        m.top = p->pad_h, m.left = p->pad_w;
        m.rows = p->h + 2 * p->pad_h, m.pitch = p->w + 2 * p->pad_w;
        m.length = (m.rows * m.pitch + 31) / 32 * 32;  // row sums of every image row
        m.size = m.length + (p->kernel_w - 1) * p->dilation_w;
    }
    if (m.size < m.rows * m.pitch) m.size = m.rows * m.pitch;
    return m;
}

// The per-plane functions work on local copies of the parameters, the layout and the scratch
// struct: their vector stores (memcpy, which may alias any type) would otherwise make the compiler
// reload every field after each of them (instructions a plane: max 3 × 3 stride 2 forward 57.6K ->
// 54.2K, backward 47.8K -> 45.6K; the stride-1 average 14.5K -> 13.5K forward, 13.6K -> 12.5K backward).
#define LOCAL_COPIES(p, f, s)                \
    bp_pool2d_params p##_copy = *(p);        \
    fixed_layout f##_copy = *(f);            \
    fixed_scratch s##_copy = *(s);           \
    (p) = &p##_copy, (f) = &f##_copy, (s) = &s##_copy

// Per-thread scratch of the fixed-window passes.
typedef struct {
    float *padded;      // the padded row [f.size]
    float *ring;        // the forward's row results [slots][lanes]
    int32_t *ring_taps; // their tap columns [slots][lanes]
    float **window_ring;        // for each entry of the layout's window_slot: its ring row
    int32_t **window_ring_taps; // and its tap columns
    float *out;         // one output row [lanes]
    int32_t *out_taps;  // its taps [lanes]
    float *grid;        // the backward's dy grid [out_h][grid_width], its padding 0
    int32_t *grid_taps; // and its argmax [out_h][grid_width], its padding −1
    float **window_grid;  // for each (oh, ti) of the gather layout's row table: grid row oh
    float *sum;         // the average's summed grid rows [grid_width] (columns [0, sum_width) summed)
    float *phases;      // a gathered row's phases [sw][phase_length]
    float *image;       // the stride-1 average's padded image (image_layout), its margins 0
    float *sums;        // and its row or column sums [length + 8]
} fixed_scratch;

static fixed_scratch fixed_scratch_make(const bp_pool2d_params *p, const fixed_layout *f, const gather_layout *g,
                                        const image_layout *image, float pad_value) {
    fixed_scratch s = {0};
    if (image) {  // the image passes use nothing else
        s.image = calloc((size_t)image->size, sizeof(float));
        s.sums = calloc((size_t)(image->length + 8), sizeof(float));
        return s;
    }
    s.padded = malloc((size_t)f->size * sizeof(float));
    for (int64_t i = 0; i < f->size; i++) s.padded[i] = pad_value;
    int64_t slots = f->ring_mask + 1, tap_rows = f->window_first[p->out_h];
    s.ring = malloc((size_t)(slots * f->lanes) * sizeof(float));
    s.ring_taps = malloc((size_t)(slots * f->lanes) * sizeof(int32_t));
    s.window_ring = malloc((size_t)(tap_rows + 1) * sizeof(float *));
    s.window_ring_taps = malloc((size_t)(tap_rows + 1) * sizeof(int32_t *));
    for (int64_t k = 0; k < tap_rows; k++) {
        s.window_ring[k] = s.ring + f->window_slot[k] * f->lanes;
        s.window_ring_taps[k] = s.ring_taps + f->window_slot[k] * f->lanes;
    }
    s.out = malloc((size_t)f->lanes * sizeof(float));
    s.out_taps = malloc((size_t)f->lanes * sizeof(int32_t));
    if (g) {
        s.grid = calloc((size_t)(p->out_h * g->grid_width), sizeof(float));
        s.grid_taps = malloc((size_t)(p->out_h * g->grid_width) * sizeof(int32_t));
        for (int64_t i = 0; i < p->out_h * g->grid_width; i++) s.grid_taps[i] = -1;
        s.sum = calloc((size_t)g->grid_width, sizeof(float));  // past sum_width: zeros, for lanes past the row's end
        s.phases = malloc((size_t)(p->stride_w * g->phase_length) * sizeof(float));
        int64_t reaches = g->row_first[p->h];
        s.window_grid = malloc((size_t)(reaches + 1) * sizeof(float *));
        for (int64_t k = 0; k < reaches; k++) s.window_grid[k] = s.grid + g->window_row[k] * g->grid_width;
    }
    return s;
}

static void fixed_scratch_free(fixed_scratch *s) {
    free(s->padded), free(s->ring), free(s->ring_taps), free(s->window_ring), free(s->window_ring_taps);
    free(s->out), free(s->out_taps), free(s->grid), free(s->grid_taps), free(s->sum), free(s->phases);
    free(s->window_grid), free(s->image), free(s->sums);
}

// The next plane's data (its input, or dy and the argmax), which without help is read all at once
// when that plane starts, after a stretch of work with no reads: each of this plane's `steps` row
// steps prefetches a share of it, so that the reads overlap the work. Past the last plane the
// prefetches are harmless: they never fault.
typedef struct {
    const char *start;
    int64_t lines, share;  // 64-byte lines in all, and per step
} next_plane;

static inline next_plane next_plane_of(const void *start, int64_t bytes, int64_t steps) {
    int64_t lines = (bytes + 63) / 64;
    return (next_plane){start, lines, (lines + steps - 1) / steps};
}

// Step `step`'s share. (Passed by value: the caller's loop keeps it in registers.)
__attribute__((always_inline)) static inline void prefetch_share(next_plane next, int64_t step) {
    int64_t first = step * next.share, end = first + next.share < next.lines ? first + next.share : next.lines;
    _Pragma("clang loop unroll(disable)")  // a few lines a call: unrolled, its setup cost more than the loop
    for (int64_t l = first; l < end; l++) __builtin_prefetch(next.start + 64 * l, 0, 3);
}

// One plane of fixed-window pooling: max with argmax tap numbers (is_max: into index8 or
// index32) or average. kh × kw is the kernel: constants for the common 3 × 3, so that the row
// pass and the column pass of a row of whole windows unroll their tap loops.
__attribute__((always_inline)) static inline void fixed_forward(float *y, uint8_t *index8, int32_t *index32,
                                                                const float *x, const bp_pool2d_params *p,
                                                                const windows *win, const fixed_layout *f,
                                                                fixed_scratch *s, int64_t kh, int64_t kw, int is_max) {
    LOCAL_COPIES(p, f, s);
    int64_t out_w = p->out_w;
    // Measured with the next plane's input prefetched: 3 × 3 stride 2, max 0.94-0.96x the time,
    // average 0.89-0.93x.
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
static void plane_fixed(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p,
                        const windows *win, const fixed_layout *f, fixed_scratch *s) {
    int three = p->kernel_h == 3 && p->kernel_w == 3;
    if ((index8 || index32) && three) fixed_forward(y, index8, index32, x, p, win, f, s, 3, 3, 1);
    else if (index8 || index32) fixed_forward(y, index8, index32, x, p, win, f, s, p->kernel_h, p->kernel_w, 1);
    else if (three) fixed_forward(y, NULL, NULL, x, p, win, f, s, 3, 3, 0);
    else fixed_forward(y, NULL, NULL, x, p, win, f, s, p->kernel_h, p->kernel_w, 0);
}

// Output row oh of the average's dy divided by its divisors (row factor `rows`) into row.
__attribute__((always_inline)) static inline void divided_row(float *row, const float *grad, const fixed_layout *f,
                                                              int64_t out_w, int32_t rows) {
    const float *columns = f->columns_part;
    int64_t ow = 0;
    for (; ow + 8 <= out_w; ow += 8) {
        v8f v, d;
        memcpy(&v, grad + ow, 32);
        divisors(&d, columns, ow, rows);
        v /= d;
        memcpy(row + ow, &v, 32);
    }
    for (; ow < out_w; ow++) row[ow] = grad[ow] / (columns[ow] * (float)rows);
}

// One plane's dy into the grid: row oh at grid + oh · grid_width + grid_left, divided by the
// divisors for the average (taps NULL); for max the argmax tap numbers alike into taps. Only
// the out_w columns of each row are written: the padding around them (0, tap −1) is the same
// for every plane and was written once (fixed_scratch_make).
__attribute__((always_inline)) static inline void gradient_grid(float *grid, int32_t *taps, const float *dy,
                                                                const uint8_t *index8, const int32_t *index32,
                                                                const bp_pool2d_params *p, const windows *win,
                                                                const fixed_layout *f, const gather_layout *g) {
    int64_t out_w = p->out_w, width = g->grid_width;
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        float *row = grid + oh * width + g->grid_left;
        const float *grad = dy + oh * out_w;
        if (!taps) {
            divided_row(row, grad, f, out_w, rows_part(p, win, oh));
            continue;
        }
        bp_copy_short(row, grad, out_w);
        int32_t *inside = taps + oh * width + g->grid_left;
        if (index32) {
            memcpy(inside, index32 + oh * out_w, (size_t)out_w * sizeof(int32_t));
            continue;
        }
        const uint8_t *bytes = index8 + oh * out_w;
        int64_t ow = 0;
        for (; ow + 8 <= out_w; ow += 8) {
            v8i wide;
            widen_taps(&wide, bytes + ow);
            memcpy(inside + ow, &wide, 32);
        }
        for (; ow < out_w; ow++) inside[ow] = bytes[ow];
    }
}

// Max: columns [m, m + 8 · vectors) of a phase of an input-gradient row into acc, the sum of
// terms [t0, t1) (gather_layout): each adds its run of gradients where its tap is the argmax.
// `vectors` is 8 or 4 (independent chains), a constant once inlined.
__attribute__((always_inline)) static inline void routed_sum(v8f *acc, const float *grid, const int32_t *grid_taps,
                                                             const gather_layout *g, int64_t t0, int64_t t1, int64_t m,
                                                             int vectors) {
    for (int k = 0; k < vectors; k++) acc[k] = (v8f){0};
    for (int64_t t = t0; t < t1; t++) {
        const float *run = grid + g->term_offset[t] + m;
        const int32_t *taps = grid_taps + g->term_offset[t] + m;
        int32_t mine = g->term_tap[t];
        for (int k = 0; k < vectors; k++) {
            v8f v;
            v8i tap;
            memcpy(&v, run + 8 * k, 32), memcpy(&tap, taps + 8 * k, 32);
            acc[k] += (v8f)((v8i)v & (tap == mine));  // the gradient where this tap is the argmax, +0 elsewhere
        }
    }
}

// routed_sum into phase + m.
__attribute__((always_inline)) static inline void routed_block(float *phase, const float *grid,
                                                               const int32_t *grid_taps, const gather_layout *g,
                                                               int64_t t0, int64_t t1, int64_t m, int vectors) {
    v8f acc[MAX_VECTORS];
    routed_sum(acc, grid, grid_taps, g, t0, t1, m, vectors);
    memcpy(phase + m, acc, (size_t)vectors * 32);
}

// Max with stride 2: columns [m, m + 32) of both phases of input row ih routed in registers and
// interleaved there, into input columns [2m, 2m + 64) of `row`.
__attribute__((always_inline)) static inline void routed_pairs(float *row, const float *grid, const int32_t *grid_taps,
                                                               const gather_layout *g, int64_t ih, int64_t m) {
    v8f even[4], odd[4];
    const int64_t *terms = g->term_first + 2 * ih;
    routed_sum(even, grid, grid_taps, g, terms[0], terms[1], m, 4);
    routed_sum(odd, grid, grid_taps, g, terms[1], terms[2], m, 4);
    for (int k = 0; k < 4; k++) join_pairs(row + 2 * (m + 8 * k), &even[k], &odd[k]);
}

// Average: columns [k, k + 8 · vectors) of the `count` grid rows summed, into sum + k (vectors: 8 or 4).
__attribute__((always_inline)) static inline void summed_block(float *sum, float *const *grads, int64_t count,
                                                               int64_t k, int vectors) {
    v8f acc[MAX_VECTORS] = {{0}};
    for (int64_t i = 0; i < count; i++)
        for (int r = 0; r < vectors; r++) {
            v8f v;
            memcpy(&v, grads[i] + k + 8 * r, 32);
            acc[r] += v;
        }
    memcpy(sum + k, acc, (size_t)vectors * 32);
}

// Average: columns [m, m + 8 · vectors) of phase q (into phases + m): the tap columns' runs of
// the summed rows added (vectors: 8 or 4).
__attribute__((always_inline)) static inline void spread_block(float *phases, const float *sum, const gather_layout *g,
                                                               int64_t q, int64_t m, int vectors) {
    v8f acc[MAX_VECTORS] = {{0}};
    for (int64_t e = g->first[q]; e < g->first[q + 1]; e++) {
        const float *run = sum + g->grid_left + g->column_shift[e] + m;
        for (int k = 0; k < vectors; k++) {
            v8f v;
            memcpy(&v, run + 8 * k, 32);
            acc[k] += v;
        }
    }
    memcpy(phases + m, acc, (size_t)vectors * 32);
}

// Input-gradient row ih into `dst` (w floats) from the thread's grid (sc), through `phases`
// (sw · phase_length floats). Each phase is computed 64 columns at a time, then 32 (phase_length
// is a multiple of 32): max routes (routed_block); the average sums the grid rows of the windows
// that have ih as a tap row first (into sc->sum, in output-row order) and then adds the tap
// columns' runs of the sum.
__attribute__((always_inline)) static inline void gather_row(float *dst, int64_t ih, const fixed_scratch *sc,
                                                             float *phases, const bp_pool2d_params *p,
                                                             const gather_layout *g, int is_max) {
    int64_t s = p->stride_w, length = g->phase_length, k = 0;
    if (is_max && s == 2) {  // the phases interleaved in registers, into phases as one row (dst, or copied there)
        for (int64_t m = 0; m < length; m += 32) routed_pairs(phases, sc->grid, sc->grid_taps, g, ih, m);
        if (phases != dst) bp_copy_short(dst, phases, p->w);
        return;
    }
    if (!is_max) {
        float *const *grads = sc->window_grid + g->row_first[ih];
        int64_t count = g->row_first[ih + 1] - g->row_first[ih];
        for (; k + 64 <= g->sum_width; k += 64) summed_block(sc->sum, grads, count, k, 8);
        for (; k < g->sum_width; k += 32) summed_block(sc->sum, grads, count, k, 4);
    }
    for (int64_t q = 0; q < s; q++) {
        float *phase = phases + q * length;
        int64_t m = 0, t0 = g->term_first[ih * s + q], t1 = g->term_first[ih * s + q + 1];
        for (; m + 64 <= length; m += 64)
            if (is_max) routed_block(phase, sc->grid, sc->grid_taps, g, t0, t1, m, 8);
            else spread_block(phase, sc->sum, g, q, m, 8);
        for (; m < length; m += 32)
            if (is_max) routed_block(phase, sc->grid, sc->grid_taps, g, t0, t1, m, 4);
            else spread_block(phase, sc->sum, g, q, m, 4);
    }
    // The phases back in input order (pad_row's inverse).
    if (s == 1) {
        if (phases != dst) bp_copy_short(dst, phases, p->w);
    } else if (s == 2) {  // the common case: 8 even and 8 odd interleaved into 16 floats at a time
        const float *even = phases, *odd = phases + length;
        int64_t pairs = p->w / 2, m = 0;
        for (; m + 8 <= pairs; m += 8) {
            v8f e, o;
            memcpy(&e, even + m, 32), memcpy(&o, odd + m, 32);
            join_pairs(dst + 2 * m, &e, &o);
        }
        for (; m < pairs; m++) dst[2 * m] = even[m], dst[2 * m + 1] = odd[m];
        if (p->w % 2) dst[p->w - 1] = even[pairs];
    } else {
        for (int64_t q = 0; q < s; q++)
            for (int64_t m = 0; m * s + q < p->w; m++) dst[m * s + q] = phases[q * length + m];
    }
}

// One plane of the fixed-window backward: max (is_max: index8 or index32) or average.
__attribute__((always_inline)) static inline void fixed_backward(float *dx, const float *dy, const uint8_t *index8,
                                                                 const int32_t *index32, const bp_pool2d_params *p,
                                                                 const windows *win, const fixed_layout *f,
                                                                 const gather_layout *g, fixed_scratch *s, int is_max) {
    LOCAL_COPIES(p, f, s);
    gather_layout gc = *g;
    g = &gc;
    gradient_grid(s->grid, is_max ? s->grid_taps : NULL, dy, index8, index32, p, win, f, g);
    // The next plane's dy and argmax prefetched (measured: 0.91-0.97x the time).
    int64_t out_hw = p->out_h * p->out_w;
    next_plane next_dy = next_plane_of(dy + out_hw, 4 * out_hw, p->h);
    next_plane next_index = index8    ? next_plane_of(index8 + out_hw, out_hw, p->h)
                            : index32 ? next_plane_of(index32 + out_hw, 4 * out_hw, p->h)
                                      : next_plane_of(NULL, 0, p->h);
    // A row gathered in input order (one phase, or max's two) goes straight into dx while its
    // stride_w · phase_length floats stay inside the plane (the rest land on the next rows, which
    // are written after).
    int in_order = p->stride_w == 1 || (is_max && p->stride_w == 2);
    for (int64_t ih = 0; ih < p->h; ih++) {
        prefetch_share(next_dy, ih);
        prefetch_share(next_index, ih);
        float *dst = dx + ih * p->w;
        int direct = in_order && ih * p->w + p->stride_w * g->phase_length <= p->h * p->w;
        gather_row(dst, ih, s, direct ? dst : s->phases, p, g, is_max);
    }
}

BP_MULTIVERSION
static void plane_fixed_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                                 const bp_pool2d_params *p, const windows *win, const fixed_layout *f,
                                 const gather_layout *g, fixed_scratch *s) {
    if (index8 || index32) fixed_backward(dx, dy, index8, index32, p, win, f, g, s, 1);
    else fixed_backward(dx, dy, NULL, NULL, p, win, f, g, s, 0);
}

// MARK: - Stride-1 average: the plane as one padded image
//
// With stride 1 both ways the average needs no ring of row results and no phases: the plane goes
// into an image of `rows` rows `pitch` floats apart with zero margins, and each pass runs over the
// whole image as one flat array, every window tap a constant offset into it. The general path's
// loops run once per row for a few vectors, and their setup cost as much as the sums (56 × 56
// planes: 20K instructions a plane backward, 15K forward; here 12.5K and 13.5K, of which the
// prefetches take 2K). Each sum here adds the terms of the general path in its order, plus +0
// for taps outside the input (which changes no sum that starts from +0): the same bits.
//
// Forward: the image is the plane with pad_h rows and pad_w columns of zeros around it; row sums
// rs[i] = Σ_tj image[i + tj · dw] for every i; then output (oh, ow) = Σ_ti rs[(oh + ti · dh) · pitch + ow]
// / divisor(oh, ow). Backward: the image is dy / divisor with top = (kh − 1) · dh zero rows above
// and below and left = (kw − 1) · dw zero columns either side; column sums
// cs[ih · pitch + c] = Σ_ti image[(ih + ph − ti · dh + top) · pitch + c], ti descending (output rows
// ascending); then dx(ih, iw) = Σ_tj cs[ih · pitch + iw + pw − tj · dw + left], tj descending.

// *sum = Σ_t from[t · step .. + 8) for t < taps, from +0.
__attribute__((always_inline)) static inline void image_sum(v8f *sum, const float *from, int64_t step, int64_t taps) {
    v8f acc = {0};
    for (int64_t t = 0; t < taps; t++) {
        v8f v;
        memcpy(&v, from + t * step, 32);
        acc += v;
    }
    *sum = acc;
}

// sums[i] = Σ_t from[i + offset(t)] over the image's flat length, 32 floats at a time: the taps are
// offsets `first` + t · step for t < taps (step may be negative), added in that order from +0.
__attribute__((always_inline)) static inline void image_pass(float *sums, const float *from, const image_layout *m,
                                                             int64_t first, int64_t step, int64_t taps) {
    for (int64_t i = 0; i < m->length; i += 32) {
        v8f acc[4];
        for (int r = 0; r < 4; r++) image_sum(&acc[r], from + first + i + 8 * r, step, taps);
        memcpy(sums + i, acc, sizeof acc);
    }
}

// *mean = image_sum / the divisors of output columns [ow, ow + 8) with row factor `rows`.
__attribute__((always_inline)) static inline void image_mean(v8f *mean, const float *from, int64_t step, int64_t taps,
                                                             const float *columns_part, int64_t ow, int32_t rows) {
    v8f d;
    image_sum(mean, from, step, taps);
    divisors(&d, columns_part, ow, rows);
    *mean /= d;
}

// One plane of the stride-1 average (image_layout), the kernel kh × kw: constants for the common
// 3 × 3, so that the tap loops unroll.
__attribute__((always_inline)) static inline void image_forward(float *y, const float *x, const bp_pool2d_params *p,
                                                                const windows *win, const fixed_layout *f,
                                                                const image_layout *layout, fixed_scratch *s,
                                                                int64_t kh, int64_t kw) {
    LOCAL_COPIES(p, f, s);
    image_layout m = *layout;
    for (int64_t ih = 0; ih < p->h; ih++) bp_copy_short(s->image + (ih + m.top) * m.pitch + m.left, x + ih * p->w, p->w);
    image_pass(s->sums, s->image, &m, 0, p->dilation_w, kw);
    int64_t out_w = p->out_w, out_hw = p->out_h * out_w, step = p->dilation_h * m.pitch;
    const float *columns = f->columns_part;
    next_plane next = next_plane_of(x + p->h * p->w, 4 * p->h * p->w, p->out_h);  // measured: 0.86-0.88x the time
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        prefetch_share(next, oh);
        const float *top = s->sums + oh * m.pitch;
        int32_t rows = rows_part(p, win, oh);
        float *out = y + oh * out_w;
        int64_t ow = 0;
        v8f mean;
        for (; ow + 8 <= out_w; ow += 8) {
            image_mean(&mean, top + ow, step, kh, columns, ow, rows);
            memcpy(out + ow, &mean, 32);
        }
        if (ow == out_w) continue;
        image_mean(&mean, top + ow, step, kh, columns, ow, rows);
        store_lanes(out + ow, &mean, out_w - ow, oh * out_w + ow + 8 <= out_hw);
    }
}

__attribute__((always_inline)) static inline void image_backward(float *dx, const float *dy, const bp_pool2d_params *p,
                                                                 const windows *win, const fixed_layout *f,
                                                                 const image_layout *layout, fixed_scratch *s,
                                                                 int64_t kh, int64_t kw) {
    LOCAL_COPIES(p, f, s);
    image_layout m = *layout;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        divided_row(s->image + (oh + m.top) * m.pitch + m.left, dy + oh * p->out_w, f, p->out_w, rows_part(p, win, oh));
    int64_t step = p->dilation_h * m.pitch;
    image_pass(s->sums, s->image, &m, (p->pad_h + m.top) * m.pitch - (kh - 1) * step, step, kh);
    int64_t w = p->w, hw = p->h * w, dw = p->dilation_w;
    const float *sums = s->sums + p->pad_w + m.left - (kw - 1) * dw;
    next_plane next = next_plane_of(dy + p->out_h * p->out_w, 4 * p->out_h * p->out_w, p->h);  // 0.90x the time
    for (int64_t ih = 0; ih < p->h; ih++) {
        prefetch_share(next, ih);
        // Tap column kw − 1 − t of input column iw at row[t · dw + iw]: t ascending, tj descending.
        const float *row = sums + ih * m.pitch;
        float *out = dx + ih * w;
        int64_t iw = 0;
        v8f sum;
        for (; iw + 8 <= w; iw += 8) {
            image_sum(&sum, row + iw, dw, kw);
            memcpy(out + iw, &sum, 32);
        }
        if (iw == w) continue;
        image_sum(&sum, row + iw, dw, kw);
        store_lanes(out + iw, &sum, w - iw, ih * w + iw + 8 <= hw);
    }
}

BP_MULTIVERSION
static void plane_image(float *y, const float *x, const bp_pool2d_params *p, const windows *win,
                        const fixed_layout *f, const image_layout *m, fixed_scratch *s) {
    if (p->kernel_h == 3 && p->kernel_w == 3) image_forward(y, x, p, win, f, m, s, 3, 3);
    else image_forward(y, x, p, win, f, m, s, p->kernel_h, p->kernel_w);
}

BP_MULTIVERSION
static void plane_image_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win,
                                 const fixed_layout *f, const image_layout *m, fixed_scratch *s) {
    if (p->kernel_h == 3 && p->kernel_w == 3) image_backward(dx, dy, p, win, f, m, s, 3, 3);
    else image_backward(dx, dy, p, win, f, m, s, p->kernel_h, p->kernel_w);
}

// MARK: - Tiled windows: stride = kernel, no padding or dilation
//
// The windows tile the top-left out_h·kh × out_w·kw block of the plane without overlapping, so
// each output's taps are read straight into registers, and in the backward each input gradient
// element is written exactly once (max: dy at the argmax, 0 elsewhere; average: dy / divisor),
// with no zeroing pass and no read-modify-write. The common 2×2 case runs 8 windows at a time in
// portable vectors. Max and average give the same bits as the general path. At most 256 taps
// (one-byte indices).

static int is_tiled(const bp_pool2d_params *p) {
    return !p->adaptive && p->stride_h == p->kernel_h && p->stride_w == p->kernel_w && p->pad_h == 0 &&
           p->pad_w == 0 && p->dilation_h == 1 && p->dilation_w == 1 && p->out_h * p->kernel_h <= p->h &&
           p->out_w * p->kernel_w <= p->w && p->kernel_h * p->kernel_w <= BP_ARGMAX8_MAX_TAPS;
}

// PyTorch's rule for the next tap v against the best so far: it takes over when larger or NaN.
#define MAX_TAKE(v, number)                        \
    do {                                           \
        int take_ = (v > best) | (v != v);         \
        best = take_ ? v : best;                   \
        tap = take_ ? (number) : tap;              \
    } while (0)

// A row's last group of windows may be short (count < 8). With `room` (the plane goes on for at
// least a group past the row: every row but the last few), it is still read and written as a
// full group: the extra loads read the next row, and the extra stores write where the next row's
// outputs (or the memset of uncovered columns) go later. Without, it goes through padded copies.

// The four taps of up to 8 consecutive 2×2 windows whose rows start at r0 and r1, in row-major
// tap order: taps[0] = top left … taps[3] = bottom right.
__attribute__((always_inline)) static inline void load_2x2(v8f taps[4], const float *r0, const float *r1, int64_t count,
                                                           int room) {
    float top[16] = {0}, bottom[16] = {0};
    if (count < 8 && !room) {
        bp_copy_short(top, r0, 2 * count);
        bp_copy_short(bottom, r1, 2 * count);
        r0 = top, r1 = bottom;
    }
    split_pairs(&taps[0], &taps[1], r0);
    split_pairs(&taps[2], &taps[3], r1);
}

// Row ti of up to 8 windows' input gradient: row[2i] = left[i], row[2i + 1] = right[i].
__attribute__((always_inline)) static inline void store_pairs(float *row, const v8f *left, const v8f *right, int64_t count,
                                                             int room) {
    if (count == 8 || room) {
        join_pairs(row, left, right);
        return;
    }
    float out[16];
    join_pairs(out, left, right);
    bp_copy_short(row, out, 2 * count);
}

// Up to 8 gradients (+0.0f turns −0 into +0, as adding them to a zeroed gradient would) and
// their windows' argmax (−1 past count, matching no tap).
__attribute__((always_inline)) static inline void load_gradients(v8f *grad, v8i *tap, const float *dy, const uint8_t *index,
                                                                  int64_t count, int room) {
    if (count == 8 || room) {
        memcpy(grad, dy, 32);
        *tap = (v8i){0} - 1;
        if (index) widen_taps(tap, index);
    } else {
        float g[8] = {0};
        int32_t t[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
        bp_copy_short(g, dy, count);
        if (index)
            for (int64_t i = 0; i < count; i++) t[i] = index[i];
        memcpy(grad, g, 32);
        memcpy(tap, t, 32);
    }
    *grad = *grad + (v8f){0};
}

// One row of 2×2 windows over input rows r0 and r1: maxima and argmax.
BP_MULTIVERSION
static void max_row_2x2(float *y, uint8_t *index, const float *r0, const float *r1, int64_t out_w, int room) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count, room);
        v8f best = taps[0];
        v8i tap = {0};
        for (int t = 1; t < 4; t++) {
            v8i take = (taps[t] > best) | (taps[t] != taps[t]);  // larger, or NaN: PyTorch's rule
            best = BLEND(take, taps[t], best);
            tap = (take & t) | (tap & ~take);
        }
        store_lanes(y + ow, &best, count, room);
        if (count == 8 || room) {
            narrow_taps(index + ow, &tap);
        } else {
            for (int64_t i = 0; i < count; i++) index[ow + i] = (uint8_t)tap[i];
        }
    }
}

// One row of 2×2 average windows: the taps summed in window order from 0, then divided, as
// the general path does.
BP_MULTIVERSION
static void avg_row_2x2(float *y, const float *r0, const float *r1, int64_t out_w, float divisor, int room) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count, room);
        v8f sum = (v8f){0} + taps[0];
        sum += taps[1];
        sum += taps[2];
        sum += taps[3];
        v8f mean = sum / divisor;
        store_lanes(y + ow, &mean, count, room);
    }
}

// Row ti of a row of 2×2 windows' input gradient. Max: dy at the argmax, 0 at the other tap.
// Average (index NULL): dy / divisor at both taps.
__attribute__((always_inline)) static inline void row_2x2_backward(float *row, const float *dy, const uint8_t *index,
                                                                   int ti, int64_t out_w, float divisor, int room) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f grad, zero = {0};
        v8i tap;
        load_gradients(&grad, &tap, dy + ow, index ? index + ow : NULL, count, room);
        if (index) {
            v8f left = BLEND(tap == 2 * ti, grad, zero), right = BLEND(tap == 2 * ti + 1, grad, zero);
            store_pairs(row + 2 * ow, &left, &right, count, room);
        } else {
            v8f share = grad / divisor + zero;
            store_pairs(row + 2 * ow, &share, &share, count, room);
        }
    }
}

// The divisor of every tiled average window: the whole window is inside the input.
static float tiled_divisor(const bp_pool2d_params *p) {
    return (float)(p->divisor_override > 0 ? p->divisor_override : p->kernel_h * p->kernel_w);
}

// One plane of tiled windows: maxima and argmax (index non-NULL) or averages.
static void plane_tiled(float *y, uint8_t *index, const float *x, const bp_pool2d_params *p) {
    int64_t kh = p->kernel_h, kw = p->kernel_w, w = p->w;
    float divisor = tiled_divisor(p);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *top = x + oh * kh * w;
        float *out = y + oh * p->out_w;
        uint8_t *idx = index ? index + oh * p->out_w : NULL;
        if (kh == 2 && kw == 2) {
            // Room for a full last group: 8 more outputs, and 16 more floats in the bottom input row.
            int room = (oh + 1) * p->out_w + 8 <= p->out_h * p->out_w && (2 * oh + 1) * w + 2 * p->out_w + 16 <= p->h * w;
            if (index) max_row_2x2(out, idx, top, top + w, p->out_w, room);
            else avg_row_2x2(out, top, top + w, p->out_w, divisor, room);
            continue;
        }
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            const float *window = top + ow * kw;
            if (index) {
                float best = window[0];
                int tap = 0;
                for (int64_t ti = 0; ti < kh; ti++)
                    for (int64_t tj = ti == 0; tj < kw; tj++) MAX_TAKE(window[ti * w + tj], (int)(ti * kw + tj));
                out[ow] = best;
                idx[ow] = (uint8_t)tap;
            } else {
                float sum = 0.0f;
                for (int64_t ti = 0; ti < kh; ti++)
                    for (int64_t tj = 0; tj < kw; tj++) sum += window[ti * w + tj];
                out[ow] = sum / divisor;
            }
        }
    }
}

// The input gradient of one plane of tiled windows, each element written once: max (index
// non-NULL) puts dy at the argmax and 0 elsewhere, average dy / divisor everywhere in the window;
// rows and columns outside every window get 0. Multiversioned whole, with the 2×2 row function
// inlined: a call per row of 14 or 28 floats cost as much as the row's work (and made the
// backward of 14 × 14 planes 1.5x slower).
BP_MULTIVERSION
static void plane_tiled_backward(float *dx, const float *dy, const uint8_t *index, const bp_pool2d_params *p) {
    int64_t kh = p->kernel_h, kw = p->kernel_w, w = p->w, covered = p->out_w * kw;
    float divisor = tiled_divisor(p);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *g = dy + oh * p->out_w;
        const uint8_t *idx = index ? index + oh * p->out_w : NULL;
        for (int64_t ti = 0; ti < kh; ti++) {
            float *row = dx + (oh * kh + ti) * w;
            if (kh == 2 && kw == 2) {
                // Room for a full last group: 8 more gradients, and 16 more floats of dx.
                int room = (oh + 1) * p->out_w + 8 <= p->out_h * p->out_w && (2 * oh + ti) * w + 2 * p->out_w + 16 <= p->h * w;
                row_2x2_backward(row, g, idx, (int)ti, p->out_w, divisor, room);
            } else {
                for (int64_t ow = 0; ow < p->out_w; ow++)
                    for (int64_t tj = 0; tj < kw; tj++)
                        row[ow * kw + tj] = idx ? (idx[ow] == ti * kw + tj ? g[ow] + 0.0f : 0.0f) : g[ow] / divisor + 0.0f;
            }
            if (covered < w) memset(row + covered, 0, (size_t)(w - covered) * sizeof(float));
        }
    }
    int64_t rows = p->out_h * kh;
    if (rows < p->h) memset(dx + rows * w, 0, (size_t)((p->h - rows) * w) * sizeof(float));
}

// MARK: - Global pooling: the whole plane is the window

static int is_global(const bp_pool2d_params *p) { return p->adaptive && p->out_h == 1 && p->out_w == 1; }

enum { GLOBAL_PLANES = 256 };  // planes per call: one call per plane would cost more than its sum

// y[plane] = the mean of plane `plane` of x, for planes [first, first + count): each plane's sum
// as bp_lane_sum_inline adds it (8 lanes, then from 0 the tail, then the lanes in order). Eight
// planes at a time: their lane vectors transposed, so each step of the tail and of the lanes is
// one vector add over 8 planes instead of 8 dependent scalar adds per plane.
BP_MULTIVERSION
static void global_means(float *y, const float *x, int64_t first, int64_t count, int64_t hw) {
    int64_t plane = first, end = first + count, body = hw / 8 * 8;
    for (; plane + 8 <= end; plane += 8) {
        const float *base = x + plane * hw;
        v8f lanes[8], columns[8], sum = {0};
        for (int q = 0; q < 8; q++) lanes[q] = (v8f){0};
        for (int64_t i = 0; i < body; i += 8)
            for (int q = 0; q < 8; q++) {
                v8f v;
                memcpy(&v, base + q * hw + i, 32);
                lanes[q] += v;
            }
        for (int64_t i = body; i < hw; i++) {
            v8f tail;
            for (int q = 0; q < 8; q++) tail[q] = base[q * hw + i];
            sum += tail;
        }
        bp_transpose_8x8(columns, lanes);
        for (int l = 0; l < 8; l++) sum += columns[l];
        v8f mean = sum / (float)hw;
        memcpy(y + plane, &mean, 32);
    }
    for (; plane < end; plane++) y[plane] = bp_lane_sum_inline(x + plane * hw, hw) / (float)hw;
}

// Every element of plane `plane` of dx = dy[plane] / hw, for planes [first, first + count).
BP_MULTIVERSION
static void global_spread(float *dx, const float *dy, int64_t first, int64_t count, int64_t hw) {
    for (int64_t plane = first; plane < first + count; plane++) {
        float share = dy[plane] / (float)hw;
        for (int64_t i = 0; i < hw; i++) dx[plane * hw + i] = share;
    }
}

// Global average pooling forward (y non-NULL: means of x) or backward (dx = dy spread), in blocks
// of GLOBAL_PLANES planes, in parallel.
static void global_pool(float *y, const float *x, float *dx, const float *dy, const bp_pool2d_params *p) {
    int64_t planes = p->n * p->c, hw = p->h * p->w;
    #pragma omp parallel for schedule(static) if (planes * hw >= BP_PARALLEL_MIN)
    for (int64_t first = 0; first < planes; first += GLOBAL_PLANES) {
        int64_t count = planes - first < GLOBAL_PLANES ? planes - first : GLOBAL_PLANES;
        if (y) global_means(y, x, first, count, hw);
        else global_spread(dx, dy, first, count, hw);
    }
}

// MARK: - Adaptive windows, one output at a time, from the window tables
static void max_plane_adaptive(float *y, uint8_t *index8, int32_t *index32, const float *in,
                               const bp_pool2d_params *p, const windows *win) {
    const axis_windows *r = &win->rows, *c = &win->cols;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            float best = -INFINITY;
            int64_t best_tap = r->lo[oh] * c->taps[ow] + c->lo[ow];
            for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                const float *row = in + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) {
                    float v = row[tj * c->step];
                    if (v > best || isnan(v)) best = v, best_tap = ti * c->taps[ow] + tj;
                }
            }
            int64_t o = oh * p->out_w + ow;
            y[o] = best;
            if (index8) index8[o] = (uint8_t)best_tap;
            else index32[o] = (int32_t)best_tap;
        }
}

static void avg_plane_adaptive(float *y, const float *in, const bp_pool2d_params *p, const windows *win) {
    const axis_windows *r = &win->rows, *c = &win->cols;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            float sum = 0.0f;
            for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                const float *row = in + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) sum += row[tj * c->step];
            }
            y[oh * p->out_w + ow] = sum / (float)divisor(p, win, oh, ow);
        }
}

static void avg_plane_adaptive_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win) {
    const axis_windows *r = &win->rows, *c = &win->cols;
    memset(dx, 0, (size_t)(p->h * p->w) * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            float g = dy[oh * p->out_w + ow] / (float)divisor(p, win, oh, ow);
            for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                float *row = dx + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) row[tj * c->step] += g;
            }
        }
}

// Tiled windows with no input row left over (h = out_h · kernel_h) see a stack of planes as one
// tall plane: no window straddles two planes. They go PLANE_STACK planes per call (as `stacked`,
// the parameters of such a stack), so a 14 × 14 plane's seven rows of windows do not each pay a
// call, and a row's short tail takes the slow way once per stack rather than once per plane.
enum { PLANE_STACK = 32 };

static int64_t stack_size(const bp_pool2d_params *p) {
    return !p->adaptive && is_tiled(p) && p->h == p->out_h * p->kernel_h ? PLANE_STACK : 1;
}

// The threads take the units (planes or stacks) a few at a time from a shared counter rather than
// in equal shares: on a shared machine a thread whose core is busy with other work then takes
// fewer (measured at 2 threads: 0.83-1.0x the median time of equal shares). Which thread computes
// a plane changes none of its bits. A grab is at most 16 units and at most 1/64 of them, so that
// every thread gets some.
static int64_t units_per_grab(int64_t units) { return units < 64 ? 1 : units / 64 < 16 ? units / 64 : 16; }

// Runs the body for each stack of `count` planes from plane `plane` of the pooling `p` in scope
// (one plane unless stack_size says otherwise; `stacked` its parameters), in parallel, with `win`
// (the windows), `f` and `g` (the fixed windows' layouts for the forward and, when `backward`, the
// backward's gather), `image` (true for fixed windows that take the stride-1 average's image
// passes, when `image_passes`) with their `layout`, and `scratch` (the thread's) in scope; the
// padded rows' padding is `pad_value`.
#define FOR_EACH_PLANE(pad_value, backward, image_passes, ...)                                  \
    windows win = windows_build(p);                                                             \
    int fixed = !p->adaptive && !is_tiled(p);                                                   \
    int image = fixed && (image_passes), gather = fixed && !image && (backward);                \
    image_layout layout = image_layout_of(p, backward);                                         \
    fixed_layout f = fixed ? fixed_layout_build(p, &win) : (fixed_layout){0};                   \
    gather_layout g = gather ? gather_layout_build(p, &f) : (gather_layout){0};                 \
    int64_t stack = stack_size(p), planes = p->n * p->c, units = (planes + stack - 1) / stack;  \
    int64_t chunk = units_per_grab(units), handed = 0;                                          \
    _Pragma("omp parallel if (p->n * p->c * p->h * p->w >= BP_PARALLEL_MIN)")                   \
    {                                                                                           \
        fixed_scratch scratch = {0};                                                            \
        if (fixed)                                                                              \
            scratch = fixed_scratch_make(p, &f, gather ? &g : NULL, image ? &layout : NULL, pad_value); \
        for (int64_t first; (first = __atomic_fetch_add(&handed, chunk, __ATOMIC_RELAXED)) < units;) \
            for (int64_t unit = first; unit < first + chunk && unit < units; unit++) {          \
                int64_t plane = unit * stack, count = planes - plane < stack ? planes - plane : stack; \
                bp_pool2d_params stacked = *p;                                                  \
                stacked.h *= count, stacked.out_h *= count;                                     \
                __VA_ARGS__;                                                                    \
            }                                                                                   \
        if (fixed) fixed_scratch_free(&scratch);                                                \
    }                                                                                           \
    if (fixed) fixed_layout_free(&f);                                                           \
    if (gather) gather_layout_free(&g);                                                         \
    windows_free(&win);

// The plane offset of window (oh, ow)'s tap number `tap` (row-major in the window); −1 for a
// window with no tap inside the input.
static int64_t tap_offset(const windows *win, int64_t w, int64_t oh, int64_t ow, int64_t tap) {
    if (tap >= win->rows.taps[oh] * win->cols.taps[ow]) return -1;
    int64_t ti = tap / win->cols.taps[ow], tj = tap % win->cols.taps[ow];
    return (win->rows.first[oh] + ti * win->rows.step) * w + win->cols.first[ow] + tj * win->cols.step;
}

static void max_plane_adaptive_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                                        const bp_pool2d_params *p, const windows *win) {
    memset(dx, 0, (size_t)(p->h * p->w) * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            int64_t o = oh * p->out_w + ow;
            int64_t at = tap_offset(win, p->w, oh, ow, index8 ? index8[o] : index32[o]);
            if (at >= 0) dx[at] += dy[o];
        }
}

void bp_maxpool2d_forward(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p) {
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE(-INFINITY, 0, 0, {
        float *yp = y + plane * out_hw;
        uint8_t *i8 = index8 ? index8 + plane * out_hw : NULL;
        int32_t *i32 = index32 ? index32 + plane * out_hw : NULL;
        if (p->adaptive) max_plane_adaptive(yp, i8, i32, x + plane * hw, p, &win);
        else if (fixed) plane_fixed(yp, i8, i32, x + plane * hw, p, &win, &f, &scratch);
        else plane_tiled(yp, i8, x + plane * hw, &stacked);
    })
}

void bp_maxpool2d_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                           const bp_pool2d_params *p) {
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE(0.0f, 1, 0, {
        float *out = dx + plane * hw;
        const uint8_t *i8 = index8 ? index8 + plane * out_hw : NULL;
        const int32_t *i32 = index32 ? index32 + plane * out_hw : NULL;
        if (p->adaptive) max_plane_adaptive_backward(out, dy + plane * out_hw, i8, i32, p, &win);
        else if (fixed) plane_fixed_backward(out, dy + plane * out_hw, i8, i32, p, &win, &f, &g, &scratch);
        else plane_tiled_backward(out, dy + plane * out_hw, i8, &stacked);
    })
}

void bp_maxpool2d_plane_indices(int64_t *indices, const uint8_t *index8, const int32_t *index32,
                                const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t out_hw = p->out_h * p->out_w;
    for (int64_t plane = 0; plane < p->n * p->c; plane++)
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                int64_t o = plane * out_hw + oh * p->out_w + ow;
                indices[o] = tap_offset(&win, p->w, oh, ow, index8 ? index8[o] : index32[o]);
            }
    windows_free(&win);
}

// MARK: - Average pooling

// Fixed windows with stride 1 both ways take the image passes.
static int unit_stride(const bp_pool2d_params *p) { return p->stride_h == 1 && p->stride_w == 1; }

void bp_avgpool2d_forward(float *y, const float *x, const bp_pool2d_params *p) {
    if (is_global(p)) {
        global_pool(y, x, NULL, NULL, p);
        return;
    }
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE(0.0f, 0, unit_stride(p), {
        if (p->adaptive) avg_plane_adaptive(y + plane * out_hw, x + plane * hw, p, &win);
        else if (image) plane_image(y + plane * out_hw, x + plane * hw, p, &win, &f, &layout, &scratch);
        else if (fixed) plane_fixed(y + plane * out_hw, NULL, NULL, x + plane * hw, p, &win, &f, &scratch);
        else plane_tiled(y + plane * out_hw, NULL, x + plane * hw, &stacked);
    })
}

void bp_avgpool2d_backward(float *dx, const float *dy, const bp_pool2d_params *p) {
    if (is_global(p)) {
        global_pool(NULL, NULL, dx, dy, p);
        return;
    }
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE(0.0f, 1, unit_stride(p), {
        float *out = dx + plane * hw;
        if (p->adaptive) avg_plane_adaptive_backward(out, dy + plane * out_hw, p, &win);
        else if (image) plane_image_backward(out, dy + plane * out_hw, p, &win, &f, &layout, &scratch);
        else if (fixed) plane_fixed_backward(out, dy + plane * out_hw, NULL, NULL, p, &win, &f, &g, &scratch);
        else plane_tiled_backward(out, dy + plane * out_hw, NULL, &stacked);
    })
}
