// Plain-loop references of the linear kernels (linear.c): double accumulators.
#include "CKernels.h"

void bp_linear_forward_ref(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                           int64_t out) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < in; i++) acc += (double)x[r * in + i] * weight[o * in + i];
            y[r * out + o] = (float)acc;
        }
}

void bp_linear_backward_data_ref(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in,
                                 int64_t out) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < in; i++) {
            double acc = 0.0;
            for (int64_t o = 0; o < out; o++) acc += (double)dy[r * out + o] * weight[o * in + i];
            dx[r * in + i] = (float)acc;
        }
}

void bp_linear_backward_weights_ref(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows,
                                    int64_t in, int64_t out) {
    for (int64_t o = 0; o < out; o++) {
        for (int64_t i = 0; i < in; i++) {
            double acc = 0.0;
            for (int64_t r = 0; r < rows; r++) acc += (double)dy[r * out + o] * x[r * in + i];
            dweight[o * in + i] += (float)acc;
        }
        if (dbias) {
            double acc = 0.0;
            for (int64_t r = 0; r < rows; r++) acc += dy[r * out + o];
            dbias[o] += (float)acc;
        }
    }
}
