// Optimizer updates: one pass over a parameter tensor, vectorisable, OpenMP-parallel.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <string.h>

// sqrtf may set errno, which keeps loops scalar; this builtin is the bare instruction.
#define SQRT(x) __builtin_elementwise_sqrt(x)

void bp_sgd_step(float *param, float *momentum_buf, const float *grad, int64_t n, float lr, float momentum,
                 float weight_decay, int nesterov, int first_step) {
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

void bp_adam_step(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int decoupled, int64_t t) {
    const float step_size = lr / (1.0f - powf(beta1, (float)t));
    const float root_correction = sqrtf(1.0f - powf(beta2, (float)t));
    const float shrink = decoupled ? 1.0f - lr * weight_decay : 1.0f, coupled = decoupled ? 0.0f : weight_decay;
#pragma omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float p = param[i] * shrink, g = grad[i] + coupled * param[i];
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        param[i] = p - step_size * m[i] / (SQRT(v[i]) / root_correction + eps);
    }
}

void bp_rmsprop_step(float *param, float *square_avg, float *momentum_buf, const float *grad, int64_t n, float lr,
                     float alpha, float eps, float weight_decay, float momentum) {
    if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) {
            float g = grad[i] + weight_decay * param[i];
            square_avg[i] = alpha * square_avg[i] + (1.0f - alpha) * g * g;
            param[i] -= lr * g / (SQRT(square_avg[i]) + eps);
        }
        return;
    }
#pragma omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = grad[i] + weight_decay * param[i];
        square_avg[i] = alpha * square_avg[i] + (1.0f - alpha) * g * g;
        momentum_buf[i] = momentum * momentum_buf[i] + g / (SQRT(square_avg[i]) + eps);
        param[i] -= lr * momentum_buf[i];
    }
}

static double squares_block(const void *ctx, int64_t begin, int64_t end) {
    const float *x = ctx;
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) sum += (double)x[i] * x[i];
    return sum;
}

double bp_sum_squares(const float *x, int64_t n) { return bp_blocked_sum(n, 4096, 1, squares_block, x); }

struct penalty_args {
    float *grad;
    const float *param;
    float l1, l2;
};

static double penalty_block(const void *ctx, int64_t begin, int64_t end) {
    const struct penalty_args *a = ctx;
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) {
        float w = a->param[i];
        float sign = (float)(w > 0.0f) - (float)(w < 0.0f);
        a->grad[i] += a->l1 * sign + a->l2 * w;
        sum += a->l1 * fabs((double)w) + 0.5 * a->l2 * (double)w * w;
    }
    return sum;
}

double bp_penalty(float *grad, const float *param, int64_t n, float l1, float l2) {
    struct penalty_args args = {grad, param, l1, l2};
    return bp_blocked_sum(n, 4096, 2, penalty_block, &args);
}

void bp_scale(float *x, float scale, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] *= scale;
}

// An OR over the values' exponent fields (all ones: infinity or NaN), which vectorises where a
// test with an early exit would not.
BP_MULTIVERSION
int bp_all_finite(const float *x, int64_t n) {
    uint32_t nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        nonfinite |= (bits & 0x7f800000u) == 0x7f800000u;
    }
    return !nonfinite;
}
