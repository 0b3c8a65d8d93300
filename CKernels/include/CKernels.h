// CKernels: the C kernels under Backprop's Swift modules.
//
// Conventions (every kernel):
//   - Tensors are float32, contiguous, row-major; images are NCHW.
//   - Argument order: outputs, saved statistics, inputs, weights, then sizes and options.
//   - Sizes and offsets are int64_t. Swift validates every argument; C assumes valid input.
//   - Gradients of parameters are ADDED into (+=); the caller zeroes them.
//   - A kernel that allocates scratch memory returns int64_t: 0, or the bytes it asked for and
//     could not get (its outputs are then unspecified).
//   - The plain-loop references are in reference/, one file per op family.
//   - Parallel loops split the work independently of the thread count and reduce in a fixed
//     order, so every result is bit-identical for any OMP_NUM_THREADS.
//   - Each fast kernel that is more than a one-line loop has a plain-loop reference `_ref`
//     that the kernel-level tests compare it with.
#ifndef BACKPROP_CKERNELS_H
#define BACKPROP_CKERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Threads (threads.c) and the CPU

/// Sets the thread count of every kernel (OpenMP's), at least 1.
void bp_set_num_threads(int n);
/// The thread count the kernels use (1 when built without OpenMP).
int bp_num_threads(void);
/// 1 when the kernels were compiled with OpenMP, else 0.
int bp_has_openmp(void);

/// 2 when the CPU and OS support AVX-512 (F, DQ, BW, VL), 1 for AVX2 with FMA, else 0 (cpu.c).
int bp_cpu_vector_level(void);
/// With amd = 1 or 0, kernels started afterwards choose between their equivalent ways to the same
/// bits as they do on AMD's (with AVX-512) or on Intel's cores, whatever this CPU is; −1 returns to this CPU's own
/// choices (cpu.c). For tests that run both ways on one machine.
void bp_cpu_vendor_override(int amd);
/// The width of the float32 product behind the convolutions and recurrent layers (microkernel.c):
/// 16 (AVX-512 registers, 8 rows per block) or 8 (AVX2, 6 rows). Both give the same bits.
int bp_product_vector_width(void);
/// With force != 0, kernels started afterwards use the 8-float (AVX2) product even where the CPU has
/// AVX-512 (to compare the two on one machine); BACKPROP_AVX2=1 in the environment sets it for a
/// process. Kernels already running keep the product they started with.
void bp_product_force_avx2(int force);
/// C[m,n] (+)= op(A)[m,k] · op(B)[k,n] (`accumulate`: added to C), row-major, op(X) = Xᵀ when
/// `trans_*`, on our register-blocked kernels (matrix_product.c), OpenMP-parallel (on the calling
/// thread inside a parallel region): each element sums its k terms in the blocks of the
/// convolutions' products (at most 320), in order, the same bits for any thread count and on the
/// AVX2 and AVX-512 kernels alike. A is read in place (along its rows when transposed), B packed
/// (or, A transposed, read in place): for long A (many rows) or long k. Returns 0 or the bytes it
/// could not allocate.
int64_t bp_matrix_product(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                          const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc);
/// One of several products that share A (bp_transposed_products): C [m, n] (+)= Aᵀ · op(B), op(B)
/// [k, n] (B [n, k] when `trans_b`), B's rows ldb apart, C's ldc apart.
typedef struct {
    const float *b;
    int64_t ldb, n;
    int trans_b;
    float *c;
    int64_t ldc;
} bp_product_side;
enum { BP_MOST_SIDES = 4 };
/// Each side's product with the same A [k, m] in `precision` (BP_FP32, BP_BF16, BP_BF16_EMULATED;
/// a recurrent layer's weight gradients: the gates' gradients times the inputs, and times the
/// previous states), the bits of one bp_matrix_product (or bfloat16 product) per side; in float32
/// one pass over A packs its strips for every side. Returns 0 or the bytes it could not allocate.
int64_t bp_transposed_products(int32_t precision, int64_t m, int64_t k, const float *a, int64_t lda,
                               const bp_product_side *sides, int count, int accumulate);
/// The same product as three plain loops with a double accumulator (reference/matrix_product_ref.c).
void bp_matrix_product_ref(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                           const float *b, int64_t ldb, int accumulate, float *c, int64_t ldc);

// MARK: - The machine (machine.c)

/// One core's best rate of 16-lane float fused multiply-adds over `seconds`, in GFLOP/s (two per FMA),
/// in the widest vectors the CPU has (the multiversioned kernels' choice).
double bp_measure_fma_gflops(double seconds);
/// One core's best rate of a[i] = b[i] + 3 c[i] over three arrays of `floats` floats (sized past the
/// caches), in GB/s of data read and written, over `seconds`; 0 when the arrays cannot be allocated.
double bp_measure_triad_gbs(int64_t floats, double seconds);

// MARK: - Memory (memory.c)

/// For tests: the `count`-th allocation the kernels make on the calling thread from now fails
/// (count >= 1), as if memory had run out; 0 turns this off. Other threads (OpenMP's workers, other
/// tests) are not touched.
void bp_fail_allocation(int64_t count);

/// Makes the C allocator keep freed blocks for reuse instead of returning them to the system
/// (no mmap for large blocks, no heap trimming), so large tensors do not page-fault on every call.
/// A process-wide setting: Backprop calls it only when asked (ProcessSetup.configure).
void bp_retain_freed_memory(void);

// MARK: - Elementwise (elementwise.c); all arrays have n elements

void bp_relu_forward(float *y, const float *x, int64_t n);
/// dx = dy where x > 0, else 0 (PyTorch: the gradient at 0 is 0).
void bp_relu_backward(float *dx, const float *dy, const float *x, int64_t n);
/// y = x for x > 0, slope * x otherwise.
void bp_leaky_relu_forward(float *y, const float *x, float slope, int64_t n);
void bp_leaky_relu_backward(float *dx, const float *dy, const float *x, float slope, int64_t n);
/// y = 1 / (1 + exp(-x)); the backward takes the saved output: dx = dy * y * (1 - y).
void bp_sigmoid_forward(float *y, const float *x, int64_t n);
void bp_sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n);
/// y = tanh(x); the backward takes the saved output: dx = dy * (1 - y^2).
void bp_tanh_forward(float *y, const float *x, int64_t n);
void bp_tanh_backward(float *dx, const float *dy, const float *y, int64_t n);
/// Exact GELU, as PyTorch's default: y = x * Phi(x), Phi the standard normal CDF.
/// dx = dy * (Phi(x) + x * phi(x)).
void bp_gelu_forward(float *y, const float *x, int64_t n);
void bp_gelu_backward(float *dx, const float *dy, const float *x, int64_t n);
/// Inverted dropout: element i is kept when a hash of (seed, i) says so (probability 1 - p)
/// and scaled by 1 / (1 - p). The mask is a pure function of (seed, i): the backward recomputes
/// it, and it does not depend on the thread count.
void bp_dropout_forward(float *y, const float *x, float p, uint64_t seed, int64_t n);
void bp_dropout_backward(float *dx, const float *dy, float p, uint64_t seed, int64_t n);
/// y = exp(x) by the vectorisable approximation the kernels use (within 2 ulp), for its tests.
void bp_exp_for_testing(float *y, const float *x, int64_t n);
/// y = a + b.
void bp_add(float *y, const float *a, const float *b, int64_t n);
/// y += x.
void bp_add_inplace(float *y, const float *x, int64_t n);

// MARK: - Linear (linear.c): x [rows, in], weight [out, in], bias [out], y [rows, out]

/// The arithmetic of a layer's matrix products (`precision`): float32 through bp_matrix_product, or
/// bfloat16 inputs with float32 sums through bp_bf16_gemm, by the instruction where the CPU has it
/// (BP_BF16) or by its emulation (BP_BF16_EMULATED, the same bits). Each returns the bytes of
/// scratch it could not allocate, else 0.
enum { BP_FP32 = 0, BP_BF16 = 1, BP_BF16_EMULATED = 2 };

/// y = x weight^T + bias (bias may be NULL).
int64_t bp_linear_forward(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                          int64_t out, int precision);
/// dx = dy weight  (overwrites dx).
int64_t bp_linear_backward_data(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in, int64_t out,
                                int precision);
/// dweight += dy^T x;  dbias += sum over rows of dy (dbias may be NULL).
int64_t bp_linear_backward_weights(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows,
                                   int64_t in, int64_t out, int precision);
void bp_linear_forward_ref(float *y, const float *x, const float *weight, const float *bias, int64_t rows, int64_t in,
                           int64_t out);
void bp_linear_backward_data_ref(float *dx, const float *dy, const float *weight, int64_t rows, int64_t in,
                                 int64_t out);
void bp_linear_backward_weights_ref(float *dweight, float *dbias, const float *dy, const float *x, int64_t rows,
                                    int64_t in, int64_t out);

// MARK: - Convolution (conv2d.c)

/// The geometry of a 2-D convolution (cross-correlation, as PyTorch's), from its input side:
/// x [n, c, h, w] → y [n, k, out_h, out_w] with weight [k, c / groups, r, s]. Padding is given by
/// its top and left sizes; the bottom and right follow from out_h and out_w, which the caller
/// computes: out = (in + pad_before + pad_after − dilation · (kernel − 1) − 1) / stride + 1.
/// Output pixel (oh, ow) reads input row oh · stride_h − pad_h + i · dilation_h for kernel row i.
/// A transposed convolution uses the same geometry with the roles of x and y swapped.
typedef struct {
    int64_t n, c, h, w;       // input
    int64_t k, out_h, out_w;  // output
    int64_t r, s;             // kernel height and width
    int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups;
} bp_conv2d_params;

/// y = conv(x, weight) + bias[k] (bias [k], or NULL for none), the bias added to each finished sum.
/// Parallel over images. 2 × 2, 3 × 3 and 5 × 5 kernels with stride and dilation 1, one group,
/// padding below the kernel's size and 16 or more channels each way run by Winograd's F(2 × 2, r × r)
/// (rounded differently from the direct sum; the same bits on every CPU and thread count), as do
/// their backward-data and backward-weights; so do stride-2 convolutions with 4 × 4, 6 × 6 and
/// 10 × 10 kernels (4 or more input, 16 or more output channels), as stride-1 ones of half the
/// kernel over the input's four phases.
int64_t bp_conv2d_forward(float *y, const float *x, const float *weight, const float *bias, const bp_conv2d_params *p);
/// dx = the transposed convolution of dy (overwrites dx) + bias[c] (bias [c], or NULL): also the
/// forward of ConvTranspose2D, whose bias is on this side.
int64_t bp_conv2d_backward_data(float *dx, const float *dy, const float *weight, const float *bias,
                                const bp_conv2d_params *p);
/// dweight += the correlation of dy with x, and (dbias not NULL) dbias[k] += Σ dy[:, k] (the bias
/// gradient of the dy side, summed while dy's rows are in cache for the product). Images are split
/// into at most 4 fixed blocks summed into block partials, then added in block order:
/// bit-identical for any thread count.
int64_t bp_conv2d_backward_weights(float *dweight, float *dbias, const float *dy, const float *x,
                                   const bp_conv2d_params *p);
/// The same three with bfloat16 products (conv2d_bf16.c; `emulate` as in bp_bf16_gemm), the column
/// matrix [c / groups · r · s, out_h · out_w] of each image and group read in place, taps in the
/// order (channel, row, column): each forward output element is bp_bf16_gemm's sum over the taps
/// (then + bias); each column-gradient element its sum over the group's output channels, summed onto
/// the input pixels tap by tap; each weight-gradient element, per block of images (as in
/// bp_conv2d_backward_weights), its sum over each image's pixels in order, image after image from 0,
/// the blocks' sums then added in order.
int64_t bp_conv2d_forward_bf16(float *y, const float *x, const float *weight, const float *bias,
                               const bp_conv2d_params *p, int emulate);
int64_t bp_conv2d_backward_data_bf16(float *dx, const float *dy, const float *weight, const float *bias,
                                     const bp_conv2d_params *p, int emulate);
int64_t bp_conv2d_backward_weights_bf16(float *dweight, float *dbias, const float *dy, const float *x,
                                        const bp_conv2d_params *p, int emulate);
/// References (reference/conv2d_ref.c): every product term in double.
int64_t bp_conv2d_forward_ref(float *y, const float *x, const float *weight, const bp_conv2d_params *p);
int64_t bp_conv2d_backward_data_ref(float *dx, const float *dy, const float *weight, const bp_conv2d_params *p);
int64_t bp_conv2d_backward_weights_ref(float *dweight, const float *dy, const float *x, const bp_conv2d_params *p);

/// dbias[c] += Σ over n and hw of dy[n, c, :] (in a fixed order).
void bp_channel_bias_backward(float *dbias, const float *dy, int64_t n, int64_t c, int64_t hw);

// MARK: - Pooling (pool2d/; references reference/pool2d_ref.c): x [n, c, h, w] → y [n, c, out_h, out_w], one plane per
// (n, c)

/// Pooling windows. Fixed windows (adaptive = 0): window (oh, ow) has taps at input rows
/// oh · stride_h − pad_h + i · dilation_h for i < kernel_h (and columns alike); taps outside the
/// input are padding. Adaptive windows (adaptive = 1, PyTorch's rule): rows
/// [⌊oh · h / out_h⌋, ⌈(oh + 1) · h / out_h⌉), columns alike; kernel, stride, pad and dilation unused.
/// Average pooling divides by divisor_override when it is > 0, else by the window's size clipped
/// to the padded input (count_include_pad) or to the input (not count_include_pad).
typedef struct {
    int64_t n, c, h, w, out_h, out_w;
    int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
    int32_t adaptive, count_include_pad;
    int64_t divisor_override;
} bp_pool2d_params;

/// Windows of at most this many taps store their argmax in one byte.
#define BP_ARGMAX8_MAX_TAPS 256

/// The most taps any window has: the argmax of a window is stored as its tap number (row-major in
/// the window) in one byte when this is at most BP_ARGMAX8_MAX_TAPS (index8), else in an int32
/// (index32). Exactly one is non-NULL. A window with no tap inside the input (possible with dilation) stores no tap
/// (255 or −1): its output is −∞ and its gradient goes nowhere.
int64_t bp_pool2d_window_size(const bp_pool2d_params *p);
/// y = max over each window; NaN propagates (as PyTorch: a NaN tap wins). Ties go to the first
/// maximum in row-major window order. Saves the argmax of each window.
int64_t bp_maxpool2d_forward(float *y, uint8_t *index8, int32_t *index32, const float *x, const bp_pool2d_params *p);
/// dx = 0, then each dy is added at its window's saved argmax.
int64_t bp_maxpool2d_backward(float *dx, const float *dy, const uint8_t *index8, const int32_t *index32,
                              const bp_pool2d_params *p);
/// The saved argmax as PyTorch's return_indices gives it: ih · w + iw within the plane (−1 for no tap).
int64_t bp_maxpool2d_plane_indices(int64_t *indices, const uint8_t *index8, const int32_t *index32,
                                   const bp_pool2d_params *p);
int64_t bp_avgpool2d_forward(float *y, const float *x, const bp_pool2d_params *p);
/// dx = each dy spread evenly (dy / divisor) over its window's taps inside the input.
int64_t bp_avgpool2d_backward(float *dx, const float *dy, const bp_pool2d_params *p);
/// References: plain loops over every window and tap, in double for the average.
void bp_maxpool2d_forward_ref(float *y, int64_t *indices, const float *x, const bp_pool2d_params *p);
void bp_maxpool2d_backward_ref(float *dx, const float *dy, const int64_t *indices, const bp_pool2d_params *p);
void bp_avgpool2d_forward_ref(float *y, const float *x, const bp_pool2d_params *p);
void bp_avgpool2d_backward_ref(float *dx, const float *dy, const bp_pool2d_params *p);

// MARK: - Max unpooling (maxunpool2d.c): x [planes, in_plane] → y [planes, out_plane]

/// y = 0, then y[p, indices[p, i]] = x[p, i] for every i of every plane, in order of i (of repeated
/// indices the last wins). Indices lie in [0, out_plane). Parallel over planes.
void bp_maxunpool2d_forward(float *y, const float *x, const int64_t *indices, int64_t planes, int64_t in_plane,
                            int64_t out_plane);
/// dx[p, i] = dy[p, indices[p, i]].
void bp_maxunpool2d_backward(float *dx, const float *dy, const int64_t *indices, int64_t planes, int64_t in_plane,
                             int64_t out_plane);

// MARK: - Recurrent layers (recurrent.c): one direction of one layer over a batch-first sequence

/// The cell of a recurrent layer, as PyTorch's, with x_t the input and h_{t−1} the state:
///   BP_RNN_TANH, BP_RNN_RELU: h_t = act(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)      (1 gate)
///   BP_LSTM: gates i, f, g, o of W_ih x_t + b_ih + W_hh h_{t−1} + b_hh through σ, σ, tanh, σ;
///            c_t = f ⊙ c_{t−1} + i ⊙ g, h_t = o ⊙ tanh(c_t)                            (4 gates)
///   BP_GRU:  r, z = σ of their rows of W_ih x_t + b_ih + W_hh h_{t−1} + b_hh;
///            n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t−1} + b_hn)); h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}  (3 gates)
typedef enum { BP_RNN_TANH = 0, BP_RNN_RELU = 1, BP_LSTM = 2, BP_GRU = 3 } bp_rnn_kind;

/// x [n, t, input] → the states h_t [n, H], written into y [n, t, y_stride] at columns
/// [y_offset, y_offset + H) (a bidirectional layer's two directions share y). Weights as PyTorch
/// lays them out: W_ih [G·H, input], W_hh [G·H, H], b_ih and b_hh [G·H], gates in the order above.
/// `reverse` runs the steps from t − 1 down to 0. `precision` (BP_FP32, BP_BF16 or BP_BF16_EMULATED)
/// is that of every matrix product (the input projection, the step products, the weight and input
/// gradients; in bfloat16 each element is bp_bf16_gemm's sum); the cells are float32 either way.
typedef struct {
    int64_t n, t, input, hidden;
    int64_t y_stride, y_offset;
    int32_t kind, reverse, precision;
} bp_rnn_params;

/// The gates G of a cell kind: 1, 4 (LSTM) or 3 (GRU).
int64_t bp_rnn_gates(int32_t kind);
/// Floats the forward saves per (batch row, step) for the backward: LSTM its 4 gates and c_t, GRU
/// its 3 gates and W_hn h_{t−1} + b_hn; the RNN saves nothing (its backward reads h_t from y).
int64_t bp_rnn_saved_per_row(const bp_rnn_params *p);
/// The forward of one direction: y's columns (see bp_rnn_params), the final state h_n (and c_n for
/// LSTM) [n, H] (either may be NULL), `saved` [n · t, bp_rnn_saved_per_row] (NULL: not kept) from
/// x, the initial state h0 and c0 [n, H] (NULL: zeros), the weights and biases (NULL: none).
int64_t bp_rnn_forward(float *y, float *h_n, float *c_n, float *saved, const float *x, const float *h0, const float *c0,
                       const float *w_ih, const float *w_hh, const float *b_ih, const float *b_hh,
                       const bp_rnn_params *p);
/// Backpropagation through time of one direction: from dy (the gradient of y, same layout), dh_n
/// and dc_n (NULL: zeros), and the forward's y, saved, x, h0 and c0: dx [n, t, input] (written, or
/// added to with `accumulate_dx`; NULL: skipped), dh0 and dc0 (NULL: skipped), and dW_ih, dW_hh,
/// db_ih, db_hh added into (+=; the biases may be NULL).
int64_t bp_rnn_backward(float *dx, float *dh0, float *dc0, float *dw_ih, float *dw_hh, float *db_ih, float *db_hh,
                        const float *dy, const float *dh_n, const float *dc_n, const float *saved, const float *y,
                        const float *x, const float *h0, const float *c0, const float *w_ih, const float *w_hh,
                        int accumulate_dx, const bp_rnn_params *p);

// MARK: - Embedding (embedding.c): weight [count, dim]

/// indices[i] = values[i] for `rows` values: −1 if each is a whole number in [0, count), else
/// the position of the first that is not (NaN included).
int64_t bp_embedding_indices(int64_t *indices, const float *values, int64_t rows, int64_t count);
/// y[i] = weight[indices[i]] for `rows` indices, each in [0, count): y [rows, dim].
void bp_embedding_forward(float *y, const int64_t *indices, const float *weight, int64_t rows, int64_t dim);
/// dweight[k] += Σ dy[i] over the i with indices[i] = k, in order of i, for every k but
/// `padding` (−1: none). Parallel over the rows of dweight, so no two threads add into one row and
/// the sums do not depend on the thread count.
int64_t bp_embedding_backward(float *dweight, const float *dy, const int64_t *indices, int64_t rows, int64_t dim,
                              int64_t count, int64_t padding);

// MARK: - Normalization (norm.c)
//
// Statistics are computed in double, centred: each contiguous run (a plane of batch norm, a row of
// layer norm) gets its mean and sum of squared deviations in two passes over the run (the second
// from cache), and runs are merged in a fixed order (Chan's formula). The backward uses the centred
// form x − mean. Batch norm works on x [n, c, hw] (hw = 1 for [n, c]), parallel over channels;
// layer norm on x [rows, d], parallel over rows. gamma and beta may be NULL (no affine), and
// running_mean and running_var (no running statistics); dgamma and dbeta likewise. A saved mean is
// a pair of floats per channel or row, mean ≈ hi + lo, so centring (x − hi) − lo keeps double accuracy.

/// Training: normalises with the batch statistics over n · hw values per channel, saves mean [c, 2]
/// (hi, lo) and rstd = 1 / sqrt(var + eps) [c] (var biased), and when running statistics are given updates them:
/// running = (1 − momentum) · running + momentum · batch, with the unbiased variance.
/// With `relu` a ReLU follows: y = max(normalised, 0) (NaN gives 0), bit for bit bp_relu_forward's.
int64_t bp_batchnorm_forward_train(float *y, float *mean, float *rstd, float *running_mean, float *running_var,
                                   const float *x, const float *gamma, const float *beta, int64_t n, int64_t c,
                                   int64_t hw, float eps, float momentum, int relu);
/// Evaluation: y = (x − running_mean) / sqrt(running_var + eps) · gamma + beta (then the ReLU with `relu`).
void bp_batchnorm_forward_eval(float *y, const float *x, const float *running_mean, const float *running_var,
                               const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw, float eps,
                               int relu);
/// Backward of either mode from the statistics it normalised with (mean [c, 2], rstd [c]):
/// with x̂ = (x − mean) · rstd, dbeta += Σ dy, dgamma += Σ dy · x̂, and
/// dx = gamma · rstd · (dy − (Σ dy + x̂ · Σ dy · x̂) / (n · hw)) in training (batch statistics), or
/// dx = gamma · rstd · dy in evaluation (fixed statistics, batch_statistics = 0). With `relu`, a
/// ReLU was fused after the forward and dy is the gradient at its output: dy counts only where the
/// normalised value (recomputed from x, beta and the statistics as the forward computed it) is > 0,
/// as bp_relu_backward would pass it on. dx may be x (each x is read before that dx is written).
int64_t bp_batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *gamma, const float *beta, int64_t n,
                              int64_t c, int64_t hw, int batch_statistics, int relu);
/// Batch normalization in training, a ReLU and a tiled max pooling `pool` (kernel = stride, no
/// padding or dilation: bp_batchnorm_relu_maxpool_fusable) as one layer, for x [n, c, h, w] with
/// n, c, h, w those of `pool`: the forward writes the pooled y [n, c, out_h, out_w], the argmax
/// `index` (a byte per output) and the statistics as bp_batchnorm_forward_train; the backward takes
/// the gradient at the pooled output and adds the parameter gradients and writes dx as
/// bp_batchnorm_backward does (dx may be x). The normalised values and their gradient stay in a
/// plane of scratch per thread; every bit is that of the three layers one after the other.
int bp_batchnorm_relu_maxpool_fusable(const bp_pool2d_params *pool);
int64_t bp_batchnorm_relu_maxpool_forward_train(float *y, uint8_t *index, float *mean, float *rstd, float *running_mean,
                                                float *running_var, const float *x, const float *gamma,
                                                const float *beta, const bp_pool2d_params *pool, float eps,
                                                float momentum);
int64_t bp_batchnorm_relu_maxpool_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                                           const uint8_t *index, const float *x, const float *mean, const float *rstd,
                                           const float *gamma, const float *beta, const bp_pool2d_params *pool);
/// The training forward in pieces, for statistics over several micro-batches (synchronized batch
/// norm): each micro-batch's moments [c, 3] = {count, mean, M2 = Σ (x − mean)²} per channel, summed
/// as the forward sums them; merges of moments (Chan's formula) in the caller's order, where moments
/// of count 0 (a micro-batch without values, or a total not yet started) merge as nothing; mean [c, 2],
/// rstd [c] and the running statistics' update (when running_mean is not NULL) from merged moments,
/// as bp_batchnorm_forward_train derives them; and y from those statistics.
int64_t bp_batchnorm_moments(double *moments, const float *x, int64_t n, int64_t c, int64_t hw);
void bp_batchnorm_merge_moments(double *moments, const double *other, int64_t c);
void bp_batchnorm_statistics(float *mean, float *rstd, float *running_mean, float *running_var, const double *moments,
                             int64_t c, float eps, float momentum);
void bp_batchnorm_normalize(float *y, const float *x, const float *mean, const float *rstd, const float *gamma,
                            const float *beta, int64_t n, int64_t c, int64_t hw, int relu);
/// The training backward in pieces: each micro-batch's sums [c, 2] = {Σ dy, Σ dy · (x − mean)}
/// (dy gated by the fused ReLU with `relu`); then dx from the sums over the whole batch (`sums`, over
/// `count` values per channel), and dgamma, dbeta from this micro-batch's own sums (`own_sums`).
void bp_batchnorm_gradient_sums(double *sums, const float *dy, const float *x, const float *mean, const float *rstd,
                                const float *gamma, const float *beta, int64_t n, int64_t c, int64_t hw, int relu);
int64_t bp_batchnorm_backward_from_sums(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                                        const float *mean, const float *rstd, const float *gamma, const float *beta,
                                        const double *sums, const double *own_sums, double count, int64_t n, int64_t c,
                                        int64_t hw, int relu);
/// Over each row of d values: saves mean [rows, 2] (hi, lo) and rstd [rows]; y = x̂ · gamma + beta.
void bp_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                          int64_t rows, int64_t d, float eps);
/// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)) with g = dy · gamma, per row; dgamma += Σ_rows dy · x̂,
/// dbeta += Σ_rows dy, summed in at most 8 fixed blocks of rows added in block order.
int64_t bp_layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *gamma, int64_t rows, int64_t d);
/// References: plain loops in double, statistics by definition.
void bp_batchnorm_forward_train_ref(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                                    const float *beta, int64_t n, int64_t c, int64_t hw, float eps);
void bp_batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *gamma, int64_t n, int64_t c, int64_t hw, float eps, int batch_statistics,
                               const float *running_mean, const float *running_var);
void bp_layernorm_forward_ref(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                              int64_t rows, int64_t d, float eps);
void bp_layernorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *gamma, int64_t rows, int64_t d, float eps);

// MARK: - bfloat16 (bfloat16.c)

/// y[i] = x[i] rounded to bfloat16 (the top 16 bits of a float32) to nearest, ties to even, as
/// PyTorch's tensor conversion `.to(torch.bfloat16)`: infinities stay, denormals round like any
/// value, every NaN becomes 0xffff (PyTorch's scalar c10::BFloat16 gives 0x7fc0 instead).
void bp_bf16_from_float(uint16_t *y, const float *x, int64_t n);
/// y[i] = x[i] as float32 (exact).
void bp_bf16_to_float(float *y, const uint16_t *x, int64_t n);
/// Whether this CPU has AVX512_BF16's dot-product instruction (vdpbf16ps).
int bp_bf16_has_instruction(void);
/// C [m, n] = A [m, k] · B [k, n] (+ C when `accumulate`) with A and B rounded to bfloat16 and float32
/// sums: A(i, t) = a[trans_a ? t · lda + i : i · lda + t], B(t, j) = b[trans_b ? j · ldb + t : t · ldb + j].
/// Each C element runs, from acc = C (or 0), over the pairs t = 2q, 2q + 1:
///   acc = F(acc + A(i, 2q+1) · B(2q+1, j)), then acc = F(acc + A(i, 2q) · B(2q, j)),
/// each product exact and each sum rounded once to float32 (to nearest even); F flushes a result
/// below 2^-126 in magnitude to a zero of its sign, and bfloat16 inputs below 2^-126 (and a
/// starting C) count as zeros of their sign. That is what vdpbf16ps does (measured on AMD Zen 4
/// against 32 million random cases, denormals, infinities and overflowing products among them);
/// with `emulate`, or on a CPU without it, fused multiply-adds compute the same bits. Within
/// float32's normal range this is the float32 product of the rounded inputs summed in that order.
/// Returns the bytes of scratch (the packed operands) it could not allocate, else 0.
int64_t bp_bf16_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                     const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate, int emulate);
/// References: the rounding one value at a time, and the product in plain loops, each step in double
/// (exact product, one rounding to float32) then flushed as above.
void bp_bf16_from_float_ref(uint16_t *y, const float *x, int64_t n);
void bp_bf16_gemm_ref(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                      const float *b, int64_t ldb, float *c, int64_t ldc, int accumulate);
/// The first float32 bit pattern in [first, first + n) that bp_bf16_from_float rounds otherwise than
/// the reference, or -1 (the exhaustive test runs it over all 2^32).
int64_t bp_bf16_first_rounding_mismatch(uint64_t first, int64_t n);

// MARK: - Losses (loss.c), mean reduction; each returns the loss and writes its gradient

/// Softmax cross-entropy on logits [rows, classes] with labels in [0, classes), in two phases.
/// Forward: returns loss = mean_i (logsumexp(x_i) - x_i[label_i]) and saves per row
/// stats[i] = {max_j x_ij, 1 / sum_j exp(x_ij - max)} (stats [rows, 2]).
double bp_softmax_xent_forward(float *stats, const float *logits, const int64_t *labels, int64_t rows, int64_t classes);
/// Backward: dx_ij = scale * (softmax(x_i)_j - [j == label_i]); scale = dloss / rows for the mean.
void bp_softmax_xent_backward(float *dx, const float *stats, const float *logits, const int64_t *labels, int64_t rows,
                              int64_t classes, float scale);
/// Both phases as plain loops in double, with scale = 1 / rows.
double bp_softmax_xent_ref(float *dx, const float *logits, const int64_t *labels, int64_t rows, int64_t classes);
/// loss = mean (x - t)^2;  dx = 2 (x - t) / n.
double bp_mse(float *dx, const float *x, const float *target, int64_t n);
/// On probabilities x in [0, 1], as PyTorch: log clamped at -100, and
/// dx = (x - t) / max(x (1 - x), 1e-12) / n.
double bp_bce(float *dx, const float *x, const float *target, int64_t n);
/// On logits: loss = mean (max(x, 0) - x t + log(1 + exp(-|x|)));  dx = (sigmoid(x) - t) / n.
double bp_bce_logits(float *dx, const float *x, const float *target, int64_t n);

// MARK: - Optimizers (optim.c)

/// One SGD step, as torch.optim.SGD (dampening 0):
///   d = grad + weight_decay * param
///   buf = first_step ? d : momentum * buf + d       (only when momentum != 0; buf may be NULL then)
///   d = nesterov ? d + momentum * buf : buf          (d itself when momentum == 0)
///   param -= lr * d
void bp_sgd_step(float *param, float *momentum_buf, const float *grad, int64_t n, float lr, float momentum,
                 float weight_decay, int nesterov, int first_step);

/// One Adam step, as torch.optim.Adam (decoupled = 0: weight decay added to the gradient) or
/// torch.optim.AdamW (decoupled = 1: param *= 1 − lr · weight_decay first), at step t >= 1:
///   m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²
///   param −= lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
void bp_adam_step(float *param, float *m, float *v, const float *grad, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int decoupled, int64_t t);
/// One RMSprop step, as torch.optim.RMSprop (not centred):
///   g = grad + weight_decay · param;  s = α s + (1 − α) g²
///   with momentum μ: b = μ b + g / (sqrt(s) + eps), param −= lr · b; else param −= lr · g / (sqrt(s) + eps)
void bp_rmsprop_step(float *param, float *square_avg, float *momentum_buf, const float *grad, int64_t n, float lr,
                     float alpha, float eps, float weight_decay, float momentum);
/// Σ grad² over n values, in double, in a fixed order (for clipping by global norm).
double bp_sum_squares(const float *x, int64_t n);

/// L1 and L2 penalties P = l1 · Σ|w| + ½ l2 · Σ w² over n parameters: adds ∂P/∂w = l1 · sign(w) +
/// l2 · w into grad and returns P (summed in fixed blocks: the same for any thread count).
double bp_penalty(float *grad, const float *param, int64_t n, float l1, float l2);
/// x *= scale.
void bp_scale(float *x, float scale, int64_t n);
/// Whether none of the n values is infinite or NaN.
int bp_all_finite(const float *x, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
