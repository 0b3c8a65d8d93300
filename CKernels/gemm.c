// Threads and the one wrapper around BLAS.
//
// OpenBLAS always runs single-threaded here; bp_sgemm splits C into tiles whose sizes depend only
// on the matrix shape and hands them to our OpenMP threads. Each tile is one single-threaded BLAS
// call of the same shape whatever the thread count, so results are bit-identical for any
// OMP_NUM_THREADS (OpenBLAS's own threading picks other kernels and summation orders for other
// thread counts: 1 and 3 threads differ in the last bits). Both of Debian's OpenBLAS
// flavours are kept single-threaded (bp_sgemm_serial): the pthread one by
// openblas_set_num_threads(1), the openmp one by running inside an active parallel region or with
// the caller's OpenMP thread count set to 1 (it follows that, not openblas_set_num_threads).
//
// OpenBLAS's cblas.h is not on every include path (Debian keeps it per threading flavour), so
// the few functions used are declared here; their ABI is OpenBLAS's CBLAS.
#include "CKernels.h"

#include "internal.h"

#include <pthread.h>
#include <stddef.h>

enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int n);
char *openblas_get_corename(void);
char *openblas_get_config(void);

#ifdef _OPENMP
// Swift's clang ships no omp.h; these are libomp's entry points.
void omp_set_num_threads(int n);
int omp_get_max_threads(void);
int omp_in_parallel(void);
#endif

// Run once before the first product: sets OpenBLAS to one thread, which the bits of every product
// depend on (see above). Its openmp flavour also sets OpenMP's thread count in
// openblas_set_num_threads, so ours is put back after it.
static void configure_blas(void) {
    int threads = bp_num_threads();
    openblas_set_num_threads(1);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
}

static void blas_single_threaded(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_blas);
}

void bp_blas_single_threaded(void) { blas_single_threaded(); }

void bp_set_num_threads(int n) {
    blas_single_threaded();
#ifdef _OPENMP
    omp_set_num_threads(n < 1 ? 1 : n);
#endif
}

int bp_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int bp_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

int bp_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *bp_blas_corename(void) { return openblas_get_corename(); }
const char *bp_blas_config(void) { return openblas_get_config(); }

// Tiles split the longer side of C into 1, 2, 4, 6 or 8 pieces of about 384 rows or columns or
// more (rounded up to a multiple of 16), a function of the shape alone. Few and large: each tile
// packs the other operand again, an overhead that grows with the number of tiles; an even number,
// so that 2 threads (or 4, with 8 tiles) get equal shares. A product with a long reduction but a
// short side (a weight gradient summed over a whole batch of sequences: 256 × 256 over 3200 rows)
// still gets two halves, when each is work enough (at least 2^21 multiply-adds) to pay for its
// packing.
static int64_t tile_size(int64_t extent, int64_t work) {
    int64_t tiles = extent / 384;
    if (tiles < 2 && extent >= 64 && work >= (int64_t)1 << 22) tiles = 2;
    tiles = tiles < 1 ? 1 : tiles > 8 ? 8 : tiles > 1 && tiles % 2 ? tiles + 1 : tiles;
    return ((extent + tiles - 1) / tiles + 15) / 16 * 16;
}

void bp_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
              const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    int split_rows = m >= n;
    int64_t extent = split_rows ? m : n, tile = tile_size(extent, m * n * k);
    int64_t tiles = (extent + tile - 1) / tile;
#pragma omp parallel for schedule(static) if (tiles > 1 && m * n * k >= BP_PARALLEL_MIN)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t start = t * tile, size = extent - start < tile ? extent - start : tile;
        // A tile of rows of C uses the same rows of op(A); a tile of columns, the same columns of op(B).
        const float *a_tile = split_rows ? a + (trans_a ? start : start * lda) : a;
        const float *b_tile = split_rows ? b : b + (trans_b ? start * ldb : start);
        float *c_tile = split_rows ? c + start * ldc : c + start;
        bp_sgemm_serial(trans_a, trans_b, split_rows ? size : m, split_rows ? n : size, k, alpha, a_tile, lda, b_tile,
                        ldb, beta, c_tile, ldc);
    }
}

void bp_sgemm_serial(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    blas_single_threaded();
#ifdef _OPENMP
    // OpenBLAS's openmp flavour ignores openblas_set_num_threads and, outside an active parallel
    // region, follows the calling thread's OpenMP thread count: make that 1 for the call.
    int outside = !omp_in_parallel(), threads = omp_get_max_threads();
    if (outside) omp_set_num_threads(1);
#endif
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
#ifdef _OPENMP
    if (outside) omp_set_num_threads(threads);
#endif
}

// A layer's float32 products run on our kernels (bp_matrix_product, faster than OpenBLAS on the
// layers' shapes: see matrix_product.c), its bfloat16 products on bp_bf16_gemm.
int64_t bp_layer_product(int32_t precision, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a,
                         int64_t lda, const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc) {
    if (precision != BP_FP32)
        return bp_bf16_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate,
                            precision == BP_BF16_EMULATED);
    return bp_matrix_product(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
}
