// Batch and layer normalization (see CKernels.h for the math and the statistics' accuracy).
#include "CKernels.h"
#include "internal.h"
#include "pool2d/pool2d.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// MARK: - Statistics of a contiguous run, in double

// Sums over a run vectorise in 8 float lanes (double lanes fed from floats stay scalar); to keep
// double accuracy, the lanes sum at most 256 elements (32 per lane) before
// they are added into double totals, and the values summed are small: centred, or shifted by the
// run's first element.
enum { LANE_BLOCK = 256 };

// The means of R runs of `count` (run r at x + r · ld), each Σ (x − shift) with shift = its x[0], in
// lanes as above. Each run's sum is taken in the same order for any R; with R > 1 the runs' sums are
// independent chains that keep the adders busy (one run's lanes wait for each add's latency).
__attribute__((always_inline)) static inline void runs_mean(int R, const float *x, int64_t ld, int64_t count,
                                                            double *mean) {
    float shift[R];
    double total[R];
    for (int r = 0; r < R; r++) shift[r] = x[r * ld], total[r] = 0.0;
    for (int64_t start = 0; start < count; start += LANE_BLOCK) {
        int64_t end = start + LANE_BLOCK < count ? start + LANE_BLOCK : count, i = start;
        float lanes[R][8];
        memset(lanes, 0, sizeof lanes);
        for (; i + 8 <= end; i += 8)
            for (int r = 0; r < R; r++)
                for (int l = 0; l < 8; l++) lanes[r][l] += x[r * ld + i + l] - shift[r];
        for (int r = 0; r < R; r++) {
            for (int64_t k = i; k < end; k++) total[r] += x[r * ld + k] - shift[r];
            for (int l = 0; l < 8; l++) total[r] += lanes[r][l];
        }
    }
    for (int r = 0; r < R; r++) mean[r] = shift[r] + total[r] / (double)count;
}

// Σ (x − mean)² over each of R runs, as runs_mean lays them out, centring with mean = hi + lo in
// float (see bp_split_mean).
__attribute__((always_inline)) static inline void
runs_squared_deviation(int R, const float *x, int64_t ld, int64_t count, const double *mean, double *m2) {
    float hi[R], lo[R];
    for (int r = 0; r < R; r++) hi[r] = (float)mean[r], lo[r] = (float)(mean[r] - hi[r]), m2[r] = 0.0;
    for (int64_t start = 0; start < count; start += LANE_BLOCK) {
        int64_t end = start + LANE_BLOCK < count ? start + LANE_BLOCK : count, i = start;
        float lanes[R][8];
        memset(lanes, 0, sizeof lanes);
        for (; i + 8 <= end; i += 8)
            for (int r = 0; r < R; r++)
                for (int l = 0; l < 8; l++) {
                    float d = (x[r * ld + i + l] - hi[r]) - lo[r];
                    lanes[r][l] += d * d;
                }
        for (int r = 0; r < R; r++) {
            for (int64_t k = i; k < end; k++)
                m2[r] += ((x[r * ld + k] - hi[r]) - lo[r]) * ((x[r * ld + k] - hi[r]) - lo[r]);
            for (int l = 0; l < 8; l++) m2[r] += lanes[r][l];
        }
    }
}

// The mean, and then Σ (x − mean)², of each of `rows` ≤ ROW_GROUP rows of `count`, `ld` apart
// (layer norm's rows, batch norm's planes): each row's sums in the order runs_mean and
// runs_squared_deviation take them alone, a full group's interleaved, fewer rows one by one.
enum { ROW_GROUP = 4 };
BP_MULTIVERSION
static void rows_means(const float *x, int64_t ld, int64_t count, int64_t rows, double mean[ROW_GROUP]) {
    if (rows == ROW_GROUP) runs_mean(ROW_GROUP, x, ld, count, mean);
    else
        for (int64_t r = 0; r < rows; r++) runs_mean(1, x + r * ld, 0, count, &mean[r]);
}

BP_MULTIVERSION
static void rows_squared_deviations(const float *x, int64_t ld, int64_t count, int64_t rows,
                                    const double mean[ROW_GROUP], double m2[ROW_GROUP]) {
    if (rows == ROW_GROUP) runs_squared_deviation(ROW_GROUP, x, ld, count, mean, m2);
    else
        for (int64_t r = 0; r < rows; r++) runs_squared_deviation(1, x + r * ld, 0, count, &mean[r], &m2[r]);
}

static void rows_moments(const float *x, int64_t ld, int64_t count, int64_t rows, double mean[ROW_GROUP],
                         double m2[ROW_GROUP]) {
    rows_means(x, ld, count, rows, mean);
    rows_squared_deviations(x, ld, count, rows, mean, m2);
}

// Running statistics of several runs: count, mean and the sum of squared deviations (M2).
typedef struct {
    double count, mean, m2;
} moments;

// Merges the moments of another set of values into `m` (Chan et al.'s formula).
static void moments_merge(moments *m, const moments *other) {
    double total = m->count + other->count, delta = other->mean - m->mean;
    m->mean += delta * other->count / total;
    m->m2 += other->m2 + delta * delta * m->count * other->count / total;
    m->count = total;
}

// The affine map of a channel, y = ((x − hi) − lo) · scale + shift, as the forward computes it.
typedef struct {
    float hi, lo, scale, shift;
} affine_map;

__attribute__((always_inline)) static inline float affine(const affine_map *m, float x) {
    return ((x - m->hi) - m->lo) * m->scale + m->shift;
}

// The gradient at element i: dy, or with a fused ReLU (`relu`) dy where the ReLU passed its input
// (affine(x) > 0, recomputed from x exactly as the forward computed it) and 0 where it did not, as
// the ReLU's own backward gives it. Inlined with a constant `relu`, so no loop tests it.
__attribute__((always_inline)) static inline float gated_dy(const float *dy, const float *x, int64_t i,
                                                            const affine_map *m, int relu) {
    float g = dy[i];  // loaded whatever the gate says: a conditional load would keep the loop scalar
    return relu ? (affine(m, x[i]) > 0.0f ? g : 0.0f) : g;
}

__attribute__((always_inline)) static inline void gradient_sums(const float *dy, const float *x, int64_t count,
                                                                double mean, const affine_map *m, double *sum_dy,
                                                                double *sum_dy_centred, int relu) {
    double a[8] = {0}, b[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= count; i += 8)
        for (int l = 0; l < 8; l++) {
            float g = gated_dy(dy, x, i + l, m, relu);
            a[l] += g;
            b[l] += g * (x[i + l] - mean);
        }
    double sa = 0.0, sb = 0.0;
    for (; i < count; i++) {
        float g = gated_dy(dy, x, i, m, relu);
        sa += g, sb += g * (x[i] - mean);
    }
    for (int l = 0; l < 8; l++) sa += a[l], sb += b[l];
    *sum_dy += sa;
    *sum_dy_centred += sb;
}

// Σ dy and Σ dy · (x − mean) over a run (dy gated by the fused ReLU of map `m` when `relu`).
BP_MULTIVERSION
static void run_gradient_sums(const float *dy, const float *x, int64_t count, double mean, const affine_map *m,
                              int relu, double *sum_dy, double *sum_dy_centred) {
    if (relu) gradient_sums(dy, x, count, mean, m, sum_dy, sum_dy_centred, 1);
    else gradient_sums(dy, x, count, mean, m, sum_dy, sum_dy_centred, 0);
}

// A mean in float as hi + lo: x − hi is exact for x within a factor 2 of hi (Sterbenz), so
// (x − hi) − lo centres as accurately as double would, at float speed. With mean 1e4 and spread
// 0.1, a float mean alone would be off by up to 5e-4, 0.5% of the spread.

// y = affine(x) over a run; with `relu`, then y = y > 0 ? y : 0 (a ReLU fused after the
// normalization: the same bits as bp_relu_forward of y).
BP_MULTIVERSION
static void run_affine(float *y, const float *x, int64_t count, const affine_map *map, int relu) {
    affine_map m = *map;
    if (relu)
        for (int64_t i = 0; i < count; i++) {
            float v = affine(&m, x[i]);
            y[i] = v > 0.0f ? v : 0.0f;
        }
    else
        for (int64_t i = 0; i < count; i++) y[i] = affine(&m, x[i]);
}

// dx = a · dy + b · (x − mean) + k over a run, mean = hi + lo: every normalization backward
// (dy gated by the fused ReLU of map `m` when `relu`).
__attribute__((always_inline)) static inline void backward_run(float *dx, const float *dy, const float *x,
                                                               int64_t count, float a, float b, float hi, float lo,
                                                               float k, const affine_map *m, int relu) {
    for (int64_t i = 0; i < count; i++) dx[i] = a * gated_dy(dy, x, i, m, relu) + b * ((x[i] - hi) - lo) + k;
}

BP_MULTIVERSION
static void run_backward(float *dx, const float *dy, const float *x, int64_t count, float a, float b, float hi,
                         float lo, float k, const affine_map *map, int relu) {
    affine_map m = *map;
    if (dx == x) {  // in place: one pointer, so the compiler sees that dx[i] only replaces x[i] and vectorises
        if (relu) backward_run(dx, dy, dx, count, a, b, hi, lo, k, &m, 1);
        else backward_run(dx, dy, dx, count, a, b, hi, lo, k, &m, 0);
    } else if (relu) backward_run(dx, dy, x, count, a, b, hi, lo, k, &m, 1);
    else backward_run(dx, dy, x, count, a, b, hi, lo, k, &m, 0);
}

// MARK: - Batch normalization: blocks of channels, each channel's n planes of hw values in order
//
// The channels are split into at most 8 fixed blocks (a thread takes whole blocks), and a block
// walks the images in the outer loop and its channels in the inner one: that reads the block's
// planes of each image as one contiguous stretch, where channel by channel the reads would jump
// by c · hw floats every hw (one page's worth or less: the prefetcher restarted at every plane).
// Each channel still sums its planes in image order, so the results are those of the channel-by-
// channel loop, whatever the blocks and the thread count.

enum { CHANNEL_BLOCKS = 8, STRETCH_BYTES = 1 << 20, STRETCH_LEAST = 4 };

// A tiled max pooling fused after the normalization and its ReLU (bp_batchnorm_relu_maxpool_*),
// so that the normalised values and their gradient never reach memory: forward, each plane is
// normalised into its block's scratch plane (in L1) and pooled from there into y and the argmax;
// backward, each plane's gradient at the normalised values is expanded into the scratch plane from
// the pooled gradient and the argmax, as the pooling's backward writes it, and read from there.
// The values are those the separate layers compute, so the bits are theirs.
typedef struct {
    bp_pool2d_params plane;  // the pooling of one plane (n = c = 1)
    uint8_t *index;          // the argmax of every window of every plane: written forward, read backward
    float *scratch;          // a plane of hw floats per block, `stride` floats apart
    int64_t stride;
} fused_pool;

// Block `block`'s scratch plane, or NULL without a pooling.
static float *block_scratch(const fused_pool *pool, int64_t block) {
    return pool ? pool->scratch + block * pool->stride : NULL;
}

// The gradient at the normalised values of plane `plane`: dy's plane, or with a fused pooling
// (dy then the pooled gradient) its expansion into `scratch`.
static const float *plane_gradient(const float *dy, const fused_pool *pool, float *scratch, int64_t plane, int64_t hw) {
    if (!pool) return dy + plane * hw;
    int64_t pooled = pool->plane.out_h * pool->plane.out_w;
    plane_tiled_backward(scratch, dy + plane * pooled, pool->index + plane * pooled, &pool->plane);
    return scratch;
}

// The affine map of channel ch as the training forward applies it (scale = rstd · gamma in float,
// as both forwards compute it); the backward rebuilds it for the fused ReLU's gate.
static affine_map channel_map(const float *mean, const float *rstd, const float *gamma, const float *beta, int64_t ch) {
    return (affine_map){mean[2 * ch], mean[2 * ch + 1], rstd[ch] * (gamma ? gamma[ch] : 1.0f), beta ? beta[ch] : 0.0f};
}

// Block `block`'s channels: [*first, *end).
static void channel_block(int64_t c, int64_t block, int64_t *first, int64_t *end) {
    *first = block * c / CHANNEL_BLOCKS;
    *end = (block + 1) * c / CHANNEL_BLOCKS;
}

// The channels of a block taken at once by the two-pass loops (statistics, then values), so that
// the second pass finds their planes (n · hw floats each, of `arrays` arrays it reads or writes)
// still in the second-level cache: as many as make STRETCH_BYTES, or, where fewer than
// STRETCH_LEAST fit, all of them (shorter stretches of each image's planes, read one after the
// other, were slower than memory: 128 images of 64 × 28 × 28, forward 5.9 → 8.1 ms in stretches
// of 2). 1 thread, Intel Xeon, batchnorm_14 (64 images of 256 × 14 × 14): forward 2.04-2.29 →
// 1.90, backward 2.82-2.97 → 2.22; 112 × 112, 28 × 28 and 7 × 7 planes unchanged.
static int64_t stretch_channels(int64_t n, int64_t hw, int64_t arrays) {
    int64_t channels = STRETCH_BYTES / (arrays * n * hw * (int64_t)sizeof(float));
    return channels >= STRETCH_LEAST ? channels : INT64_MAX;
}

// Channels [first, end)'s moments: each channel's planes merged in image order.
static void block_moments(moments *m, const float *x, int64_t n, int64_t c, int64_t hw, int64_t first, int64_t end) {
    // ROW_GROUP channels' planes of an image at a time (rows_moments: each plane's sums as alone).
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = first; ch < end; ch += ROW_GROUP) {
            int64_t planes = end - ch < ROW_GROUP ? end - ch : ROW_GROUP;
            double mean[ROW_GROUP], m2[ROW_GROUP];
            rows_moments(x + (b * c + ch) * hw, hw, hw, planes, mean, m2);
            for (int64_t r = 0; r < planes; r++) moments_merge(&m[ch + r], &(moments){(double)hw, mean[r], m2[r]});
        }
}

// Channel ch's saved statistics from its moments, and its running statistics' update.
static void channel_statistics(float *mean, float *rstd, float *running_mean, float *running_var, const moments *m,
                               int64_t ch, float eps, float momentum) {
    double variance = m->m2 / m->count;
    rstd[ch] = (float)(1.0 / sqrt(variance + eps));
    bp_split_mean(m->mean, mean + 2 * ch);
    if (running_mean) {
        running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * (float)m->mean;
        float unbiased = (float)(m->m2 / (m->count - 1));
        running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * unbiased;
    }
}

// Channels [first, end) of y, normalised with the saved statistics (and pooled, with `pool`, through
// the block's scratch plane).
static void block_normalize(float *y, const float *x, const float *mean, const float *rstd, const float *gamma,
                            const float *beta, int64_t n, int64_t c, int64_t hw, int relu, const fused_pool *pool,
                            float *scratch, int64_t first, int64_t end) {
    int64_t pooled = pool ? pool->plane.out_h * pool->plane.out_w : 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = first; ch < end; ch++) {
            affine_map map = channel_map(mean, rstd, gamma, beta, ch);
            int64_t plane = b * c + ch;
            if (!pool) {
                run_affine(y + plane * hw, x + plane * hw, hw, &map, relu);
                continue;
            }
            run_affine(scratch, x + plane * hw, hw, &map, relu);
            plane_tiled(y + plane * pooled, pool->index + plane * pooled, scratch, &pool->plane);
        }
}

// The training forward (see bp_batchnorm_forward_train), pooled with `pool`.
static int64_t forward_train(float *y, float *mean, float *rstd, float *running_mean, float *running_var,
                             const float *x, const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw,
                             float eps, float momentum, int relu, const fused_pool *pool) {
    int64_t missing = 0;
    moments *m = bp_calloc(c, sizeof(moments), &missing);
    if (!m) return missing;
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end, step = stretch_channels(n, hw, 2);  // x, y
        channel_block(c, block, &first, &end);
        for (int64_t s0 = first, s1; s0 < end; s0 = s1) {
            s1 = end - s0 > step ? s0 + step : end;
            block_moments(m, x, n, c, hw, s0, s1);
            for (int64_t ch = s0; ch < s1; ch++)
                channel_statistics(mean, rstd, running_mean, running_var, &m[ch], ch, eps, momentum);
            block_normalize(y, x, mean, rstd, gamma, beta, n, c, hw, relu, pool, block_scratch(pool, block), s0, s1);
        }
    }
    free(m);
    return 0;
}

int64_t bp_batchnorm_forward_train(float *y, float *mean, float *rstd, float *running_mean, float *running_var,
                                   const float *x, const float *gamma, const float *beta, int64_t n, int64_t c,
                                   int64_t hw, float eps, float momentum, int relu) {
    return forward_train(y, mean, rstd, running_mean, running_var, x, gamma, beta, n, c, hw, eps, momentum, relu, NULL);
}

int64_t bp_batchnorm_moments(double *out, const float *x, int64_t n, int64_t c, int64_t hw) {
    int64_t missing = 0;
    moments *m = bp_calloc(c, sizeof(moments), &missing);
    if (!m) return missing;
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end;
        channel_block(c, block, &first, &end);
        block_moments(m, x, n, c, hw, first, end);
    }
    for (int64_t ch = 0; ch < c; ch++)
        out[3 * ch] = m[ch].count, out[3 * ch + 1] = m[ch].mean, out[3 * ch + 2] = m[ch].m2;
    free(m);
    return 0;
}

void bp_batchnorm_merge_moments(double *into, const double *other, int64_t c) {
    for (int64_t ch = 0; ch < c; ch++) {
        moments m = {into[3 * ch], into[3 * ch + 1], into[3 * ch + 2]};
        if (other[3 * ch] == 0.0) continue;  // no values: nothing to merge
        if (m.count == 0.0) m = (moments){other[3 * ch], other[3 * ch + 1], other[3 * ch + 2]};
        else moments_merge(&m, &(moments){other[3 * ch], other[3 * ch + 1], other[3 * ch + 2]});
        into[3 * ch] = m.count, into[3 * ch + 1] = m.mean, into[3 * ch + 2] = m.m2;
    }
}

void bp_batchnorm_statistics(float *mean, float *rstd, float *running_mean, float *running_var, const double *m,
                             int64_t c, float eps, float momentum) {
    for (int64_t ch = 0; ch < c; ch++)
        channel_statistics(mean, rstd, running_mean, running_var, &(moments){m[3 * ch], m[3 * ch + 1], m[3 * ch + 2]},
                           ch, eps, momentum);
}

void bp_batchnorm_normalize(float *y, const float *x, const float *mean, const float *rstd, const float *gamma,
                            const float *beta, int64_t n, int64_t c, int64_t hw, int relu) {
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end;
        channel_block(c, block, &first, &end);
        block_normalize(y, x, mean, rstd, gamma, beta, n, c, hw, relu, NULL, NULL, first, end);
    }
}

void bp_batchnorm_forward_eval(float *y, const float *x, const float *running_mean, const float *running_var,
                               const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw, float eps,
                               int relu) {
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t plane = 0; plane < n * c; plane++) {
        int64_t ch = plane % c;
        float scale = (float)(1.0 / sqrt((double)running_var[ch] + eps)) * (gamma ? gamma[ch] : 1.0f);
        run_affine(y + plane * hw, x + plane * hw, hw,
                   &(affine_map){running_mean[ch], 0.0f, scale, beta ? beta[ch] : 0.0f}, relu);
    }
}

// Channels [first, end)'s sums [c, 2]: Σ dy and Σ dy · (x − mean), over their planes in image order.
static void block_gradient_sums(double *sums, const float *dy, const float *x, const float *mean, const float *rstd,
                                const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw, int relu,
                                const fused_pool *pool, float *scratch, int64_t first, int64_t end) {
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = first; ch < end; ch++) {
            affine_map map = channel_map(mean, rstd, gamma, beta, ch);
            int64_t plane = b * c + ch;
            run_gradient_sums(plane_gradient(dy, pool, scratch, plane, hw), x + plane * hw, hw,
                              (double)mean[2 * ch] + mean[2 * ch + 1], &map, relu, &sums[2 * ch], &sums[2 * ch + 1]);
        }
}

// Channel ch's parameter gradients from its sums (of this call's values): dbeta += Σ dy,
// dgamma += Σ dy · x̂ = rstd · Σ dy · (x − mean).
static void channel_parameter_gradients(float *dgamma, float *dbeta, const double *sums, const float *rstd,
                                        int64_t ch) {
    if (dbeta) dbeta[ch] += (float)sums[2 * ch];
    if (dgamma) dgamma[ch] += (float)(sums[2 * ch + 1] * rstd[ch]);
}

// Channel ch's coefficients a, b, k of run_backward from the sums over `count` values:
// dx = g·r·dy − g·r³·(x − mean)·(Σ dy·(x − mean))/count − g·r·(Σdy)/count.
static void channel_coefficients(float *k, const double *sums, const float *rstd, const float *gamma, double count,
                                 int batch_statistics, int64_t ch) {
    double sum_dy = sums[2 * ch], sum_dy_centred = sums[2 * ch + 1];
    double r = rstd[ch], g = gamma ? gamma[ch] : 1.0;
    k[3 * ch] = (float)(g * r);
    k[3 * ch + 1] = batch_statistics ? (float)(-g * r * r * r * sum_dy_centred / count) : 0.0f;
    k[3 * ch + 2] = batch_statistics ? (float)(-g * r * sum_dy / count) : 0.0f;
}

// Channels [first, end) of dx from the coefficients.
static void block_backward(float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                           const float *gamma, const float *beta, const float *coefficients, int64_t n, int64_t c,
                           int64_t hw, int relu, const fused_pool *pool, float *scratch, int64_t first, int64_t end) {
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = first; ch < end; ch++) {
            affine_map map = channel_map(mean, rstd, gamma, beta, ch);
            const float *k = coefficients + 3 * ch;
            int64_t plane = b * c + ch;
            run_backward(dx + plane * hw, plane_gradient(dy, pool, scratch, plane, hw), x + plane * hw, hw, k[0], k[1],
                         mean[2 * ch], mean[2 * ch + 1], k[2], &map, relu);
        }
}

// The backward (see bp_batchnorm_backward), from the pooled gradient with `pool`.
static int64_t backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *mean,
                        const float *rstd, const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw,
                        int batch_statistics, int relu, const fused_pool *pool) {
    int64_t missing = 0;
    double *sums = bp_calloc(2 * c, sizeof(double), &missing);        // [ch]: Σ dy, Σ dy · (x − mean)
    float *coefficients = bp_malloc(3 * c, sizeof(float), &missing);  // [ch]: a, b, k of run_backward
    if (missing) return free(sums), free(coefficients), missing;
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end, step = stretch_channels(n, hw, 3);  // x, dy, dx
        channel_block(c, block, &first, &end);
        float *scratch = block_scratch(pool, block);
        for (int64_t s0 = first, s1; s0 < end; s0 = s1) {
            s1 = end - s0 > step ? s0 + step : end;
            block_gradient_sums(sums, dy, x, mean, rstd, gamma, beta, n, c, hw, relu, pool, scratch, s0, s1);
            for (int64_t ch = s0; ch < s1; ch++) {
                channel_parameter_gradients(dgamma, dbeta, sums, rstd, ch);
                channel_coefficients(coefficients, sums, rstd, gamma, (double)(n * hw), batch_statistics, ch);
            }
            block_backward(dx, dy, x, mean, rstd, gamma, beta, coefficients, n, c, hw, relu, pool, scratch, s0, s1);
        }
    }
    free(sums);
    free(coefficients);
    return 0;
}

int64_t bp_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *gamma, const float *beta, int64_t n,
                              int64_t c, int64_t hw, int batch_statistics, int relu) {
    return backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, n, c, hw, batch_statistics, relu, NULL);
}

// MARK: - Batch normalization, ReLU and a tiled max pooling as one layer

int bp_batchnorm_relu_maxpool_fusable(const bp_pool2d_params *pool) { return is_tiled(pool); }

// The fused pooling of `pool` (tiled) with its argmax `index` and scratch planes for the blocks.
// Returns 0, or the bytes it could not allocate.
static int64_t fused_pool_make(fused_pool *fused, const bp_pool2d_params *pool, uint8_t *index) {
    int64_t missing = 0, hw = pool->h * pool->w;
    *fused = (fused_pool){.plane = *pool, .index = index, .stride = (hw + 15) / 16 * 16};
    fused->plane.n = fused->plane.c = 1;
    fused->scratch = bp_aligned_alloc(64, CHANNEL_BLOCKS * fused->stride, sizeof(float), 0, &missing);
    return missing;
}

int64_t bp_batchnorm_relu_maxpool_forward_train(float *y, uint8_t *index, float *mean, float *rstd, float *running_mean,
                                                float *running_var, const float *x, const float *gamma,
                                                const float *beta, const bp_pool2d_params *pool, float eps,
                                                float momentum) {
    fused_pool fused;
    int64_t missing = fused_pool_make(&fused, pool, index);
    if (!missing)
        missing = forward_train(y, mean, rstd, running_mean, running_var, x, gamma, beta, pool->n, pool->c,
                                pool->h * pool->w, eps, momentum, 1, &fused);
    free(fused.scratch);
    return missing;
}

int64_t bp_batchnorm_relu_maxpool_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                           const uint8_t *index, const float *x, const float *mean, const float *rstd,
                                           const float *gamma, const float *beta, const bp_pool2d_params *pool) {
    fused_pool fused;
    int64_t missing = fused_pool_make(&fused, pool, (uint8_t *)index);
    if (!missing)
        missing = backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, pool->n, pool->c, pool->h * pool->w, 1, 1,
                           &fused);
    free(fused.scratch);
    return missing;
}

void bp_batchnorm_gradient_sums(double *sums, const float *dy, const float *x, const float *mean, const float *rstd,
                                const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw, int relu) {
    memset(sums, 0, (size_t)(2 * c) * sizeof(double));
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end;
        channel_block(c, block, &first, &end);
        block_gradient_sums(sums, dy, x, mean, rstd, gamma, beta, n, c, hw, relu, NULL, NULL, first, end);
    }
}

int64_t bp_batchnorm_backward_from_sums(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                        const float *mean, const float *rstd, const float *gamma, const float *beta,
                                        const double *sums, const double *own_sums, double count, int64_t n, int64_t c,
                                        int64_t hw, int relu) {
    int64_t missing = 0;
    float *coefficients = bp_malloc(3 * c, sizeof(float), &missing);
    if (!coefficients) return missing;
    for (int64_t ch = 0; ch < c; ch++) {
        channel_parameter_gradients(dgamma, dbeta, own_sums, rstd, ch);
        channel_coefficients(coefficients, sums, rstd, gamma, count, 1, ch);
    }
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < CHANNEL_BLOCKS; block++) {
        int64_t first, end;
        channel_block(c, block, &first, &end);
        block_backward(dx, dy, x, mean, rstd, gamma, beta, coefficients, n, c, hw, relu, NULL, NULL, first, end);
    }
    free(coefficients);
    return 0;
}

// MARK: - Layer normalization: one row per iteration

// y = ((x − mean[0]) − mean[1]) · r · gamma + beta, gamma and beta 1 and 0 where NULL. Inlined
// with constant `scaled` (gamma given) and `shifted` (beta given): the same expression, the same
// bits, in a loop without tests. (A test per element becomes masked loads, which on Intel cores
// take a slow assist where the address is not mapped: without gamma and beta, 8192 rows of 768
// took 17.4 ms on an Intel Xeon against 2.6 with them.) Measured on an Intel Xeon, 8192 rows of
// 768: 1 thread 2.78–2.97 → 2.62–2.94 ms, 2 threads 1.43–1.61 → 1.37–1.40.
__attribute__((always_inline)) static inline void affine_row(float *y, const float *x, int64_t d, const float *mean,
                                                             float r, const float *gamma, const float *beta, int scaled,
                                                             int shifted) {
    for (int64_t j = 0; j < d; j++) {
        float v = ((x[j] - mean[0]) - mean[1]) * r;
        y[j] = v * (scaled ? gamma[j] : 1.0f) + (shifted ? beta[j] : 0.0f);
    }
}

BP_MULTIVERSION
static void row_affine(float *y, const float *x, int64_t d, const float *mean, float r, const float *gamma,
                       const float *beta) {
    if (gamma && beta) affine_row(y, x, d, mean, r, gamma, beta, 1, 1);
    else if (gamma) affine_row(y, x, d, mean, r, gamma, beta, 1, 0);
    else if (beta) affine_row(y, x, d, mean, r, gamma, beta, 0, 1);
    else affine_row(y, x, d, mean, r, gamma, beta, 0, 0);
}

// affine_row of row x and, in the same pass, Σ (v − dev_mean)² over another row `dev_row` (as
// runs_squared_deviation takes it) and the mean of a third row `next` (as runs_mean): the same sums
// in the same order. The third row's loads from memory overlap the arithmetic and the stores,
// which separate passes did not (8192 rows of 768 on an Intel Xeon: 1 thread 2.80 → 2.48 ms,
// 2 threads 1.35 → 1.24, medians of interleaved runs).
__attribute__((always_inline)) static inline void
affine_deviation_mean(float *restrict y, const float *restrict x, int64_t d, const float *mean, float r,
                      const float *restrict gamma, const float *restrict beta, int scaled, int shifted,
                      const float *restrict dev_row, double dev_mean, double *dev_m2, const float *restrict next,
                      double *next_mean) {
    float hi = (float)dev_mean, lo = (float)(dev_mean - hi), shift = next[0];
    double m2 = 0.0, total = 0.0;
    for (int64_t start = 0; start < d; start += LANE_BLOCK) {
        int64_t end = start + LANE_BLOCK < d ? start + LANE_BLOCK : d, j = start;
        float dev_lanes[8] = {0}, mean_lanes[8] = {0};
        for (; j + 8 <= end; j += 8)
            for (int l = 0; l < 8; l++) {
                // affine_row's expression, written out: through an inline helper clang kept the loop scalar
                float v = ((x[j + l] - mean[0]) - mean[1]) * r;
                y[j + l] = v * (scaled ? gamma[j + l] : 1.0f) + (shifted ? beta[j + l] : 0.0f);
                float e = (dev_row[j + l] - hi) - lo;
                dev_lanes[l] += e * e;
                mean_lanes[l] += next[j + l] - shift;
            }
        affine_row(y + j, x + j, end - j, mean, r, scaled ? gamma + j : NULL, shifted ? beta + j : NULL, scaled,
                   shifted);
        for (int64_t k = j; k < end; k++) m2 += ((dev_row[k] - hi) - lo) * ((dev_row[k] - hi) - lo);
        for (int l = 0; l < 8; l++) m2 += dev_lanes[l];
        for (int64_t k = j; k < end; k++) total += next[k] - shift;
        for (int l = 0; l < 8; l++) total += mean_lanes[l];
    }
    *dev_m2 = m2;
    *next_mean = shift + total / (double)d;
}

BP_MULTIVERSION
static void row_affine_deviation_mean(float *y, const float *x, int64_t d, const float *mean, float r,
                                      const float *gamma, const float *beta, const float *dev_row, double dev_mean,
                                      double *dev_m2, const float *next, double *next_mean) {
#define PASS(scaled, shifted)                                                                                          \
    affine_deviation_mean(y, x, d, mean, r, gamma, beta, scaled, shifted, dev_row, dev_mean, dev_m2, next, next_mean)
    if (gamma && beta) PASS(1, 1);
    else if (gamma) PASS(1, 0);
    else if (beta) PASS(0, 1);
    else PASS(0, 0);
#undef PASS
}

// A run of a row's output computed in the first-level cache, then streamed out (bp_stream_copy).
enum { STREAM_RUN = 512 };

// Whether the output of `rows` rows of d is streamed: where it is large (BP_STREAM_MIN) and a row of
// it and one of the input (16 KB or more each) would not stay together in a 32 KB first-level cache
// for the row's passes. Measured on Zen 4, 1 thread: 2048 × 4096 forward 5.8 → 4.1 ms, backward 9.1
// → 7.3; but 8192 × 768 2.1 → 2.7 and 2.9 → 3.9 (its rows stay in cache; streaming only slows the
// stores), 4096 × 1536 about even.
static int streams(int64_t rows, int64_t d) {
    return d * (int64_t)sizeof(float) >= 16 * 1024 && rows * d * (int64_t)sizeof(float) >= BP_STREAM_MIN;
}

// The rows of group `group` of ROW_GROUP rows (the last may be short).
static int64_t group_rows(int64_t rows, int64_t group) {
    return rows - group * ROW_GROUP < ROW_GROUP ? rows - group * ROW_GROUP : ROW_GROUP;
}

// Row `row`'s mean (as a pair: bp_split_mean) and rstd from its mean and Σ (x − mean)²; returns rstd.
static float row_statistics(double mu, double m2, int64_t d, float eps, float *mean, float *rstd, int64_t row) {
    bp_split_mean(mu, mean + 2 * row);
    return rstd[row] = (float)(1.0 / sqrt(m2 / (double)d + eps));
}

// Rows of 16 KB or more, whose output is streamed past the caches: per group of ROW_GROUP rows,
// their statistics (rows_moments), then each row in runs computed in cache and streamed out.
static void streamed_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                             int64_t rows, int64_t d, float eps) {
    int64_t groups = (rows + ROW_GROUP - 1) / ROW_GROUP;
#pragma omp parallel for schedule(static) if (rows * d >= BP_PARALLEL_MIN)
    for (int64_t group = 0; group < groups; group++) {
        int64_t first = group * ROW_GROUP, count = group_rows(rows, group);
        double mu[ROW_GROUP], m2[ROW_GROUP];
        rows_moments(x + first * d, d, d, count, mu, m2);
        for (int64_t k = 0, row = first; k < count; k++, row++) {
            float r = row_statistics(mu[k], m2[k], d, eps, mean, rstd, row);
            for (int64_t j = 0; j < d; j += STREAM_RUN) {
                int64_t run_count = d - j < STREAM_RUN ? d - j : STREAM_RUN;
                float run[STREAM_RUN];
                row_affine(run, x + row * d + j, run_count, mean + 2 * row, r, gamma ? gamma + j : NULL,
                           beta ? beta + j : NULL);
                bp_stream_copy(y + row * d + j, run, run_count);
            }
        }
    }
    bp_stream_fence();
}

// Whether the forward takes its rows one at a time (each row's statistics, then its output, from
// the first-level cache) rather than in pipelined groups (below): the same sums, the same bits.
// Rows alone are bound by the latency of each row's lane sums (8 floats per add), which groups
// interleave; on AMD cores with AVX-512 (Zen 4) rows of 128 floats or more run faster alone all
// the same (1 thread, min of 20: 8192 rows of 768 4.1-4.3 → 2.4-2.7 ms, of 1000 5.4-5.7 → 3.5-3.6,
// 16384 of 256 2.5-3.3 → 2.1-2.3; 65536 of 64 2.2-2.4 → 3.0). Elsewhere the groups win: on a Zen 3
// core (AVX2), medians of 30, 8192 rows of 768 3.9-4.1 ms alone against 3.1-3.4 in groups, of 1000
// 5.3 against 4.2, 16384 of 256 2.6 against 2.2; on an Intel Xeon 8192 of 768 3.3-3.4 against 2.5.
static int rows_alone(int64_t d) { return d >= 128 && bp_cpu_is_amd_avx512(); }

void bp_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                          int64_t rows, int64_t d, float eps) {
    if (streams(rows, d)) {
        streamed_forward(y, mean, rstd, x, gamma, beta, rows, d, eps);
        return;
    }
    if (rows_alone(d)) {
#pragma omp parallel for schedule(static) if (rows * d >= BP_PARALLEL_MIN)
        for (int64_t row = 0; row < rows; row++) {
            double mu, m2;
            rows_moments(x + row * d, d, d, 1, &mu, &m2);
            float r = row_statistics(mu, m2, d, eps, mean, rstd, row);
            row_affine(y + row * d, x + row * d, d, mean + 2 * row, r, gamma, beta);
        }
        return;
    }
    int64_t groups = (rows + ROW_GROUP - 1) / ROW_GROUP;
    int64_t shares = rows * d >= BP_PARALLEL_MIN ? bp_num_threads() : 1;
    // Each thread normalises a run of groups of ROW_GROUP rows (rows_moments' statistics), the pass
    // over a group's row k also taking the squared deviations of row k of the next group and the
    // mean of row k of the one after (row_affine_deviation_mean); the run's first two groups' and
    // the last rows' statistics by themselves.
#pragma omp parallel for schedule(static) if (shares > 1)
    for (int64_t share = 0; share < shares; share++) {
        int64_t g0 = share * groups / shares, g1 = (share + 1) * groups / shares;
        double mu[3][ROW_GROUP], m2[2][ROW_GROUP];  // of this group, the next and (mu) the one after
        if (g0 < g1) rows_moments(x + g0 * ROW_GROUP * d, d, d, group_rows(rows, g0), mu[0], m2[0]);
        if (g0 + 1 < g1) rows_means(x + (g0 + 1) * ROW_GROUP * d, d, d, group_rows(rows, g0 + 1), mu[1]);
        for (int64_t group = g0; group < g1; group++) {
            int64_t first = group * ROW_GROUP, count = group_rows(rows, group);
            int64_t next = group + 1 < g1 ? group_rows(rows, group + 1) : 0;   // at most `count`
            int64_t after = group + 2 < g1 ? group_rows(rows, group + 2) : 0;  // at most `next`
            for (int64_t k = 0, row = first; k < count; k++, row++) {
                const float *xr = x + row * d;
                float r = row_statistics(mu[0][k], m2[0][k], d, eps, mean, rstd, row);
                if (k < after)
                    row_affine_deviation_mean(y + row * d, xr, d, mean + 2 * row, r, gamma, beta, xr + ROW_GROUP * d,
                                              mu[1][k], &m2[1][k], xr + 2 * ROW_GROUP * d, &mu[2][k]);
                else row_affine(y + row * d, xr, d, mean + 2 * row, r, gamma, beta);
                if (k >= after && k < next) rows_squared_deviations(xr + ROW_GROUP * d, d, d, 1, &mu[1][k], &m2[1][k]);
            }
            memcpy(mu[0], mu[1], sizeof mu[0]), memcpy(mu[1], mu[2], sizeof mu[1]);
            memcpy(m2[0], m2[1], sizeof m2[0]);
        }
    }
}

// The first pass of a row of the layer-norm backward over its first d8 elements (a multiple of 8):
// the block's partials dgamma += dy · x̂ and dbeta += dy (`partials`: 0 none, 1 dgamma, 2 both) and
// the row sums Σ g, Σ g · x̂ in 8 float lanes, lane l taking the elements j ≡ l mod 8 in order.
// Inlined with constant `partials` and `scaled` (g = dy · gamma, or dy), so that the loop has no
// test and no conditional load, which the vectoriser needs.
__attribute__((always_inline)) static inline void row_first_pass(float *restrict dgamma, float *restrict dbeta,
                                                                 float lanes_g[8], float lanes_gx[8],
                                                                 const float *restrict dy, const float *restrict x,
                                                                 const float *restrict gamma, float hi, float lo,
                                                                 float r, int64_t d8, int partials, int scaled) {
    for (int64_t j = 0; j < d8; j += 8)
        for (int l = 0; l < 8; l++) {
            float dyj = dy[j + l], xhat = ((x[j + l] - hi) - lo) * r, g = scaled ? dyj * gamma[j + l] : dyj;
            if (partials >= 1) dgamma[j + l] += dyj * xhat;
            if (partials == 2) dbeta[j + l] += dyj;
            lanes_g[l] += g;
            lanes_gx[l] += g * xhat;
        }
}

// dx = r · (g − mean_g − x̂ · mean_g_xhat) over `d` elements of a row.
__attribute__((always_inline)) static inline void row_dx(float *restrict dx, const float *restrict dy,
                                                         const float *restrict x, const float *restrict gamma, float hi,
                                                         float lo, float r, float mean_g, float mean_g_xhat,
                                                         int64_t d) {
    if (gamma)
        for (int64_t j = 0; j < d; j++) dx[j] = r * (dy[j] * gamma[j] - mean_g - ((x[j] - hi) - lo) * r * mean_g_xhat);
    else
        for (int64_t j = 0; j < d; j++) dx[j] = r * (dy[j] - mean_g - ((x[j] - hi) - lo) * r * mean_g_xhat);
}

// One row of the layer-norm backward, g = dy · gamma (gamma NULL: 1), x̂ = (x − mean) · r:
//
//   dgamma += dy · x̂,  dbeta += dy    (the block's partials; NULL: not wanted)
//   dx = r · (g − mean(g) − x̂ · mean(g · x̂))
//
// in two passes: row_first_pass, whose lanes are added up in double with the last d mod 8
// elements, then dx (streamed out when `stream`).
BP_MULTIVERSION
static void layernorm_row_backward(float *restrict dx, float *restrict dgamma, float *restrict dbeta,
                                   const float *restrict dy, const float *restrict x, const float *mean, float r,
                                   const float *restrict gamma, int64_t d, int stream) {
    const float hi = mean[0], lo = mean[1];
    float lanes_g[8] = {0}, lanes_gx[8] = {0};
    int64_t d8 = d / 8 * 8;
#define FIRST_PASS(partials, scaled)                                                                                   \
    row_first_pass(dgamma, dbeta, lanes_g, lanes_gx, dy, x, gamma, hi, lo, r, d8, partials, scaled)
    if (dgamma && dbeta) gamma ? FIRST_PASS(2, 1) : FIRST_PASS(2, 0);
    else if (dgamma) gamma ? FIRST_PASS(1, 1) : FIRST_PASS(1, 0);
    else gamma ? FIRST_PASS(0, 1) : FIRST_PASS(0, 0);
#undef FIRST_PASS
    double sum_g = 0.0, sum_g_xhat = 0.0;
    for (int64_t j = d8; j < d; j++) {
        float xhat = ((x[j] - hi) - lo) * r, g = dy[j] * (gamma ? gamma[j] : 1.0f);
        if (dgamma) dgamma[j] += dy[j] * xhat;
        if (dbeta) dbeta[j] += dy[j];
        sum_g += g, sum_g_xhat += g * xhat;
    }
    for (int l = 0; l < 8; l++) sum_g += lanes_g[l], sum_g_xhat += lanes_gx[l];
    float mean_g = (float)(sum_g / (double)d), mean_g_xhat = (float)(sum_g_xhat / (double)d);
    if (!stream) {
        row_dx(dx, dy, x, gamma, hi, lo, r, mean_g, mean_g_xhat, d);
        return;
    }
    for (int64_t j = 0; j < d; j += STREAM_RUN) {
        int64_t count = d - j < STREAM_RUN ? d - j : STREAM_RUN;
        float run[STREAM_RUN];
        row_dx(run, dy + j, x + j, gamma ? gamma + j : NULL, hi, lo, r, mean_g, mean_g_xhat, count);
        bp_stream_copy(dx + j, run, count);
    }
}

enum { LAYERNORM_BLOCKS = 8 };

int64_t bp_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *gamma, int64_t rows, int64_t d) {
    int64_t blocks = rows < LAYERNORM_BLOCKS ? rows : LAYERNORM_BLOCKS, missing = 0;
    float *partial = bp_calloc(2 * blocks * d, sizeof(float), &missing);  // [block][dgamma | dbeta][d]
    if (!partial) return missing;
    int stream = streams(rows, d);
#pragma omp parallel for schedule(static) if (rows * d >= BP_PARALLEL_MIN)
    for (int64_t block = 0; block < blocks; block++) {
        float *pg = dgamma ? partial + 2 * block * d : NULL, *pb = dbeta ? partial + (2 * block + 1) * d : NULL;
        for (int64_t row = block * rows / blocks; row < (block + 1) * rows / blocks; row++)
            layernorm_row_backward(dx + row * d, pg, pb, dy + row * d, x + row * d, mean + 2 * row, rstd[row], gamma, d,
                                   stream);
    }
    bp_stream_fence();
    for (int64_t j = 0; j < d; j++) {
        double sum_g = 0.0, sum_b = 0.0;
        for (int64_t block = 0; block < blocks; block++)
            sum_g += partial[2 * block * d + j], sum_b += partial[(2 * block + 1) * d + j];
        if (dgamma) dgamma[j] += (float)sum_g;
        if (dbeta) dbeta[j] += (float)sum_b;
    }
    free(partial);
    return 0;
}
