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

// MARK: - Max pooling

void bp_maxpool2d_forward(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    #pragma omp parallel for schedule(static) if (p->n * p->c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        const float *in = x + plane * hw;
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                const axis_windows *r = &win.rows, *c = &win.cols;
                float best = -INFINITY;
                int64_t best_tap = r->lo[oh] * c->taps[ow] + c->lo[ow];
                for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                    const float *row = in + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                    for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) {
                        float v = row[tj * c->step];
                        if (v > best || isnan(v)) best = v, best_tap = ti * c->taps[ow] + tj;
                    }
                }
                int64_t o = plane * out_hw + oh * p->out_w + ow;
                y[o] = best;
                if (index8) index8[o] = (uint8_t)best_tap;
                else index32[o] = (int32_t)best_tap;
            }
    }
    windows_free(&win);
}

// The plane offset of window (oh, ow)'s tap number `tap` (row-major in the window).
static int64_t tap_offset(const windows *win, int64_t w, int64_t oh, int64_t ow, int64_t tap) {
    int64_t ti = tap / win->cols.taps[ow], tj = tap % win->cols.taps[ow];
    return (win->rows.first[oh] + ti * win->rows.step) * w + win->cols.first[ow] + tj * win->cols.step;
}

void bp_maxpool2d_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                           const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    #pragma omp parallel for schedule(static) if (p->n * p->c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        float *out = dx + plane * hw;
        memset(out, 0, (size_t)hw * sizeof(float));
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                int64_t o = plane * out_hw + oh * p->out_w + ow;
                int64_t tap = index8 ? index8[o] : index32[o];
                out[tap_offset(&win, p->w, oh, ow, tap)] += dy[o];
            }
    }
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
    #pragma omp parallel for schedule(static) if (p->n * p->c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        const float *in = x + plane * hw;
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                const axis_windows *r = &win.rows, *c = &win.cols;
                float sum = 0.0f;
                for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                    const float *row = in + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                    for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) sum += row[tj * c->step];
                }
                y[plane * out_hw + oh * p->out_w + ow] = sum / (float)divisor(p, &win, oh, ow);
            }
    }
    windows_free(&win);
}

void bp_avgpool2d_backward(float *dx, const float *dy, const bp_pool2d_params *p) {
    windows win = windows_build(p);
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    #pragma omp parallel for schedule(static) if (p->n * p->c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        float *out = dx + plane * hw;
        memset(out, 0, (size_t)hw * sizeof(float));
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                const axis_windows *r = &win.rows, *c = &win.cols;
                float g = dy[plane * out_hw + oh * p->out_w + ow] / (float)divisor(p, &win, oh, ow);
                for (int64_t ti = r->lo[oh]; ti < r->hi[oh]; ti++) {
                    float *row = out + (r->first[oh] + ti * r->step) * p->w + c->first[ow];
                    for (int64_t tj = c->lo[ow]; tj < c->hi[ow]; tj++) row[tj * c->step] += g;
                }
            }
    }
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
