// What this machine can do, measured: one core's fused multiply-add rate and its memory
// bandwidth, for the benchmark's share-of-peak and GB/s columns.
#include "CKernels.h"
#include "internal.h"

#include <stdlib.h>
#include <time.h>

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// 16 floats: one AVX-512 register, two AVX2 ones; the compiler splits it to what the clone targets.

// `rounds` rounds of 12 independent FMA chains of 16 lanes; returns a value that depends on them
// all, so that none is optimised away.
BP_MULTIVERSION
static float fma_chains(int64_t rounds, float a, float b) {
    v16f acc[12];
    for (int i = 0; i < 12; i++) acc[i] = (v16f){0} + (float)i;
    v16f va = (v16f){0} + a, vb = (v16f){0} + b;
    for (int64_t r = 0; r < rounds; r++)
#pragma clang loop unroll(full)
        for (int i = 0; i < 12; i++) acc[i] = acc[i] * va + vb;
    v16f sum = {0};
    for (int i = 0; i < 12; i++) sum += acc[i];
    float total = 0.0f;
    for (int l = 0; l < 16; l++) total += sum[l];
    return total;
}

double bp_measure_fma_gflops(double seconds) {
    int64_t rounds = 1 << 20;
    volatile float sink = fma_chains(1024, 0.999f, 0.001f);  // warm up the unit
    double best = 0.0, start = seconds_now();
    do {
        double t0 = seconds_now();
        sink = sink + fma_chains(rounds, 0.999f, 0.001f);
        double rate = (double)rounds * 12 * 16 * 2 / (seconds_now() - t0) / 1e9;
        best = rate > best ? rate : best;
    } while (seconds_now() - start < seconds);
    return best;
}

BP_MULTIVERSION
static void triad(float *a, const float *b, const float *c, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = b[i] + 3.0f * c[i];
}

double bp_measure_triad_gbs(int64_t floats, double seconds) {
    int64_t missing = 0;
    float *a = bp_malloc(floats, sizeof(float), &missing), *b = bp_malloc(floats, sizeof(float), &missing);
    float *c = bp_malloc(floats, sizeof(float), &missing);
    double best = 0.0;
    if (!missing) {
        for (int64_t i = 0; i < floats; i++) a[i] = 0.0f, b[i] = 1.0f, c[i] = 2.0f;
        double start = seconds_now();
        do {
            double t0 = seconds_now();
            triad(a, b, c, floats);
            double rate = 12.0 * (double)floats / (seconds_now() - t0) / 1e9;  // read b and c, write a
            best = rate > best ? rate : best;
        } while (seconds_now() - start < seconds);
    }
    free(a), free(b), free(c);
    return best;
}
