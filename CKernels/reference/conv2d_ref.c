// Plain-loop references of the convolution kernels (conv2d.c): every product term of the
// definition, accumulated in double.
#include "../internal.h"
#include "CKernels.h"

#include <stdlib.h>

// Which tensor a reference accumulates: y (forward), x (backward-data) or the weight.
typedef enum { REF_Y, REF_X, REF_WEIGHT } ref_target;

// acc[target] += the product of the other two tensors' elements, over every term
// y[b, ko, oh, ow] ~ x[b, g · cg + ci, ih, iw] · weight[ko, ci, i, j] with
// ih = oh · stride_h − pad_h + i · dilation_h (iw alike) inside the input, g = ko / (k / groups).
static void accumulate_terms(double *acc, ref_target target, const float *x, const float *y, const float *weight,
                             const bp_conv2d_params *p) {
    int64_t kg = p->k / p->groups, cg = p->c / p->groups;
    for (int64_t b = 0; b < p->n; b++)
        for (int64_t ko = 0; ko < p->k; ko++)
            for (int64_t oh = 0; oh < p->out_h; oh++)
                for (int64_t ow = 0; ow < p->out_w; ow++)
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t i = 0; i < p->r; i++)
                            for (int64_t j = 0; j < p->s; j++) {
                                int64_t ih = oh * p->stride_h - p->pad_h + i * p->dilation_h;
                                int64_t iw = ow * p->stride_w - p->pad_w + j * p->dilation_w;
                                if (ih < 0 || ih >= p->h || iw < 0 || iw >= p->w) continue;
                                int64_t xi = ((b * p->c + ko / kg * cg + ci) * p->h + ih) * p->w + iw;
                                int64_t yi = ((b * p->k + ko) * p->out_h + oh) * p->out_w + ow;
                                int64_t wi = ((ko * cg + ci) * p->r + i) * p->s + j;
                                switch (target) {
                                case REF_Y:
                                    acc[yi] += (double)x[xi] * weight[wi];
                                    break;
                                case REF_X:
                                    acc[xi] += (double)y[yi] * weight[wi];
                                    break;
                                case REF_WEIGHT:
                                    acc[wi] += (double)y[yi] * x[xi];
                                    break;
                                }
                            }
}

// The `target` tensor (`count` floats at out) from the sum of its terms in double: written, or
// added into it (`accumulate`). Returns 0, or the bytes it could not allocate.
static int64_t conv_ref(float *out, int64_t count, int accumulate, ref_target target, const float *x, const float *y,
                        const float *weight, const bp_conv2d_params *p) {
    int64_t missing = 0;
    double *acc = bp_calloc(count, sizeof(double), &missing);
    if (!acc) return missing;
    accumulate_terms(acc, target, x, y, weight, p);
    for (int64_t e = 0; e < count; e++) out[e] = accumulate ? out[e] + (float)acc[e] : (float)acc[e];
    free(acc);
    return 0;
}

int64_t bp_conv2d_forward_ref(float *y, const float *x, const float *weight, const bp_conv2d_params *p) {
    return conv_ref(y, p->n * p->k * p->out_h * p->out_w, 0, REF_Y, x, NULL, weight, p);
}

int64_t bp_conv2d_backward_data_ref(float *dx, const float *dy, const float *weight, const bp_conv2d_params *p) {
    return conv_ref(dx, p->n * p->c * p->h * p->w, 0, REF_X, NULL, dy, weight, p);
}

int64_t bp_conv2d_backward_weights_ref(float *dweight, const float *dy, const float *x, const bp_conv2d_params *p) {
    return conv_ref(dweight, p->k * (p->c / p->groups) * p->r * p->s, 1, REF_WEIGHT, x, dy, NULL, p);
}
