// Activations, dropout and sums: one pass over n elements. Each kernel is a chunk function,
// compiled per vector width (BP_MULTIVERSION), run over fixed chunks by bp_parallel_chunks.
// Every element is computed on its own, so the results do not depend on the thread count.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stddef.h>

// The operands of every elementwise kernel; each uses the fields it needs.
typedef struct {
    float *out;
    const float *a;
    const float *b;
    float param;
    uint64_t seed;
} operands;

// Defines `name_chunk`, whose loop computes the body for each i in [begin, end) with the
// operands out, a, b, param and seed in scope.
#define ELEMENTWISE_CHUNK(name, ...)                                                                                   \
    BP_MULTIVERSION static void name##_chunk(const void *ctx, int64_t begin, int64_t end) {                            \
        const operands *o = ctx;                                                                                       \
        float *restrict out = o->out;                                                                                  \
        const float *restrict a = o->a, *restrict b = o->b;                                                            \
        const float param = o->param;                                                                                  \
        const uint64_t seed = o->seed;                                                                                 \
        (void)b, (void)param, (void)seed;                                                                              \
        for (int64_t i = begin; i < end; i++) {                                                                        \
            __VA_ARGS__;                                                                                               \
        }                                                                                                              \
    }

// Runs a chunk function over n elements; `cost` is the relative work of one element.
static void run(void (*chunk)(const void *, int64_t, int64_t), int64_t n, int64_t cost, float *out, const float *a,
                const float *b, float param, uint64_t seed) {
    operands o = {out, a, b, param, seed};
    bp_parallel_chunks(n, cost, chunk, &o);
}

ELEMENTWISE_CHUNK(relu_forward, out[i] = a[i] > 0.0f ? a[i] : 0.0f)
ELEMENTWISE_CHUNK(relu_backward, out[i] = b[i] > 0.0f ? a[i] : 0.0f)
ELEMENTWISE_CHUNK(leaky_forward, out[i] = a[i] > 0.0f ? a[i] : param * a[i])
ELEMENTWISE_CHUNK(leaky_backward, out[i] = b[i] > 0.0f ? a[i] : param * a[i])
ELEMENTWISE_CHUNK(sigmoid_forward, out[i] = 1.0f / (1.0f + bp_expf(-a[i])))
ELEMENTWISE_CHUNK(sigmoid_backward, out[i] = a[i] * b[i] * (1.0f - b[i]))
ELEMENTWISE_CHUNK(tanh_forward, out[i] = tanhf(a[i]))
ELEMENTWISE_CHUNK(tanh_backward, out[i] = a[i] * (1.0f - b[i] * b[i]))

void bp_relu_forward(float *y, const float *x, int64_t n) { run(relu_forward_chunk, n, 1, y, x, NULL, 0, 0); }
void bp_relu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    run(relu_backward_chunk, n, 1, dx, dy, x, 0, 0);
}
void bp_leaky_relu_forward(float *y, const float *x, float slope, int64_t n) {
    run(leaky_forward_chunk, n, 1, y, x, NULL, slope, 0);
}
void bp_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope, int64_t n) {
    run(leaky_backward_chunk, n, 1, dx, dy, x, slope, 0);
}
void bp_sigmoid_forward(float *y, const float *x, int64_t n) { run(sigmoid_forward_chunk, n, 8, y, x, NULL, 0, 0); }
void bp_sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n) {
    run(sigmoid_backward_chunk, n, 1, dx, dy, y, 0, 0);
}
void bp_tanh_forward(float *y, const float *x, int64_t n) { run(tanh_forward_chunk, n, 16, y, x, NULL, 0, 0); }
void bp_tanh_backward(float *dx, const float *dy, const float *y, int64_t n) {
    run(tanh_backward_chunk, n, 1, dx, dy, y, 0, 0);
}

static const float INV_SQRT2 = 0.70710678118654752f;
static const float INV_SQRT_2PI = 0.39894228040143268f;

ELEMENTWISE_CHUNK(gelu_forward, out[i] = a[i] * 0.5f * (1.0f + erff(a[i] * INV_SQRT2)))
// clang-format off: the statements of one loop body
ELEMENTWISE_CHUNK(gelu_backward, float cdf = 0.5f * (1.0f + erff(b[i] * INV_SQRT2));
                  float pdf = INV_SQRT_2PI * bp_expf(-0.5f * b[i] * b[i]); out[i] = a[i] * (cdf + b[i] * pdf))
// clang-format on

void bp_gelu_forward(float *y, const float *x, int64_t n) { run(gelu_forward_chunk, n, 16, y, x, NULL, 0, 0); }
void bp_gelu_backward(float *dx, const float *dy, const float *x, int64_t n) {
    run(gelu_backward_chunk, n, 24, dx, dy, x, 0, 0);
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

// Forward and backward both multiply by the mask: the same chunk serves both.
ELEMENTWISE_CHUNK(dropout, out[i] = a[i] * dropout_scale(param, seed, i))
ELEMENTWISE_CHUNK(add, out[i] = a[i] + b[i])
ELEMENTWISE_CHUNK(add_inplace, out[i] += a[i])

void bp_dropout_forward(float *y, const float *x, float p, uint64_t seed, int64_t n) {
    run(dropout_chunk, n, 4, y, x, NULL, p, seed);
}
void bp_dropout_backward(float *dx, const float *dy, float p, uint64_t seed, int64_t n) {
    run(dropout_chunk, n, 4, dx, dy, NULL, p, seed);
}
void bp_add(float *y, const float *a, const float *b, int64_t n) { run(add_chunk, n, 1, y, a, b, 0, 0); }
void bp_add_inplace(float *y, const float *x, int64_t n) { run(add_inplace_chunk, n, 1, y, x, NULL, 0, 0); }

void bp_exp_for_testing(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = bp_expf(x[i]);
}
