// Tiled windows: stride = kernel, no padding or dilation.
//
// The windows tile the top-left out_h·kh × out_w·kw block of the plane without overlapping, so
// each output's taps are read straight into registers, and in the backward each input gradient
// element is written exactly once (max: dy at the argmax, 0 elsewhere; average: dy / divisor),
// with no zeroing pass and no read-modify-write. The common 2×2 case runs 8 windows at a time in
// portable vectors. Max and average give the same bits as the general path. At most
// BP_ARGMAX8_MAX_TAPS taps (one-byte indices).
#include "pool2d.h"

int is_tiled(const bp_pool2d_params *p) {
    return !p->adaptive && p->stride_h == p->kernel_h && p->stride_w == p->kernel_w && p->pad_h == 0 && p->pad_w == 0 &&
           p->dilation_h == 1 && p->dilation_w == 1 && p->out_h * p->kernel_h <= p->h &&
           p->out_w * p->kernel_w <= p->w && p->kernel_h * p->kernel_w <= BP_ARGMAX8_MAX_TAPS;
}

// PyTorch's rule for the next tap v against the best so far: it takes over when larger or NaN.
#define MAX_TAKE(v, number)                                                                                            \
    do {                                                                                                               \
        int take_ = (v > best) | (v != v);                                                                             \
        best = take_ ? v : best;                                                                                       \
        tap = take_ ? (number) : tap;                                                                                  \
    } while (0)

// A row's last group of windows may be short (count < 8). With `room` (the plane goes on for at
// least a group past the row: every row but the last few), it is still read and written as a
// full group: the extra loads read the next row, and the extra stores write where the next row's
// outputs (or the memset of uncovered columns) go later. Without, it goes through padded copies.

// The four taps of up to 8 consecutive 2×2 windows whose rows start at r0 and r1, in row-major
// tap order: taps[0] = top left … taps[3] = bottom right.
__attribute__((always_inline)) static inline void load_2x2(v8f taps[4], const float *r0, const float *r1, int64_t count,
                                                           int room) {
    float top[16] = {0}, bottom[16] = {0};
    if (count < 8 && !room) {
        bp_copy_short(top, r0, 2 * count);
        bp_copy_short(bottom, r1, 2 * count);
        r0 = top, r1 = bottom;
    }
    split_pairs(&taps[0], &taps[1], r0);
    split_pairs(&taps[2], &taps[3], r1);
}

// Row ti of up to 8 windows' input gradient: row[2i] = left[i], row[2i + 1] = right[i].
__attribute__((always_inline)) static inline void store_pairs(float *row, const v8f *left, const v8f *right,
                                                              int64_t count, int room) {
    if (count == 8 || room) {
        join_pairs(row, left, right);
        return;
    }
    float out[16];
    join_pairs(out, left, right);
    bp_copy_short(row, out, 2 * count);
}

// Up to 8 gradients (+0.0f turns −0 into +0, as adding them to a zeroed gradient would) and
// their windows' argmax (−1 past count, matching no tap).
__attribute__((always_inline)) static inline void load_gradients(v8f *grad, v8i *tap, const float *dy,
                                                                 const uint8_t *index, int64_t count, int room) {
    if (count == 8 || room) {
        memcpy(grad, dy, 32);
        *tap = (v8i){0} - 1;
        if (index) widen_taps(tap, index);
    } else {
        float g[8] = {0};
        int32_t t[8] = {-1, -1, -1, -1, -1, -1, -1, -1};
        bp_copy_short(g, dy, count);
        if (index)
            for (int64_t i = 0; i < count; i++) t[i] = index[i];
        memcpy(grad, g, 32);
        memcpy(tap, t, 32);
    }
    *grad = *grad + (v8f){0};
}

// One row of 2×2 windows over input rows r0 and r1: maxima and argmax.
BP_MULTIVERSION
static void max_row_2x2(float *y, uint8_t *index, const float *r0, const float *r1, int64_t out_w, int room) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count, room);
        v8f best = taps[0];
        v8i tap = {0};
        for (int t = 1; t < 4; t++) {
            v8i take = (taps[t] > best) | (taps[t] != taps[t]);  // larger, or NaN: PyTorch's rule
            best = BLEND(take, taps[t], best);
            tap = (take & t) | (tap & ~take);
        }
        store_lanes(y + ow, &best, count, room);
        if (count == 8 || room) {
            narrow_taps(index + ow, &tap);
        } else {
            for (int64_t i = 0; i < count; i++) index[ow + i] = (uint8_t)tap[i];
        }
    }
}

// One row of 2×2 average windows: the taps summed in window order from 0, then divided, as
// the general path does.
BP_MULTIVERSION
static void avg_row_2x2(float *y, const float *r0, const float *r1, int64_t out_w, float divisor, int room) {
    for (int64_t ow = 0; ow < out_w; ow += 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f taps[4];
        load_2x2(taps, r0 + 2 * ow, r1 + 2 * ow, count, room);
        v8f sum = (v8f){0} + taps[0];
        sum += taps[1];
        sum += taps[2];
        sum += taps[3];
        v8f mean = sum / divisor;
        store_lanes(y + ow, &mean, count, room);
    }
}

// The two input rows (top, bottom) of a row of 2×2 windows' input gradient, each group of
// gradients loaded once for both. Max: dy at the argmax, 0 at the other taps. Average (index
// NULL): dy / divisor at every tap. With `room`, a row's last group writes past the row's windows
// into the next row; the groups run last to first, so that the next row's first group, stored
// later, overwrites that (the bottom row's by this call, the next window row's by the next).
__attribute__((always_inline)) static inline void rows_2x2_backward(float *top, float *bottom, const float *dy,
                                                                    const uint8_t *index, int64_t out_w, float divisor,
                                                                    int room) {
    for (int64_t ow = (out_w - 1) / 8 * 8; ow >= 0; ow -= 8) {
        int64_t count = out_w - ow < 8 ? out_w - ow : 8;
        v8f grad, zero = {0};
        v8i tap;
        load_gradients(&grad, &tap, dy + ow, index ? index + ow : NULL, count, room);
        if (index) {
            v8f top_left = BLEND(tap == 0, grad, zero), top_right = BLEND(tap == 1, grad, zero);
            v8f bottom_left = BLEND(tap == 2, grad, zero), bottom_right = BLEND(tap == 3, grad, zero);
            store_pairs(top + 2 * ow, &top_left, &top_right, count, room);
            store_pairs(bottom + 2 * ow, &bottom_left, &bottom_right, count, room);
        } else {
            v8f share = grad / divisor + zero;
            store_pairs(top + 2 * ow, &share, &share, count, room);
            store_pairs(bottom + 2 * ow, &share, &share, count, room);
        }
    }
}

#if BP_AVX512_KERNEL
#include <immintrin.h>

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))

// Whether max windows of `p` run 16 to a vector here: 2 × 2, rows of at most 16 windows, AVX-512.
static int rows_in_16_lanes(const bp_pool2d_params *p, const uint8_t *index) {
    return p->kernel_h == 2 && p->kernel_w == 2 && index && p->out_w <= 16 && bp_micro_kernel().avx512;
}

// The lanes of a row of out_w ≤ 16 windows: `windows` of the outputs, and of its input rows' 2 · out_w
// floats the first 16 (`low`) and the rest (`high`).
typedef struct {
    __mmask16 windows, low, high;
} row_lanes;

static row_lanes lanes_of(int64_t out_w) {
    int64_t covered = 2 * out_w;
    return (row_lanes){(__mmask16)((1u << out_w) - 1), (__mmask16)(covered >= 16 ? 0xffff : (1u << covered) - 1),
                       (__mmask16)(covered <= 16 ? 0 : (1u << (covered - 16)) - 1)};
}

// The 2×2 max input gradient of rows of at most 16 windows, a row of windows at a time in 16 lanes
// (masked past out_w): dy + 0 at the argmax, 0 at the other taps, the two columns of each window
// interleaved into dx's two rows. The values of rows_2x2_backward; for the fused normalization's
// planes of 14 and 7 windows a row (one short group each there, and a padded copy at the plane's
// end) it takes a third of the time.
AVX512 static void plane_2x2_max_backward_16(float *dx, const float *dy, const uint8_t *index,
                                             const bp_pool2d_params *p) {
    int64_t w = p->w, covered = 2 * p->out_w;
    row_lanes lanes = lanes_of(p->out_w);
    const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        __m512 grad = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes.windows, dy + oh * p->out_w), _mm512_setzero_ps());
        __m512i tap = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes.windows, index + oh * p->out_w));
        for (int ti = 0; ti < 2; ti++) {
            __m512 left = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(tap, _mm512_set1_epi32(2 * ti)), grad);
            __m512 right = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(tap, _mm512_set1_epi32(2 * ti + 1)), grad);
            float *row = dx + (2 * oh + ti) * w;
            _mm512_mask_storeu_ps(row, lanes.low, _mm512_permutex2var_ps(left, first, right));
            _mm512_mask_storeu_ps(row + 16, lanes.high, _mm512_permutex2var_ps(left, second, right));
            if (covered < w) memset(row + covered, 0, (size_t)(w - covered) * sizeof(float));
        }
    }
    int64_t rows = 2 * p->out_h;
    if (rows < p->h) memset(dx + rows * w, 0, (size_t)((p->h - rows) * w) * sizeof(float));
}

// The 2×2 maxima and argmax of rows of at most 16 windows, a row of windows at a time in 16 lanes:
// each input row's (up to 32) floats split into the windows' left and right taps, the taps taken in
// max_row_2x2's order by PyTorch's rule (larger, or NaN). The values of max_row_2x2, in a third of
// the instructions for the fused normalization's rows of 14 and 7 windows.
AVX512 static void plane_2x2_max_16(float *y, uint8_t *index, const float *x, const bp_pool2d_params *p) {
    int64_t w = p->w;
    row_lanes lanes = lanes_of(p->out_w);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        __m512 taps[4];
        for (int ti = 0; ti < 2; ti++) {
            const float *row = x + (2 * oh + ti) * w;
            __m512 a = _mm512_maskz_loadu_ps(lanes.low, row), b = _mm512_maskz_loadu_ps(lanes.high, row + 16);
            taps[2 * ti] = _mm512_permutex2var_ps(a, even, b);
            taps[2 * ti + 1] = _mm512_permutex2var_ps(a, odd, b);
        }
        __m512 best = taps[0];
        __m512i tap = _mm512_setzero_si512();
        for (int t = 1; t < 4; t++) {
            __mmask16 take =
                _mm512_cmp_ps_mask(taps[t], best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(taps[t], taps[t], _CMP_UNORD_Q);
            best = _mm512_mask_mov_ps(best, take, taps[t]);
            tap = _mm512_mask_mov_epi32(tap, take, _mm512_set1_epi32(t));
        }
        _mm512_mask_storeu_ps(y + oh * p->out_w, lanes.windows, best);
        _mm_mask_storeu_epi8(index + oh * p->out_w, lanes.windows, _mm512_cvtepi32_epi8(tap));
    }
}
#endif

// The divisor of every tiled average window: the whole window is inside the input.
static float tiled_divisor(const bp_pool2d_params *p) {
    return (float)(p->divisor_override > 0 ? p->divisor_override : p->kernel_h * p->kernel_w);
}

// One plane of tiled windows: maxima and argmax (index non-NULL) or averages.
void plane_tiled(float *y, uint8_t *index, const float *x, const bp_pool2d_params *p) {
    int64_t kh = p->kernel_h, kw = p->kernel_w, w = p->w;
#if BP_AVX512_KERNEL
    if (rows_in_16_lanes(p, index)) {
        plane_2x2_max_16(y, index, x, p);
        return;
    }
#endif
    float divisor = tiled_divisor(p);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *top = x + oh * kh * w;
        float *out = y + oh * p->out_w;
        uint8_t *idx = index ? index + oh * p->out_w : NULL;
        if (kh == 2 && kw == 2) {
            // Room for a full last group: 8 more outputs, and 16 more floats in the bottom input row.
            int room =
                (oh + 1) * p->out_w + 8 <= p->out_h * p->out_w && (2 * oh + 1) * w + 2 * p->out_w + 16 <= p->h * w;
            if (index) max_row_2x2(out, idx, top, top + w, p->out_w, room);
            else avg_row_2x2(out, top, top + w, p->out_w, divisor, room);
            continue;
        }
        for (int64_t ow = 0; ow < p->out_w; ow++) {
            const float *window = top + ow * kw;
            if (index) {
                float best = window[0];
                int tap = 0;
                for (int64_t ti = 0; ti < kh; ti++)
                    for (int64_t tj = ti == 0; tj < kw; tj++) MAX_TAKE(window[ti * w + tj], (int)(ti * kw + tj));
                out[ow] = best;
                idx[ow] = (uint8_t)tap;
            } else {
                float sum = 0.0f;
                for (int64_t ti = 0; ti < kh; ti++)
                    for (int64_t tj = 0; tj < kw; tj++) sum += window[ti * w + tj];
                out[ow] = sum / divisor;
            }
        }
    }
}

// The input gradient of one plane of tiled windows, each element written once: max (index
// non-NULL) puts dy at the argmax and 0 elsewhere, average dy / divisor everywhere in the window;
// rows and columns outside every window get 0. Multiversioned whole, with the 2×2 row function
// inlined: a call per row of 14 or 28 floats would cost as much as the row's work.
BP_MULTIVERSION
void plane_tiled_backward(float *dx, const float *dy, const uint8_t *index, const bp_pool2d_params *p) {
    int64_t kh = p->kernel_h, kw = p->kernel_w, w = p->w, covered = p->out_w * kw;
#if BP_AVX512_KERNEL
    if (rows_in_16_lanes(p, index)) {
        plane_2x2_max_backward_16(dx, dy, index, p);
        return;
    }
#endif
    float divisor = tiled_divisor(p);
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *g = dy + oh * p->out_w;
        const uint8_t *idx = index ? index + oh * p->out_w : NULL;
        if (kh == 2 && kw == 2) {
            // Room for a full last group: 8 more gradients, and 16 more floats of dx in the bottom row.
            int room =
                (oh + 1) * p->out_w + 8 <= p->out_h * p->out_w && (2 * oh + 1) * w + 2 * p->out_w + 16 <= p->h * w;
            rows_2x2_backward(dx + 2 * oh * w, dx + (2 * oh + 1) * w, g, idx, p->out_w, divisor, room);
        }
        for (int64_t ti = 0; ti < kh; ti++) {
            float *row = dx + (oh * kh + ti) * w;
            if (kh != 2 || kw != 2)
                for (int64_t ow = 0; ow < p->out_w; ow++)
                    for (int64_t tj = 0; tj < kw; tj++)
                        row[ow * kw + tj] =
                            idx ? (idx[ow] == ti * kw + tj ? g[ow] + 0.0f : 0.0f) : g[ow] / divisor + 0.0f;
            if (covered < w) memset(row + covered, 0, (size_t)(w - covered) * sizeof(float));
        }
    }
    int64_t rows = p->out_h * kh;
    if (rows < p->h) memset(dx + rows * w, 0, (size_t)((p->h - rows) * w) * sizeof(float));
}
