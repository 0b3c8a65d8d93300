// 2-D convolution as column matrices and matrix products.
//
// For image b and group g (cg = c / groups input channels, kg = k / groups output channels):
//   col[cg·r·s, out_h·out_w]   col[(ci·r + i)·s + j][oh·out_w + ow] = x[b, g·cg + ci, ih, iw] (0 in the padding)
//   forward:           y[b, g·kg : +kg] [kg, out_hw]  = W_g [kg, cg·r·s] · col
//   backward-data:     dcol = W_gᵀ · dy[b, g], then dx[b, g·cg : +cg] = col2im(dcol) (sums overlaps)
//   backward-weights:  dW_g [kg, cg·r·s] += dy[b, g] · colᵀ
// A 1x1 convolution with stride 1 and no padding needs no column matrix: col is x itself.
// Each thread owns one column matrix (one image's, one group's) at a time.
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int64_t col_rows(const bp_conv2d_params *p) { return p->c / p->groups * p->r * p->s; }
static int64_t out_hw(const bp_conv2d_params *p) { return p->out_h * p->out_w; }

static int is_pointwise(const bp_conv2d_params *p) {
    return p->r == 1 && p->s == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
           p->out_h == p->h && p->out_w == p->w;
}

// The output columns [lo, hi) whose input column ow·stride − pad + offset lies inside [0, w).
static void valid_range(int64_t offset, int64_t stride, int64_t pad, int64_t w, int64_t out_w,
                        int64_t *lo, int64_t *hi) {
    int64_t start = pad - offset;  // need ow·stride >= start
    *lo = start <= 0 ? 0 : (start + stride - 1) / stride;
    int64_t end = w + pad - offset;  // need ow·stride < end
    *hi = end <= 0 ? 0 : (end + stride - 1) / stride;
    if (*hi > out_w) *hi = out_w;
    if (*lo > *hi) *lo = *hi;
}

// col = im2col(x) for cg channels of one image (x points at the group's first channel).
static void im2col(float *col, const float *x, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t i = 0; i < p->r; i++)
            for (int64_t j = 0; j < p->s; j++) {
                float *row = col + ((ci * p->r + i) * p->s + j) * out_hw(p);
                int64_t lo, hi;
                valid_range(j * p->dilation_w, p->stride_w, p->pad_w, p->w, p->out_w, &lo, &hi);
                for (int64_t oh = 0; oh < p->out_h; oh++) {
                    float *out = row + oh * p->out_w;
                    int64_t ih = oh * p->stride_h - p->pad_h + i * p->dilation_h;
                    if (ih < 0 || ih >= p->h) {
                        memset(out, 0, (size_t)p->out_w * sizeof(float));
                        continue;
                    }
                    const float *in = x + (ci * p->h + ih) * p->w - p->pad_w + j * p->dilation_w;
                    for (int64_t ow = 0; ow < lo; ow++) out[ow] = 0.0f;
                    if (p->stride_w == 1)
                        memcpy(out + lo, in + lo, (size_t)(hi - lo) * sizeof(float));
                    else
                        for (int64_t ow = lo; ow < hi; ow++) out[ow] = in[ow * p->stride_w];
                    for (int64_t ow = hi; ow < p->out_w; ow++) out[ow] = 0.0f;
                }
            }
}

// dx += col2im(dcol) for cg channels of one image (the adjoint of im2col).
static void col2im(float *dx, const float *dcol, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t i = 0; i < p->r; i++)
            for (int64_t j = 0; j < p->s; j++) {
                const float *row = dcol + ((ci * p->r + i) * p->s + j) * out_hw(p);
                int64_t lo, hi;
                valid_range(j * p->dilation_w, p->stride_w, p->pad_w, p->w, p->out_w, &lo, &hi);
                for (int64_t oh = 0; oh < p->out_h; oh++) {
                    int64_t ih = oh * p->stride_h - p->pad_h + i * p->dilation_h;
                    if (ih < 0 || ih >= p->h) continue;
                    float *out = dx + (ci * p->h + ih) * p->w - p->pad_w + j * p->dilation_w;
                    const float *in = row + oh * p->out_w;
                    for (int64_t ow = lo; ow < hi; ow++) out[ow * p->stride_w] += in[ow];
                }
            }
}

void bp_conv2d_forward(float *y, const float *x, const float *weight, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    int pointwise = is_pointwise(p);
    #pragma omp parallel if (p->n > 1)
    {
        float *col = pointwise ? NULL : malloc((size_t)(rows * hw) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < p->n; b++)
            for (int64_t g = 0; g < p->groups; g++) {
                const float *xg = x + (b * p->c + g * cg) * p->h * p->w;
                if (!pointwise) im2col(col, xg, p);
                bp_sgemm_serial(0, 0, kg, hw, rows, 1.0f, weight + g * kg * rows, rows, pointwise ? xg : col, hw,
                                0.0f, y + (b * p->k + g * kg) * hw, hw);
            }
        free(col);
    }
}

void bp_conv2d_backward_data(float *dx, const float *dy, const float *weight, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    int pointwise = is_pointwise(p);
    #pragma omp parallel if (p->n > 1)
    {
        float *dcol = pointwise ? NULL : malloc((size_t)(rows * hw) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < p->n; b++)
            for (int64_t g = 0; g < p->groups; g++) {
                float *dxg = dx + (b * p->c + g * cg) * p->h * p->w;
                const float *dyg = dy + (b * p->k + g * kg) * hw;
                // dcol [rows, hw] = W_gᵀ [rows, kg] · dy_g [kg, hw]
                bp_sgemm_serial(1, 0, rows, hw, kg, 1.0f, weight + g * kg * rows, rows, dyg, hw, 0.0f,
                                pointwise ? dxg : dcol, hw);
                if (pointwise) continue;
                memset(dxg, 0, (size_t)(cg * p->h * p->w) * sizeof(float));
                col2im(dxg, dcol, p);
            }
        free(dcol);
    }
}

enum { MAX_WEIGHT_BLOCKS = 4 };

void bp_conv2d_backward_weights(float *dweight, const float *dy, const float *x, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    int64_t size = p->k * rows;  // the weight's element count
    int64_t blocks = p->n < MAX_WEIGHT_BLOCKS ? p->n : MAX_WEIGHT_BLOCKS;
    int pointwise = is_pointwise(p);
    float *partial = calloc((size_t)(blocks * size), sizeof(float));
    #pragma omp parallel if (blocks > 1)
    {
        float *col = pointwise ? NULL : malloc((size_t)(rows * hw) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; block++)
            for (int64_t b = block * p->n / blocks; b < (block + 1) * p->n / blocks; b++)
                for (int64_t g = 0; g < p->groups; g++) {
                    const float *xg = x + (b * p->c + g * cg) * p->h * p->w;
                    if (!pointwise) im2col(col, xg, p);
                    // partial_g [kg, rows] += dy_g [kg, hw] · colᵀ [hw, rows]
                    bp_sgemm_serial(0, 1, kg, rows, hw, 1.0f, dy + (b * p->k + g * kg) * hw, hw,
                                    pointwise ? xg : col, hw, 1.0f, partial + block * size + g * kg * rows, rows);
                }
        free(col);
    }
    #pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
    for (int64_t e = 0; e < size; e++) {
        float sum = partial[e];
        for (int64_t block = 1; block < blocks; block++) sum += partial[block * size + e];
        dweight[e] += sum;
    }
    free(partial);
}

void bp_channel_bias_add(float *y, const float *bias, int64_t n, int64_t c, int64_t hw) {
    #pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < n * c; plane++) {
        float v = bias[plane % c];
        float *out = y + plane * hw;
        for (int64_t i = 0; i < hw; i++) out[i] += v;
    }
}

void bp_channel_bias_backward(float *dbias, const float *dy, int64_t n, int64_t c, int64_t hw) {
    #pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t ch = 0; ch < c; ch++) {
        double sum = 0.0;
        for (int64_t b = 0; b < n; b++) {
            const float *plane = dy + (b * c + ch) * hw;
            float s = 0.0f;
            for (int64_t i = 0; i < hw; i++) s += plane[i];
            sum += s;
        }
        dbias[ch] += (float)sum;
    }
}

// MARK: - Plain-loop references (double accumulators)

// Calls visit(b, g, ko, ci, oh, ow, i, j, x index, y index, w index) for every product term.
#define FOR_EACH_TERM(p, body)                                                                      \
    for (int64_t b = 0; b < (p)->n; b++)                                                            \
        for (int64_t ko = 0; ko < (p)->k; ko++) {                                                   \
            int64_t kg = (p)->k / (p)->groups, cg = (p)->c / (p)->groups, g = ko / kg;              \
            for (int64_t oh = 0; oh < (p)->out_h; oh++)                                             \
                for (int64_t ow = 0; ow < (p)->out_w; ow++)                                         \
                    for (int64_t ci = 0; ci < cg; ci++)                                             \
                        for (int64_t i = 0; i < (p)->r; i++)                                        \
                            for (int64_t j = 0; j < (p)->s; j++) {                                  \
                                int64_t ih = oh * (p)->stride_h - (p)->pad_h + i * (p)->dilation_h; \
                                int64_t iw = ow * (p)->stride_w - (p)->pad_w + j * (p)->dilation_w; \
                                if (ih < 0 || ih >= (p)->h || iw < 0 || iw >= (p)->w) continue;     \
                                int64_t xi = ((b * (p)->c + g * cg + ci) * (p)->h + ih) * (p)->w + iw; \
                                int64_t yi = ((b * (p)->k + ko) * (p)->out_h + oh) * (p)->out_w + ow;  \
                                int64_t wi = ((ko * cg + ci) * (p)->r + i) * (p)->s + j;            \
                                body;                                                               \
                            }                                                                       \
        }

void bp_conv2d_forward_ref(float *y, const float *x, const float *weight, const bp_conv2d_params *p) {
    int64_t count = p->n * p->k * out_hw(p);
    double *acc = calloc((size_t)count, sizeof(double));
    FOR_EACH_TERM(p, acc[yi] += (double)x[xi] * weight[wi])
    for (int64_t e = 0; e < count; e++) y[e] = (float)acc[e];
    free(acc);
}

void bp_conv2d_backward_data_ref(float *dx, const float *dy, const float *weight, const bp_conv2d_params *p) {
    int64_t count = p->n * p->c * p->h * p->w;
    double *acc = calloc((size_t)count, sizeof(double));
    FOR_EACH_TERM(p, acc[xi] += (double)dy[yi] * weight[wi])
    for (int64_t e = 0; e < count; e++) dx[e] = (float)acc[e];
    free(acc);
}

void bp_conv2d_backward_weights_ref(float *dweight, const float *dy, const float *x, const bp_conv2d_params *p) {
    int64_t count = p->k * col_rows(p);
    double *acc = calloc((size_t)count, sizeof(double));
    FOR_EACH_TERM(p, acc[wi] += (double)dy[yi] * x[xi])
    for (int64_t e = 0; e < count; e++) dweight[e] += (float)acc[e];
    free(acc);
}
