// Pooling's kernels, shared by the files of this folder; not part of the public C API.
//
// Every kernel computes one (n, c) plane at a time on one thread (tiled windows: a stack of planes;
// global pooling: a block of planes), so a plane's outputs (and, in the backward, its input
// gradient) belong to one thread and overlapping windows add up in a fixed order. A plan (plan.c)
// picks one strategy per call and runs it over the planes:
//   fixed.c     fixed windows that overlap or leave gaps: a row pass, then a column pass
//   gather.c    their backward, gathering each input-gradient row from the windows that reach it
//   image.c     the stride-1 average over the plane as one padded image
//   tiled.c     windows that tile the input (stride = kernel, no padding)
//   global.c    the whole plane as the window
//   adaptive.c  adaptive windows, one output at a time
//   windows.c   the windows of each axis, divisors, argmax positions
// The plain-loop references are in ../reference/pool2d_ref.c.
#ifndef BACKPROP_POOL2D_H
#define BACKPROP_POOL2D_H

#include "../internal.h"
#include "CKernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// MARK: - Vectors

// Lanes chosen by a mask (all ones or zeros per lane), without branches.
#define BLEND(take, yes, no) ((v8f)(((v8i)(yes) & (take)) | ((v8i)(no) & ~(take))))

// 16 consecutive floats split into their even and odd elements: even[i] = src[2i], odd[i] = src[2i + 1].
__attribute__((always_inline)) static inline void split_pairs(v8f *even, v8f *odd, const float *src) {
    v8f lo, hi;
    memcpy(&lo, src, 32), memcpy(&hi, src + 8, 32);
    *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
    *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
}

// split_pairs' inverse: dst[2i] = even[i], dst[2i + 1] = odd[i] for 16 floats.
__attribute__((always_inline)) static inline void join_pairs(float *dst, const v8f *even, const v8f *odd) {
    v8f lo = __builtin_shufflevector(*even, *odd, 0, 8, 1, 9, 2, 10, 3, 11);
    v8f hi = __builtin_shufflevector(*even, *odd, 4, 12, 5, 13, 6, 14, 7, 15);
    memcpy(dst, &lo, 32), memcpy(dst + 8, &hi, 32);
}

// The first `count` lanes of *v to out: all 8 when count is 8 or there is `room` (the lanes past
// count land where later stores overwrite them), else through a copy.
__attribute__((always_inline)) static inline void store_lanes(float *out, const v8f *v, int64_t count, int room) {
    if (count >= 8 || room) {
        memcpy(out, v, 32);
        return;
    }
    float lanes[8];
    memcpy(lanes, v, 32);
    bp_copy_short(out, lanes, count);
}

// 8 argmax tap numbers stored as bytes (windows of at most BP_ARGMAX8_MAX_TAPS taps), and loaded back.
__attribute__((always_inline)) static inline void narrow_taps(uint8_t *dst, const v8i *taps) {
    v8u8 bytes = __builtin_convertvector(*taps, v8u8);
    memcpy(dst, &bytes, 8);
}

__attribute__((always_inline)) static inline void widen_taps(v8i *taps, const uint8_t *src) {
    v8u8 bytes;
    memcpy(&bytes, src, 8);
    *taps = __builtin_convertvector(bytes, v8i);
}

// MARK: - Windows (windows.c)

// One axis's windows: window o has `taps[o]` taps at first + t · step for t < taps[o], of which
// those in [lo[o], hi[o]) lie inside the input (tap indices, not positions); `size[o]` is the
// window's extent clipped to the padded input (for count_include_pad).
typedef struct {
    int64_t *first, *taps, *lo, *hi, *size;
    int64_t step;
} axis_windows;

typedef struct {
    axis_windows rows, cols;
} windows;

/// The windows of both axes for `p`; returns 0, or the bytes it could not allocate (then
/// windows_free still frees what was allocated).
int64_t windows_build(windows *win, const bp_pool2d_params *p);
void windows_free(windows *win);

// One axis's factor of the average's divisor for window o: its extent clipped to the padded input
// (count_include_pad, fixed windows) or its taps inside the input. Without an override the divisor
// of window (oh, ow) is the product of the two axes' factors.
static inline int64_t divisor_part(const bp_pool2d_params *p, const axis_windows *a, int64_t o) {
    return p->count_include_pad && !p->adaptive ? a->size[o] : a->hi[o] - a->lo[o];
}

static inline int64_t divisor(const bp_pool2d_params *p, const windows *win, int64_t oh, int64_t ow) {
    if (p->divisor_override > 0) return p->divisor_override;
    return divisor_part(p, &win->rows, oh) * divisor_part(p, &win->cols, ow);
}

/// The plane offset of window (oh, ow)'s tap number `tap` (row-major in the window); −1 for a
/// window with no tap inside the input.
int64_t tap_offset(const windows *win, int64_t w, int64_t oh, int64_t ow, int64_t tap);

static inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t floor_mod(int64_t a, int64_t b) { return a - floor_div(a, b) * b; }

// MARK: - Fixed windows (fixed.c)

// MARK: - Fixed windows: a row pass, then a column pass
//
// Tap (ti, tj) of output (oh, ow) reads input row oh · sh − ph + ti · dh, column ow · sw − pw + tj · dw.
// The row pass reduces one input row over the kw tap columns of every output column (the maximum
// and its tap column, or the sum); the column pass reduces the kh row results of each output, in
// tap-row order. Both go in blocks of 8-column vectors. Visiting the taps row by row, each in
// window order, keeps PyTorch's rule bit for bit: the first maximum wins a tie and the last NaN
// wins over everything (the rule is associative, so reducing rows first changes nothing). Row
// results are kept in a ring of as many rows as a window spans (rounded up to a power of two),
// so with overlapping windows each input row is reduced once, on a schedule built per call.
//
// So that tap column tj of 8 consecutive outputs is one contiguous load whatever the stride, the
// row pass first copies the input row into a padded row split into stride phases: phase q holds
// input columns q, q + sw, q + 2 · sw, … after `left` slots of padding, and input column
// ow · sw + offset (offset = tj · dw − pw = shift · sw + q, 0 <= q < sw) sits at slot
// q · phase_length + left + shift + ow. The padding slots hold −∞ for max (never larger, never
// NaN) and 0 for sums, are written once per thread, and cover every slot the loads reach.

typedef struct {
    int64_t phase_length, left, size;  // size: floats in the padded row (stride_w phases)
    int64_t lanes;                     // out_w rounded up to 32: the columns the passes compute
    int64_t ring_mask;                 // ring slots − 1: a power of two >= the rows one window spans
    int64_t *line;                     // line[tj]: slot of tap column tj's tap for output 0
    int32_t *first_tap;                // [lanes]: the first tap column inside the input, −1 if none
    float *columns_part;               // [lanes]: the column factor of the average's divisor (a whole number)
    // The schedule of the row pass, the same for every plane: before output row oh, input rows
    // new_rows[new_first[oh] .. new_first[oh + 1]) are reduced, each into ring slot ih & ring_mask,
    // each once, when a window first needs it (a slot is reused only by a row at least `slots`
    // further down, which no window that still needs the first one reaches). Output row oh then
    // reduces its taps' rows window_slot[window_first[oh] ..] (ring slots), tap rows window_ti.
    int64_t *new_first, *new_rows, *window_first, *window_slot, *window_ti;
} fixed_layout;

/// The layout of `p`'s fixed windows; returns 0, or the bytes it could not allocate.
int64_t fixed_layout_build(fixed_layout *f, const bp_pool2d_params *p, const windows *win);
void fixed_layout_free(fixed_layout *f);

// The row factor of output row oh's divisors: divisor(oh, ow) = rows_part · columns_part[ow].
static inline int32_t rows_part(const bp_pool2d_params *p, const windows *win, int64_t oh) {
    return p->divisor_override > 0 ? 1 : (int32_t)divisor_part(p, &win->rows, oh);
}

// The divisors of output columns [ow, ow + 8) of a row whose row factor is `rows`, from the
// layout's column factors (f->columns_part): products of whole numbers below 2^24, so exact in float.
__attribute__((always_inline)) static inline void divisors(v8f *d, const float *columns_part, int64_t ow,
                                                           int32_t rows) {
    v8f columns;
    memcpy(&columns, columns_part + ow, 32);
    *d = columns * (float)rows;
}

// Output row oh of the average's dy divided by its divisors (row factor `rows`) into row.
__attribute__((always_inline)) static inline void divided_row(float *row, const float *grad, const fixed_layout *f,
                                                              int64_t out_w, int32_t rows) {
    const float *columns = f->columns_part;
    int64_t ow = 0;
    for (; ow + 8 <= out_w; ow += 8) {
        v8f v, d;
        memcpy(&v, grad + ow, 32);
        divisors(&d, columns, ow, rows);
        v /= d;
        memcpy(row + ow, &v, 32);
    }
    for (; ow < out_w; ow++) row[ow] = grad[ow] / (columns[ow] * (float)rows);
}

// Blocks of the passes: `vectors` independent runs of 8 columns, so that the chains fill the
// pipeline and the loops around them run a few times per row: 8 or 4 for sums, 4 for max (which
// keeps a maximum and its tap per run: 8 would not fit the 16 AVX2 registers). f->lanes is a
// multiple of 32: sums take 64 columns at a time and the last 32 alone.
enum { MAX_VECTORS = 8 };

// MARK: - The gathering backward (gather.c)

// The backward gathers, one input-gradient row at a time and each element written once: element
// (ih, iw) of dx sums, over the taps (ti, tj) of the windows that contain it, dy of that window
// divided by its divisor (average) or dy where the window's argmax is that tap, else 0 (max).
// The windows containing it: ih = oh · sh − ph + ti · dh and iw = ow · sw − pw + tj · dw. Within
// phase q of the row (iw = m · sw + q, 0 <= q < sw) the compatible tap columns tj have
// ow = m + c[tj] with c = (q + pw − tj · dw) / sw exactly, so for each (ti, tj) the row's phase is
// a contiguous run of one row of dy, read in vectors again. The terms are added in output
// order (ti and tj descending: oh and ow ascending), as the reference adds them, so max gives the
// reference's bits; the unselected taps add +0, which changes no sum that starts from +0.
// dy and the argmax sit in a plane-sized grid with `grid_left` columns of padding (0 and no tap)
// so that every run is in bounds.

typedef struct {
    int64_t phase_length;                // floats per phase of a gathered row: ⌈w / sw⌉ rounded up to 32
    int64_t *first;                      // [sw + 1]: phase q's tap columns are entries [first[q], first[q + 1])
    int64_t *tap_column, *column_shift;  // tj and c of each entry, tj descending within a phase
    int64_t grid_left, grid_width;       // columns of padding left of dy's row in the grid, and the
                                         // row length (a multiple of 32)
    int64_t sum_width;                   // the columns of a grid row the average's runs reach from the
                                         // input's columns, rounded up to 32
    int64_t *row_first;                  // [h + 1]: input row ih is a tap row of the windows
    int64_t *window_row, *tap_row;       // [row_first[ih], row_first[ih + 1]) of these: output row
                                         // oh (ascending) and the tap row ti it is in oh's windows
    // Max: the runs phase q of input row ih adds are terms [term_first[ih · sw + q],
    // term_first[ih · sw + q + 1]), in output order (oh ascending, then tj descending): the run
    // starts at term_offset in the grid and its argmax rows, and takes the gradients whose argmax
    // is window tap term_tap (ti · kw + tj).
    int64_t *term_first, *term_offset;
    int32_t *term_tap;
} gather_layout;

/// The backward's layout; returns 0, or the bytes it could not allocate.
int64_t gather_layout_build(gather_layout *g, const bp_pool2d_params *p, const fixed_layout *f);
void gather_layout_free(gather_layout *g);

// MARK: - The stride-1 average's image (image.c)

// The stride-1 average's image (see "Stride-1 average" below).
typedef struct {
    int64_t rows, pitch, top, left;  // the image: rows × pitch, the plane's rows from `top`, columns from `left`
    int64_t length;                  // floats the flat pass computes, a multiple of 32
    int64_t size;                    // floats of the image: every one the flat pass reads
} image_layout;

image_layout image_layout_of(const bp_pool2d_params *p, int backward);

// MARK: - Per-thread scratch and prefetching (plan.c)

// Per-thread scratch of the fixed-window passes.
typedef struct {
    float *padded;               // the padded row [f.size]
    float *ring;                 // the forward's row results [slots][lanes]
    int32_t *ring_taps;          // their tap columns [slots][lanes]
    float **window_ring;         // for each entry of the layout's window_slot: its ring row
    int32_t **window_ring_taps;  // and its tap columns
    float *out;                  // one output row [lanes]
    int32_t *out_taps;           // its taps [lanes]
    float *grid;                 // the backward's dy grid [out_h][grid_width], its padding 0
    int32_t *grid_taps;          // and its argmax [out_h][grid_width], its padding −1
    float **window_grid;         // for each (oh, ti) of the gather layout's row table: grid row oh
    float *sum;                  // the average's summed grid rows [grid_width] (columns [0, sum_width) summed)
    float *phases;               // a gathered row's phases [sw][phase_length]
    float *image;                // the stride-1 average's padded image (image_layout), its margins 0
    float *sums;                 // and its row or column sums [length + 8]
} fixed_scratch;

// The next plane's data (its input, or dy and the argmax), which without help is read all at once
// when that plane starts, after a stretch of work with no reads: each of this plane's `steps` row
// steps prefetches a share of it, so that the reads overlap the work. Past the last plane the
// prefetches are harmless: they never fault.
typedef struct {
    const char *start;
    int64_t lines, share;  // 64-byte lines in all, and per step
} next_plane;

static inline next_plane next_plane_of(const void *start, int64_t bytes, int64_t steps) {
    int64_t lines = (bytes + 63) / 64;
    return (next_plane){start, lines, (lines + steps - 1) / steps};
}

// Step `step`'s share. (Passed by value: the caller's loop keeps it in registers.)
__attribute__((always_inline)) static inline void prefetch_share(next_plane next, int64_t step) {
    int64_t first = step * next.share, end = first + next.share < next.lines ? first + next.share : next.lines;
    // A few lines a call: unrolled, its setup would cost more than the loop.
#pragma clang loop unroll(disable)
    for (int64_t l = first; l < end; l++) __builtin_prefetch(next.start + 64 * l, 0, 3);
}

// A plane function's own copies of its parameters, layout and scratch struct: with the originals
// behind pointers, every vector store (a memcpy, which may alias any type) would make the compiler
// reload each field it uses after it.
typedef struct {
    bp_pool2d_params p;
    fixed_layout f;
    fixed_scratch s;
} plane_locals;

static inline plane_locals plane_locals_of(const bp_pool2d_params *p, const fixed_layout *f, const fixed_scratch *s) {
    return (plane_locals){*p, *f, *s};
}

// MARK: - One plane (or stack or block of planes) of each strategy

// Fixed windows: max (index8 or index32 non-NULL: the argmax) or average.
void plane_fixed(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p,
                 const windows *win, const fixed_layout *f, fixed_scratch *s);
void plane_fixed_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                          const bp_pool2d_params *p, const windows *win, const fixed_layout *f, const gather_layout *g,
                          fixed_scratch *s);
// The stride-1 average.
void plane_image(float *y, const float *x, const bp_pool2d_params *p, const windows *win, const fixed_layout *f,
                 const image_layout *m, fixed_scratch *s);
void plane_image_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win,
                          const fixed_layout *f, const image_layout *m, fixed_scratch *s);
// Tiled windows (index non-NULL: max).
int is_tiled(const bp_pool2d_params *p);
void plane_tiled(float *y, uint8_t *index, const float *x, const bp_pool2d_params *p);
void plane_tiled_backward(float *dx, const float *dy, const uint8_t *index, const bp_pool2d_params *p);
// Global average pooling of planes [first, first + count).
void global_means(float *y, const float *x, int64_t first, int64_t count, int64_t hw);
void global_spread(float *dx, const float *dy, int64_t first, int64_t count, int64_t hw);
// Adaptive windows.
void max_plane_adaptive(float *y, uint8_t *index8, int32_t *index32, const float *in, const bp_pool2d_params *p,
                        const windows *win);
void max_plane_adaptive_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                                 const bp_pool2d_params *p, const windows *win);
void avg_plane_adaptive(float *y, const float *in, const bp_pool2d_params *p, const windows *win);
void avg_plane_adaptive_backward(float *dx, const float *dy, const bp_pool2d_params *p, const windows *win);

#endif
