// 2-D convolution as matrix products whose column matrix is read in place.
//
// For image b and group g (cg = c / groups input channels, kg = k / groups output channels,
// R = cg·r·s taps) the convolution is a product with the column matrix col [R, pixels]:
//   forward:           y[b, g] = W_g [kg, R] · col
//   backward-data:     dcol = W_gᵀ · dy[b, g], dx[b, g] = col2im(dcol) (sums the overlaps)
//   backward-weights:  dW_g [kg, R] += dy[b, g] · colᵀ
// The forward and the backward-weights never build col: they read it in place from the
// phase-split padded buffer (conv2d_layout.h), where a panel of BP_NR pixels is one to three runs,
// so packing it is a few short copies (no index arithmetic per element, no bounds checks: the
// padding is zeros in the buffer); the backward-data builds one image's dcol and gathers it back
// (bp_col2im_rows). The register-blocked product (microkernel.c) then writes straight into the NCHW
// output. Every output element is summed by one thread in an order fixed by the shape, so results
// do not depend on the thread count.
#include "conv2d_layout.h"

#include <stdlib.h>
#include <string.h>

enum {
    PC = 256,               // pixels per reduction chunk of the weight gradient
    DCOL_WHOLE = 4 << 20,   // the largest column gradient the backward-data keeps whole,
    DCOL_RING = 1 << 19,    // else its ring of column-gradient rows
    SLACK = 16,             // floats after a buffer that gather_panel may read and col2im_rows write
    AHEAD_MOST = 8,         // most lines of the next chunk a column-gradient kernel call asks for
    DY_IN_PLACE_MOST = 64,  // most output channels per group whose dy the weight gradient reads in place
};

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// A zeroed panel of `count` floats on a 64-byte boundary, so its 16-float rows are whole cache lines.
static float *panel_alloc(int64_t count, int64_t *missing) {
    return bp_aligned_alloc(64, count, sizeof(float), 1, missing);
}

// A panel's column-matrix rows for taps offsets[0 … taps): row t of b is dst[t · BP_NR + q] =
// buffer[offsets[t] + v + q − run.q] over the runs, eight floats at a time through a vector
// register (a loop of fixed-size memcpy calls would become one library call per run), every tap in
// the inner loop (one long loop rather than many of one or two copies). A run's last vector, when
// it is short, keeps the lanes past the run as they are in b (it may read up to 7 floats past the
// run in the buffer's slack, and b's next row or slack), so no copy overwrites another's.
BP_MULTIVERSION
static void gather_panel(float *b, const float *buffer, const int64_t *offsets, int64_t taps, const pixel_run *runs,
                         int64_t n) {
    const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int64_t r = 0; r < n; r++)
        for (int64_t k = 0; k < runs[r].len; k += 8) {
            const float *src = buffer + runs[r].v + k;
            float *dst = b + runs[r].q + k;
            if (runs[r].len - k >= 8)
                for (int64_t t = 0; t < taps; t++) {
                    v8f v;
                    memcpy(&v, src + offsets[t], 32);
                    memcpy(dst + t * BP_NR, &v, 32);
                }
            else {
                v8i inside = lane < (int32_t)(runs[r].len - k);
                for (int64_t t = 0; t < taps; t++) {
                    v8i v, d;
                    memcpy(&v, src + offsets[t], 32), memcpy(&d, dst + t * BP_NR, 32);
                    v = (v & inside) | (d & ~inside);
                    memcpy(dst + t * BP_NR, &v, 32);
                }
            }
        }
}

// The rows of b [pixels, BP_NR] transposed from `taps` column-matrix rows (taps <= BP_NR):
// b[q][t] = buffer[offsets[t] + v + q − run.q] over the runs, 8 pixels × 8 taps at a time through
// a register transpose. Each run's last block may read up to 7 floats past its end (the buffer's
// slack) and write up to 7 rows past it (the next run's rows, written after, or b's slack rows);
// lanes of taps past `taps` repeat tap 0 and are never stored from C.
BP_MULTIVERSION
static void gather_transposed(float *b, const float *buffer, const int64_t *offsets, int64_t taps,
                              const pixel_run *runs, int64_t n) {
    const float *src[BP_NR];
    for (int64_t t = 0; t < BP_NR; t++) src[t] = buffer + offsets[t < taps ? t : 0];
    for (int64_t r = 0; r < n; r++)
        for (int64_t k = 0; k < runs[r].len; k += 8)
            for (int half = 0; half < 2; half++) {
                v8f x[8], columns[8];
                for (int t = 0; t < 8; t++) memcpy(&x[t], src[8 * half + t] + runs[r].v + k, 32);
                bp_transpose_8x8(columns, x);
                float *row = b + (runs[r].q + k) * BP_NR + 8 * half;
                for (int j = 0; j < 8; j++) memcpy(row + j * BP_NR, &columns[j], 32);
            }
}

// Packs `rows` rows of a row-major matrix (element (i, c) at m[i · ld + c], c < cols) into panels
// of mr <= 8 rows: out[panel][c][i], zero past the last row. 8 columns at a time, the panel's rows
// are read as vectors and transposed in registers (the 8 × 8 transpose of gather_transposed, rows
// past mr zero), each column's mr floats stored as 8 in increasing order, so the extra floats are
// overwritten by the next column (`out` needs 8 − mr floats of slack after the last panel).
BP_MULTIVERSION
static void pack_rows(float *out, const float *m, int64_t ld, int64_t rows, int64_t cols, int64_t mr) {
    for (int64_t panel = 0; panel < round_up(rows, mr) / mr; panel++) {
        float *dst = out + panel * cols * mr;
        int64_t c = 0;
        for (; c + 8 <= cols; c += 8) {
            v8f x[8] = {{0}};
            for (int64_t i = 0; i < mr && panel * mr + i < rows; i++) memcpy(&x[i], m + (panel * mr + i) * ld + c, 32);
            v8f columns[8];
            bp_transpose_8x8(columns, x);
            for (int j = 0; j < 8; j++) memcpy(dst + (c + j) * mr, &columns[j], 32);
        }
        for (; c < cols; c++)
            for (int64_t i = 0; i < mr; i++) {
                int64_t row = panel * mr + i;
                dst[c * mr + i] = row < rows ? m[row * ld + c] : 0.0f;
            }
    }
}

// The weights of each group packed for the forward, A = W_g [kg, R]: per group round_up(kg, mr) · R
// floats. NULL when they could not be allocated (recorded in *missing).
static float *pack_weights(const float *weight, const bp_conv2d_params *p, int64_t mr, int64_t *group_size,
                           int64_t *missing) {
    int64_t kg = p->k / p->groups, rows = bp_conv_taps(p);
    *group_size = round_up(kg, mr) * rows;
    float *packed = bp_malloc(p->groups * *group_size + 8 - mr, sizeof(float), missing);
    if (!packed) return NULL;
    for (int64_t g = 0; g < p->groups; g++)
        pack_rows(packed + g * *group_size, weight + g * kg * rows, rows, kg, rows, mr);
    return packed;
}

// MARK: - Depthwise: one input and one output channel per group
//
// With cg = kg = 1 the product would use one row of each 6-row block and reduce over a single
// channel, so these planes are computed directly from the buffer instead: every tap is a
// contiguous run per output row, scaled and added (forward, backward-data) or dotted with dy
// (backward-weights), taps in order, rows in order: a fixed order, as everywhere.

static int is_depthwise(const bp_conv2d_params *p) { return p->c == p->groups && p->k == p->groups; }

// y[oh][ow] = Σ_t w[t] · buffer[offset[t] + oh · wq + ow].
BP_MULTIVERSION
static void depthwise_forward(float *restrict y, const float *restrict buffer, const conv_layout *l, const float *w,
                              const float *bias, const bp_conv2d_params *p) {
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        float *restrict out = y + oh * p->out_w;
        for (int64_t ow = 0; ow < p->out_w; ow++) out[ow] = 0.0f;
        for (int64_t t = 0; t < p->r * p->s; t++) {
            const float *restrict src = buffer + l->offset[t] + oh * l->wq;
            for (int64_t ow = 0; ow < p->out_w; ow++) out[ow] += w[t] * src[ow];
        }
        if (bias)
            for (int64_t ow = 0; ow < p->out_w; ow++) out[ow] += *bias;
    }
}

// buffer[offset[t] + oh · wq + ow] += w[t] · dy[oh][ow] (the buffer starts at 0).
BP_MULTIVERSION
static void depthwise_backward_data(float *buffer, const float *restrict dy, const conv_layout *l, const float *w,
                                    const bp_conv2d_params *p) {
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        const float *restrict g = dy + oh * p->out_w;
        for (int64_t t = 0; t < p->r * p->s; t++) {
            float *restrict dst = buffer + l->offset[t] + oh * l->wq;
            for (int64_t ow = 0; ow < p->out_w; ow++) dst[ow] += w[t] * g[ow];
        }
    }
}

// dw[t] += Σ_oh Σ_ow dy[oh][ow] · buffer[offset[t] + oh · wq + ow], each row's sum in 8 lanes.
BP_MULTIVERSION
static void depthwise_weights(float *dw, const float *restrict buffer, const float *restrict dy, const conv_layout *l,
                              const bp_conv2d_params *p) {
    for (int64_t t = 0; t < p->r * p->s; t++) {
        float lanes[8] = {0}, tail = 0.0f;
        for (int64_t oh = 0; oh < p->out_h; oh++) {
            const float *src = buffer + l->offset[t] + oh * l->wq, *g = dy + oh * p->out_w;
            int64_t ow = 0;
            for (; ow + 8 <= p->out_w; ow += 8)
                for (int q = 0; q < 8; q++) lanes[q] += g[ow + q] * src[ow + q];
            for (; ow < p->out_w; ow++) tail += g[ow] * src[ow];
        }
        dw[t] +=
            ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail;
    }
}

// MARK: - 1 × 1 without stride or padding: plain products
//
// Then the column matrix of an image and group is its input itself (R = cg rows of hw pixels), and
// the forward and the weight gradient are products of the tensors as they are (bp_matrix_product:
// no buffer to copy in, no panels to gather), summed in the blocks and order of the column-matrix
// products, so the bits are theirs:
//   forward        y_g = W_g · x_g, then + bias; x_g read in place where it has fewer than 256 pixels
//                  (bp_matrix_product_streamed; AVX-512), the next image's x asked for while it runs: 256 →
//                  256 channels on 14 × 14, 16 images, 1 thread on Zen 4, 4.47 → 4.33 ms (medians
//                  of 11 interleaved runs; packing x waited on its lines from memory)
//   weights        dW_g += dy_g · x_gᵀ, a chunk of PC pixels at a time (in the weight gradient below),
//                  the next chunk's x asked for while it runs (packing x waited for it: 4.81 →
//                  4.58 ms, 256 → 256 on 14 × 14, 16 images, 1 thread, medians of 11 runs)
//   backward-data  dx_gᵀ = dy_gᵀ · W_g over every image's pixels at once, on images of fewer than
//                  128 pixels (pointwise_backward_data); else dx_g = W_gᵀ · dy_g image by image,
//                  with A transposed where c ≥ k and cg ≤ 512 (pointwise_products), else as the
//                  column gradient written into dx (pointwise_column_gradient)
// Measured on Zen 4, 1 thread, 16 images, against the column-matrix products (forward, weights,
// ms): 256 → 256 channels on 14 × 14, 4.42 → 4.29 and 4.63 → 4.38; 1024 → 2048 on 7 × 7, 39.9 →
// 38.5 and 75.8 → 39.3; 64 → 256 on 56 × 56, 18.2 → 18.4 and 19.2 → 16.9.

static int is_pointwise(const bp_conv2d_params *p) {
    return p->r == 1 && p->s == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
           p->out_h == p->h && p->out_w == p->w && !is_depthwise(p);
}

// The threads that take the images one at a time (pointwise_products, pointwise_column_gradient):
// every thread, or one where the images are too little work to share or the call runs inside an
// outer parallel region (whose nested region has a team of one).
static int64_t image_takers(const bp_conv2d_params *p) {
    return bp_conv_parallel_over_images(p) && !bp_in_parallel() ? bp_num_threads() : 1;
}

// out[image, g] = op(W_g) · in[image, g] (+ bias) for every image and group: the forward (W_g
// [rows = kg, depth = cg]) or, `transposed`, the backward-data (W_gᵀ: rows = cg, depth = kg).
// Parallel over images (each product on one thread) or, for one image, within the product. The
// threads take the images one at a time, so that a core slowed by another process takes fewer;
// each asks for the lines of the image it likely takes next (the thread count further on).
// conv_1x1's forward (256 → 256 channels on 14 × 14, 16 images), Zen 3, 2 threads, a busy host:
// medians of 20 interleaved medians of 101, 3.11 ms with the halves fixed in advance, 3.03 taken
// (faster in 16 of the 20).
static int64_t pointwise_products(float *out, const float *in, const float *weight, const float *bias, int transposed,
                                  const bp_conv2d_params *p) {
    int64_t kg = p->k / p->groups, cg = p->c / p->groups, hw = p->h * p->w, missing = 0;
    int64_t rows = transposed ? cg : kg, depth = transposed ? kg : cg, items = p->n * p->groups, taken = 0;
    int64_t stride = image_takers(p);  // the likely next item's distance
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    for (int64_t item; (item = __atomic_fetch_add(&taken, 1, __ATOMIC_RELAXED)) < items;) {
        int64_t g = item % p->groups;
        float *o = out + item * rows * hw;
        const float *x = in + item * depth * hw;
        bp_lines next = {item + stride < items ? x + stride * depth * hw : NULL, depth, hw, hw};
        int64_t failed =
            transposed
                ? bp_matrix_product(1, 0, rows, hw, depth, weight + g * kg * cg, cg, x, hw, 0, o, hw)
                : bp_matrix_product_streamed(0, rows, hw, depth, weight + g * kg * cg, cg, x, hw, 0, next, o, hw);
        if (failed) {
#pragma omp atomic write
            missing = failed;
        }
        for (int64_t r = 0; r < rows && bias; r++)
            for (int64_t q = 0; q < hw; q++) o[r * hw + q] += bias[g * rows + r];
    }
    return missing;
}

// out[j · ldo + i] = in[i · ldi + j] (+ bias[j]) for i < rows, j < cols, 16 × 16 at a time.
static void transpose_tiles(float *out, int64_t ldo, const float *in, int64_t ldi, int64_t rows, int64_t cols,
                            const float *bias) {
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
        for (int64_t j0 = 0; j0 < cols; j0 += 16)
            for (int64_t j = j0; j < min64(cols, j0 + 16); j++)
                for (int64_t i = i0; i < min64(rows, i0 + 16); i++)
                    out[j * ldo + i] = bias ? in[i * ldi + j] + bias[j] : in[i * ldi + j];
}

// dx[image, g] = W_gᵀ · dy[image, g] (+ bias), for every image at once as the transposed
// product dx_gᵀ [n · hw, cg] = dy_gᵀ [n · hw, kg] · W_g [kg, cg], dy transposed in and dx out in
// 16 × 16 tiles (each element the same sum over kg as the column gradient's). Small images leave
// the column gradient's per-image products short of columns (7 × 7: four panels of 16 for 49
// pixels). Measured (1 thread, 16 images, ms): 7 × 7, 1024 → 2048 channels 41.3 → 33.6, 512 → 512
// 5.44 → 4.28; 4 × 4, 128 → 128 0.15 → 0.12; 10 × 10, 512 → 512 9.58 → 9.20; but 14 × 14,
// 256 → 256 4.56 → 5.46 and 56 × 56 19.6 → 39.4: used below 128 pixels.
static int64_t pointwise_backward_data(float *dx, const float *dy, const float *weight, const float *bias,
                                       const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, hw = p->h * p->w, pixels = p->n * hw, missing = 0;
    float *dyt = bp_malloc(pixels * kg, sizeof(float), &missing),
          *dxt = bp_malloc(pixels * cg, sizeof(float), &missing);
    for (int64_t g = 0; g < p->groups && !missing; g++) {
#pragma omp parallel for schedule(static) if (pixels * kg >= BP_PARALLEL_MIN)
        for (int64_t image = 0; image < p->n; image++)
            transpose_tiles(dyt + image * hw * kg, kg, dy + (image * p->k + g * kg) * hw, hw, kg, hw, NULL);
        missing = bp_matrix_product(0, 0, pixels, cg, kg, dyt, kg, weight + g * kg * cg, cg, 0, dxt, cg);
#pragma omp parallel for schedule(static) if (pixels * cg >= BP_PARALLEL_MIN)
        for (int64_t image = 0; image < p->n; image++)
            transpose_tiles(dx + (image * p->c + g * cg) * hw, hw, dxt + image * hw * cg, cg, hw, cg,
                            bias ? bias + g * cg : NULL);
    }
    free(dyt), free(dxt);
    return missing;
}

int64_t bp_conv2d_forward(float *y, const float *x, const float *weight, const float *bias, const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = bp_conv_taps(p), hw = bp_conv_pixels(p), a_size = 0,
            missing = 0;
    bp_micro micro = bp_micro_kernel();
    if (is_pointwise(p)) return pointwise_products(y, x, weight, bias, 0, p);
    if (bp_conv_winograd_fits(p)) return bp_conv2d_forward_winograd(y, x, weight, bias, p, NULL, NULL);
    if (bp_conv_phases_fit(p)) return bp_conv2d_forward_phases(y, x, weight, bias, p);
#if BP_AVX512_KERNEL
    if (micro.avx512 && !is_depthwise(p) && bp_conv_padding_pays(p))
        return bp_conv2d_forward_direct(y, x, weight, bias, p);
    if (bp_cpu_vector_level() >= 1 && bp_conv_stride2_fits(p, micro.avx512))
        return bp_conv2d_forward_stride2(y, x, weight, bias, p, micro.avx512);
#endif
    // Depthwise convolutions read the weights directly.
    float *a = is_depthwise(p) ? NULL : pack_weights(weight, p, micro.mr, &a_size, &missing);
    conv_layout l = bp_conv_layout_build(p, &missing);
    if (missing) return free(a), free(l.offset), missing;
    int y_streams = p->n * p->k * hw * (int64_t)sizeof(float) >= BP_STREAM_MIN;
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *buffer = bp_calloc(l.size + SLACK, sizeof(float), &missing);
        float *b = panel_alloc(2 * BP_KC * BP_NR + SLACK, &missing);  // up to two panels
        int ready = buffer && b;
        pixel_run runs[2][BP_NR + 2];
#pragma omp for schedule(static)
        for (int64_t item = 0; item < p->n * p->groups; item++) {
            if (!ready) continue;
            int64_t image = item / p->groups, g = item % p->groups;
            bp_conv_copy_in(buffer, x + (image * p->c + g * cg) * p->h * p->w, &l, p);
            float *yg = y + (image * p->k + g * kg) * hw;
            if (is_depthwise(p)) {
                depthwise_forward(yg, buffer, &l, weight + g * rows, bias ? bias + g : NULL, p);
                continue;
            }
            for (int64_t p0 = 0; p0 < hw; p0 += micro.nr) {
                int64_t count = min64(micro.nr, hw - p0), halves = (count + BP_NR - 1) / BP_NR, n[2];
                for (int64_t h = 0; h < halves; h++)
                    n[h] = bp_conv_pixel_runs(runs[h], &l, p, p0 + h * BP_NR, min64(BP_NR, count - h * BP_NR));
                for (int64_t block = 0; block < bp_kc_blocks(rows); block++) {
                    int64_t t0, kc;
                    bp_kc_block(rows, block, &t0, &kc);
                    // b's panel h [kc, BP_NR] = col[taps t0 …, pixels p0 + 16h …] (a short last panel
                    // leaves stale columns, never stored)
                    for (int64_t h = 0; h < halves; h++)
                        gather_panel(b + h * kc * BP_NR, buffer, l.offset + t0, kc, runs[h], n[h]);
                    // y_g[m rows, pixels p0 …] (+)= W_g[m rows, taps t0 …] · b; where y outruns the
                    // caches, the next pixels' rows of y asked for (to write) while the first block
                    // runs, so that the kernel's stores do not wait for lines from memory
                    // (conv_stem7x7's 51 MB, Zen 4, 1 / 2 threads: 38.3 -> 36.7 ms, 19.6 -> 18.6;
                    // conv_lenet1's 6.4 MB, which stay in cache, 0.86 -> 0.94 with them asked for).
                    for (int64_t m = 0; m < kg; m += micro.mr) {
                        if (y_streams && block == 0 && p0 + micro.nr < hw)
                            bp_prefetch_write(yg + m * hw + p0 + micro.nr, hw, min64(micro.mr, kg - m),
                                              min64(micro.nr, hw - p0 - micro.nr));
                        micro.block(kc, a + g * a_size + m * rows + t0 * micro.mr, b, kc * BP_NR, yg + m * hw + p0, hw,
                                    block > 0, block == bp_kc_blocks(rows) - 1 && bias ? bias + g * kg + m : NULL,
                                    min64(micro.mr, kg - m), count);
                    }
                }
            }
        }
        free(buffer);
        free(b);
    }
    free(l.offset);
    free(a);
    return missing;
}

// With stride 1,
//   dx[ci][ih][iw] = Σ_{k, i, j} dy[k][ih + pad_h − i·dh][iw + pad_w − j·dw] · W[k][ci][i][j]
// is the forward of dy [n, k, out_h, out_w] → [n, c, h, w] with W'[ci][k][r−1−i][s−1−j], the same
// dilation and groups, and padding (r−1)·dh − pad_h (columns alike).
int bp_conv_transposed_forward(const bp_conv2d_params *p, bp_conv2d_params *q) {
    *q = *p;
    q->c = p->k, q->h = p->out_h, q->w = p->out_w;
    q->k = p->c, q->out_h = p->h, q->out_w = p->w;
    q->pad_h = (p->r - 1) * p->dilation_h - p->pad_h, q->pad_w = (p->s - 1) * p->dilation_w - p->pad_w;
    return p->stride_h == 1 && p->stride_w == 1 && q->pad_h >= 0 && q->pad_w >= 0;
}

// Whether the backward-data runs as that forward: where the forward runs by Winograd's
// F(2 × 2, r × r) (bp_conv_winograd_fits), or skips enough padding to gain (bp_conv_padding_pays)
// with 32 or more outputs, the input channels, per group (fewer leave the products' row blocks
// short); elsewhere the column gradient below is faster. A function of the shape alone, so the bits
// do not depend on the CPU; each dx element is then the forward's sum.
static int data_as_forward(const bp_conv2d_params *p, bp_conv2d_params *q) {
    return bp_conv_transposed_forward(p, q) && !is_depthwise(p) &&
           (bp_conv_winograd_fits(q) || (p->c / p->groups >= 32 && bp_conv_padding_pays(q)));
}

static int64_t backward_data_as_forward(float *dx, const float *dy, const float *weight, const float *bias,
                                        const bp_conv2d_params *p, const bp_conv2d_params *q) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, taps = p->r * p->s, missing = 0;
    float *flipped = bp_malloc(p->k * cg * taps, sizeof(float), &missing);
    if (!flipped) return missing;
    // W'[g · cg + ci][kk][t'] = W[g · kg + kk][ci][taps − 1 − t'] (t' = i' · s + j': flipping both
    // axes reverses the taps' order)
    for (int64_t g = 0; g < p->groups; g++)
        for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t kk = 0; kk < kg; kk++) {
                const float *src = weight + ((g * kg + kk) * cg + ci) * taps;
                float *dst = flipped + ((g * cg + ci) * kg + kk) * taps;
                for (int64_t t = 0; t < taps; t++) dst[t] = src[taps - 1 - t];
            }
    missing = bp_conv2d_forward(dx, dy, flipped, bias, q);
    free(flipped);
    return missing;
}

// Whether `count` rows `stride` floats apart crowd the first-level cache (64 sets of 8 lines of 64
// bytes, 4 KB a way): rows 2^s · 64 bytes apart (mod 4 KB, times an odd number) fall in 64 / 2^s
// of its sets, and more than half of those sets' lines would hold them. conv_stem7x7's dy: 64
// rows of 112 × 112 pixels, 1 KB apart mod 4 KB: 4 sets, 32 lines.
static int rows_crowd_l1(int64_t stride, int64_t count) {
    int64_t bytes = stride * (int64_t)sizeof(float) % 4096;
    int64_t apart = bytes ? bytes & -bytes : 4096;  // the largest power of two dividing the stride
    int64_t sets = apart >= 64 ? 4096 / apart : 64;
    return count > sets * 4;
}

// A chunk of the column gradient: pixels [0, count) of `to` (taps ld apart) = W_gᵀ · dy_g's
// pixels from `dy` (kg rows hw apart), by the kernel's columns form, nr pixels by mr taps a call.
// A is W_gᵀ packed as strips of mr taps (`wt`: [strip][kg][mr], bp_pack_a_strips). B is dy's rows
// in place, but for the last pixels past the kernel width's last multiple (in place the kernel
// would read 16 floats past them) and where dy's rows crowd the first-level cache
// (rows_crowd_l1): there each call's pixels are packed into b first, as panels of 16 (`pitch`
// floats apart), read by all the calls of those pixels. Measured on Zen 3, 1 thread, medians of
// 41-101 runs of the kernel calls (GF/s): W_gᵀ in place (mr floats of each of kg rows, `rows`
// floats apart: a line a step, straddling two at times) against packed, conv_res3x3s2 (576 taps by
// 128 channels, 784 pixels) 62-82 -> 87-93; dy's panels packed for conv_stem7x7 (147 taps by 64
// channels, 336 pixels of rows 12544 apart) 82 -> 90, for conv_res3x3s2 92-97 against 95-98 in
// place. While the kernel runs, the lines of `next` (what the next chunk reads)
// are asked for, a share before each call: dy's rows are kilobytes apart, a stream of kg short
// runs that the hardware does not fetch ahead (conv_stem7x7's backward-data, 1 thread: 48.5 →
// 45.4 ms). At most AHEAD_MOST lines a call: conv_lenet1's calls (32 channels deep, 8192
// multiply-adds) would ask for 16 each, and its kernel's own reads then wait (1 thread, minima of
// interleaved runs: 1.00 -> 0.96 ms; 0.93 asking for none, but the stem's 40.0 would be 43); the
// rest of the next chunk comes as the kernel reads it.
static void column_gradient_chunk(float *to, int64_t ld, float *b, int64_t pitch, const float *wt, const float *dy,
                                  int64_t count, bp_lines next, int64_t rows, int64_t kg, int64_t hw, bp_micro micro) {
    int64_t whole = count / micro.nr * micro.nr;
    int crowded = rows_crowd_l1(hw, kg);
    int64_t calls = (count + micro.nr - 1) / micro.nr * ((rows + micro.mr - 1) / micro.mr);
    int64_t share = min64(AHEAD_MOST, (bp_line_count(next) + calls - 1) / calls), call = 0;
    for (int64_t j = 0; j < count; j += micro.nr) {
        int64_t cols = min64(micro.nr, count - j);
        int packed = crowded || j >= whole;
        // b [panel][kg][BP_NR]: panel i = dy[:, pixels j + 16i …], filled reading dy in order
        for (int64_t k = 0; k < kg && packed; k++)
            for (int64_t i = 0; i * BP_NR < cols; i++)
                bp_copy_short(b + i * pitch + k * BP_NR, dy + k * hw + j + i * BP_NR, min64(BP_NR, cols - i * BP_NR));
        // B for these pixels: its row for channel k at bk + k · ldb, its panels `step` apart
        const float *bk = packed ? b : dy + j;
        int64_t ldb = packed ? BP_NR : hw, step = packed ? pitch : BP_NR;
        for (int64_t m = 0; m < rows; m += micro.mr, call++) {
            bp_prefetch_share(next, call, share);
            // to[taps m …, pixels j …] = W_gᵀ[taps m …, :] · dy_g[:, pixels j …], over the channel blocks
            for (int64_t block = 0; block < bp_kc_blocks(kg); block++) {
                int64_t k0, kc;
                bp_kc_block(kg, block, &k0, &kc);
                micro.columns(kc, wt + m * kg + k0 * micro.mr, micro.mr, bk + k0 * ldb, ldb, step, to + m * ld + j, ld,
                              block > 0, min64(micro.mr, rows - m), cols);  // A: strip m / mr from step k0
            }
        }
    }
}

// Backward-data of a 1 × 1 convolution on images of 128 pixels or more where c < k or cg > 512
// (else pointwise_products): its column gradient is dx itself, dx_g = W_gᵀ · dy_g, written by
// column_gradient_chunk image by image, W_gᵀ packed once as the kernel's strips for every image,
// then + bias: the column gradient's sums without its col2im copy. The threads take the images
// one at a time (as pointwise_products does). Against the column gradient with col2im, Zen 3,
// 16 images, medians of 11 runs, 3 interleaved (ms): 12 × 12, 1024 → 256 channels 17.8-18.4 ->
// 15.5-15.7 (2 threads 17.6-26.2 -> 15.6); 56 × 56, 64 → 256 28.2-35.1 -> 27.4-30.0; 8 images of
// 14 × 14, 512 → 2048, 2 threads, 42.3-46.1 -> 42.5-45.6.
static int64_t pointwise_column_gradient(float *dx, const float *dy, const float *weight, const float *bias,
                                         const bp_conv2d_params *p) {
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, hw = p->h * p->w, items = p->n * p->groups, missing = 0;
    bp_micro micro = bp_micro_kernel();
    int64_t wt_size = round_up(cg, micro.mr) * kg, pitch = bp_unaliased_stride(kg * BP_NR), taken = 0;
    float *wt = bp_malloc(p->groups * wt_size, sizeof(float), &missing);
    for (int64_t g = 0; wt && g < p->groups; g++)
        bp_pack_a_strips(wt + g * wt_size, weight + g * kg * cg, cg, 0, kg, 0, cg, micro.mr);
    if (missing) return missing;
    int64_t stride = image_takers(p);  // the likely next item's distance
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *b = panel_alloc(2 * pitch, &missing);  // a call's panels
        for (int64_t item; b && (item = __atomic_fetch_add(&taken, 1, __ATOMIC_RELAXED)) < items;) {
            int64_t g = item % p->groups;
            float *dxg = dx + item * cg * hw;
            const float *dyg = dy + item * kg * hw;
            bp_lines next = {item + stride < items ? dyg + stride * kg * hw : NULL, kg, hw, hw};
            column_gradient_chunk(dxg, hw, b, pitch, wt + g * wt_size, dyg, hw, next, cg, kg, hw, micro);
            for (int64_t r = 0; r < cg && bias; r++)
                for (int64_t q = 0; q < hw; q++) dxg[r * hw + q] += bias[g * cg + r];
        }
        free(b);
    }
    free(wt);
    return missing;
}

// Backward-data per image-group (unless it runs as a forward): dcol = W_gᵀ · dy_g (the product
// written into the column gradient, nr pixels × mr taps per kernel call), then col2im_rows gathers it
// straight into dx, a row at a time (no buffer: conv_res3x3s2, 1 thread, Zen 4, 20.5 → 19.8 ms,
// medians of the fastest of 11 interleaved runs). A column gradient larger than
// DCOL_WHOLE goes a chunk of output rows at a time into a ring of two chunks (DCOL_RING, in the
// second-level cache), each chunk gathered into the input rows it completes: those below its last
// row that the next chunk does not reach (bp_col2im_reach ≤ the chunk's rows). The same sums: only
// where they are kept changes. 1 thread, Zen 4, medians of the fastest of interleaved runs, ms:
// conv_stem7x7 (7.4 MB per image, written to memory and read back whole) 53.3 → 47.7 and 57.8 →
// 50.2; 8 images, 64 → 64 channels, 3 × 3 stride 2 on 112 × 112 (7.2 MB) 28.1 → 25.8. Smaller
// ones measured faster whole, from the last-level cache (when col2im still gathered into the
// phase-split buffer, of whose planes each of a ring's passes wrote a few rows): conv_res3x3s2
// (1.8 MB) 20.4 → 22.3 in a ring, 16 images, 32 → 64 channels on 112 × 112 (3.6 MB) 25.5 → 26.9.
int64_t bp_conv2d_backward_data(float *dx, const float *dy, const float *weight, const float *bias,
                                const bp_conv2d_params *p) {
    bp_conv2d_params q;
    if (is_pointwise(p) && p->h * p->w < 128) return pointwise_backward_data(dx, dy, weight, bias, p);
    // Image by image, W_gᵀ · dy_g with A transposed (bp_matrix_product's columns form): the column
    // gradient's sums without its col2im copy. Measured (1 thread, 16 images, column gradient →
    // this, ms): 14 × 14, 256 → 256 channels 4.95 → 4.50, 512 → 512 17.9 → 17.4; 28 × 28, 128 →
    // 128 4.97 → 4.40; 56 × 56, 256 → 64 21.7 → 19.4; but 56 × 56, 64 → 256 20.2 → 23.8 and
    // 12 × 12, 1024 → 256 13.0 → 14.0: used where c ≥ k and cg ≤ 512.
    if (is_pointwise(p) && p->c >= p->k && p->c / p->groups <= 512)
        return pointwise_products(dx, dy, weight, bias, 1, p);
    if (is_pointwise(p)) return pointwise_column_gradient(dx, dy, weight, bias, p);
    if (data_as_forward(p, &q)) return backward_data_as_forward(dx, dy, weight, bias, p, &q);
    if (bp_conv_phases_fit(p)) return bp_conv2d_backward_data_phases(dx, dy, weight, bias, p);
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = bp_conv_taps(p), hw = bp_conv_pixels(p), missing = 0;
    bp_micro micro = bp_micro_kernel();
    conv_layout l = bp_conv_layout_build(p, &missing);
    col2im_plan plan = {0};  // the gather of the column gradient (none for depthwise convolutions)
    if (!missing && !is_depthwise(p)) missing = bp_col2im_plan_build(&plan, &l, p);
    // Every group's W_gᵀ as the kernel's strips (column_gradient_chunk), group g at g · wt_size.
    int64_t wt_size = round_up(rows, micro.mr) * kg;
    float *wt = is_depthwise(p) ? NULL : bp_malloc(p->groups * wt_size, sizeof(float), &missing);
    for (int64_t g = 0; wt && g < p->groups; g++)
        bp_pack_a_strips(wt + g * wt_size, weight + g * kg * rows, rows, 0, kg, 0, rows, micro.mr);
    if (missing) return bp_col2im_plan_free(&plan), free(l.offset), free(wt), missing;
    // Output rows per chunk: all, or two chunks of every tap's column gradient in DCOL_RING (at
    // least the rows the gather reaches back, so that the ring holds them).
    int64_t reach = bp_col2im_reach(p), row_bytes = rows * p->out_w * (int64_t)sizeof(float);
    int64_t chunk = row_bytes * p->out_h <= DCOL_WHOLE ? p->out_h : DCOL_RING / (2 * row_bytes);
    chunk = min64(p->out_h, chunk < reach ? reach : chunk < 1 ? 1 : chunk);
    int64_t ring = chunk == p->out_h ? chunk : 2 * chunk, ld = bp_unaliased_stride(ring * p->out_w);
    int64_t slack = bp_col2im_slack(&l);
    int64_t pitch = bp_unaliased_stride(kg * BP_NR);  // floats from one panel of dy to the next
#pragma omp parallel if (bp_conv_parallel_over_images(p))
    {
        float *buffer = is_depthwise(p) ? bp_malloc(l.size + SLACK, sizeof(float), &missing) : NULL;
        float *rows_scratch =
            is_depthwise(p) ? NULL : bp_malloc(bp_col2im_row_floats(&plan, p), sizeof(float), &missing);
        float *b = is_depthwise(p) ? NULL : panel_alloc(2 * pitch, &missing);  // a call's panels
        float *dcol_space = is_depthwise(p) ? NULL : panel_alloc(rows * ld + 2 * slack, &missing);
        float *dcol = dcol_space ? dcol_space + slack : NULL;
        tap_reach *reaching = is_depthwise(p) ? NULL : bp_malloc(p->r * p->s, sizeof(tap_reach), &missing);
        int ready = is_depthwise(p) ? buffer != NULL : b && dcol && rows_scratch && reaching;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < p->n * p->groups; item++) {
            if (!ready) continue;
            int64_t image = item / p->groups, g = item % p->groups;
            const float *dyg = dy + (image * p->k + g * kg) * hw;
            float *dxg = dx + (image * p->c + g * cg) * p->h * p->w;
            const float *bias_g = bias ? bias + g * cg : NULL;
            if (is_depthwise(p)) {
                memset(buffer, 0, (size_t)(l.size + SLACK) * sizeof(float));
                depthwise_backward_data(buffer, dyg, &l, weight + g * rows, p);
                bp_conv_copy_out(dxg, buffer, bias_g, &l, p);
            } else
                for (int64_t oh0 = 0, h0 = 0; oh0 < p->out_h; oh0 += chunk) {
                    int last = oh0 + chunk >= p->out_h;  // the image's last chunk: it completes every input row
                    int64_t p0 = oh0 * p->out_w, count = min64(chunk, p->out_h - oh0) * p->out_w;
                    int64_t h1 = last ? l.hq : oh0 + chunk;
                    // What the next chunk reads: this image's next rows, or the next item's first
                    // (item i's dy at dy + i · kg · hw).
                    bp_lines next = {last ? (item + 1 < p->n * p->groups ? dyg + kg * hw : NULL) : dyg + p0 + count, kg,
                                     hw, min64(chunk, last ? p->out_h : p->out_h - oh0 - chunk) * p->out_w};
                    column_gradient_chunk(dcol + oh0 % ring * p->out_w, ld, b, pitch, wt + g * wt_size, dyg + p0, count,
                                          next, rows, kg, hw, micro);
                    bp_col2im_rows(dxg, bias_g, (dcol_rows){dcol, ld, ring}, h0, h1, &l, &plan, reaching, rows_scratch,
                                   p);
                    h0 = h1;
                }
        }
        free(buffer);
        free(rows_scratch);
        free(b);
        free(dcol_space);
        free(reaching);
    }
    bp_col2im_plan_free(&plan);
    free(wt);
    free(l.offset);
    return missing;
}

// dbias[k] += Σ of dy's row k over the chunk of pixels [p0, p0 + pc) (clipped to hw), for k < kg.
static void add_bias_chunk(double *dbias, const float *dy, int64_t kg, int64_t hw, int64_t p0, int64_t pc) {
    float sums[64];
    for (int64_t k0 = 0; k0 < kg; k0 += 64) {
        int64_t count = min64(64, kg - k0);
        bp_lane_sums(sums, dy + k0 * hw + p0, hw, count, min64(pc, hw - p0));
        for (int64_t k = 0; k < count; k++) dbias[k0 + k] += sums[k];
    }
}

void bp_conv_add_bias_sums(double *dbias, const float *dy, int64_t kg, int64_t hw, int64_t p0, int64_t p1) {
    for (int64_t q = p0; q < p1; q += PC) add_bias_chunk(dbias, dy, kg, hw, q, min64(PC, p1 - q));
}

void bp_conv_bias_finish(float *dbias, const double *partial, int64_t blocks, int64_t k) {
    for (int64_t o = 0; o < k; o++) {
        double sum = partial[o];
        for (int64_t b = 1; b < blocks; b++) sum += partial[b * k + o];
        dbias[o] += (float)sum;
    }
}

enum { SUM_RUN = 64 };  // taps summed at a time by add_block_sums, in a stack array

// dw[t] += Σ_b first[b · block_stride + t] for t < count, the blocks' partials summed in order of
// b (the same sums whatever the thread count), a run of taps at a time so that the additions
// vectorise (conv_1x1's weight gradient, 1 thread, Zen 4: 4.68 -> 4.61 ms, medians of interleaved
// runs; this sum's share of the profile 3.9% -> 1.1%).
BP_MULTIVERSION
static void add_block_sums(float *dw, const float *first, int64_t count, int64_t blocks, int64_t block_stride) {
    for (int64_t t0 = 0; t0 < count; t0 += SUM_RUN) {
        int64_t run = min64(SUM_RUN, count - t0);
        float sums[SUM_RUN];
        for (int64_t t = 0; t < run; t++) sums[t] = first[t0 + t];
        for (int64_t b = 1; b < blocks; b++)
            for (int64_t t = 0; t < run; t++) sums[t] += first[b * block_stride + t0 + t];
        for (int64_t t = 0; t < run; t++) dw[t0 + t] += sums[t];
    }
}

// The same sums for the direct kernel's partials [R][ld] (channels in the rows): dw[o][t] (rows
// taps apart) += Σ_b first[b · block_stride + t · ld + o] for the tile of 16 taps from t0 and 16
// channels from o0 (o < channels), summed a row at a time and transposed in registers, where one
// channel's taps down a column would take a line each (conv_res3x3s2's weight gradient, 1 thread,
// Zen 4: this sum's share of the profile 2.0% -> 0.8%).
BP_MULTIVERSION
static void add_block_sums_tile(float *dw, int64_t taps, const float *first, int64_t ld, int64_t t0, int64_t o0,
                                int64_t channels, int64_t blocks, int64_t block_stride) {
    v16f tile[16];
    for (int64_t r = 0; r < 16; r++) {
        tile[r] = (v16f){0};
        if (t0 + r >= taps) continue;
        memcpy(&tile[r], first + (t0 + r) * ld + o0, sizeof tile[r]);
        for (int64_t b = 1; b < blocks; b++) {
            v16f v;
            memcpy(&v, first + b * block_stride + (t0 + r) * ld + o0, sizeof v);
            tile[r] += v;
        }
    }
    bp_transpose_16x16(tile);
    for (int64_t o = 0; o < min64(16, channels - o0); o++) {
        float sums[16];
        memcpy(sums, &tile[o], sizeof sums);
        for (int64_t t = 0; t < min64(16, taps - t0); t++) dw[(o0 + o) * taps + t0 + t] += sums[t];
    }
}

// Weight gradients: dW_g [kg, R] += dy_g [kg, pixels] · colᵀ, the pixels in chunks of PC, with A
// = dy_g's chunk and B = colᵀ [pixels, BP_NR taps] gathered from the buffer's runs, summed over
// each block of images (bp_conv_weight_blocks) and its chunks in order. The bias gradient is
// summed the same way, each chunk's dy rows in 8 float lanes into a double per block. With at
// most DY_IN_PLACE_MOST output channels per group the kernel reads A's rows where they are (its
// `rows` form), else A is packed as its strips first (pack_rows): the same sums either way. Zen 3,
// 1 thread, medians of interleaved runs, ms, packed -> in place: conv_stem7x7 50.8 -> 48.9
// (2 threads 25.6 -> 24.6); 3 -> 64 channels, 3 x 3 stride 2 on 32 x 32 0.63 -> 0.52; 3 -> 32,
// 5 x 5 stride 2 on 112 x 112 4.05 -> 3.78; 6 -> 16, 5 x 5 on 14 x 14 0.63 -> 0.56; 32 -> 64,
// 5 x 5 stride 2 on 56 x 56 16.2 -> 15.7; but with 128 channels the same or slower:
// conv_res3x3s2 22.8 -> 23.3, 32 -> 128, 3 x 3 stride 2 on 56 x 56 11.65 either way.
int64_t bp_conv2d_backward_weights(float *dweight, float *dbias, const float *dy, const float *x,
                                   const bp_conv2d_params *p) {
    if (bp_conv_winograd_fits(p)) return bp_conv2d_backward_weights_winograd(dweight, dbias, dy, x, p, NULL);
    if (bp_conv_phases_fit(p)) return bp_conv2d_backward_weights_phases(dweight, dbias, dy, x, p);
    int64_t cg = p->c / p->groups, kg = p->k / p->groups, rows = bp_conv_taps(p), hw = bp_conv_pixels(p);
    int64_t size = p->k * rows;  // the weight's element count
    int64_t blocks = bp_conv_weight_blocks(p);
    int64_t missing = 0;
    bp_micro micro = bp_micro_kernel();
    // Where it pays, a direct kernel (conv2d_direct.c on AVX-512, conv2d_direct_avx2.c on AVX2):
    // its partials are [block][g][R][ld] (ld = kg rounded up to 16), the product's [block][g][kg][R].
    int direct = 0, direct_avx2 = 0;
    int64_t ld = bp_conv_weights_direct_ld(p);
#if BP_AVX512_KERNEL
    direct = micro.avx512 && !is_depthwise(p) && bp_conv_weights_direct_pays(p);
    direct_avx2 = !micro.avx512 && !is_depthwise(p) && bp_conv_weights_direct_avx2_pays(p);
    direct = direct || direct_avx2;
#endif
    int64_t group_size = direct ? rows * ld : kg * rows;
    int pointwise = is_pointwise(p);
    conv_layout l = bp_conv_layout_build(p, &missing);
    float *partial = bp_calloc(blocks * p->groups * group_size, sizeof(float), &missing);
    double *bias_partial = bp_calloc(blocks * p->k, sizeof(double), &missing);  // [block][k]: Σ dy
    if (missing) return free(l.offset), free(partial), free(bias_partial), missing;
#pragma omp parallel if (blocks > 1 && p->n * p->k * hw * rows >= BP_PARALLEL_MIN)
    {
        // What this path needs: the padded image (not for 1 × 1 products or the direct kernel,
        // which reads x in place), the product's panels, or the direct kernel's dy pixel-major and
        // a row of zeros.
        int columns = !pointwise && !direct;
        float *buffer = pointwise || direct ? NULL : bp_calloc(l.size + SLACK, sizeof(float), &missing);
        float *zeros = direct ? bp_calloc(p->stride_w * p->out_w + p->s, sizeof(float), &missing) : NULL;
        int dy_in_place = kg <= DY_IN_PLACE_MOST;
        float *a = columns && !dy_in_place ? panel_alloc(round_up(kg, micro.mr) * PC + 8 - micro.mr, &missing) : NULL;
        float *b = columns ? panel_alloc(2 * (PC + 8) * BP_NR, &missing) : NULL;  // up to two panels
        pixel_run *runs = columns ? bp_malloc(PC + 2, sizeof(pixel_run), &missing) : NULL;
        int64_t dyt_floats = direct_avx2 ? 16 * PC : ld * bp_conv_weights_direct_piece(PC);  // as each kernel asks
        float *dyt = direct ? panel_alloc(dyt_floats, &missing) : NULL;
        int ready = pointwise || (direct ? dyt && zeros : buffer && (a || dy_in_place) && b && runs);
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; block++)
            for (int64_t image = block * p->n / blocks; ready && image < (block + 1) * p->n / blocks; image++)
                for (int64_t g = 0; g < p->groups; g++) {
                    float *dwg = partial + (block * p->groups + g) * group_size;
                    const float *dyg = dy + (image * p->k + g * kg) * hw;
                    const float *xg = x + (image * p->c + g * cg) * p->h * p->w;
                    double *dbg = bias_partial + block * p->k + g * kg;
                    if (pointwise) {  // dW_g += dy_g · x_gᵀ, chunk by chunk (on this thread)
                        // What the next product packs: x's next chunk, or the next item's first
                        // (this image's next group, or the block's next image).
                        const float *next_item = g + 1 < p->groups                         ? xg + cg * hw
                                                 : image + 1 < (block + 1) * p->n / blocks ? x + (image + 1) * p->c * hw
                                                                                           : NULL;
                        for (int64_t p0 = 0; p0 < hw; p0 += PC) {
                            bp_lines next = p0 + PC < hw ? (bp_lines){xg + p0 + PC, cg, hw, min64(PC, hw - p0 - PC)}
                                                         : (bp_lines){next_item, cg, hw, min64(PC, hw)};
                            int64_t pc = min64(PC, hw - p0),
                                    failed = bp_matrix_product_streamed(1, kg, cg, pc, dyg + p0, hw, xg + p0, hw, 1,
                                                                        next, dwg, cg);
                            if (failed) {
#pragma omp atomic write
                                missing = failed;
                            }
                            if (dbias) add_bias_chunk(dbg, dyg, kg, hw, p0, pc);
                        }
                        continue;
                    }
#if BP_AVX512_KERNEL
                    if (direct) {
                        (direct_avx2 ? bp_conv_weights_direct_avx2
                                     : bp_conv_weights_direct)(dwg, ld, dbias ? dbg : NULL, xg, zeros, dyg, dyt, PC, p);
                        continue;
                    }
#endif
                    bp_conv_copy_in(buffer, xg, &l, p);
                    if (is_depthwise(p)) {
                        depthwise_weights(dwg, buffer, dyg, &l, p);
                        if (dbias) *dbg += bp_lane_sum(dyg, hw);
                        continue;
                    }
                    for (int64_t p0 = 0; p0 < hw; p0 += PC) {
                        int64_t pc = min64(PC, hw - p0), n = bp_conv_pixel_runs(runs, &l, p, p0, pc);
                        if (!dy_in_place) pack_rows(a, dyg + p0, hw, kg, pc, micro.mr);
                        if (dbias) add_bias_chunk(dbg, dyg, kg, hw, p0, pc);
                        for (int64_t t0 = 0; t0 < rows; t0 += micro.nr) {
                            // b's panel h [pc, BP_NR] = colᵀ[pixels p0 …, taps t0 + 16h …] (columns past
                            // the last tap are never stored)
                            int64_t nt = min64(micro.nr, rows - t0);
                            for (int64_t h = 0; h * BP_NR < nt; h++)
                                gather_transposed(b + h * (PC + 8) * BP_NR, buffer, l.offset + t0 + h * BP_NR,
                                                  min64(BP_NR, nt - h * BP_NR), runs, n);
                            // dW_g[m rows, taps t0 …] += dy_g[m rows, pixels p0 …] · b
                            for (int64_t m = 0; m < kg; m += micro.mr) {
                                int64_t mc = min64(micro.mr, kg - m);
                                float *dwm = dwg + m * rows + t0;
                                if (dy_in_place)
                                    micro.rows(pc, dyg + m * hw + p0, hw, b, BP_NR, (PC + 8) * BP_NR, dwm, rows, 1, mc,
                                               nt);
                                else micro.block(pc, a + m * pc, b, (PC + 8) * BP_NR, dwm, rows, 1, NULL, mc, nt);
                            }
                        }
                    }
                }
        free(buffer);
        free(zeros);
        free(a);
        free(b);
        free(runs);
        free(dyt);
    }
    if (missing) return free(l.offset), free(partial), free(bias_partial), missing;  // nothing changed
    int64_t tap_tiles = (rows + 15) / 16, channel_tiles = ld / 16;
    if (direct) {
#pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
        for (int64_t tile = 0; tile < p->groups * tap_tiles * channel_tiles; tile++) {
            int64_t g = tile / (tap_tiles * channel_tiles), t0 = tile / channel_tiles % tap_tiles * 16,
                    o0 = tile % channel_tiles * 16;
            add_block_sums_tile(dweight + g * kg * rows, rows, partial + g * group_size, ld, t0, o0, kg, blocks,
                                p->groups * group_size);
        }
    } else {
#pragma omp parallel for schedule(static) if (size * blocks >= BP_PARALLEL_MIN)
        for (int64_t m = 0; m < p->k; m++)  // dweight[m][t], m = g · kg + o
            add_block_sums(dweight + m * rows, partial + (m / kg) * group_size + (m % kg) * rows, rows, blocks,
                           p->groups * group_size);
    }
    if (dbias) bp_conv_bias_finish(dbias, bias_partial, blocks, p->k);
    free(partial);
    free(bias_partial);
    free(l.offset);
    return 0;
}

void bp_channel_bias_backward(float *dbias, const float *dy, int64_t n, int64_t c, int64_t hw) {
#pragma omp parallel for schedule(static) if (n * c * hw >= BP_PARALLEL_MIN)
    for (int64_t ch = 0; ch < c; ch++) {
        double sum = 0.0;
        for (int64_t b = 0; b < n; b++) {
            sum += bp_lane_sum(dy + (b * c + ch) * hw, hw);
        }
        dbias[ch] += (float)sum;
    }
}
