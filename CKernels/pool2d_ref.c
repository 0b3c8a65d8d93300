// Plain-loop references for pooling (pool2d.c): every tap of every window, its position and
// bounds recomputed from the definition, sums in double. For the kernel tests.
#include "CKernels.h"

#include <math.h>
#include <string.h>

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
    FOR_EACH_WINDOW(p, {
        if (indices[o] >= 0) dx[plane * p->h * p->w + indices[o]] += dy[o];  // −1: a window with no tap inside
    })
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
