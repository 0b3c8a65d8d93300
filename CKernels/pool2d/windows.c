// The windows of each axis, from which every strategy reads its taps and the average its divisors.
#include "pool2d.h"

// Axis `a` of the windows: see axis_windows.
static void axis_fill(axis_windows *a, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                      int64_t dilation, int adaptive) {
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

static void axis_build(axis_windows *a, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad,
                       int64_t dilation, int adaptive, int64_t *missing) {
    int64_t *buffer = bp_malloc(5 * out, sizeof(int64_t), missing);
    *a = (axis_windows){0};
    if (!buffer) return;
    a->first = buffer, a->taps = buffer + out, a->lo = buffer + 2 * out, a->hi = buffer + 3 * out,
    a->size = buffer + 4 * out;
    axis_fill(a, in, out, kernel, stride, pad, dilation, adaptive);
}

int64_t windows_build(windows *win, const bp_pool2d_params *p) {
    int64_t missing = 0;
    axis_build(&win->rows, p->h, p->out_h, p->kernel_h, p->stride_h, p->pad_h, p->dilation_h, p->adaptive, &missing);
    axis_build(&win->cols, p->w, p->out_w, p->kernel_w, p->stride_w, p->pad_w, p->dilation_w, p->adaptive, &missing);
    return missing;
}

void windows_free(windows *win) {
    free(win->rows.first);
    free(win->cols.first);
    *win = (windows){0};
}

// The most taps a window of one axis has: the kernel, or for adaptive windows the widest.
static int64_t max_taps(int64_t in, int64_t out, int64_t kernel, int adaptive) {
    if (!adaptive) return kernel;
    int64_t most = 0;
    for (int64_t o = 0; o < out; o++) {
        int64_t taps = ((o + 1) * in + out - 1) / out - o * in / out;
        most = taps > most ? taps : most;
    }
    return most;
}

int64_t bp_pool2d_window_size(const bp_pool2d_params *p) {
    return max_taps(p->h, p->out_h, p->kernel_h, p->adaptive) * max_taps(p->w, p->out_w, p->kernel_w, p->adaptive);
}

int64_t tap_offset(const windows *win, int64_t w, int64_t oh, int64_t ow, int64_t tap) {
    if (tap >= win->rows.taps[oh] * win->cols.taps[ow]) return -1;
    int64_t ti = tap / win->cols.taps[ow], tj = tap % win->cols.taps[ow];
    return (win->rows.first[oh] + ti * win->rows.step) * w + win->cols.first[ow] + tj * win->cols.step;
}

int64_t bp_maxpool2d_plane_indices(int64_t *indices, const uint8_t *index8, const int32_t *index32,
                                   const bp_pool2d_params *p) {
    windows win;
    int64_t missing = windows_build(&win, p), out_hw = p->out_h * p->out_w;
    if (!missing)
        for (int64_t plane = 0; plane < p->n * p->c; plane++)
            for (int64_t oh = 0; oh < p->out_h; oh++)
                for (int64_t ow = 0; ow < p->out_w; ow++) {
                    int64_t o = plane * out_hw + oh * p->out_w + ow;
                    indices[o] = tap_offset(&win, p->w, oh, ow, index8 ? index8[o] : index32[o]);
                }
    windows_free(&win);
    return missing;
}
