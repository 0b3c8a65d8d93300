// 2-D convolution as column matrices and matrix products.
//
// For image b and group g (cg = c / groups input channels, kg = k / groups output channels):
//   col[cg·r·s, out_h·out_w]   col[(ci·r + i)·s + j][oh·out_w + ow] = x[b, g·cg + ci, ih, iw] (0 in the padding)
//   forward:           y[b, g·kg : +kg] [kg, out_hw]  = W_g [kg, cg·r·s] · col
//   backward-data:     dcol = W_gᵀ · dy[b, g], then dx[b, g·cg : +cg] = col2im(dcol) (sums overlaps)
//   backward-weights:  dW_g [kg, cg·r·s] += dy[b, g] · colᵀ
// A 1x1 convolution with stride 1 and no padding needs no column matrix: col is x itself.
// Images with small outputs are multiplied several at a time (images_per_tile); each thread owns
// one tile's column matrix (at most 1024 output pixels wide, or one image's) at a time.
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

// col = im2col(x) for cg channels of one image (x points at the group's first channel); rows of
// col are `ld` floats apart (out_h · out_w for one image; more when images sit side by side).
static void im2col(float *col, int64_t ld, const float *x, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t i = 0; i < p->r; i++)
            for (int64_t j = 0; j < p->s; j++) {
                float *row = col + ((ci * p->r + i) * p->s + j) * ld;
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

// dx += col2im(dcol) for cg channels of one image (the adjoint of im2col), rows `ld` apart.
static void col2im(float *dx, const float *dcol, int64_t ld, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups;
    for (int64_t ci = 0; ci < cg; ci++)
        for (int64_t i = 0; i < p->r; i++)
            for (int64_t j = 0; j < p->s; j++) {
                const float *row = dcol + ((ci * p->r + i) * p->s + j) * ld;
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

// Images per matrix product: small outputs are multiplied several images at a time, side by side
// in one column tile of up to 1024 output pixels, so the product is wide enough to run near peak
// (measured on conv_lenet2, 14x14 outputs: 44 GFLOP/s one image at a time). A function of the
// shape alone, so the summation order never depends on the thread count.
static int64_t images_per_tile(const bp_conv2d_params *p) {
    if (is_pointwise(p)) return 1;  // x itself is the column matrix of one image
    int64_t images = (1024 + out_hw(p) - 1) / out_hw(p);
    return images < p->n ? images : p->n;
}

// The images [first, first + count) of a tile, for group g.
typedef struct {
    int64_t first, count, g;
} tile;

// col [rows, count · hw] for a tile: its images' column matrices side by side (or x itself for a
// pointwise convolution, whose tiles hold one image).
static const float *tile_columns(float *col, const float *x, const bp_conv2d_params *p, tile t) {
    int64_t cg = p->c / p->groups, hw = out_hw(p);
    const float *first = x + (t.first * p->c + t.g * cg) * p->h * p->w;
    if (is_pointwise(p)) return first;
    for (int64_t i = 0; i < t.count; i++) im2col(col + i * hw, t.count * hw, first + i * p->c * p->h * p->w, p);
    return col;
}

// Copies a tile's [kg, count · hw] block to or from its images' planes in an NCHW [n, k, hw] tensor.
static void tile_gather(float *block, const float *tensor, const bp_conv2d_params *p, tile t) {
    int64_t kg = p->k / p->groups, hw = out_hw(p);
    for (int64_t i = 0; i < t.count; i++)
        for (int64_t ko = 0; ko < kg; ko++)
            memcpy(block + ko * t.count * hw + i * hw, tensor + ((t.first + i) * p->k + t.g * kg + ko) * hw,
                   (size_t)hw * sizeof(float));
}

static void tile_scatter(float *tensor, const float *block, const bp_conv2d_params *p, tile t) {
    int64_t kg = p->k / p->groups, hw = out_hw(p);
    for (int64_t i = 0; i < t.count; i++)
        for (int64_t ko = 0; ko < kg; ko++)
            memcpy(tensor + ((t.first + i) * p->k + t.g * kg + ko) * hw, block + ko * t.count * hw + i * hw,
                   (size_t)hw * sizeof(float));
}

// Runs `body` for every tile (images × groups) in parallel, each thread with scratch `col`
// [rows, images · hw] and `block` [kg, images · hw].
#define FOR_EACH_TILE(p, ...)                                                                          \
    {                                                                                                  \
        int64_t images = images_per_tile(p), chunks = ((p)->n + images - 1) / images;                   \
        int64_t kg_ = (p)->k / (p)->groups, width = images * out_hw(p);                                \
        _Pragma("omp parallel if (chunks * (p)->groups > 1)")                                          \
        {                                                                                              \
            float *col = malloc((size_t)(col_rows(p) * width) * sizeof(float));                        \
            float *block = malloc((size_t)(kg_ * width) * sizeof(float));                              \
            _Pragma("omp for schedule(static)")                                                        \
            for (int64_t index = 0; index < chunks * (p)->groups; index++) {                           \
                int64_t chunk = index / (p)->groups, first = chunk * images;                           \
                tile t = {first, first + images < (p)->n ? images : (p)->n - first, index % (p)->groups}; \
                __VA_ARGS__;                                                                           \
            }                                                                                          \
            free(col);                                                                                 \
            free(block);                                                                               \
        }                                                                                              \
    }

void bp_conv2d_forward(float *y, const float *x, const float *weight, const bp_conv2d_params *p) {
    int64_t kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    FOR_EACH_TILE(p, {
        const float *columns = tile_columns(col, x, p, t);
        // block [kg, count · hw] = W_g [kg, rows] · col [rows, count · hw]
        bp_sgemm_serial(0, 0, kg, t.count * hw, rows, 1.0f, weight + t.g * kg * rows, rows, columns, t.count * hw,
                        0.0f, block, t.count * hw);
        tile_scatter(y, block, p, t);
    })
}

void bp_conv2d_backward_data(float *dx, const float *dy, const float *weight, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    int pointwise = is_pointwise(p);
    FOR_EACH_TILE(p, {
        tile_gather(block, dy, p, t);
        float *first = dx + (t.first * p->c + t.g * cg) * p->h * p->w;
        // dcol [rows, count · hw] = W_gᵀ [rows, kg] · dy_tile [kg, count · hw]; a pointwise tile's dcol is dx
        bp_sgemm_serial(1, 0, rows, t.count * hw, kg, 1.0f, weight + t.g * kg * rows, rows, block, t.count * hw, 0.0f,
                        pointwise ? first : col, t.count * hw);
        if (!pointwise)
            for (int64_t i = 0; i < t.count; i++) {
                float *image = first + i * p->c * p->h * p->w;
                memset(image, 0, (size_t)(cg * p->h * p->w) * sizeof(float));
                col2im(image, col + i * hw, t.count * hw, p);
            }
    })
}

enum { MAX_WEIGHT_BLOCKS = 4 };

// Weight gradients: the images are split into at most 4 fixed blocks, each summed over its tiles
// in order into its own partial, and the partials added in block order.
void bp_conv2d_backward_weights(float *dweight, const float *dy, const float *x, const bp_conv2d_params *p) {
    int64_t kg = p->k / p->groups, rows = col_rows(p), hw = out_hw(p);
    int64_t size = p->k * rows;  // the weight's element count
    int64_t blocks = p->n < MAX_WEIGHT_BLOCKS ? p->n : MAX_WEIGHT_BLOCKS, images = images_per_tile(p);
    float *partial = calloc((size_t)(blocks * size), sizeof(float));
    #pragma omp parallel if (blocks > 1)
    {
        float *col = malloc((size_t)(rows * images * hw) * sizeof(float));
        float *block_dy = malloc((size_t)(kg * images * hw) * sizeof(float));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            int64_t end = (b + 1) * p->n / blocks;
            for (int64_t first = b * p->n / blocks; first < end; first += images)
                for (int64_t g = 0; g < p->groups; g++) {
                    tile t = {first, first + images < end ? images : end - first, g};
                    const float *columns = tile_columns(col, x, p, t);
                    tile_gather(block_dy, dy, p, t);
                    // partial_g [kg, rows] += dy_tile [kg, count · hw] · colᵀ [count · hw, rows]
                    bp_sgemm_serial(0, 1, kg, rows, t.count * hw, 1.0f, block_dy, t.count * hw, columns, t.count * hw,
                                    1.0f, partial + b * size + g * kg * rows, rows);
                }
        }
        free(col);
        free(block_dy);
    }
    #pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
    for (int64_t e = 0; e < size; e++) {
        float sum = partial[e];
        for (int64_t b = 1; b < blocks; b++) sum += partial[b * size + e];
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
