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

// `rounds` rounds of `chains` independent FMA chains of 16 lanes (a constant where inlined);
// returns a value that depends on them all, so that none is optimised away.
__attribute__((always_inline)) static inline float fma_chains(int64_t rounds, int chains, float a, float b) {
    v16f acc[12];
    for (int i = 0; i < chains; i++) acc[i] = (v16f){0} + (float)i;
    v16f va = (v16f){0} + a, vb = (v16f){0} + b;
    for (int64_t r = 0; r < rounds; r++)
#pragma clang loop unroll(full)
        for (int i = 0; i < chains; i++) acc[i] = acc[i] * va + vb;
    v16f sum = {0};
    for (int i = 0; i < chains; i++) sum += acc[i];
    float total = 0.0f;
    for (int l = 0; l < 16; l++) total += sum[l];
    return total;
}

// Enough chains to cover the FMA latency on two units, in registers: 12 of AVX-512's 32, and 6
// (12 ymm) of AVX2's 16 -- 12 there would spill to the stack (a Zen 3 core: 85-88 instead of 103.7
// GFLOP/s, below what its matrix product reaches).
BP_MULTIVERSION
static float fma_chains6(int64_t rounds, float a, float b) { return fma_chains(rounds, 6, a, b); }
BP_MULTIVERSION
static float fma_chains12(int64_t rounds, float a, float b) { return fma_chains(rounds, 12, a, b); }

double bp_measure_fma_gflops(double seconds) {
    int64_t rounds = 1 << 20, chains = bp_cpu_vector_level() >= 2 ? 12 : 6;
    float (*measure)(int64_t, float, float) = chains == 12 ? fma_chains12 : fma_chains6;
    volatile float sink = measure(1024, 0.999f, 0.001f);  // warm up the unit
    double best = 0.0, start = seconds_now();
    do {
        double t0 = seconds_now();
        sink = sink + measure(rounds, 0.999f, 0.001f);
        double rate = (double)rounds * chains * 16 * 2 / (seconds_now() - t0) / 1e9;
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
