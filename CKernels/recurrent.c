// Recurrent layers: one direction of one layer of an Elman RNN, LSTM or GRU over a batch-first
// sequence, forward and backward through time (see bp_rnn_params in CKernels.h for the math).
//
// The products that do not depend on the previous step are one product over all steps (bp_sgemm):
// the input projection xp = x · W_ihᵀ + b_ih forward, and dx, dW_ih, dW_hh and the biases backward.
// Only the hidden product hp = h · W_hhᵀ + b_hh (backward: dh · W_hh) and the gate math run step by
// step: W_hh is packed once per call for bp_packed_times_rows, which packs only the batch's states
// at each step; the gates of a step are computed in one pass over each batch row, in parallel over
// rows (each row's state belongs to one thread). No result depends on the thread count.
#include "CKernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t bp_rnn_gates(int32_t kind) { return kind == BP_LSTM ? 4 : kind == BP_GRU ? 3 : 1; }

int64_t bp_rnn_saved_per_row(const bp_rnn_params *p) {
    int64_t gh = bp_rnn_gates(p->kind) * p->hidden;
    return p->kind == BP_LSTM || p->kind == BP_GRU ? gh + p->hidden : 0;
}

// σ and tanh through bp_expf, so that the cells' loops vectorise (within a few float ulp of libm's).
__attribute__((always_inline)) static inline float sigmoid(float v) { return 1.0f / (1.0f + bp_expf(-v)); }
__attribute__((always_inline)) static inline float tanh_fast(float v) {
    return 1.0f - 2.0f / (bp_expf(2.0f * v) + 1.0f);
}

// The step of the forward that processes k-th: t − 1 − k for the reverse direction.
static int64_t step_at(const bp_rnn_params *p, int64_t k) { return p->reverse ? p->t - 1 - k : k; }

// One batch row of one step: pre = xp + hp (GRU: the n gate as xp_n + r ⊙ hp_n), the gates,
// and the new state into h (and c), this step's output into out, what the backward needs into saved.
BP_MULTIVERSION
static void cell_forward(float *restrict h, float *restrict c, float *restrict out, float *restrict saved,
                         const float *restrict xp, const float *restrict hp, const bp_rnn_params *p) {
    int64_t hidden = p->hidden;
    switch (p->kind) {
    case BP_RNN_TANH:
    case BP_RNN_RELU:
        for (int64_t j = 0; j < hidden; j++) {
            float a = xp[j] + hp[j];
            h[j] = p->kind == BP_RNN_TANH ? tanh_fast(a) : (a > 0.0f ? a : 0.0f);
        }
        break;
    case BP_LSTM:
        // saved: i, f, g, o [4H], then c_t [H].
        for (int64_t j = 0; j < hidden; j++) {
            float i = sigmoid(xp[j] + hp[j]), f = sigmoid(xp[hidden + j] + hp[hidden + j]);
            float g = tanh_fast(xp[2 * hidden + j] + hp[2 * hidden + j]),
                  o = sigmoid(xp[3 * hidden + j] + hp[3 * hidden + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * tanh_fast(c[j]);
            if (!saved) continue;
            saved[j] = i, saved[hidden + j] = f, saved[2 * hidden + j] = g, saved[3 * hidden + j] = o;
            saved[4 * hidden + j] = c[j];
        }
        break;
    case BP_GRU:
        // saved: r, z, n [3H], then hp_n = W_hn h_{t−1} + b_hn [H].
        for (int64_t j = 0; j < hidden; j++) {
            float r = sigmoid(xp[j] + hp[j]), z = sigmoid(xp[hidden + j] + hp[hidden + j]);
            float n = tanh_fast(xp[2 * hidden + j] + r * hp[2 * hidden + j]);
            if (saved)
                saved[j] = r, saved[hidden + j] = z, saved[2 * hidden + j] = n,
                saved[3 * hidden + j] = hp[2 * hidden + j];
            h[j] = (1.0f - z) * n + z * h[j];
        }
        break;
    }
    memcpy(out, h, (size_t)hidden * sizeof(float));
}

// rows[r][j] += bias[j] for r < count, g columns.
static void add_bias(float *rows, const float *bias, int64_t count, int64_t g) {
    if (!bias) return;
    for (int64_t r = 0; r < count; r++)
        for (int64_t j = 0; j < g; j++) rows[r * g + j] += bias[j];
}

int64_t bp_rnn_forward(float *y, float *h_n, float *c_n, float *saved, const float *x, const float *h0, const float *c0,
                       const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh,
                       const bp_rnn_params *p) {
    int64_t n = p->n, t = p->t, hidden = p->hidden, gh = bp_rnn_gates(p->kind) * hidden, missing = 0;
    int64_t per_row = bp_rnn_saved_per_row(p);
    float *xp = bp_malloc(n * t, gh * (int64_t)sizeof(float), &missing);
    float *hp = bp_malloc(n, gh * (int64_t)sizeof(float), &missing),
          *hp_t = bp_malloc(n, gh * (int64_t)sizeof(float), &missing);
    float *h = bp_calloc(n * hidden, sizeof(float), &missing), *c = bp_calloc(n * hidden, sizeof(float), &missing);
    float *states = bp_aligned_alloc(64, bp_packed_x_floats(n, hidden), sizeof(float), 0, &missing);
    bp_packed whh = {0};
    if (!missing) missing = bp_pack(&whh, w_hh, hidden, gh, hidden, 0);
    if (missing) goto done;
    if (h0) memcpy(h, h0, (size_t)(n * hidden) * sizeof(float));
    if (c0 && p->kind == BP_LSTM) memcpy(c, c0, (size_t)(n * hidden) * sizeof(float));
    // xp [n · t, G·H] = x [n · t, input] · W_ihᵀ + b_ih: row b · t + s is batch row b at step s.
    bp_sgemm(0, 1, n * t, gh, p->input, 1.0f, x, p->input, w_ih, p->input, 0.0f, xp, gh);
    add_bias(xp, b_ih, n * t, gh);
    for (int64_t k = 0; k < t; k++) {
        int64_t s = step_at(p, k);
        // hp [n, G·H] = h · W_hhᵀ + b_hh, through its transpose W_hh · hᵀ [G·H, n].
        bp_packed_times_rows(hp_t, n, &whh, h, hidden, n, states);
#pragma omp parallel for schedule(static) if (n * gh >= BP_PARALLEL_MIN)
        for (int64_t b = 0; b < n; b++) {
            float *row = hp + b * gh;  // row b of hp: column b of its transpose, plus the bias
            for (int64_t j = 0; j < gh; j++) row[j] = hp_t[j * n + b] + (b_hh ? b_hh[j] : 0.0f);
            cell_forward(h + b * hidden, c + b * hidden, y + (b * t + s) * p->y_stride + p->y_offset,
                         saved ? saved + (b * t + s) * per_row : NULL, xp + (b * t + s) * gh, row, p);
        }
    }
    if (h_n) memcpy(h_n, h, (size_t)(n * hidden) * sizeof(float));
    if (c_n && p->kind == BP_LSTM) memcpy(c_n, c, (size_t)(n * hidden) * sizeof(float));
done:
    free(xp), free(hp), free(hp_t), free(h), free(c), free(states), bp_packed_free(&whh);
    return missing;
}

// One batch row of one step backward. dh: ∂J/∂h_t in (the output's gradient added), ∂J/∂h_{t−1} out
// for the part that does not pass through W_hh (GRU's z ⊙ dh; 0 otherwise). dc: ∂J/∂c_t in,
// ∂J/∂c_{t−1} out (LSTM). gi, gh: the gradients of the input and the hidden pre-activations.
BP_MULTIVERSION
static void cell_backward(float *restrict dh, float *restrict dc, float *restrict gi, float *restrict gh,
                          const float *restrict h, const float *restrict h_prev, const float *restrict c_prev,
                          const float *restrict saved, const bp_rnn_params *p) {
    int64_t hidden = p->hidden;
    switch (p->kind) {
    case BP_RNN_TANH:
    case BP_RNN_RELU:
        for (int64_t j = 0; j < hidden; j++) {
            float d = p->kind == BP_RNN_TANH ? dh[j] * (1.0f - h[j] * h[j]) : (h[j] > 0.0f ? dh[j] : 0.0f);
            gi[j] = gh[j] = d;
            dh[j] = 0.0f;
        }
        break;
    case BP_LSTM:
        for (int64_t j = 0; j < hidden; j++) {
            float i = saved[j], f = saved[hidden + j], g = saved[2 * hidden + j], o = saved[3 * hidden + j];
            float tc = tanh_fast(saved[4 * hidden + j]);
            float dct = dc[j] + dh[j] * o * (1.0f - tc * tc);
            float di = dct * g, df = dct * c_prev[j], dg = dct * i, dout = dh[j] * tc;
            gi[j] = di * i * (1.0f - i);
            gi[hidden + j] = df * f * (1.0f - f);
            gi[2 * hidden + j] = dg * (1.0f - g * g);
            gi[3 * hidden + j] = dout * o * (1.0f - o);
            dc[j] = dct * f;
            dh[j] = 0.0f;
        }
        memcpy(gh, gi, (size_t)(4 * hidden) * sizeof(float));
        break;
    case BP_GRU:
        for (int64_t j = 0; j < hidden; j++) {
            float r = saved[j], z = saved[hidden + j], n = saved[2 * hidden + j], hn = saved[3 * hidden + j];
            float dn = dh[j] * (1.0f - z), dz = dh[j] * (h_prev[j] - n);
            float dan = dn * (1.0f - n * n), dr = dan * hn;
            gi[j] = gh[j] = dr * r * (1.0f - r);
            gi[hidden + j] = gh[hidden + j] = dz * z * (1.0f - z);
            gi[2 * hidden + j] = dan;
            gh[2 * hidden + j] = dan * r;
            dh[j] = dh[j] * z;
        }
        break;
    }
}

enum { SUM_COLUMNS = 256 };  // columns of the bias sums per parallel iteration

// Σ over columns [first, first + width) of `count` rows of g columns into sum (+=): row by row in
// order, in double, read along the rows.
BP_MULTIVERSION
static void add_column_sums(float *sum, const float *rows, int64_t count, int64_t g, int64_t first, int64_t width) {
    double total[SUM_COLUMNS] = {0};
    for (int64_t r = 0; r < count; r++)
        for (int64_t j = 0; j < width; j++) total[j] += rows[r * g + first + j];
    for (int64_t j = 0; j < width; j++) sum[first + j] += (float)total[j];
}

// Σ over `count` rows of g columns into sum (+=), each column's rows in order: the same sums for
// any split of the columns between threads.
static void add_row_sums(float *sum, const float *rows, int64_t count, int64_t g) {
    if (!sum) return;
#pragma omp parallel for schedule(static) if (count * g >= BP_PARALLEL_MIN)
    for (int64_t first = 0; first < g; first += SUM_COLUMNS)
        add_column_sums(sum, rows, count, g, first, g - first < SUM_COLUMNS ? g - first : SUM_COLUMNS);
}

int64_t bp_rnn_backward(float *dx, float *dh0, float *dc0, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh,
                        const float *dy, const float *dh_n, const float *dc_n, const float *saved, const float *y,
                        const float *x, const float *h0, const float *c0, const float *w_ih, const float *w_hh,
                        int accumulate_dx, const bp_rnn_params *p) {
    int64_t n = p->n, t = p->t, hidden = p->hidden, gh = bp_rnn_gates(p->kind) * hidden, missing = 0;
    int64_t per_row = bp_rnn_saved_per_row(p);
    float *gi = bp_malloc(n * t, gh * (int64_t)sizeof(float), &missing);
    float *gh_rows = p->kind == BP_GRU ? bp_malloc(n * t, gh * (int64_t)sizeof(float), &missing) : gi;
    float *h_prev = bp_malloc(n * t, hidden * (int64_t)sizeof(float), &missing);  // [b · t + s]: h_{t−1} of that step
    float *dh = bp_calloc(n * hidden, sizeof(float), &missing), *dc = bp_calloc(n * hidden, sizeof(float), &missing);
    float *zeros = bp_calloc(hidden, sizeof(float), &missing), *dh_t = bp_malloc(n * hidden, sizeof(float), &missing);
    float *grads = bp_aligned_alloc(64, bp_packed_x_floats(n, gh), sizeof(float), 0, &missing);
    bp_packed whh_t = {0};  // W_hhᵀ [H, G·H]
    if (!missing) missing = bp_pack(&whh_t, w_hh, hidden, hidden, gh, 1);
    if (missing) goto done;
    if (dh_n) memcpy(dh, dh_n, (size_t)(n * hidden) * sizeof(float));
    if (dc_n && p->kind == BP_LSTM) memcpy(dc, dc_n, (size_t)(n * hidden) * sizeof(float));
    for (int64_t b = 0; b < n; b++)
        for (int64_t k = 0; k < t; k++) {
            int64_t s = step_at(p, k);
            const float *prev = k > 0 ? y + (b * t + step_at(p, k - 1)) * p->y_stride + p->y_offset
                                : h0  ? h0 + b * hidden
                                      : zeros;
            memcpy(h_prev + (b * t + s) * hidden, prev, (size_t)hidden * sizeof(float));
        }
    // Each step adds the previous step's product (dh_t, transposed) into dh before the output's
    // gradient, in the same pass over the row as its cell.
    for (int64_t k = t - 1; k >= 0; k--) {
        int64_t s = step_at(p, k);
        int pending = k < t - 1;
#pragma omp parallel for schedule(static) if (n * gh >= BP_PARALLEL_MIN)
        for (int64_t b = 0; b < n; b++) {
            int64_t row = b * t + s;
            float *dhb = dh + b * hidden;
            const float *dyb = dy + row * p->y_stride + p->y_offset;
            if (pending)
                for (int64_t j = 0; j < hidden; j++) dhb[j] += dh_t[j * n + b];
            for (int64_t j = 0; j < hidden; j++) dhb[j] += dyb[j];
            const float *c_prev = p->kind != BP_LSTM ? NULL
                                  : k > 0            ? saved + (b * t + step_at(p, k - 1)) * per_row + 4 * hidden
                                  : c0               ? c0 + b * hidden
                                                     : zeros;
            cell_backward(dhb, dc + b * hidden, gi + row * gh, gh_rows + row * gh, y + row * p->y_stride + p->y_offset,
                          h_prev + row * hidden, c_prev, saved ? saved + row * per_row : NULL, p);
        }
        // dh_{t−1} (+)= the step's hidden pre-activation gradients · W_hh (their rows are t · G·H
        // apart), through its transpose W_hhᵀ · ghᵀ [H, n].
        bp_packed_times_rows(dh_t, n, &whh_t, gh_rows + s * gh, t * gh, n, grads);
    }
    for (int64_t b = 0; b < n; b++)
        for (int64_t j = 0; j < hidden; j++) dh[b * hidden + j] += dh_t[j * n + b];
    if (dh0) memcpy(dh0, dh, (size_t)(n * hidden) * sizeof(float));
    if (dc0 && p->kind == BP_LSTM) memcpy(dc0, dc, (size_t)(n * hidden) * sizeof(float));
    // dW_ih += giᵀ · x, dW_hh += ghᵀ · h_prev, over every row of every step at once.
    bp_sgemm(1, 0, gh, p->input, n * t, 1.0f, gi, gh, x, p->input, 1.0f, dw_ih, p->input);
    bp_sgemm(1, 0, gh, hidden, n * t, 1.0f, gh_rows, gh, h_prev, hidden, 1.0f, dw_hh, hidden);
    add_row_sums(db_ih, gi, n * t, gh);
    add_row_sums(db_hh, gh_rows, n * t, gh);
    if (dx)
        bp_sgemm(0, 0, n * t, p->input, gh, 1.0f, gi, gh, w_ih, p->input, accumulate_dx ? 1.0f : 0.0f, dx, p->input);
done:
    free(gi), free(h_prev), free(dh), free(dc), free(zeros), free(dh_t), free(grads), bp_packed_free(&whh_t);
    if (gh_rows != gi) free(gh_rows);
    return missing;
}
