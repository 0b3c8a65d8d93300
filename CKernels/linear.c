// Fully connected layer: x [rows, in], weight [out, in] (PyTorch's layout), bias [out],
// y [rows, out]. In float32 the forward and the input gradient (x's or dy's rows read in place) run
// on our kernels (bp_matrix_product), the weight gradient (dy transposed) through bp_sgemm; in
// bfloat16 all three through bp_bf16_gemm. Bias sums run in row order.
#include "CKernels.h"
#include "internal.h"

#include <stddef.h>

// C (+)= A · op(B) in the layer's precision; returns the bytes of scratch it could not allocate.
static int64_t product(int precision, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a,
                       int64_t lda, const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc) {
    if (precision != BP_FP32)
        return bp_bf16_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate,
                            precision == BP_BF16_EMULATED);
    if (!trans_a) return bp_matrix_product(trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
    bp_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
    return 0;
}

int64_t bp_linear_forward(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                          int64_t out, int precision) {
    // y[rows, out] = x[rows, in] * weight^T[in, out]
    int64_t missing = product(precision, 0, 1, rows, out, in, x, in, weight, in, 0, y, out);
    if (missing || bias == NULL) return missing;
#pragma omp parallel for schedule(static) if (rows * out >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) y[r * out + o] += bias[o];
    return 0;
}

int64_t bp_linear_backward_data(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in, int64_t out,
                                int precision) {
    // dx[rows, in] = dy[rows, out] * weight[out, in]
    return product(precision, 0, 0, rows, in, out, dy, out, weight, in, 0, dx, in);
}

int64_t bp_linear_backward_weights(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows,
                                   int64_t in, int64_t out, int precision) {
    // dweight[out, in] += dy^T[out, rows] * x[rows, in]
    int64_t missing = product(precision, 1, 0, out, in, rows, dy, out, x, in, 1, dweight, in);
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
