// The fixed windows' backward: each input-gradient row gathered from the windows that reach it,
// every element written once; see gather_layout in pool2d.h.
#include "pool2d.h"

int64_t gather_layout_build(gather_layout *g, const bp_pool2d_params *p, const fixed_layout *f) {
    *g = (gather_layout){0};
    int64_t s = p->stride_w, kw = p->kernel_w, missing = 0;
    g->phase_length = ((p->w + s - 1) / s + 31) / 32 * 32;
    g->first = bp_calloc(s + 1, sizeof(int64_t), &missing);
    g->tap_column = bp_malloc(kw + 1, sizeof(int64_t), &missing);
    g->column_shift = bp_malloc(kw + 1, sizeof(int64_t), &missing);
    g->row_first = bp_calloc(p->h + 1, sizeof(int64_t), &missing);
    int64_t *cursor = bp_malloc(s > p->h ? s : p->h, sizeof(int64_t), &missing);  // where each bucket's next entry goes
    if (missing) return free(cursor), missing;
    // Tap tj reaches the input columns of phase q = (tj · dw − pw) mod s, shifted by c columns: a
    // counting sort groups the taps by phase, descending within each, in time linear in s + kw.
    int64_t min_shift = 0, max_shift = 0;
    for (int64_t tj = 0; tj < kw; tj++) g->first[floor_mod(tj * p->dilation_w - p->pad_w, s) + 1]++;
    for (int64_t q = 0; q < s; q++) g->first[q + 1] += g->first[q];
    for (int64_t q = 0; q < s; q++) cursor[q] = g->first[q];
    for (int64_t tj = kw - 1; tj >= 0; tj--) {
        int64_t q = floor_mod(tj * p->dilation_w - p->pad_w, s), c = (q + p->pad_w - tj * p->dilation_w) / s;
        int64_t e = cursor[q]++;
        g->tap_column[e] = tj, g->column_shift[e] = c;
        min_shift = c < min_shift ? c : min_shift;
        max_shift = c > max_shift ? c : max_shift;
    }
    g->grid_left = -min_shift;
    int64_t reach = max_shift + g->phase_length > f->lanes ? max_shift + g->phase_length : f->lanes;
    g->grid_width = (g->grid_left + reach + 31) / 32 * 32;
    g->sum_width = (g->grid_left + max_shift + (p->w + s - 1) / s + 31) / 32 * 32;
    // ih = oh · sh − ph + ti · dh: for each ih, the (oh, ti) that reach it, oh ascending (ti
    // descending), by the same counting sort over the pairs of the out_h windows.
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ti = 0; ti < p->kernel_h; ti++) {
            int64_t ih = oh * p->stride_h - p->pad_h + ti * p->dilation_h;
            if (ih >= 0 && ih < p->h) g->row_first[ih + 1]++;
        }
    for (int64_t ih = 0; ih < p->h; ih++) g->row_first[ih + 1] += g->row_first[ih];
    int64_t count = g->row_first[p->h];
    g->window_row = bp_malloc(count + 1, sizeof(int64_t), &missing);
    g->tap_row = bp_malloc(count + 1, sizeof(int64_t), &missing);
    if (missing) return free(cursor), missing;
    for (int64_t ih = 0; ih < p->h; ih++) cursor[ih] = g->row_first[ih];
    for (int64_t oh = 0; oh < p->out_h; oh++)
        for (int64_t ti = p->kernel_h - 1; ti >= 0; ti--) {
            int64_t ih = oh * p->stride_h - p->pad_h + ti * p->dilation_h;
            if (ih < 0 || ih >= p->h) continue;
            int64_t k = cursor[ih]++;
            g->window_row[k] = oh, g->tap_row[k] = ti;
        }
    free(cursor);
    g->term_first = bp_malloc(p->h * s + 1, sizeof(int64_t), &missing);
    g->term_offset = bp_malloc(count * kw + 1, sizeof(int64_t), &missing);
    g->term_tap = bp_malloc(count * kw + 1, sizeof(int32_t), &missing);
    if (missing) return missing;
    int64_t terms = 0;
    for (int64_t ih = 0; ih < p->h; ih++)
        for (int64_t q = 0; q < s; q++) {
            g->term_first[ih * s + q] = terms;
            for (int64_t k = g->row_first[ih]; k < g->row_first[ih + 1]; k++)
                for (int64_t e = g->first[q]; e < g->first[q + 1]; e++, terms++) {
                    g->term_offset[terms] = g->window_row[k] * g->grid_width + g->grid_left + g->column_shift[e];
                    g->term_tap[terms] = (int32_t)(g->tap_row[k] * kw + g->tap_column[e]);
                }
        }
    g->term_first[p->h * s] = terms;
    return 0;
}

void gather_layout_free(gather_layout *g) {
    free(g->first), free(g->tap_column), free(g->column_shift);
    free(g->row_first), free(g->window_row), free(g->tap_row);
    free(g->term_first), free(g->term_offset), free(g->term_tap);
    *g = (gather_layout){0};
}

// One plane's dy into the grid: row oh at grid + oh · grid_width + grid_left, divided by the
// divisors for the average (taps NULL); for max the argmax tap numbers alike into taps. Only
// the out_w columns of each row are written: the padding around them (0, tap −1) is the same
// for every plane and is written once per thread (scratch_make in plan.c).
__attribute__((always_inline)) static inline void gradient_grid(float *grid, int32_t *taps, const float *dy,
                                                                const uint8_t *index8, const int32_t *index32,
                                                                const bp_pool2d_params *p, const windows *win,
                                                                const fixed_layout *f, const gather_layout *g) {
    int64_t out_w = p->out_w, width = g->grid_width;
    for (int64_t oh = 0; oh < p->out_h; oh++) {
        float *row = grid + oh * width + g->grid_left;
        const float *grad = dy + oh * out_w;
        if (!taps) {
            divided_row(row, grad, f, out_w, rows_part(p, win, oh));
            continue;
        }
        bp_copy_short(row, grad, out_w);
        int32_t *inside = taps + oh * width + g->grid_left;
        if (index32) {
            memcpy(inside, index32 + oh * out_w, (size_t)out_w * sizeof(int32_t));
            continue;
        }
        const uint8_t *bytes = index8 + oh * out_w;
        int64_t ow = 0;
        for (; ow + 8 <= out_w; ow += 8) {
            v8i wide;
            widen_taps(&wide, bytes + ow);
            memcpy(inside + ow, &wide, 32);
        }
        for (; ow < out_w; ow++) inside[ow] = bytes[ow];
    }
}

// Max: columns [m, m + 8 · vectors) of a phase of an input-gradient row into acc, the sum of
// terms [t0, t1) (gather_layout): each adds its run of gradients where its tap is the argmax.
// `vectors` is 8 or 4 (independent chains), a constant once inlined.
__attribute__((always_inline)) static inline void routed_sum(v8f *acc, const float *grid, const int32_t *grid_taps,
                                                             const gather_layout *g, int64_t t0, int64_t t1, int64_t m,
                                                             int vectors) {
    for (int k = 0; k < vectors; k++) acc[k] = (v8f){0};
    for (int64_t t = t0; t < t1; t++) {
        const float *run = grid + g->term_offset[t] + m;
        const int32_t *taps = grid_taps + g->term_offset[t] + m;
        int32_t mine = g->term_tap[t];
        for (int k = 0; k < vectors; k++) {
            v8f v;
            v8i tap;
            memcpy(&v, run + 8 * k, 32), memcpy(&tap, taps + 8 * k, 32);
            acc[k] += (v8f)((v8i)v & (tap == mine));  // the gradient where this tap is the argmax, +0 elsewhere
        }
    }
}

// routed_sum into phase + m.
__attribute__((always_inline)) static inline void routed_block(float *phase, const float *grid,
                                                               const int32_t *grid_taps, const gather_layout *g,
                                                               int64_t t0, int64_t t1, int64_t m, int vectors) {
    v8f acc[MAX_VECTORS];
    routed_sum(acc, grid, grid_taps, g, t0, t1, m, vectors);
    memcpy(phase + m, acc, (size_t)vectors * 32);
}

// Max with stride 2: columns [m, m + 32) of both phases of input row ih routed in registers and
// interleaved there, into input columns [2m, 2m + 64) of `row`.
__attribute__((always_inline)) static inline void routed_pairs(float *row, const float *grid, const int32_t *grid_taps,
                                                               const gather_layout *g, int64_t ih, int64_t m) {
    v8f even[4], odd[4];
    const int64_t *terms = g->term_first + 2 * ih;
    routed_sum(even, grid, grid_taps, g, terms[0], terms[1], m, 4);
    routed_sum(odd, grid, grid_taps, g, terms[1], terms[2], m, 4);
    for (int k = 0; k < 4; k++) join_pairs(row + 2 * (m + 8 * k), &even[k], &odd[k]);
}

// Average: columns [k, k + 8 · vectors) of the `count` grid rows summed, into sum + k (vectors: 8 or 4).
__attribute__((always_inline)) static inline void summed_block(float *sum, float *const *grads, int64_t count,
                                                               int64_t k, int vectors) {
    v8f acc[MAX_VECTORS] = {{0}};
    for (int64_t i = 0; i < count; i++)
        for (int r = 0; r < vectors; r++) {
            v8f v;
            memcpy(&v, grads[i] + k + 8 * r, 32);
            acc[r] += v;
        }
    memcpy(sum + k, acc, (size_t)vectors * 32);
}

// Average: columns [m, m + 8 · vectors) of phase q (into phases + m): the tap columns' runs of
// the summed rows added (vectors: 8 or 4).
__attribute__((always_inline)) static inline void spread_block(float *phases, const float *sum, const gather_layout *g,
                                                               int64_t q, int64_t m, int vectors) {
    v8f acc[MAX_VECTORS] = {{0}};
    for (int64_t e = g->first[q]; e < g->first[q + 1]; e++) {
        const float *run = sum + g->grid_left + g->column_shift[e] + m;
        for (int k = 0; k < vectors; k++) {
            v8f v;
            memcpy(&v, run + 8 * k, 32);
            acc[k] += v;
        }
    }
    memcpy(phases + m, acc, (size_t)vectors * 32);
}

// Input-gradient row ih into `dst` (w floats) from the thread's grid (sc), through `phases`
// (sw · phase_length floats). Each phase is computed 64 columns at a time, then 32 (phase_length
// is a multiple of 32): max routes (routed_block); the average sums the grid rows of the windows
// that have ih as a tap row first (into sc->sum, in output-row order) and then adds the tap
// columns' runs of the sum.
__attribute__((always_inline)) static inline void gather_row(float *dst, int64_t ih, const fixed_scratch *sc,
                                                             float *phases, const bp_pool2d_params *p,
                                                             const gather_layout *g, int is_max) {
    int64_t s = p->stride_w, length = g->phase_length, k = 0;
    if (is_max && s == 2) {  // the phases interleaved in registers, into phases as one row (dst, or copied there)
        for (int64_t m = 0; m < length; m += 32) routed_pairs(phases, sc->grid, sc->grid_taps, g, ih, m);
        if (phases != dst) bp_copy_short(dst, phases, p->w);
        return;
    }
    if (!is_max) {
        float *const *grads = sc->window_grid + g->row_first[ih];
        int64_t count = g->row_first[ih + 1] - g->row_first[ih];
        for (; k + 64 <= g->sum_width; k += 64) summed_block(sc->sum, grads, count, k, 8);
        for (; k < g->sum_width; k += 32) summed_block(sc->sum, grads, count, k, 4);
    }
    for (int64_t q = 0; q < s; q++) {
        float *phase = phases + q * length;
        int64_t m = 0, t0 = g->term_first[ih * s + q], t1 = g->term_first[ih * s + q + 1];
        for (; m + 64 <= length; m += 64)
            if (is_max) routed_block(phase, sc->grid, sc->grid_taps, g, t0, t1, m, 8);
            else spread_block(phase, sc->sum, g, q, m, 8);
        for (; m < length; m += 32)
            if (is_max) routed_block(phase, sc->grid, sc->grid_taps, g, t0, t1, m, 4);
            else spread_block(phase, sc->sum, g, q, m, 4);
    }
    // The phases back in input order (pad_row's inverse).
    if (s == 1) {
        if (phases != dst) bp_copy_short(dst, phases, p->w);
    } else if (s == 2) {  // the common case: 8 even and 8 odd interleaved into 16 floats at a time
        const float *even = phases, *odd = phases + length;
        int64_t pairs = p->w / 2, m = 0;
        for (; m + 8 <= pairs; m += 8) {
            v8f e, o;
            memcpy(&e, even + m, 32), memcpy(&o, odd + m, 32);
            join_pairs(dst + 2 * m, &e, &o);
        }
        for (; m < pairs; m++) dst[2 * m] = even[m], dst[2 * m + 1] = odd[m];
        if (p->w % 2) dst[p->w - 1] = even[pairs];
    } else {
        for (int64_t q = 0; q < s; q++)
            for (int64_t m = 0; m * s + q < p->w; m++) dst[m * s + q] = phases[q * length + m];
    }
}

// One plane of the fixed-window backward: max (is_max: index8 or index32) or average.
__attribute__((always_inline)) static inline void fixed_backward(float *dx, const float *dy, const uint8_t *index8,
                                                                 const int32_t *index32, const bp_pool2d_params *p,
                                                                 const windows *win, const fixed_layout *f,
                                                                 const gather_layout *g, fixed_scratch *s, int is_max) {
    plane_locals local = plane_locals_of(p, f, s);
    gather_layout gathers = *g;
    p = &local.p, f = &local.f, s = &local.s, g = &gathers;
    gradient_grid(s->grid, is_max ? s->grid_taps : NULL, dy, index8, index32, p, win, f, g);
    // The next plane's dy and argmax, prefetched a share per row.
    int64_t out_hw = p->out_h * p->out_w;
    next_plane next_dy = next_plane_of(dy + out_hw, 4 * out_hw, p->h);
    next_plane next_index = index8    ? next_plane_of(index8 + out_hw, out_hw, p->h)
                            : index32 ? next_plane_of(index32 + out_hw, 4 * out_hw, p->h)
                                      : next_plane_of(NULL, 0, p->h);
    // A row gathered in input order (one phase, or max's two) goes straight into dx while its
    // stride_w · phase_length floats stay inside the plane (the rest land on the next rows, which
    // are written after).
    int in_order = p->stride_w == 1 || (is_max && p->stride_w == 2);
    for (int64_t ih = 0; ih < p->h; ih++) {
        prefetch_share(next_dy, ih);
        prefetch_share(next_index, ih);
        float *dst = dx + ih * p->w;
        int direct = in_order && ih * p->w + p->stride_w * g->phase_length <= p->h * p->w;
        gather_row(dst, ih, s, direct ? dst : s->phases, p, g, is_max);
    }
}

BP_MULTIVERSION
void plane_fixed_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                          const bp_pool2d_params *p, const windows *win, const fixed_layout *f, const gather_layout *g,
                          fixed_scratch *s) {
    if (index8 || index32) fixed_backward(dx, dy, index8, index32, p, win, f, g, s, 1);
    else fixed_backward(dx, dy, NULL, NULL, p, win, f, g, s, 0);
}
