// The weight gradient read directly from x on CPUs with AVX2 and without AVX-512 (or with it
// forced off), for stride-1 convolutions with few taps per group (kernels 3 or 5 wide, at most 25
// taps: conv_lenet1's one channel of 5 × 5):
//
//   partial[t][o] += Σ_{p in chunk} dy[o][p] · x[c_t][oh − pad_h + i_t][ow − pad_w + j_t]
//
// for each chunk of pixels p = oh · out_w + ow, 16 output channels o at a time as two 8-float
// halves (dy packed pixel-major, [p][16]), and the S taps of ROWS input rows (channel c's kernel
// row i) as accumulators: ROWS · S ≤ 6 taps × 2 halves, 12 of the 16 ymm registers. Each step
// loads a pixel's 16 channels of dy and broadcasts each tap's input once for its two halves. The
// pixels run in the product's chunks and order (conv2d.c's weight gradient: chunks of 256 pixels
// in row-major order, each summed from 0 and added to the partial), so every element is the
// product's sum to the bit. An output row whose input row is padding reads a row of zeros, or is
// skipped where every row of the pass is padding, and at a row's first and last pixels the taps
// whose input column is padding are skipped: their terms are 0 · dy, which leave a sum that starts
// at +0 as it is. The product instead gathers the column matrix and packs dy's rows, and with 32
// channels by 25 taps it computes 36 × 32 outputs a pixel: conv_lenet1's weight gradient, Zen 3,
// 1 thread, medians of 41, 4 interleaved pairs: 1.84-1.89 -> 1.36-1.44 ms.
#include "conv2d_layout.h"

#if BP_AVX512_KERNEL
#include <string.h>

// The x86-64-v3 level (AVX2, FMA, BMI2, …) as the product kernels' clones use it: with only
// "avx2,fma" clang tunes for a generic CPU and splits unaligned 32-byte loads (8% slower here).
#define AVX2 __attribute__((target("arch=x86-64-v3")))

enum { MOST_TAPS = 6, LANES = 16 };

// The sums of one pass over the chunk's pixels [p0, p1) for ROWS input rows of S taps, added to
// partial (row q's tap j at partial[(q · S + j) · ld]); input row q is kernel row kernel_rows[q]
// of the plane planes[q]; dyt is the packed dy from pixel `base`.
AVX2 __attribute__((always_inline)) static inline void pass(int S, int ROWS, float *partial, int64_t ld,
                                                            const float *const *planes, const int64_t *kernel_rows,
                                                            const float *zeros, const float *dyt, int64_t base,
                                                            int64_t p0, int64_t p1, const bp_conv2d_params *p) {
    v8f acc[MOST_TAPS][2];
#pragma clang loop unroll(full)
    for (int t = 0; t < ROWS * S; t++) acc[t][0] = acc[t][1] = (v8f){0};
    int64_t inner = p->pad_w, outer = p->w + p->pad_w - S + 1;  // ow in [inner, outer): every column inside
    for (int64_t oh = p0 / p->out_w; oh * p->out_w < p1; oh++) {
        const float *src[MOST_TAPS];  // src[q][ow + j]: input row q's column ow − pad_w + j
        int any = 0;
#pragma clang loop unroll(full)
        for (int q = 0; q < ROWS; q++) {
            int64_t ih = oh - p->pad_h + kernel_rows[q];
            int inside = ih >= 0 && ih < p->h;
            any |= inside;
            src[q] = (inside ? planes[q] + ih * p->w : zeros) - p->pad_w;
        }
        if (!any) continue;
        int64_t from = oh * p->out_w < p0 ? p0 - oh * p->out_w : 0;
        int64_t to = (oh + 1) * p->out_w > p1 ? p1 - oh * p->out_w : p->out_w;
        const float *d = dyt + (oh * p->out_w - base) * LANES;  // pixel ow's 16 channels at d[ow · 16]
        for (int64_t ow = from; ow < to; ow++) {
            v8f g0, g1;
            memcpy(&g0, d + ow * LANES, 32), memcpy(&g1, d + ow * LANES + 8, 32);
            if (ow >= inner && ow < outer) {
#pragma clang loop unroll(full)
                for (int q = 0; q < ROWS; q++)
#pragma clang loop unroll(full)
                    for (int j = 0; j < S; j++) {
                        float v = src[q][ow + j];
                        acc[q * S + j][0] += v * g0, acc[q * S + j][1] += v * g1;
                    }
            } else {
#pragma clang loop unroll(full)
                for (int q = 0; q < ROWS; q++)
#pragma clang loop unroll(full)
                    for (int j = 0; j < S; j++) {
                        if (ow + j < p->pad_w || ow + j >= p->w + p->pad_w) continue;
                        float v = src[q][ow + j];
                        acc[q * S + j][0] += v * g0, acc[q * S + j][1] += v * g1;
                    }
            }
        }
    }
#pragma clang loop unroll(full)
    for (int t = 0; t < ROWS * S; t++) {
        float *at = partial + t * ld;
        v8f lo, hi;
        memcpy(&lo, at, 32), memcpy(&hi, at + 8, 32);
        lo = lo + acc[t][0], hi = hi + acc[t][1];
        memcpy(at, &lo, 32), memcpy(at + 8, &hi, 32);
    }
}

// pass() with S and ROWS constants, so that the accumulators are registers.
AVX2 static void pass_of(int64_t S, int64_t rows, float *partial, int64_t ld, const float *const *planes,
                         const int64_t *kernel_rows, const float *zeros, const float *dyt, int64_t base, int64_t p0,
                         int64_t p1, const bp_conv2d_params *p) {
    if (S == 5) pass(5, 1, partial, ld, planes, kernel_rows, zeros, dyt, base, p0, p1, p);
    else if (rows == 2) pass(3, 2, partial, ld, planes, kernel_rows, zeros, dyt, base, p0, p1, p);
    else pass(3, 1, partial, ld, planes, kernel_rows, zeros, dyt, base, p0, p1, p);
}

int bp_conv_weights_direct_avx2_pays(const bp_conv2d_params *p) {
    return bp_cpu_vector_level() >= 1 && bp_conv_weights_direct_fits(p) && p->stride_h == 1 && p->stride_w == 1 &&
           (p->s == 3 || p->s == 5) && bp_conv_taps(p) <= 25;
}

void bp_conv_weights_direct_avx2(float *partial, int64_t ld, double *dbias, const float *x, const float *zeros,
                                 const float *dy, float *dyt, int64_t chunk, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, hw = bp_conv_pixels(p), plane = p->h * p->w;
    int64_t input_rows = cg * p->r, per_pass = MOST_TAPS / p->s;
    // A chunk of pixels at a time, its bias sums first; then 16 channels of its dy packed
    // pixel-major (dyt [pixel − q0][16], 16 KB: the first-level cache) for every pass's sums.
    for (int64_t q0 = 0; q0 < hw; q0 += chunk) {
        int64_t count = hw - q0 < chunk ? hw - q0 : chunk;
        if (dbias) bp_conv_add_bias_sums(dbias, dy, kg, hw, q0, q0 + count);
        for (int64_t o = 0; o < ld; o += LANES) {
            bp_pack_lanes16(dyt, dy + o * hw + q0, hw, kg - o < LANES ? kg - o : LANES, count, 0);
            for (int64_t q = 0; q < input_rows; q += per_pass) {
                int64_t rows = input_rows - q < per_pass ? input_rows - q : per_pass;
                const float *planes[MOST_TAPS];
                int64_t kernel_rows[MOST_TAPS];
                for (int64_t u = 0; u < rows; u++)
                    planes[u] = x + (q + u) / p->r * plane, kernel_rows[u] = (q + u) % p->r;
                pass_of(p->s, rows, partial + q * p->s * ld + o, ld, planes, kernel_rows, zeros, dyt, q0, q0,
                        q0 + count, p);
            }
        }
    }
}
#endif
