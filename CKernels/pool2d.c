// Max and average pooling, fixed and adaptive windows. Every kernel runs one (n, c) plane per
// iteration of its parallel loop: a plane's outputs (and, in the backward, its input gradient)
// belong to one thread, so overlapping windows add up in a fixed order.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static int64_t divisor(const bp_pool2d_params *p, const windows *win, int64_t oh, int64_t ow) {
    if (p->divisor_override > 0) return p->divisor_override;
    if (p->count_include_pad && !p->adaptive) return win->rows.size[oh] * win->cols.size[ow];
    return (win->rows.hi[oh] - win->rows.lo[oh]) * (win->cols.hi[ow] - win->cols.lo[ow]);
}

// MARK: - Fixed windows, one tap at a time
//
// For fixed windows the taps of a row of outputs are visited tap by tap (row-major in the window)
// with the output columns innermost: tap (ti, tj) of output (oh, ow) reads input row
// first_h[oh] + ti · dilation_h, column ow · stride_w − pad_w + tj · dilation_w, and the columns
// where that is inside the input form one range [lo, hi), so the inner loop has no bounds checks
// and vectorises. Visiting taps in window order keeps the first maximum on ties.

// Tap column tj of fixed windows: the output columns [lo, hi) whose tap lies inside the input,
// the input column of output 0's tap (offset = tj · dilation_w − pad_w), and where output 0's tap
// sits in the deinterleaved row (phase start, see deinterleave). The same for every row and plane:
// computed once per call.
typedef struct {
    int64_t lo, hi, offset, phase_start;
} tap_column;

static int64_t phase_length(const bp_pool2d_params *p) { return (p->w + p->stride_w - 1) / p->stride_w; }

static tap_column *tap_columns_build(const bp_pool2d_params *p) {
    tap_column *columns = malloc((size_t)p->kernel_w * sizeof(tap_column));
    for (int64_t tj = 0; tj < p->kernel_w; tj++) {
        tap_column *t = &columns[tj];
        t->offset = tj * p->dilation_w - p->pad_w;
        t->lo = t->offset >= 0 ? 0 : (-t->offset + p->stride_w - 1) / p->stride_w;
        t->hi = p->w - t->offset <= 0 ? 0 : (p->w - t->offset + p->stride_w - 1) / p->stride_w;
        if (t->hi > p->out_w) t->hi = p->out_w;
        if (t->lo > t->hi) t->lo = t->hi;
        int64_t q = ((t->offset % p->stride_w) + p->stride_w) % p->stride_w;
        t->phase_start = q * phase_length(p) + (t->offset - q) / p->stride_w;
    }
    return columns;
}

// The input row `src` (w floats) as stride_w phases of `phase_length` floats each:
// phases[q · phase_length + m] = src[m · stride_w + q]. Tap tj of output ow then reads
// phases[q · phase_length + ow + shift] for tj · dilation − pad = shift · stride + q, 0 <= q < stride:
// a contiguous run over ow whatever the stride.
static void deinterleave(float *phases, const float *src, const bp_pool2d_params *p) {
    int64_t s = p->stride_w, length = phase_length(p);
    if (s == 2) {  // the common case, with a constant stride the loop vectorises
        float *even = phases, *odd = phases + length;
        int64_t pairs = p->w / 2;
        for (int64_t m = 0; m < pairs; m++) even[m] = src[2 * m], odd[m] = src[2 * m + 1];
        if (p->w % 2) even[pairs] = src[p->w - 1];
        return;
    }
    for (int64_t q = 0; q < s; q++)
        for (int64_t m = 0; m * s + q < p->w; m++) phases[q * length + m] = src[m * s + q];
}

// Where tap column t of output column 0 would be read: value[ow] = line[ow] for ow in [lo, hi).
static const float *tap_line(const float *src, const float *phases, const bp_pool2d_params *p, const tap_column *t) {
    return p->stride_w == 1 ? src + t->offset : phases + t->phase_start;
}

// One plane of fixed-window max pooling; best and tap are scratch rows of out_w, phases one of
// w + stride_w floats.
BP_MULTIVERSION
static void max_plane_fixed(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p,
                            const tap_column *columns, float *best, int32_t *tap, float *phases) {
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        for (int64_t ow = 0; ow < p->out_w; ow++) best[ow] = -INFINITY, tap[ow] = -1;
        for (int64_t ti = 0; ti < p->kernel_h; ti++) {
            int64_t ih = oh * p->stride_h - p->pad_h + ti * p->dilation_h;
            if (ih < 0 || ih >= p->h) continue;
            const float *src = x + ih * p->w;
            if (p->stride_w > 1) deinterleave(phases, src, p);
            for (int64_t tj = 0; tj < p->kernel_w; tj++) {
                const tap_column *t = &columns[tj];
                const float *line = tap_line(src, phases, p, t);
                int32_t number = (int32_t)(ti * p->kernel_w + tj);
                for (int64_t ow = t->lo; ow < t->hi; ow++) {
                    float v = line[ow];
                    int take = (v > best[ow]) | (v != v) | (tap[ow] < 0);  // a NaN wins, as in PyTorch
                    best[ow] = take ? v : best[ow];
                    tap[ow] = take ? number : tap[ow];
                }
            }
        }
        float *out = y + oh * p->out_w;
        for (int64_t ow = 0; ow < p->out_w; ow++) out[ow] = best[ow];
        if (index8)
            for (int64_t ow = 0; ow < p->out_w; ow++) index8[oh * p->out_w + ow] = (uint8_t)tap[ow];
        else
            for (int64_t ow = 0; ow < p->out_w; ow++) index32[oh * p->out_w + ow] = tap[ow];
    }
}

// One plane of fixed-window average pooling; sum is a scratch row of out_w.
BP_MULTIVERSION
static void avg_plane_fixed(float *y, const float *x, const bp_pool2d_params *p, const windows *win,
                            const tap_column *columns, float *sum, float *phases) {
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        for (int64_t ow = 0; ow < p->out_w; ow++) sum[ow] = 0.0f;
        for (int64_t ti = 0; ti < p->kernel_h; ti++) {
            int64_t ih = oh * p->stride_h - p->pad_h + ti * p->dilation_h;
            if (ih < 0 || ih >= p->h) continue;
            const float *src = x + ih * p->w;
            if (p->stride_w > 1) deinterleave(phases, src, p);
            for (int64_t tj = 0; tj < p->kernel_w; tj++) {
                const tap_column *t = &columns[tj];
                const float *line = tap_line(src, phases, p, t);
                for (int64_t ow = t->lo; ow < t->hi; ow++) sum[ow] += line[ow];
            }
        }
        for (int64_t ow = 0; ow < p->out_w; ow++) y[oh * p->out_w + ow] = sum[ow] / (float)divisor(p, win, oh, ow);
    }
}

// One plane of the fixed-window average pooling backward; g is a scratch row of out_w.
BP_MULTIVERSION
static void avg_plane_fixed_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win,
                                     const tap_column *columns, float *g) {
    memset(dx, 0, (size_t)(p->h * p->w) * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        for (int64_t ow = 0; ow < p->out_w; ow++) g[ow] = dy[oh * p->out_w + ow] / (float)divisor(p, win, oh, ow);
        for (int64_t ti = 0; ti < p->kernel_h; ti++) {
            int64_t ih = oh * p->stride_h - p->pad_h + ti * p->dilation_h;
            if (ih < 0 || ih >= p->h) continue;
            for (int64_t tj = 0; tj < p->kernel_w; tj++) {
                const tap_column *t = &columns[tj];
                float *row = dx + ih * p->w + t->offset;
                for (int64_t ow = t->lo; ow < t->hi; ow++) row[ow * p->stride_w] += g[ow];
            }
        }
    }
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
           p->out_w * p->kernel_w <= p->w && p->kernel_h * p->kernel_w <= 256;
}

// PyTorch's rule for the next tap v against the best so far: it takes over when larger or NaN.
#define MAX_TAKE(v, number)                        \
    do {                                           \
        int take_ = (v > best) | (v != v);         \
        best = take_ ? v : best;                   \
        tap = take_ ? (number) : tap;              \
    } while (0)

// Lanes chosen by a mask (all ones or zeros per lane), without branches.
#define BLEND(take, yes, no) ((v8f)(((v8i)(yes) & (take)) | ((v8i)(no) & ~(take))))

// The four taps of up to 8 consecutive 2×2 windows whose rows start at r0 and r1, in row-major
// tap order: taps[0] = top left … taps[3] = bottom right. Short groups (a row's tail) go through a
// zero-padded copy, so every row length is branch-free.
__attribute__((always_inline)) static inline void load_2x2(v8f taps[4], const float *r0, const float *r1, int64_t count) {
    float top[16] = {0}, bottom[16] = {0};
    if (count < 8) {
        memcpy(top, r0, (size_t)(2 * count) * sizeof(float));
        memcpy(bottom, r1, (size_t)(2 * count) * sizeof(float));
        r0 = top, r1 = bottom;
    }
    v8f t0, t1, b0, b1;
    memcpy(&t0, r0, 32), memcpy(&t1, r0 + 8, 32), memcpy(&b0, r1, 32), memcpy(&b1, r1 + 8, 32);
    taps[0] = __builtin_shufflevector(t0, t1, 0, 2, 4, 6, 8, 10, 12, 14);
    taps[1] = __builtin_shufflevector(t0, t1, 1, 3, 5, 7, 9, 11, 13, 15);
    taps[2] = __builtin_shufflevector(b0, b1, 0, 2, 4, 6, 8, 10, 12, 14);
    taps[3] = __builtin_shufflevector(b0, b1, 1, 3, 5, 7, 9, 11, 13, 15);
}

// The first `count` lanes of *v to out.
__attribute__((always_inline)) static inline void store_lanes(float *out, const v8f *v, int64_t count) {
    if (count == 8) {
        memcpy(out, v, 32);
        return;
    }
    float lanes[8];
    memcpy(lanes, v, 32);
    memcpy(out, lanes, (size_t)count * sizeof(float));
}

// Row ti of up to 8 windows' input gradient: row[2i] = left[i], row[2i + 1] = right[i].
__attribute__((always_inline)) static inline void store_pairs(float *row, const v8f *left, const v8f *right, int64_t count) {
    v8f lo = __builtin_shufflevector(*left, *right, 0, 8, 1, 9, 2, 10, 3, 11);
    v8f hi = __builtin_shufflevector(*left, *right, 4, 12, 5, 13, 6, 14, 7, 15);
    if (count == 8) {
        memcpy(row, &lo, 32), memcpy(row + 8, &hi, 32);
        return;
    }
    float out[16];
    memcpy(out, &lo, 32), memcpy(out + 8, &hi, 32);
    memcpy(row, out, (size_t)(2 * count) * sizeof(float));
}

// Up to 8 gradients (+0.0f turns −0 into +0, as adding them to a zeroed gradient would) and
// their windows' argmax (−1 past count, matching no tap).
__attribute__((always_inline)) static inline void load_gradients(v8f *grad, v8i *tap, const float *dy, const uint8_t *index,
                                                                  int64_t count) {
    float g[8] = {0};
    int32_t t[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
    memcpy(g, dy, (size_t)count * sizeof(float));
    if (index)
        for (int64_t i = 0; i < count; i++) t[i] = index[i];
    memcpy(grad, g, 32);
    memcpy(tap, t, 32);
    *grad = *grad + (v8f){0};
}

// One row of 2×2 windows over input rows r0 and r1: maxima and argmax.
BP_MULTIVERSION
static void max_row_2x2(float *y, uint8_t *index, const float *r0, const float *r1, int64_t out_w) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count);
        v8f best = taps[0];
        v8i tap = {0};
        for (int t = 1; t < 4; t++) {
            v8i take = (taps[t] > best) | (taps[t] != taps[t]);  // larger, or NaN: PyTorch's rule
            best = BLEND(take, taps[t], best);
            tap = (take & t) | (tap & ~take);
        }
        store_lanes(y + ow, &best, count);
        for (int64_t i = 0; i < count; i++) index[ow + i] = (uint8_t)tap[i];
    }
}

// One row of 2×2 average windows: the taps summed in window order from 0, then divided, as
// the general path does.
BP_MULTIVERSION
static void avg_row_2x2(float *y, const float *r0, const float *r1, int64_t out_w, float divisor) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count);
        v8f sum = (v8f){0} + taps[0];
        sum += taps[1];
        sum += taps[2];
        sum += taps[3];
        v8f mean = sum / divisor;
        store_lanes(y + ow, &mean, count);
    }
}

// Row ti of a row of 2×2 windows' input gradient. Max: dy at the argmax, 0 at the other tap.
// Average (index NULL): dy / divisor at both taps.
BP_MULTIVERSION
static void row_2x2_backward(float *row, const float *dy, const uint8_t *index, int ti, int64_t out_w, float divisor) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f grad, zero = {0};
        v8i tap;
        load_gradients(&grad, &tap, dy + ow, index ? index + ow : NULL, count);
        if (index) {
            v8f left = BLEND(tap == 2 * ti, grad, zero), right = BLEND(tap == 2 * ti + 1, grad, zero);
            store_pairs(row + 2 * ow, &left, &right, count);
        } else {
            v8f share = grad / divisor + zero;
            store_pairs(row + 2 * ow, &share, &share, count);
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
            if (index) max_row_2x2(out, idx, top, top + w, p->out_w);
            else avg_row_2x2(out, top, top + w, p->out_w, divisor);
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
// rows and columns outside every window get 0.
static void plane_tiled_backward(float *dx, const float *dy, const uint8_t *index, const bp_pool2d_params *p) {
    int64_t kh = p->kernel_h, kw = p->kernel_w, w = p->w, covered = p->out_w * kw;
    float divisor = tiled_divisor(p);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *g = dy + oh * p->out_w;
        const uint8_t *idx = index ? index + oh * p->out_w : NULL;
        for (int64_t ti = 0; ti < kh; ti++) {
            float *row = dx + (oh * kh + ti) * w;
            if (kh == 2 && kw == 2) {
                row_2x2_backward(row, g, idx, (int)ti, p->out_w, divisor);
            } else {
                for (int64_t ow = 0; ow < p->out_w; ow++)
                    for (int64_t tj = 0; tj < kw; tj++)
                        row[ow * kw + tj] = idx ? (idx[ow] == ti * kw + tj ? g[ow] + 0.0f : 0.0f) : g[ow] / divisor + 0.0f;
            }
            memset(row + covered, 0, (size_t)(w - covered) * sizeof(float));
        }
    }
    int64_t rows = p->out_h * kh;
    memset(dx + rows * w, 0, (size_t)((p->h - rows) * w) * sizeof(float));
}

// MARK: - Global pooling: the whole plane is the window

BP_MULTIVERSION
static void plane_fill(float *out, float value, int64_t hw) {
    for (int64_t i = 0; i < hw; i++) out[i] = value;
}

static int is_global(const bp_pool2d_params *p) { return p->adaptive && p->out_h == 1 && p->out_w == 1; }

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

// The plane offset of window (oh, ow)'s tap number `tap` (row-major in the window).
static int64_t tap_offset(const windows *win, int64_t w, int64_t oh, int64_t ow, int64_t tap) {
    int64_t ti = tap / win->cols.taps[ow], tj = tap % win->cols.taps[ow];
    return (win->rows.first[oh] + ti * win->rows.step) * w + win->cols.first[ow] + tj * win->cols.step;
}

// Runs the body for each (n, c) plane of the pooling `p` in scope, in parallel, with the fixed
// windows' `columns` and scratch rows owned by the thread: `row` (out_w floats), `taps` (out_w int32)
// and `phases` (w + stride_w floats).
#define FOR_EACH_PLANE(...)                                                                     \
    tap_column *columns = p->adaptive ? NULL : tap_columns_build(p);                            \
    _Pragma("omp parallel if (p->n * p->c * p->h * p->w >= BP_PARALLEL_MIN)")                   \
    {                                                                                           \
        float *row = malloc((size_t)p->out_w * sizeof(float));                                  \
        int32_t *taps = malloc((size_t)p->out_w * sizeof(int32_t));                             \
        float *phases = malloc((size_t)(p->w + p->stride_w) * sizeof(float));                   \
        (void)row, (void)taps, (void)phases;                                                    \
        _Pragma("omp for schedule(static)")                                                     \
        for (int64_t plane = 0; plane < p->n * p->c; plane++) { __VA_ARGS__; }                  \
        free(row);                                                                              \
        free(taps);                                                                             \
        free(phases);                                                                           \
    }                                                                                           \
    free(columns);

void bp_maxpool2d_forward(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE({
        float *yp = y + plane * out_hw;
        uint8_t *i8 = index8 ? index8 + plane * out_hw : NULL;
        int32_t *i32 = index32 ? index32 + plane * out_hw : NULL;
        if (p->adaptive) max_plane_adaptive(yp, i8, i32, x + plane * hw, p, &win);
        else if (is_tiled(p)) plane_tiled(yp, i8, x + plane * hw, p);
        else max_plane_fixed(yp, i8, i32, x + plane * hw, p, columns, row, taps, phases);
    })
    windows_free(&win);
}

void bp_maxpool2d_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                           const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    // Fixed windows: tap number → offset from the window's first tap, the same for every window.
    int64_t *tap_offsets = NULL;
    if (!p->adaptive) {
        tap_offsets = malloc((size_t)(p->kernel_h * p->kernel_w) * sizeof(int64_t));
        for (int64_t tap = 0; tap < p->kernel_h * p->kernel_w; tap++)
            tap_offsets[tap] = tap / p->kernel_w * p->dilation_h * p->w + tap % p->kernel_w * p->dilation_w;
    }
    #pragma omp parallel for schedule(static) if (p->n * p->c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        float *out = dx + plane * hw;
        if (is_tiled(p)) {
            plane_tiled_backward(out, dy + plane * out_hw, index8 + plane * out_hw, p);
            continue;
        }
        // Rows are zeroed just before the first window that reaches them, so the scattered adds hit
        // cache (zeroing the whole plane first measured 2x slower: its stores did not stay cached).
        int64_t zeroed = 0;
        for (int64_t oh = 0; oh < p->out_h; oh++) {
            int64_t reach = win.rows.first[oh] + (win.rows.taps[oh] - 1) * win.rows.step + 1;
            reach = reach < p->h ? reach : p->h;
            if (reach > zeroed) {
                memset(out + zeroed * p->w, 0, (size_t)((reach - zeroed) * p->w) * sizeof(float));
                zeroed = reach;
            }
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                int64_t o = plane * out_hw + oh * p->out_w + ow;
                int64_t tap = index8 ? index8[o] : index32[o];
                int64_t at = tap_offsets ? win.rows.first[oh] * p->w + win.cols.first[ow] + tap_offsets[tap]
                                         : tap_offset(&win, p->w, oh, ow, tap);
                out[at] += dy[o];
            }
        }
        memset(out + zeroed * p->w, 0, (size_t)((p->h - zeroed) * p->w) * sizeof(float));
    }
    free(tap_offsets);
    windows_free(&win);
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

void bp_avgpool2d_forward(float *y, const float *x, const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE({
        if (is_global(p)) y[plane] = bp_lane_sum(x + plane * hw, hw) / (float)hw;
        else if (p->adaptive) avg_plane_adaptive(y + plane * out_hw, x + plane * hw, p, &win);
        else if (is_tiled(p)) plane_tiled(y + plane * out_hw, NULL, x + plane * hw, p);
        else avg_plane_fixed(y + plane * out_hw, x + plane * hw, p, &win, columns, row, phases);
    })
    windows_free(&win);
}

void bp_avgpool2d_backward(float *dx, const float *dy, const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    FOR_EACH_PLANE({
        if (is_global(p)) plane_fill(dx + plane * hw, dy[plane] / (float)hw, hw);
        else if (p->adaptive) avg_plane_adaptive_backward(dx + plane * hw, dy + plane * out_hw, p, &win);
        else if (is_tiled(p)) plane_tiled_backward(dx + plane * hw, dy + plane * out_hw, NULL, p);
        else avg_plane_fixed_backward(dx + plane * hw, dy + plane * out_hw, p, &win, columns, row);
    })
    windows_free(&win);
}

// MARK: - Plain-loop references: every tap of every window, bounds checked one by one

// The window of (oh, ow) on one axis, recomputed from the definition.
static void ref_window(int64_t o, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                       int64_t dilation, int adaptive, int64_t *first, int64_t *taps, int64_t *step) {
    if (adaptive) {
        *first = (int64_t)floor((double)(o * in) / (double)out);
        *taps = (int64_t)ceil((double)((o + 1) * in) / (double)out) - *first;
        *step = 1;
    } else {
        *first = o * stride - pad, *taps = kernel, *step = dilation;
    }
}

#define FOR_EACH_WINDOW(p, ...)                                                                          \
    for (int64_t plane = 0; plane < (p)->n * (p)->c; plane++)                                             \
        for (int64_t oh = 0; oh < (p)->out_h; oh++)                                                       \
            for (int64_t ow = 0; ow < (p)->out_w; ow++) {                                                 \
                int64_t fh, th, sh, fw, tw, sw;                                                           \
                ref_window(oh, (p)->h, (p)->out_h, (p)->kernel_h, (p)->stride_h, (p)->pad_h, (p)->dilation_h, \
                           (p)->adaptive, &fh, &th, &sh);                                                 \
                ref_window(ow, (p)->w, (p)->out_w, (p)->kernel_w, (p)->stride_w, (p)->pad_w, (p)->dilation_w, \
                           (p)->adaptive, &fw, &tw, &sw);                                                 \
                int64_t o = (plane * (p)->out_h + oh) * (p)->out_w + ow;                                  \
                __VA_ARGS__                                                                               \
            }

void bp_maxpool2d_forward_ref(float *y, int64_t *indices, const float *x, const bp_pool2d_params *p) {
    FOR_EACH_WINDOW(p, {
        float best = -INFINITY;
        int64_t best_index = -1;
        for (int64_t i = 0; i < th; i++)
            for (int64_t j = 0; j < tw; j++) {
                int64_t ih = fh + i * sh, iw = fw + j * sw;
                if (ih < 0 || ih >= p->h || iw < 0 || iw >= p->w) continue;
                float v = x[plane * p->h * p->w + ih * p->w + iw];
                if (best_index < 0 || v > best || isnan(v)) best = v, best_index = ih * p->w + iw;
            }
        y[o] = best;
        indices[o] = best_index;
    })
}

void bp_maxpool2d_backward_ref(float *dx, const float *dy, const int64_t *indices, const bp_pool2d_params *p) {
    memset(dx, 0, (size_t)(p->n * p->c * p->h * p->w) * sizeof(float));
    FOR_EACH_WINDOW(p, { dx[plane * p->h * p->w + indices[o]] += dy[o]; })
}

// The reference divisor, from the definition of each option.
static double ref_divisor(const bp_pool2d_params *p, int64_t fh, int64_t th, int64_t sh, int64_t fw, int64_t tw,
                          int64_t sw) {
    if (p->divisor_override > 0) return (double)p->divisor_override;
    int64_t inside = 0, padded = 0;
    for (int64_t i = 0; i < th; i++)
        for (int64_t j = 0; j < tw; j++) {
            int64_t ih = fh + i * sh, iw = fw + j * sw;
            inside += ih >= 0 && ih < p->h && iw >= 0 && iw < p->w;
            padded += ih < p->h + p->pad_h && iw < p->w + p->pad_w;
        }
    return (double)(p->count_include_pad && !p->adaptive ? padded : inside);
}

void bp_avgpool2d_forward_ref(float *y, const float *x, const bp_pool2d_params *p) {
    FOR_EACH_WINDOW(p, {
        double sum = 0.0;
        for (int64_t i = 0; i < th; i++)
            for (int64_t j = 0; j < tw; j++) {
                int64_t ih = fh + i * sh, iw = fw + j * sw;
                if (ih >= 0 && ih < p->h && iw >= 0 && iw < p->w) sum += x[plane * p->h * p->w + ih * p->w + iw];
            }
        y[o] = (float)(sum / ref_divisor(p, fh, th, sh, fw, tw, sw));
    })
}

void bp_avgpool2d_backward_ref(float *dx, const float *dy, const bp_pool2d_params *p) {
    memset(dx, 0, (size_t)(p->n * p->c * p->h * p->w) * sizeof(float));
    FOR_EACH_WINDOW(p, {
        double g = dy[o] / ref_divisor(p, fh, th, sh, fw, tw, sw);
        for (int64_t i = 0; i < th; i++)
            for (int64_t j = 0; j < tw; j++) {
                int64_t ih = fh + i * sh, iw = fw + j * sw;
                if (ih >= 0 && ih < p->h && iw >= 0 && iw < p->w) dx[plane * p->h * p->w + ih * p->w + iw] += (float)g;
            }
    })
}
