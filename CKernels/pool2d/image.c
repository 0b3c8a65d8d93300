// The stride-1 average: the plane as one padded image.
//
// With stride 1 both ways the average needs no ring of row results and no phases: the plane goes
// into an image of `rows` rows `pitch` floats apart with zero margins, and each pass runs over the
// whole image as one flat array, every window tap a constant offset into it (the general path's
// loops run once per row for a few vectors, and their setup costs as much as the sums). Each sum
// here adds the terms of the general path in its order, plus +0
// for taps outside the input (which changes no sum that starts from +0): the same bits.
//
// Forward: the image is the plane with pad_h rows and pad_w columns of zeros around it; row sums
// rs[i] = Σ_tj image[i + tj · dw] for every i; then output (oh, ow) = Σ_ti rs[(oh + ti · dh) · pitch + ow]
// / divisor(oh, ow). Backward: the image is dy / divisor with top = (kh − 1) · dh zero rows above
// and below and left = (kw − 1) · dw zero columns either side; column sums
// cs[ih · pitch + c] = Σ_ti image[(ih + ph − ti · dh + top) · pitch + c], ti descending (output rows
// ascending); then dx(ih, iw) = Σ_tj cs[ih · pitch + iw + pw − tj · dw + left], tj descending.

#include "pool2d.h"

image_layout image_layout_of(const bp_pool2d_params *p, int backward) {
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
    plane_locals local = plane_locals_of(p, f, s);
    p = &local.p, f = &local.f, s = &local.s;
    image_layout m = *layout;
    for (int64_t ih = 0; ih < p->h; ih++)
        bp_copy_short(s->image + (ih + m.top) * m.pitch + m.left, x + ih * p->w, p->w);
    image_pass(s->sums, s->image, &m, 0, p->dilation_w, kw);
    int64_t out_w = p->out_w, out_hw = p->out_h * out_w, step = p->dilation_h * m.pitch;
    const float *columns = f->columns_part;
    next_plane next = next_plane_of(x + p->h * p->w, 4 * p->h * p->w, p->out_h);
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
    plane_locals local = plane_locals_of(p, f, s);
    p = &local.p, f = &local.f, s = &local.s;
    image_layout m = *layout;
    for (int64_t oh = 0; oh < p->out_h; oh++)
        divided_row(s->image + (oh + m.top) * m.pitch + m.left, dy + oh * p->out_w, f, p->out_w, rows_part(p, win, oh));
    int64_t step = p->dilation_h * m.pitch;
    image_pass(s->sums, s->image, &m, (p->pad_h + m.top) * m.pitch - (kh - 1) * step, step, kh);
    int64_t w = p->w, hw = p->h * w, dw = p->dilation_w;
    const float *sums = s->sums + p->pad_w + m.left - (kw - 1) * dw;
    next_plane next = next_plane_of(dy + p->out_h * p->out_w, 4 * p->out_h * p->out_w, p->h);
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
void plane_image(float *y, const float *x, const bp_pool2d_params *p, const windows *win, const fixed_layout *f,
                 const image_layout *m, fixed_scratch *s) {
    if (p->kernel_h == 3 && p->kernel_w == 3) image_forward(y, x, p, win, f, m, s, 3, 3);
    else image_forward(y, x, p, win, f, m, s, p->kernel_h, p->kernel_w);
}

BP_MULTIVERSION
void plane_image_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win,
                          const fixed_layout *f, const image_layout *m, fixed_scratch *s) {
    if (p->kernel_h == 3 && p->kernel_w == 3) image_backward(dx, dy, p, win, f, m, s, 3, 3);
    else image_backward(dx, dy, p, win, f, m, s, p->kernel_h, p->kernel_w);
}
