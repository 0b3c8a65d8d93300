// Fully connected layer: x [rows, in], weight [out, in] (PyTorch's layout), bias [out],
// y [rows, out]. The products go through bp_layer_product (in float32 on our kernels); bias sums
// run in row order.
#include "CKernels.h"
#include "internal.h"

#include <stddef.h>

int64_t bp_linear_forward(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                          int64_t out, int precision) {
    // y[rows, out] = x[rows, in] * weight^T[in, out] (+ bias)
    if (precision == BP_FP32 && bias) return bp_matrix_product_bias(1, rows, out, in, x, in, weight, in, bias, y, out);
    int64_t missing = bp_layer_product(precision, 0, 1, rows, out, in, x, in, weight, in, 0, y, out);
    if (missing || bias == NULL) return missing;
#pragma omp parallel for schedule(static) if (rows * out >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) y[r * out + o] += bias[o];
    return 0;
}

int64_t bp_linear_backward_data(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in, int64_t out,
                                int precision) {
    // dx[rows, in] = dy[rows, out] * weight[out, in]
    return bp_layer_product(precision, 0, 0, rows, in, out, dy, out, weight, in, 0, dx, in);
}

int64_t bp_linear_backward_weights(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows,
                                   int64_t in, int64_t out, int precision) {
    // dweight[out, in] += dy^T[out, rows] * x[rows, in]
    int64_t missing = bp_layer_product(precision, 1, 0, out, in, rows, dy, out, x, in, 1, dweight, in);
    if (missing || dbias == NULL) return missing;
    // Each iteration owns 64 output features and walks the rows in order, adding whole row segments
    // (a column-by-column walk missed the cache on every element); each sum still runs in row order.
    enum { BLOCK = 64 };
    int64_t blocks = (out + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (rows * out >= BP_PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t first = b * BLOCK, width = out - first < BLOCK ? out - first : BLOCK;
        float sum[BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = 0; o < width; o++) sum[o] += dy[r * out + first + o];
        for (int64_t o = 0; o < width; o++) dbias[first + o] += sum[o];
    }
    return 0;
}
