// The pooling entry points: a plan, built by one function, says which strategy runs and holds
// what it needs (window tables, layouts); one loop runs it over the planes in parallel, each thread
// with its own scratch.
#include "pool2d.h"

typedef enum {
    POOL_GLOBAL,    // the whole plane is the window (average only): blocks of planes (global.c)
    POOL_ADAPTIVE,  // adaptive windows (adaptive.c)
    POOL_TILED,     // windows that tile the input (tiled.c)
    POOL_IMAGE,     // the stride-1 average (image.c)
    POOL_FIXED,     // any other fixed windows (fixed.c forward, gather.c backward)
} pool_strategy;

enum {
    // Tiled windows with no input row left over (h = out_h · kernel_h) see a stack of planes as one
    // tall plane (no window straddles two planes): PLANE_STACK planes per call, so that a 14 × 14
    // plane's seven rows of windows do not each pay a call, and a row's short tail takes the slow
    // way once per stack rather than once per plane.
    PLANE_STACK = 32,
    GLOBAL_PLANES = 256,  // planes per call of global pooling: one call per plane would cost more than its sum
    GLOBAL_GRABS = 16,    // global pooling's blocks are handed out in this many grabs: a few microseconds
                          // of work each, so that the threads do not queue on the shared counter
};

typedef struct {
    bp_pool2d_params p;
    pool_strategy strategy;
    int backward;
    float pad_value;       // of the fixed forward's padded rows: −∞ for max, 0 for the average
    windows win;           // every strategy but POOL_GLOBAL
    fixed_layout f;        // POOL_FIXED and POOL_IMAGE
    gather_layout g;       // POOL_FIXED backward
    image_layout image;    // POOL_IMAGE
    int64_t stack;         // planes per unit of work (a stack or a block)
    int64_t units, chunk;  // units in all, and how many a thread takes at a time
} pool_plan;

// The threads take the units a few at a time from a shared counter rather than in equal shares, so
// that a thread whose core is busy with other work takes fewer; which thread computes a plane
// changes none of its bits. A grab is at most 16 units and at most 1/64 of them, so that every
// thread gets some.
static int64_t units_per_grab(int64_t units) { return units < 64 ? 1 : units / 64 < 16 ? units / 64 : 16; }

static void pool_plan_free(pool_plan *plan) {
    windows_free(&plan->win);
    fixed_layout_free(&plan->f);
    gather_layout_free(&plan->g);
}

// The plan for max (is_max) or average pooling `p`, forward or backward; `image_passes` allows the
// stride-1 average's image. Returns 0, or the bytes it could not allocate (then the plan is freed).
static int64_t pool_plan_build(pool_plan *plan, const bp_pool2d_params *p, int is_max, int backward) {
    *plan = (pool_plan){.p = *p, .backward = backward, .pad_value = is_max && !backward ? -INFINITY : 0.0f};
    int64_t planes = p->n * p->c, missing = 0;
    if (!is_max && p->adaptive && p->out_h == 1 && p->out_w == 1) plan->strategy = POOL_GLOBAL;
    else if (p->adaptive) plan->strategy = POOL_ADAPTIVE;
    else if (is_tiled(p)) plan->strategy = POOL_TILED;
    else if (!is_max && p->stride_h == 1 && p->stride_w == 1) plan->strategy = POOL_IMAGE;
    else plan->strategy = POOL_FIXED;
    plan->stack = plan->strategy == POOL_GLOBAL                                    ? GLOBAL_PLANES
                  : plan->strategy == POOL_TILED && p->h == p->out_h * p->kernel_h ? PLANE_STACK
                                                                                   : 1;
    plan->units = (planes + plan->stack - 1) / plan->stack;
    plan->chunk =
        plan->strategy == POOL_GLOBAL ? (plan->units + GLOBAL_GRABS - 1) / GLOBAL_GRABS : units_per_grab(plan->units);
    if (plan->strategy != POOL_GLOBAL) missing = windows_build(&plan->win, p);
    if (!missing && (plan->strategy == POOL_FIXED || plan->strategy == POOL_IMAGE))
        missing = fixed_layout_build(&plan->f, p, &plan->win);
    if (!missing && plan->strategy == POOL_FIXED && backward) missing = gather_layout_build(&plan->g, p, &plan->f);
    if (plan->strategy == POOL_IMAGE) plan->image = image_layout_of(p, backward);
    if (missing) pool_plan_free(plan);
    return missing;
}

static void scratch_free(fixed_scratch *s) {
    free(s->padded), free(s->ring), free(s->ring_taps), free(s->window_ring), free(s->window_ring_taps);
    free(s->out), free(s->out_taps), free(s->grid), free(s->grid_taps), free(s->sum), free(s->phases);
    free(s->window_grid), free(s->image), free(s->sums);
}

// A thread's scratch for the plan: for the image passes the image and its sums; for the fixed
// forward the padded row, the ring of row results and an output row; for the fixed backward the
// gradient grid, a summed row and a row's phases. Returns whether it got all of it (else the bytes
// missing are recorded in *missing).
static int scratch_make(fixed_scratch *s, const pool_plan *plan, int64_t *missing) {
    const bp_pool2d_params *p = &plan->p;
    const fixed_layout *f = &plan->f;
    const gather_layout *g = &plan->g;
    *s = (fixed_scratch){0};
    if (plan->strategy == POOL_IMAGE) {
        s->image = bp_calloc(plan->image.size, sizeof(float), missing);
        s->sums = bp_calloc(plan->image.length + 8, sizeof(float), missing);
        return s->image && s->sums;
    }
    if (plan->strategy != POOL_FIXED) return 1;
    if (plan->backward) {
        int64_t cells = p->out_h * g->grid_width, reaches = g->row_first[p->h];
        s->grid = bp_calloc(cells, sizeof(float), missing);
        s->grid_taps = bp_malloc(cells, sizeof(int32_t), missing);
        s->sum =
            bp_calloc(g->grid_width, sizeof(float), missing);  // past sum_width: zeros, for lanes past the row's end
        s->phases = bp_malloc(p->stride_w * g->phase_length, sizeof(float), missing);
        s->window_grid = bp_malloc(reaches + 1, sizeof(float *), missing);
        if (!(s->grid && s->grid_taps && s->sum && s->phases && s->window_grid)) return 0;
        for (int64_t i = 0; i < cells; i++) s->grid_taps[i] = -1;
        for (int64_t k = 0; k < reaches; k++) s->window_grid[k] = s->grid + g->window_row[k] * g->grid_width;
        return 1;
    }
    int64_t slots = f->ring_mask + 1, tap_rows = f->window_first[p->out_h];
    s->padded = bp_malloc(f->size, sizeof(float), missing);
    s->ring = bp_malloc(slots * f->lanes, sizeof(float), missing);
    s->ring_taps = bp_malloc(slots * f->lanes, sizeof(int32_t), missing);
    s->window_ring = bp_malloc(tap_rows + 1, sizeof(float *), missing);
    s->window_ring_taps = bp_malloc(tap_rows + 1, sizeof(int32_t *), missing);
    s->out = bp_malloc(f->lanes, sizeof(float), missing);
    s->out_taps = bp_malloc(f->lanes, sizeof(int32_t), missing);
    if (!(s->padded && s->ring && s->ring_taps && s->window_ring && s->window_ring_taps && s->out && s->out_taps))
        return 0;
    for (int64_t i = 0; i < f->size; i++) s->padded[i] = plan->pad_value;
    for (int64_t k = 0; k < tap_rows; k++) {
        s->window_ring[k] = s->ring + f->window_slot[k] * f->lanes;
        s->window_ring_taps[k] = s->ring_taps + f->window_slot[k] * f->lanes;
    }
    return 1;
}

// What a pooling call reads and writes. Forward: `out` = y from `in` = x, and max pooling writes
// the argmax (index8 or index32). Backward: `out` = dx from `in` = dy, and max pooling reads the
// argmax. Average pooling has no argmax (both NULL).
typedef struct {
    float *out;
    const float *in;
    uint8_t *index8;
    int32_t *index32;
} pool_tensors;

// The planes [plane, plane + count) of one unit through the plan's strategy: from `in` (x, or dy)
// into `out` (y, or dx).
static void run_unit(const pool_plan *plan, fixed_scratch *s, pool_tensors t, int64_t plane, int64_t count) {
    const bp_pool2d_params *p = &plan->p;
    const windows *win = &plan->win;
    const fixed_layout *f = &plan->f;
    int backward = plan->backward, max = t.index8 || t.index32;
    int64_t hw = p->h * p->w, out_hw = p->out_h * p->out_w;
    uint8_t *i8 = t.index8 ? t.index8 + plane * out_hw : NULL;
    int32_t *i32 = t.index32 ? t.index32 + plane * out_hw : NULL;
    float *out = t.out + plane * (backward ? hw : out_hw);
    const float *in = t.in + plane * (backward ? out_hw : hw);
    bp_pool2d_params stacked = *p;  // a stack of planes as one tall plane
    stacked.h *= count, stacked.out_h *= count;
    switch (plan->strategy) {
    case POOL_GLOBAL:
        if (backward) global_spread(t.out, t.in, plane, count, hw);
        else global_means(t.out, t.in, plane, count, hw);
        break;
    case POOL_ADAPTIVE:
        if (max && backward) max_plane_adaptive_backward(out, in, i8, i32, p, win);
        else if (max) max_plane_adaptive(out, i8, i32, in, p, win);
        else if (backward) avg_plane_adaptive_backward(out, in, p, win);
        else avg_plane_adaptive(out, in, p, win);
        break;
    case POOL_TILED:
        if (backward) plane_tiled_backward(out, in, i8, &stacked);
        else plane_tiled(out, i8, in, &stacked);
        break;
    case POOL_IMAGE:
        if (backward) plane_image_backward(out, in, p, win, f, &plan->image, s);
        else plane_image(out, in, p, win, f, &plan->image, s);
        break;
    case POOL_FIXED:
        if (backward) plane_fixed_backward(out, in, i8, i32, p, win, f, &plan->g, s);
        else plane_fixed(out, i8, i32, in, p, win, f, s);
        break;
    }
}

// Runs every unit of the plan, in parallel when the planes are large enough to pay for it.
// Returns 0, or the bytes of scratch a thread could not allocate (the outputs are then incomplete).
static int64_t pool_plan_run(const pool_plan *plan, pool_tensors t) {
    const bp_pool2d_params *p = &plan->p;
    int64_t planes = p->n * p->c, handed = 0, missing = 0;
#pragma omp parallel if (p->n * p->c * p->h * p->w >= BP_PARALLEL_MIN)
    {
        fixed_scratch scratch;
        if (scratch_make(&scratch, plan, &missing)) {
            for (int64_t first; (first = __atomic_fetch_add(&handed, plan->chunk, __ATOMIC_RELAXED)) < plan->units;)
                for (int64_t unit = first; unit < first + plan->chunk && unit < plan->units; unit++) {
                    int64_t plane = unit * plan->stack;
                    run_unit(plan, &scratch, t, plane, planes - plane < plan->stack ? planes - plane : plan->stack);
                }
        }
        scratch_free(&scratch);
    }
    return missing;
}

// Builds the plan, runs it, frees it.
static int64_t pool(const bp_pool2d_params *p, int is_max, int backward, pool_tensors t) {
    pool_plan plan;
    int64_t missing = pool_plan_build(&plan, p, is_max, backward);
    if (missing) return missing;
    missing = pool_plan_run(&plan, t);
    pool_plan_free(&plan);
    return missing;
}

int64_t bp_maxpool2d_forward(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p) {
    return pool(p, 1, 0, (pool_tensors){y, x, index8, index32});
}

// The argmax is only read in the backward.
int64_t bp_maxpool2d_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                              const bp_pool2d_params *p) {
    return pool(p, 1, 1, (pool_tensors){dx, dy, (uint8_t *)index8, (int32_t *)index32});
}

int64_t bp_avgpool2d_forward(float *y, const float *x, const bp_pool2d_params *p) {
    return pool(p, 0, 0, (pool_tensors){y, x, NULL, NULL});
}

int64_t bp_avgpool2d_backward(float *dx, const float *dy, const bp_pool2d_params *p) {
    return pool(p, 0, 1, (pool_tensors){dx, dy, NULL, NULL});
}
