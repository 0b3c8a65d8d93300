// Fully connected layer: x [rows, in], weight [out, in] (PyTorch's layout), bias [out],
// y [rows, out]. The matrix products go through bp_sgemm; bias sums run in row order.
#include "CKernels.h"
#include "internal.h"

#include <stddef.h>

void bp_linear_forward(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                       int64_t out) {
    // y[rows, out] = x[rows, in] * weight^T[in, out]
    bp_sgemm(0, 1, rows, out, in, 1.0f, x, in, weight, in, 0.0f, y, out);
    if (bias == NULL) return;
#pragma omp parallel for schedule(static) if (rows * out >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) y[r * out + o] += bias[o];
}

void bp_linear_backward_data(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in, int64_t out) {
    // dx[rows, in] = dy[rows, out] * weight[out, in]
    bp_sgemm(0, 0, rows, in, out, 1.0f, dy, out, weight, in, 0.0f, dx, in);
}

void bp_linear_backward_weights(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows, int64_t in,
                                int64_t out) {
    // dweight[out, in] += dy^T[out, rows] * x[rows, in]
    bp_sgemm(1, 0, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dweight, in);
    if (dbias == NULL) return;
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
}
