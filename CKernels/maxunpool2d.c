// Max unpooling: each plane's values written at their saved positions, and the gradient gathered
// back from them. One plane per loop iteration: a plane's outputs belong to one thread, so
// repeated indices resolve the same way for any thread count.
#include "CKernels.h"
#include "internal.h"

#include <string.h>

void bp_maxunpool2d_forward(float *y, const float *x, const int64_t *indices, int64_t planes, int64_t in_plane,
                            int64_t out_plane) {
#pragma omp parallel for schedule(static) if (planes * (in_plane + out_plane) >= BP_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        float *out = y + p * out_plane;
        const float *in = x + p * in_plane;
        const int64_t *at = indices + p * in_plane;
        memset(out, 0, (size_t)out_plane * sizeof(float));
        for (int64_t i = 0; i < in_plane; i++) out[at[i]] = in[i];
    }
}

void bp_maxunpool2d_backward(float *dx, const float *dy, const int64_t *indices, int64_t planes, int64_t in_plane,
                             int64_t out_plane) {
#pragma omp parallel for schedule(static) if (planes * in_plane >= BP_PARALLEL_MIN)
    for (int64_t p = 0; p < planes; p++) {
        float *out = dx + p * in_plane;
        const float *in = dy + p * out_plane;
        const int64_t *at = indices + p * in_plane;
        for (int64_t i = 0; i < in_plane; i++) out[i] = in[at[i]];
    }
}
