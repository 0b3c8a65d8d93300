// The plain-loop reference of bp_matrix_product (matrix_product.c): three loops, a double accumulator.
#include "CKernels.h"

void bp_matrix_product_ref(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                           const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0.0;
            for (int64_t p = 0; p < k; p++) {
                float av = trans_a ? a[p * lda + i] : a[i * lda + p];
                float bv = trans_b ? b[j * ldb + p] : b[p * ldb + j];
                acc += (double)av * bv;
            }
            c[i * ldc + j] = (float)acc + (accumulate ? c[i * ldc + j] : 0.0f);
        }
}
