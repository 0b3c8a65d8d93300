// Plain-loop references of bfloat16.c: the rounding by its definition, one value at a time, and
// the product with each step in double.
#include "CKernels.h"

#include <math.h>
#include <string.h>

void bp_bf16_from_float_ref(uint16_t *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        if (isnan(x[i])) {
            y[i] = 0xffff;
            continue;
        }
        uint32_t kept = u >> 16, rest = u & 0xffffu;
        // Above half way, or exactly half way with an odd kept part: round up (into the exponent
        // when the mantissa is all ones, which is the next binade or infinity).
        if (rest > 0x8000u || (rest == 0x8000u && (kept & 1u))) kept++;
        y[i] = (uint16_t)kept;
    }
}

// x with magnitude below 2^-126 as a zero of its sign.
static float flushed(float x) { return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x; }

static float bf16_value(float x) {
    uint16_t h;
    bp_bf16_from_float_ref(&h, &x, 1);
    uint32_t u = (uint32_t)h << 16;
    float v;
    memcpy(&v, &u, 4);
    return flushed(v);
}

void bp_bf16_gemm_ref(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float acc = accumulate ? flushed(c[i * ldc + j]) : 0.0f;
            for (int64_t q = 0; 2 * q < k; q++)
                for (int64_t t = 2 * q + 1; t >= 2 * q; t--) {  // the odd element of the pair first
                    if (t >= k) continue;
                    double x = bf16_value(trans_a ? a[t * lda + i] : a[i * lda + t]);
                    double y = bf16_value(trans_b ? b[j * ldb + t] : b[t * ldb + j]);
                    acc = flushed((float)((double)acc + x * y));
                }
            c[i * ldc + j] = acc;
        }
}

int64_t bp_bf16_first_rounding_mismatch(uint64_t first, int64_t n) {
    enum { CHUNK = 1 << 16 };
    static _Thread_local float x[CHUNK];
    static _Thread_local uint16_t fast[CHUNK], reference[CHUNK];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t count = n - start < CHUNK ? n - start : CHUNK;
        for (int64_t i = 0; i < count; i++) {
            uint32_t u = (uint32_t)(first + (uint64_t)(start + i));
            memcpy(x + i, &u, 4);
        }
        bp_bf16_from_float(fast, x, count);
        bp_bf16_from_float_ref(reference, x, count);
        for (int64_t i = 0; i < count; i++)
            if (fast[i] != reference[i]) return (int64_t)(first + (uint64_t)(start + i));
    }
    return -1;
}
