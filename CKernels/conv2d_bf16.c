// 2-D convolution with bfloat16 products (bp_bf16_gemm) over an explicit column matrix.
//
// For image b and group g (cg = c / groups input channels, kg = k / groups output channels,
// R = cg·r·s taps in the order (ci, i, j), P = out_h·out_w pixels), col [R, P] holds
// col[t][oh·out_w + ow] = x[b, g·cg + ci, oh·sh − ph + i·dh, ow·sw − pw + j·dw] (0 in the padding):
//   forward:           y[b, g] [kg, P] = W_g [kg, R] · col (+ bias)
//   backward-data:     dcol = W_gᵀ · dy[b, g], dx[b, g] = the sum of dcol's entries onto the pixels
//                      they were read from, tap by tap in order (+ bias)
//   backward-weights:  dW_g += dy[b, g] · colᵀ, image after image
// Each product's element sums run in bp_bf16_gemm's fixed order; images run in parallel where each
// writes its own output (forward, backward-data), and in order where they add into one (weights).
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t cg, kg, taps, pixels;
} group_shape;

static group_shape shape_of(const bp_conv2d_params *p) {
    return (group_shape){p->c / p->groups, p->k / p->groups, p->c / p->groups * p->r * p->s, p->out_h * p->out_w};
}

// The input position that tap (i, j) of output pixel (oh, ow) reads, or -1 when it is padding.
static int64_t source(const bp_conv2d_params *p, int64_t i, int64_t j, int64_t oh, int64_t ow) {
    int64_t ih = oh * p->stride_h - p->pad_h + i * p->dilation_h, iw = ow * p->stride_w - p->pad_w + j * p->dilation_w;
    return ih < 0 || ih >= p->h || iw < 0 || iw >= p->w ? -1 : ih * p->w + iw;
}

// col [taps, pixels] of one image's group (x at its first channel [cg, h, w]); parallel over taps
// when not called from a parallel loop.
static void im2col(float *col, const float *x, const bp_conv2d_params *p, group_shape g) {
#pragma omp parallel for schedule(static) if (g.taps * g.pixels >= BP_PARALLEL_MIN)
    for (int64_t t = 0; t < g.taps; t++) {
        int64_t ci = t / (p->r * p->s), i = t / p->s % p->r, j = t % p->s;
        const float *plane = x + ci * p->h * p->w;
        float *row = col + t * g.pixels;
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                int64_t at = source(p, i, j, oh, ow);
                row[oh * p->out_w + ow] = at < 0 ? 0.0f : plane[at];
            }
    }
}

// dx [cg, h, w] of one image's group = the column gradient summed onto its pixels, taps in order.
static void col2im(float *dx, const float *dcol, const bp_conv2d_params *p, group_shape g) {
    memset(dx, 0, (size_t)(g.cg * p->h * p->w) * sizeof(float));
    for (int64_t t = 0; t < g.taps; t++) {
        int64_t ci = t / (p->r * p->s), i = t / p->s % p->r, j = t % p->s;
        float *plane = dx + ci * p->h * p->w;
        const float *row = dcol + t * g.pixels;
        for (int64_t oh = 0; oh < p->out_h; oh++)
            for (int64_t ow = 0; ow < p->out_w; ow++) {
                int64_t at = source(p, i, j, oh, ow);
                if (at >= 0) plane[at] += row[oh * p->out_w + ow];
            }
    }
}

// plane[channel][·] += bias[channel] over `channels` planes of `size`.
static void add_bias(float *planes, const float *bias, int64_t channels, int64_t size) {
    for (int64_t ch = 0; ch < channels; ch++)
        for (int64_t q = 0; q < size; q++) planes[ch * size + q] += bias[ch];
}

// One image's group of the forward or the backward-data, with a column matrix of scratch.
typedef struct {
    const float *in, *weight, *bias;
    float *out;
    const bp_conv2d_params *p;
    group_shape g;
    int emulate;
} image_pass;

typedef int64_t (*image_step)(const image_pass *pass, float *col, int64_t b, int64_t gi);

// Runs `step` on every image and group in parallel (each writes its own output), each with its own
// column matrix; returns the bytes that could not be allocated.
static int64_t for_each_image(const image_pass *pass, image_step step) {
    const bp_conv2d_params *p = pass->p;
    int64_t missing = 0;
#pragma omp parallel for schedule(static) reduction(+ : missing)
    for (int64_t item = 0; item < p->n * p->groups; item++) {
        int64_t lost = 0;
        float *col = bp_malloc(pass->g.taps * pass->g.pixels, sizeof(float), &lost);
        if (col) lost = step(pass, col, item / p->groups, item % p->groups);
        free(col);
        missing += lost;
    }
    return missing;
}

// y[b, g] = W_g · col(x[b, g]) + bias.
static int64_t forward_image(const image_pass *pass, float *col, int64_t b, int64_t gi) {
    const bp_conv2d_params *p = pass->p;
    group_shape g = pass->g;
    im2col(col, pass->in + (b * p->c + gi * g.cg) * p->h * p->w, p, g);
    float *out = pass->out + (b * p->k + gi * g.kg) * g.pixels;
    int64_t lost = bp_bf16_gemm(0, 0, g.kg, g.pixels, g.taps, pass->weight + gi * g.kg * g.taps, g.taps, col, g.pixels,
                                out, g.pixels, 0, pass->emulate);
    if (pass->bias) add_bias(out, pass->bias + gi * g.kg, g.kg, g.pixels);
    return lost;
}

// dx[b, g] = col2im(W_gᵀ · dy[b, g]) + bias.
static int64_t backward_data_image(const image_pass *pass, float *dcol, int64_t b, int64_t gi) {
    const bp_conv2d_params *p = pass->p;
    group_shape g = pass->g;
    int64_t lost =
        bp_bf16_gemm(1, 0, g.taps, g.pixels, g.kg, pass->weight + gi * g.kg * g.taps, g.taps,
                     pass->in + (b * p->k + gi * g.kg) * g.pixels, g.pixels, dcol, g.pixels, 0, pass->emulate);
    float *out = pass->out + (b * p->c + gi * g.cg) * p->h * p->w;
    col2im(out, dcol, p, g);
    if (pass->bias) add_bias(out, pass->bias + gi * g.cg, g.cg, p->h * p->w);
    return lost;
}

int64_t bp_conv2d_forward_bf16(float *y, const float *x, const float *weight, const float *bias,
                               const bp_conv2d_params *p, int emulate) {
    image_pass pass = {x, weight, bias, y, p, shape_of(p), emulate};
    return for_each_image(&pass, forward_image);
}

int64_t bp_conv2d_backward_data_bf16(float *dx, const float *dy, const float *weight, const float *bias,
                                     const bp_conv2d_params *p, int emulate) {
    image_pass pass = {dy, weight, bias, dx, p, shape_of(p), emulate};
    return for_each_image(&pass, backward_data_image);
}

int64_t bp_conv2d_backward_weights_bf16(float *dweight, float *dbias, const float *dy, const float *x,
                                        const bp_conv2d_params *p, int emulate) {
    group_shape g = shape_of(p);
    int64_t missing = 0;
    float *col = bp_malloc(g.taps * g.pixels, sizeof(float), &missing);
    if (!col) return missing;
    for (int64_t b = 0; b < p->n && !missing; b++)
        for (int64_t gi = 0; gi < p->groups && !missing; gi++) {
            im2col(col, x + (b * p->c + gi * g.cg) * p->h * p->w, p, g);
            missing = bp_bf16_gemm(0, 1, g.kg, g.taps, g.pixels, dy + (b * p->k + gi * g.kg) * g.pixels, g.pixels, col,
                                   g.pixels, dweight + gi * g.kg * g.taps, g.taps, 1, emulate);
        }
    free(col);
    if (dbias && !missing) bp_channel_bias_backward(dbias, dy, p->n, p->k, g.pixels);
    return missing;
}
