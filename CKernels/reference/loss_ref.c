// The plain-loop reference of the softmax cross-entropy (loss.c), in double.
#include "CKernels.h"

#include <math.h>

double bp_softmax_xent_ref(float *dx, const float *logits, const int64_t *labels, int64_t rows, int64_t classes) {
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const float *x = logits + r * classes;
        double max = x[0], sum = 0.0;
        for (int64_t j = 1; j < classes; j++) max = x[j] > max ? x[j] : max;
        for (int64_t j = 0; j < classes; j++) sum += exp((double)x[j] - max);
        for (int64_t j = 0; j < classes; j++) {
            double p = exp((double)x[j] - max) / sum;
            dx[r * classes + j] = (float)((p - (j == labels[r] ? 1.0 : 0.0)) / (double)rows);
        }
        total += log(sum) + max - x[labels[r]];
    }
    return total / (double)rows;
}
