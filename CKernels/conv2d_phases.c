// Stride-2 convolutions with even kernels (r = s = 2r', r' = 2, 3 or 5) as stride-1 convolutions
// of r' × r' kernels over the input's four phases stacked as channels, which then run by
// Winograd's F(2 × 2, r' × r') (conv2d_winograd.c). Writing kernel row i = 2m + q (q = 0 or 1,
// m < r'), output row a reads input row 2a − pad_h + 2m + q = 2(a + m) + q − pad_h, so
//
//   X'[q][c][u][v] = x[c][2u + qh − pad_h][2v + qw − pad_w]   (0 outside x; q = 2qh + qw)
//   W'[o][q][c][m][m'] = W[o][c][2m + qh][2m' + qw]
//   y = conv(X', W'), stride 1, no padding: out_h × out_w from (out_h + r' − 1) × (out_w + r' − 1)
//
// Its backward follows: the weight gradient is dW' spread back over W's taps, and since every
// input element is exactly one element of X', the input gradient is dX' (the stacked convolution's
// backward-data: the forward of dy with W' flipped, padding r' − 1) gathered back, nothing summed.
// X' is never stored whole: the Winograd kernels read each image's phases from x into their padded
// planes (bp_phases_copy_in) and write dX' into dx row by row (bp_phases_copy_out). dX' holds one
// row and column per phase that fall outside x (for the 28 × 28 outputs of a 4 × 4 kernel on
// 56 × 56: 29² places for 28²).
//
// The bits are those of the stacked convolution: a fixed order again (phase, then channel, in the
// Winograd sums), different from the direct sum's (documented with the Winograd kernels), the same
// for any thread count and vector width.
#include "CKernels.h"
#include "conv2d_layout.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

int bp_conv_phases_fit(const bp_conv2d_params *p) {
    int64_t half = p->r / 2;
    return p->stride_h == 2 && p->stride_w == 2 && p->r == p->s && p->r % 2 == 0 &&
           (half == 2 || half == 3 || half == 5) && p->dilation_h == 1 && p->dilation_w == 1 && p->groups == 1 &&
           4 * p->c >= 16 && p->k >= 16;
}

// The stacked convolution's geometry: 4c channels of (out_h + r' − 1) × (out_w + r' − 1), r' × r'.
static bp_conv2d_params stacked(const bp_conv2d_params *p) {
    bp_conv2d_params q = *p;
    q.r = q.s = p->r / 2;
    q.c = 4 * p->c, q.h = p->out_h + q.r - 1, q.w = p->out_w + q.s - 1;
    q.stride_h = q.stride_w = 1, q.pad_h = q.pad_w = 0;
    return q;
}

// x's row (or column) under stacked row u of phase `phase`: 2u + phase − pad.
static int64_t source(int64_t u, int64_t phase, int64_t pad) { return 2 * u + phase - pad; }

// The stacked columns [*v0, *v1) (below `width`) of phase qw whose source columns lie inside x.
static void inside_columns(int64_t qw, int64_t width, const bp_conv2d_params *p, int64_t *v0, int64_t *v1) {
    *v0 = (p->pad_w - qw + 1) / 2, *v1 = (p->w + p->pad_w - qw + 1) / 2;
    if (*v1 > width) *v1 = width;
    if (*v1 < *v0) *v1 = *v0;
}

void bp_phases_copy_in(float *planes, int64_t hp, int64_t wp, const float *x, const bp_conv2d_params *p,
                       const bp_conv2d_params *q) {
    for (int64_t plane = 0; plane < q->c; plane++) {
        int64_t phase = plane / p->c, c = plane % p->c, qh = phase / 2, qw = phase % 2, v0, v1;
        inside_columns(qw, q->w, p, &v0, &v1);
        for (int64_t u = 0; u < q->h; u++) {
            int64_t ih = source(u, qh, p->pad_h);
            if (ih >= 0 && ih < p->h)
                bp_gather_stride2(planes + (plane * hp + u) * wp, x + (c * p->h + ih) * p->w, p->w,
                                  source(0, qw, p->pad_w), v0, v1);
        }
    }
}

void bp_phases_fill(float *dx, const float *bias, const bp_conv2d_params *p) {
    for (int64_t c = 0; c < p->c; c++)
        for (int64_t e = 0; e < p->h * p->w; e++) dx[c * p->h * p->w + e] = bias ? bias[c] : 0.0f;
}

void bp_phases_copy_out(float *dx, const float *rows, int64_t channel, int64_t u0, int64_t lines, const float *bias,
                        const bp_conv2d_params *p, const bp_conv2d_params *s) {
    int64_t phase = channel / p->c, c = channel % p->c, qh = phase / 2, qw = phase % 2, v0, v1;
    inside_columns(qw, s->out_w, p, &v0, &v1);
    for (int64_t line = 0; line < lines; line++) {
        int64_t ih = source(u0 + line, qh, p->pad_h);
        if (ih >= 0 && ih < p->h)
            bp_scatter_stride2(dx + (c * p->h + ih) * p->w, source(0, qw, p->pad_w), rows + line * s->out_w, v0, v1,
                               bias, bias ? bias[c] : 0.0f);
    }
}

// Where in W is W'[o][ch][m][m'] (ch = (2qh + qw) · c + c): W[o][c][2m + qh][2m' + qw].
static int64_t source_tap(const bp_conv2d_params *p, int64_t o, int64_t ch, int64_t m, int64_t mm) {
    int64_t phase = ch / p->c, c = ch % p->c;
    return ((o * p->c + c) * p->r + 2 * m + phase / 2) * p->s + 2 * mm + phase % 2;
}

// W' from W (source_tap); `flipped`: W' with both
// kernel axes reversed and its channel roles swapped, for the backward-data's forward.
static float *stack_weights(const float *w, int flipped, const bp_conv2d_params *p, const bp_conv2d_params *q,
                            int64_t *missing) {
    float *ws = bp_malloc(q->k * q->c * q->r * q->s, sizeof(float), missing);
    for (int64_t o = 0; o < p->k && ws; o++)
        for (int64_t ch = 0; ch < q->c; ch++)
            for (int64_t m = 0; m < q->r; m++)
                for (int64_t mm = 0; mm < q->s; mm++) {
                    int64_t at = flipped ? ((ch * q->k + o) * q->r + q->r - 1 - m) * q->s + q->s - 1 - mm
                                         : ((o * q->c + ch) * q->r + m) * q->s + mm;
                    ws[at] = w[source_tap(p, o, ch, m, mm)];
                }
    return ws;
}

int64_t bp_conv2d_forward_phases(float *y, const float *x, const float *weight, const float *bias,
                                 const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p);
    int64_t missing = 0;
    float *ws = stack_weights(weight, 0, p, &q, &missing);
    if (ws) missing = bp_conv2d_forward_winograd(y, x, ws, bias, &q, p, NULL);
    free(ws);
    return missing;
}

int64_t bp_conv2d_backward_data_phases(float *dx, const float *dy, const float *weight, const float *bias,
                                       const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p), t;  // t: dy [n, k, out_h, out_w] → dX' [n, 4c, q.h, q.w]
    bp_conv_transposed_forward(&q, &t);  // always one: q has stride 1 and no padding
    int64_t missing = 0;
    float *flipped = stack_weights(weight, 1, p, &q, &missing);
    if (flipped) missing = bp_conv2d_forward_winograd(dx, dy, flipped, bias, &t, NULL, p);
    free(flipped);
    return missing;
}

int64_t bp_conv2d_backward_weights_phases(float *dweight, float *dbias, const float *dy, const float *x,
                                          const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p);
    int64_t missing = 0, size = q.k * q.c * q.r * q.s;
    float *dws = bp_calloc(size, sizeof(float), &missing);
    if (dws) missing = bp_conv2d_backward_weights_winograd(dws, dbias, dy, x, &q, p);
    // dW[source_tap(o, ch, m, m')] += dW'[o][ch][m][m'].
    for (int64_t e = 0; e < size && !missing; e++)
        dweight[source_tap(p, e / (q.s * q.r * q.c), e / (q.s * q.r) % q.c, e / q.s % q.r, e % q.s)] += dws[e];
    free(dws);
    return missing;
}
