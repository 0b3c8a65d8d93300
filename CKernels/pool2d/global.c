// Global average pooling: the whole plane is the window.
#include "pool2d.h"

// y[plane] = the mean of plane `plane` of x, for planes [first, first + count): each plane's sum
// as bp_lane_sum_inline adds it (8 lanes, then from 0 the tail, then the lanes in order). Eight
// planes at a time: their lane vectors transposed, so each step of the tail and of the lanes is
// one vector add over 8 planes instead of 8 dependent scalar adds per plane.
BP_MULTIVERSION
void global_means(float *y, const float *x, int64_t first, int64_t count, int64_t hw) {
    int64_t plane = first, end = first + count, body = hw / 8 * 8;
    for (; plane + 8 <= end; plane += 8) {
        const float *base = x + plane * hw;
        v8f lanes[8], columns[8], sum = {0};
        for (int q = 0; q < 8; q++) lanes[q] = (v8f){0};
        for (int64_t i = 0; i < body; i += 8)
            for (int q = 0; q < 8; q++) {
                v8f v;
                memcpy(&v, base + q * hw + i, 32);
                lanes[q] += v;
            }
        for (int64_t i = body; i < hw; i++) {
            v8f tail;
            for (int q = 0; q < 8; q++) tail[q] = base[q * hw + i];
            sum += tail;
        }
        bp_transpose_8x8(columns, lanes);
        for (int l = 0; l < 8; l++) sum += columns[l];
        v8f mean = sum / (float)hw;
        memcpy(y + plane, &mean, 32);
    }
    for (; plane < end; plane++) y[plane] = bp_lane_sum_inline(x + plane * hw, hw) / (float)hw;
}

// Every element of plane `plane` of dx = dy[plane] / hw, for planes [first, first + count).
BP_MULTIVERSION
void global_spread(float *dx, const float *dy, int64_t first, int64_t count, int64_t hw) {
    for (int64_t plane = first; plane < first + count; plane++) {
        float share = dy[plane] / (float)hw;
        for (int64_t i = 0; i < hw; i++) dx[plane * hw + i] = share;
    }
}
