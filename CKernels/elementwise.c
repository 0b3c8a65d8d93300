// Activations, dropout and sums: one pass over n elements, vectorisable, OpenMP-parallel.
// Every element is computed on its own, so the results do not depend on the thread count.
#include "CKernels.h"
#include "internal.h"

#include <math.h>

// One loop body per kernel; the pragma splits [0, n) statically over the threads.
#define BP_ELEMENTWISE(i, n, body)                                        \
    _Pragma("omp parallel for simd schedule(static) if (n >= BP_PARALLEL_MIN)") \
    for (int64_t i = 0; i < (n); i++) { body; }

void bp_relu_forward(float *y, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = x[i] > 0.0f ? x[i] : 0.0f)
}

void bp_relu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, dx[i] = x[i] > 0.0f ? dy[i] : 0.0f)
}

void bp_leaky_relu_forward(float *y, const float *x, float slope, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = x[i] > 0.0f ? x[i] : slope * x[i])
}

void bp_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope, int64_t n) {
    BP_ELEMENTWISE(i, n, dx[i] = x[i] > 0.0f ? dy[i] : slope * dy[i])
}

void bp_sigmoid_forward(float *y, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = 1.0f / (1.0f + expf(-x[i])))
}

void bp_sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n) {
    BP_ELEMENTWISE(i, n, dx[i] = dy[i] * y[i] * (1.0f - y[i]))
}

void bp_tanh_forward(float *y, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = tanhf(x[i]))
}

void bp_tanh_backward(float *dx, const float *dy, const float *y, int64_t n) {
    BP_ELEMENTWISE(i, n, dx[i] = dy[i] * (1.0f - y[i] * y[i]))
}

static const float INV_SQRT2 = 0.70710678118654752f;
static const float INV_SQRT_2PI = 0.39894228040143268f;

void bp_gelu_forward(float *y, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = x[i] * 0.5f * (1.0f + erff(x[i] * INV_SQRT2)))
}

void bp_gelu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, {
        float cdf = 0.5f * (1.0f + erff(x[i] * INV_SQRT2));
        float pdf = INV_SQRT_2PI * expf(-0.5f * x[i] * x[i]);
        dx[i] = dy[i] * (cdf + x[i] * pdf);
    })
}

// SplitMix64's finaliser: a bijective mix of (seed, i) into 64 well-spread bits.
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Element i is kept with probability 1 - p: its 24-bit uniform draw is at least p.
static inline float dropout_scale(float p, uint64_t seed, int64_t i) {
    float u = (float)(mix64(seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1)) >> 40) * 0x1p-24f;
    return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

void bp_dropout_forward(float *y, const float *x, float p, uint64_t seed, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = x[i] * dropout_scale(p, seed, i))
}

void bp_dropout_backward(float *dx, const float *dy, float p, uint64_t seed, int64_t n) {
    BP_ELEMENTWISE(i, n, dx[i] = dy[i] * dropout_scale(p, seed, i))
}

void bp_exp_for_testing(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = bp_expf(x[i]);
}

void bp_add(float *y, const float *a, const float *b, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] = a[i] + b[i])
}

void bp_add_inplace(float *y, const float *x, int64_t n) {
    BP_ELEMENTWISE(i, n, y[i] += x[i])
}
