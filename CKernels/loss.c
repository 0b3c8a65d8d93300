// Losses with mean reduction. Each returns the loss (summed in double, in a fixed order) and
// writes the gradient of that loss with respect to its first input.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>

// MARK: - Softmax cross-entropy: logits [rows, classes], labels [rows], stats [rows, 2]

// One row's statistics: stats[0] = max_j x_j, stats[1] = 1 / Σ_j e^(x_j − max);
// returns the row's loss logsumexp(x) − x[label] = log Σ_j e^(x_j − max) − (x[label] − max).
BP_MULTIVERSION
static double softmax_xent_row_forward(float *stats, const float *x, int64_t label, int64_t classes) {
    // The max in 16 lanes (a form the vectoriser turns into maxps), then across them.
    float lanes[16], max = x[0];
    for (int l = 0; l < 16; l++) lanes[l] = x[0];
    int64_t j = 0;
    for (; j + 16 <= classes; j += 16)
        for (int l = 0; l < 16; l++) lanes[l] = x[j + l] > lanes[l] ? x[j + l] : lanes[l];
    for (; j < classes; j++) max = x[j] > max ? x[j] : max;
    for (int l = 0; l < 16; l++) max = lanes[l] > max ? lanes[l] : max;
    // Σ_j e^(x_j − max) in 16 lanes too, lane l over j ≡ l (mod 16) in order, then the lanes and the
    // last classes in order: one order for every vector width (a vectorised reduction would let
    // each clone pick its own, and the bits would differ between AVX2 and AVX-512 machines).
    float sums[16] = {0}, sum = 0.0f;
    for (j = 0; j + 16 <= classes; j += 16)
        for (int l = 0; l < 16; l++) sums[l] += bp_expf(x[j + l] - max);
    for (int l = 0; l < 16; l++) sum += sums[l];
    for (; j < classes; j++) sum += bp_expf(x[j] - max);
    stats[0] = max;
    stats[1] = 1.0f / sum;
    return log((double)sum) - ((double)x[label] - max);
}

// dx_j = scale · (softmax_j − [j == label]), softmax_j = e^(x_j − max) / Σ.
BP_MULTIVERSION
static void softmax_xent_row_backward(float *dx, const float *stats, const float *x, int64_t label, int64_t classes,
                                      float scale) {
    float max = stats[0], factor = stats[1] * scale;
#pragma omp simd
    for (int64_t j = 0; j < classes; j++) dx[j] = bp_expf(x[j] - max) * factor;
    dx[label] -= scale;
}

typedef struct {
    float *stats;
    const float *logits;
    const int64_t *labels;
    int64_t classes;
} xent_args;

static double xent_block(const void *ctx, int64_t begin, int64_t end) {
    const xent_args *a = ctx;
    double sum = 0.0;
    for (int64_t r = begin; r < end; r++)
        sum += softmax_xent_row_forward(a->stats + 2 * r, a->logits + r * a->classes, a->labels[r], a->classes);
    return sum;
}

// Rows per block: about 16K logits, so blocks are worth a thread.
static int64_t rows_per_block(int64_t classes) { return classes >= 16384 ? 1 : 16384 / classes; }

double bp_softmax_xent_forward(float *stats, const float *logits, const int64_t *labels, int64_t rows,
                               int64_t classes) {
    xent_args a = {stats, logits, labels, classes};
    return bp_blocked_sum(rows, rows_per_block(classes), classes, xent_block, &a) / (double)rows;
}

void bp_softmax_xent_backward(float *dx, const float *stats, const float *logits, const int64_t *labels, int64_t rows,
                              int64_t classes, float scale) {
#pragma omp parallel for schedule(static) if (rows * classes >= BP_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++)
        softmax_xent_row_backward(dx + r * classes, stats + 2 * r, logits + r * classes, labels[r], classes, scale);
}

// MARK: - Elementwise losses: x and target [n]

typedef struct {
    float *dx;
    const float *x;
    const float *t;
    float scale;  // 1 / n
} pointwise_args;

static double mse_block(const void *ctx, int64_t begin, int64_t end) {
    const pointwise_args *a = ctx;
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) {
        float diff = a->x[i] - a->t[i];
        a->dx[i] = 2.0f * diff * a->scale;
        sum += (double)diff * diff;
    }
    return sum;
}

static double bce_block(const void *ctx, int64_t begin, int64_t end) {
    const pointwise_args *a = ctx;
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) {
        float x = a->x[i], t = a->t[i];
        double log_x = fmax(log((double)x), -100.0), log_1mx = fmax(log1p(-(double)x), -100.0);
        sum -= t * log_x + (1.0 - t) * log_1mx;
        a->dx[i] = (x - t) / fmaxf(x * (1.0f - x), 1e-12f) * a->scale;
    }
    return sum;
}

static double bce_logits_block(const void *ctx, int64_t begin, int64_t end) {
    const pointwise_args *a = ctx;
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) {
        float x = a->x[i], t = a->t[i];
        sum += fmax(x, 0.0) - (double)x * t + log1p(exp(-fabs((double)x)));
        a->dx[i] = (1.0f / (1.0f + expf(-x)) - t) * a->scale;
    }
    return sum;
}

static double mean_loss(double (*block)(const void *, int64_t, int64_t), float *dx, const float *x, const float *target,
                        int64_t n) {
    pointwise_args a = {dx, x, target, 1.0f / (float)n};
    return bp_blocked_sum(n, 4096, 1, block, &a) / (double)n;
}

double bp_mse(float *dx, const float *x, const float *target, int64_t n) {
    return mean_loss(mse_block, dx, x, target, n);
}

double bp_bce(float *dx, const float *x, const float *target, int64_t n) {
    return mean_loss(bce_block, dx, x, target, n);
}

double bp_bce_logits(float *dx, const float *x, const float *target, int64_t n) {
    return mean_loss(bce_logits_block, dx, x, target, n);
}
