// The LSTM's forward cells on CPUs with AVX-512, one block of 16 units of several batch rows:
//
//   i, f, o = σ(a_i), σ(a_f), σ(a_o),  g = tanh a_g,  c_t = f ⊙ c_{t−1} + i ⊙ g,  h_t = o ⊙ tanh c_t
//
// with a = (xp + b_ih) + (hp + b_hh). Each lane does recurrent.c's cell_forward's operations in
// its order (bp_expf's, sigmoid's and tanh_fast's, with the fused multiply-adds clang contracts
// them to), so the bits are the same. One row's cell is a long chain of dependent operations (an
// exponential, a division, then c_t's tanh: about 200 cycles of latency for some 150 operations)
// that leaves the vector units idle; four rows interleaved fill them. 1 thread, Intel Xeon: a
// block's cells in cache 124 → 89 cycles a row; an LSTM's forward, 128 rows of 28 steps, 28 → 128
// units, 5.15 → 4.84 ms; 32 rows of 64 steps, 256 → 256, unchanged (16.0 ms: there the cells
// wait on their stores to memory, 12.6 MB of saved gates).
#include "internal.h"

#if BP_AVX512_KERNEL
#include <immintrin.h>

#define AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512), always_inline)) static inline

enum {
    ROWS = 4,                          // rows whose cells are interleaved
    RUN = BP_LSTM_SAVED_RUNS * BP_NR,  // a row's saved run: i, f, g, o, c_t, tanh c_t
};

// bp_expf lane by lane. 2^n is made from t = n + 1.5 · 2^23, whose bits are those of 1.5 · 2^23
// plus n: shifted left by 23 they are n's exponent field, to which the bias is added.
AVX512 __m512 exp16(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(88.7f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));  // NaN stays NaN
    const __m512 round_magic = _mm512_set1_ps(12582912.0f);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), round_magic);
    __m512 n = _mm512_sub_ps(t, round_magic);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 er = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    __m512i scale = _mm512_add_epi32(_mm512_slli_epi32(_mm512_castps_si512(t), 23), _mm512_set1_epi32(127 << 23));
    return _mm512_mul_ps(er, _mm512_castsi512_ps(scale));
}

// 1 / (1 + e^−v), −v by its sign bit as C's negation.
AVX512 __m512 sigmoid16(__m512 v) {
    __m512 minus = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN)));
    return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(minus)));
}

// 1 − 2 / (e^2v + 1).
AVX512 __m512 tanh16(__m512 v) {
    __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(2.0f), v));
    return _mm512_sub_ps(_mm512_set1_ps(1.0f),
                         _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
}

// The cells of `rows` rows (a constant when inlined) from row 0 of the arguments of bp_lstm_cells_avx512.
AVX512 void cells(int rows, float *h, int64_t ldh, float *c, int64_t ldc, float *saved, const float *xp,
                  const float *hp, int64_t ldp, const float *bi, const float *bh, int64_t hidden) {
    __m512 i[ROWS], f[ROWS], g[ROWS], o[ROWS], ct[ROWS], tc[ROWS];
#define PRE(r, gate)                                                                                                   \
    _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(xp + (r)*ldp + (gate)*BP_NR), _mm512_loadu_ps(bi + (gate)*hidden)),    \
                  _mm512_add_ps(_mm512_loadu_ps(hp + (r)*ldp + (gate)*BP_NR), _mm512_loadu_ps(bh + (gate)*hidden)))
    for (int r = 0; r < rows; r++) {
        i[r] = sigmoid16(PRE(r, 0)), f[r] = sigmoid16(PRE(r, 1));
        g[r] = tanh16(PRE(r, 2)), o[r] = sigmoid16(PRE(r, 3));
    }
#undef PRE
    for (int r = 0; r < rows; r++) {
        ct[r] = _mm512_fmadd_ps(f[r], _mm512_loadu_ps(c + r * ldc), _mm512_mul_ps(i[r], g[r]));
        _mm512_storeu_ps(c + r * ldc, ct[r]);
        tc[r] = tanh16(ct[r]);
        _mm512_storeu_ps(h + r * ldh, _mm512_mul_ps(o[r], tc[r]));
    }
    for (int r = 0; r < rows && saved; r++) {
        float *run = saved + r * RUN;
        _mm512_storeu_ps(run, i[r]), _mm512_storeu_ps(run + BP_NR, f[r]), _mm512_storeu_ps(run + 2 * BP_NR, g[r]);
        _mm512_storeu_ps(run + 3 * BP_NR, o[r]), _mm512_storeu_ps(run + 4 * BP_NR, ct[r]);
        _mm512_storeu_ps(run + 5 * BP_NR, tc[r]);
    }
}

__attribute__((target("arch=x86-64-v4"))) void bp_lstm_cells_avx512(float *h, int64_t ldh, float *c, int64_t ldc,
                                                                    float *saved, const float *xp, const float *hp,
                                                                    int64_t ldp, const float *bi, const float *bh,
                                                                    int64_t hidden, int64_t rows) {
    int64_t r = 0;
    for (; r + ROWS <= rows; r += ROWS)
        cells(ROWS, h + r * ldh, ldh, c + r * ldc, ldc, saved ? saved + r * RUN : NULL, xp + r * ldp, hp + r * ldp, ldp,
              bi, bh, hidden);
    for (; r < rows; r++)
        cells(1, h + r * ldh, ldh, c + r * ldc, ldc, saved ? saved + r * RUN : NULL, xp + r * ldp, hp + r * ldp, ldp,
              bi, bh, hidden);
}
#endif
