// Adaptive windows, one output at a time, from the window tables.
#include "pool2d.h"

void max_plane_adaptive(float *y, uint8_t *index8, int32_t *index32, const float *in, const bp_pool2d_params *p,
                        const windows *win) {
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

void avg_plane_adaptive(float *y, const float *in, const bp_pool2d_params *p, const windows *win) {
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

void avg_plane_adaptive_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win) {
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

void max_plane_adaptive_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                                 const bp_pool2d_params *p, const windows *win) {
    memset(dx, 0, (size_t)(p->h * p->w) * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            int64_t o = oh * p->out_w + ow;
            int64_t at = tap_offset(win, p->w, oh, ow, index8 ? index8[o] : index32[o]);
            if (at >= 0) dx[at] += dy[o];
        }
}
