// Optimizer updates: one pass over a parameter tensor, vectorisable, OpenMP-parallel.
#include "CKernels.h"
#include "internal.h"

void bp_sgd_step(float *param, float *momentum_buf, const float *grad, int64_t n,
                 float lr, float momentum, float weight_decay, int nesterov, int first_step) {
    #pragma omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float d = grad[i] + weight_decay * param[i];
        if (momentum != 0.0f) {
            float buf = first_step ? d : momentum * momentum_buf[i] + d;
            momentum_buf[i] = buf;
            d = nesterov ? d + momentum * buf : buf;
        }
        param[i] -= lr * d;
    }
}
