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
// backward-data) gathered back, nothing summed. The stacked input is as large as x; dX' computes
// the one row and column per phase that fall outside x (for the 28 × 28 outputs of a 4 × 4 kernel
// on 56 × 56: 29² places for 28²).
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

// Input row of x (or column) at stacked row u of phase q: 2u + q − pad.
static int64_t source(int64_t u, int64_t phase, int64_t pad) { return 2 * u + phase - pad; }

// row[v] = xr[2v + off] for v in [v0, v1), 0 elsewhere in [0, w): 16 at a time as the even lanes
// of 32 floats (a gather instruction is slower), while those stay inside x's row of `width`.
BP_MULTIVERSION
static void gather_row(float *restrict row, const float *restrict xr, int64_t width, int64_t off, int64_t v0,
                       int64_t v1, int64_t w) {
    int64_t v = 0;
    for (; v < v0; v++) row[v] = 0.0f;
    for (; v + 16 <= v1 && 2 * v + off + 32 <= width; v += 16) {
        v16f lo, hi;
        memcpy(&lo, xr + 2 * v + off, sizeof lo);
        memcpy(&hi, xr + 2 * v + off + 16, sizeof hi);
        v16f even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        memcpy(row + v, &even, sizeof even);
    }
    for (; v < v1; v++) row[v] = xr[2 * v + off];
    for (; v < w; v++) row[v] = 0.0f;
}

// xr[2v + off] = row[v] (+ b) for v in [v0, v1).
BP_MULTIVERSION
static void scatter_row(float *restrict xr, int64_t off, const float *restrict row, int64_t v0, int64_t v1,
                        const float *bias, float b) {
    if (bias)
        for (int64_t v = v0; v < v1; v++) xr[2 * v + off] = row[v] + b;
    else
        for (int64_t v = v0; v < v1; v++) xr[2 * v + off] = row[v];
}

// X' from x (gather = 1), or dx from dX' (gather = 0): dx[c][ih][iw] = dX'[…] + bias[c], and 0 +
// bias[c] where no output reads x (rows and columns past the last window's reach). Parallel over
// x's planes, each with its four phases.
static void restack(float *stack, float *x, const float *bias, int gather, const bp_conv2d_params *p,
                    const bp_conv2d_params *q) {
#pragma omp parallel for schedule(static) if (p->n * q->c * q->h * q->w >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < p->n * p->c; plane++) {
        int64_t image = plane / p->c, c = plane % p->c;
        float *xc = x + plane * p->h * p->w, b = bias ? bias[c] : 0.0f;
        if (!gather)
            for (int64_t e = 0; e < p->h * p->w; e++) xc[e] = b;
        for (int64_t phase = 0; phase < 4; phase++) {
            int64_t qh = phase / 2, qw = phase % 2;
            float *s = stack + ((image * 4 + phase) * p->c + c) * q->h * q->w;
            // Stacked column v reads x's column 2v + qw − pad_w: v in [v0, v1) is inside x.
            int64_t v0 = (p->pad_w - qw + 1) / 2, v1 = (p->w + p->pad_w - qw + 1) / 2;
            if (v1 > q->w) v1 = q->w;
            if (v1 < v0) v1 = v0;
            for (int64_t u = 0; u < q->h; u++) {
                int64_t ih = source(u, qh, p->pad_h);
                float *row = s + u * q->w;
                int inside = ih >= 0 && ih < p->h;
                if (gather && !inside) memset(row, 0, (size_t)q->w * sizeof(float));
                if (!inside) continue;
                int64_t off = source(0, qw, p->pad_w);  // x's column for v = 0
                if (gather) gather_row(row, xc + ih * p->w, p->w, off, v0, v1, q->w);
                else scatter_row(xc + ih * p->w, off, row, v0, v1, bias, b);
            }
        }
    }
}

// W' from W: W'[o][q · c + c'][m][m'] = W[o][c'][2m + qh][2m' + qw].
static void stack_weights(float *ws, const float *w, const bp_conv2d_params *p, const bp_conv2d_params *q) {
    for (int64_t o = 0; o < p->k; o++)
        for (int64_t ch = 0; ch < q->c; ch++)
            for (int64_t m = 0; m < q->r; m++)
                for (int64_t mm = 0; mm < q->s; mm++) {
                    int64_t phase = ch / p->c, c = ch % p->c;
                    ws[((o * q->c + ch) * q->r + m) * q->s + mm] =
                        w[((o * p->c + c) * p->r + 2 * m + phase / 2) * p->s + 2 * mm + phase % 2];
                }
}

int64_t bp_conv2d_forward_phases(float *y, const float *x, const float *weight, const float *bias,
                                 const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p);
    int64_t missing = 0;
    float *xs = bp_malloc(q.n * q.c * q.h * q.w, sizeof(float), &missing);
    float *ws = bp_malloc(q.k * q.c * q.r * q.s, sizeof(float), &missing);
    if (!missing) {
        restack(xs, (float *)x, NULL, 1, p, &q);
        stack_weights(ws, weight, p, &q);
        missing = bp_conv2d_forward(y, xs, ws, bias, &q);
    }
    free(xs), free(ws);
    return missing;
}

int64_t bp_conv2d_backward_data_phases(float *dx, const float *dy, const float *weight, const float *bias,
                                       const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p);
    int64_t missing = 0;
    float *dxs = bp_malloc(q.n * q.c * q.h * q.w, sizeof(float), &missing);
    float *ws = bp_malloc(q.k * q.c * q.r * q.s, sizeof(float), &missing);
    if (!missing) {
        stack_weights(ws, weight, p, &q);
        missing = bp_conv2d_backward_data(dxs, dy, ws, NULL, &q);
    }
    if (!missing) restack(dxs, dx, bias, 0, p, &q);
    free(dxs), free(ws);
    return missing;
}

int64_t bp_conv2d_backward_weights_phases(float *dweight, float *dbias, const float *dy, const float *x,
                                          const bp_conv2d_params *p) {
    bp_conv2d_params q = stacked(p);
    int64_t missing = 0, size = q.k * q.c * q.r * q.s;
    float *xs = bp_malloc(q.n * q.c * q.h * q.w, sizeof(float), &missing);
    float *dws = bp_calloc(size, sizeof(float), &missing);
    if (!missing) {
        restack(xs, (float *)x, NULL, 1, p, &q);
        missing = bp_conv2d_backward_weights(dws, dbias, dy, xs, &q);
    }
    // dW[o][c][2m + qh][2m' + qw] += dW'[o][q · c + c][m][m'].
    for (int64_t e = 0; e < size && !missing; e++) {
        int64_t mm = e % q.s, m = e / q.s % q.r, ch = e / (q.s * q.r) % q.c, o = e / (q.s * q.r * q.c);
        int64_t phase = ch / p->c, c = ch % p->c;
        dweight[((o * p->c + c) * p->r + 2 * m + phase / 2) * p->s + 2 * mm + phase % 2] += dws[e];
    }
    free(xs), free(dws);
    return missing;
}
