// Plain-loop references of the pooling kernels (pool2d/): every tap of every window, its position
// and bounds recomputed from the definition, sums in double.
#include "CKernels.h"

#include <math.h>
#include <string.h>

// The window of output (oh, ow): its first tap, tap count and step on each axis.
typedef struct {
    int64_t first_h, taps_h, step_h, first_w, taps_w, step_w;
} ref_window;

static void ref_axis(int64_t o, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation,
                     int adaptive, int64_t *first, int64_t *taps, int64_t *step) {
    if (adaptive) {
        *first = (int64_t)floor((double)(o * in) / (double)out);
        *taps = (int64_t)ceil((double)((o + 1) * in) / (double)out) - *first;
        *step = 1;
    } else {
        *first = o * stride - pad, *taps = kernel, *step = dilation;
    }
}

static ref_window window_of(const bp_pool2d_params *p, int64_t oh, int64_t ow) {
    ref_window w;
    ref_axis(oh, p->h, p->out_h, p->kernel_h, p->stride_h, p->pad_h, p->dilation_h, p->adaptive, &w.first_h, &w.taps_h,
             &w.step_h);
    ref_axis(ow, p->w, p->out_w, p->kernel_w, p->stride_w, p->pad_w, p->dilation_w, p->adaptive, &w.first_w, &w.taps_w,
             &w.step_w);
    return w;
}

// The plane offset of tap (i, j) of window w, or −1 outside the input.
static int64_t tap_at(const bp_pool2d_params *p, const ref_window *w, int64_t i, int64_t j) {
    int64_t ih = w->first_h + i * w->step_h, iw = w->first_w + j * w->step_w;
    return ih < 0 || ih >= p->h || iw < 0 || iw >= p->w ? -1 : ih * p->w + iw;
}

// The divisor from the definition of each option: the override, or the taps inside the input
// padded by pad (count_include_pad, fixed windows), or inside the input.
static double ref_divisor(const bp_pool2d_params *p, const ref_window *w) {
    if (p->divisor_override > 0) return (double)p->divisor_override;
    int64_t inside = 0, padded = 0;
    for (int64_t i = 0; i < w->taps_h; i++)
        for (int64_t j = 0; j < w->taps_w; j++) {
            int64_t ih = w->first_h + i * w->step_h, iw = w->first_w + j * w->step_w;
            inside += tap_at(p, w, i, j) >= 0;
            padded += ih < p->h + p->pad_h && iw < p->w + p->pad_w;
        }
    return (double)(p->count_include_pad && !p->adaptive ? padded : inside);
}

void bp_maxpool2d_forward_ref(float *y, int64_t *indices, const float *x, const bp_pool2d_params *p) {
    for (int64_t plane = 0; plane < p->n * p->c; plane++)
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                ref_window w = window_of(p, oh, ow);
                float best = -INFINITY;
                int64_t best_index = -1;
                for (int64_t i = 0; i < w.taps_h; i++)
                    for (int64_t j = 0; j < w.taps_w; j++) {
                        int64_t at = tap_at(p, &w, i, j);
                        if (at < 0) continue;
                        float v = x[plane * p->h * p->w + at];
                        if (best_index < 0 || v > best || isnan(v)) best = v, best_index = at;
                    }
                int64_t o = (plane * p->out_h + oh) * p->out_w + ow;
                y[o] = best;
                indices[o] = best_index;
            }
}

void bp_maxpool2d_backward_ref(float *dx, const float *dy, const int64_t *indices, const bp_pool2d_params *p) {
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    memset(dx, 0, (size_t)(p->n * p->c * hw) * sizeof(float));
    for (int64_t plane = 0; plane < p->n * p->c; plane++)
        for (int64_t o = 0; o < out_hw; o++)
            if (indices[plane * out_hw + o] >= 0)  // −1: a window with no tap inside
                dx[plane * hw + indices[plane * out_hw + o]] += dy[plane * out_hw + o];
}

void bp_avgpool2d_forward_ref(float *y, const float *x, const bp_pool2d_params *p) {
    for (int64_t plane = 0; plane < p->n * p->c; plane++)
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                ref_window w = window_of(p, oh, ow);
                double sum = 0.0;
                for (int64_t i = 0; i < w.taps_h; i++)
                    for (int64_t j = 0; j < w.taps_w; j++) {
                        int64_t at = tap_at(p, &w, i, j);
                        if (at >= 0) sum += x[plane * p->h * p->w + at];
                    }
                y[(plane * p->out_h + oh) * p->out_w + ow] = (float)(sum / ref_divisor(p, &w));
            }
}

void bp_avgpool2d_backward_ref(float *dx, const float *dy, const bp_pool2d_params *p) {
    memset(dx, 0, (size_t)(p->n * p->c * p->h * p->w) * sizeof(float));
    for (int64_t plane = 0; plane < p->n * p->c; plane++)
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                ref_window w = window_of(p, oh, ow);
                double g = dy[(plane * p->out_h + oh) * p->out_w + ow] / ref_divisor(p, &w);
                for (int64_t i = 0; i < w.taps_h; i++)
                    for (int64_t j = 0; j < w.taps_w; j++) {
                        int64_t at = tap_at(p, &w, i, j);
                        if (at >= 0) dx[plane * p->h * p->w + at] += (float)g;
                    }
            }
}
