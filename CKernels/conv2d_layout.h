// The phase-split, zero-padded copy of an image that the convolutions read their column matrix
// from in place (conv2d_layout.c), shared by the float32 (conv2d.c) and bfloat16 (conv2d_bf16.c)
// products.
//
// For image b and group g (cg = c / groups input channels, R = cg·r·s taps in the order (ci, i, j))
// the column matrix is col [R, out_h · out_w]. The image is copied once into a zero-padded buffer split
// into stride phases (phase (a, b) holds padded rows a, a + sh, … and columns b, b + sw, …), each
// phase plane wq elements wide. Output pixel (oh, ow) gets the "virtual" index v = oh · wq + ow, and
// then tap t of every pixel is at a fixed offset: col[t][pixel] = buffer[offset[t] + v]. So the pixels
// of one output row read a contiguous run of the buffer, and the padding is zeros in the buffer.
#ifndef BP_CONV2D_LAYOUT_H
#define BP_CONV2D_LAYOUT_H

#include "CKernels.h"
#include "internal.h"

/// R, the column matrix's rows (taps per output pixel), and its columns (output pixels).
static inline int64_t bp_conv_taps(const bp_conv2d_params *p) { return p->c / p->groups * p->r * p->s; }
static inline int64_t bp_conv_pixels(const bp_conv2d_params *p) { return p->out_h * p->out_w; }

/// Work is split by (image, group): each owns its outputs, so no two threads touch one element.
/// Whether the split pays for a parallel region:
static inline int bp_conv_parallel_over_images(const bp_conv2d_params *p) {
    return p->n * p->groups > 1 && p->n * p->k * bp_conv_pixels(p) * bp_conv_taps(p) >= BP_PARALLEL_MIN;
}

/// The weight gradient splits the images into this many fixed blocks (at most 4; block b holds
/// images [b · n / blocks, (b + 1) · n / blocks)), each summed in order into its own partial, and
/// adds the partials in block order: the same bits for any thread count.
static inline int64_t bp_conv_weight_blocks(const bp_conv2d_params *p) { return p->n < 4 ? p->n : 4; }

/// Whether output position o reads inside the input's [0, extent) with kernel position i (rows
/// and columns alike): o · stride − pad + i · dilation.
static inline int bp_conv_reads_inside(int64_t o, int64_t stride, int64_t pad, int64_t i, int64_t dilation,
                                       int64_t extent) {
    int64_t at = o * stride - pad + i * dilation;
    return at >= 0 && at < extent;
}

/// The buffer of one image and group: cg channels of sh · sw phase planes of `plane` = hq · wq
/// elements, and the offset of each tap.
typedef struct {
    int64_t hq, wq, plane, channel, size;  // channel = sh · sw · plane; size = cg · channel
    int64_t *offset;                       // [R]
} conv_layout;

/// The layout of `p`; its offsets are NULL when they could not be allocated (recorded in *missing).
conv_layout bp_conv_layout_build(const bp_conv2d_params *p, int64_t *missing);

/// Copies cg channels of an image (x at the group's first channel) into the buffer, whose padding
/// is already 0 (it is never written, so a buffer zeroed once serves every image).
void bp_conv_copy_in(float *buffer, const float *x, const conv_layout *l, const bp_conv2d_params *p);
/// packed[g][block][t][o] = W[g · kg + block · lanes + o][t] for each group g's blocks of `lanes`
/// output channels (kg = k / groups; 0 past the group's last channel), t < bp_conv_taps: the
/// weights of the direct kernels, which hold output channels in their lanes. packed holds
/// groups · ⌈kg / lanes⌉ · taps · lanes floats.
void bp_conv_pack_output_lanes(float *packed, const float *weight, int64_t lanes, const bp_conv2d_params *p);
/// dyt[kb][oh][ow][16] = dy[kb · 16 + o][oh][ow] for one image's k output-gradient planes of
/// out_h × out_w (0 past the last channel): the gradient pixel-major, 16 channels to a pixel, for
/// kernels with output channels in the lanes. dyt's rows are `row_len` pixels apart and its
/// channel blocks `rows` rows apart; the places past out_w or out_h are not written.
void bp_conv_pack_pixel_major(float *dyt, const float *dy, int64_t k, int64_t out_h, int64_t out_w, int64_t row_len,
                              int64_t rows);

/// dx = the buffer's interior, plus bias[ci] when bias is not NULL.
void bp_conv_copy_out(float *dx, const float *buffer, const float *bias, const conv_layout *l,
                      const bp_conv2d_params *p);

/// The output pixels [p0, p0 + count) as runs along output rows: run r covers positions
/// [q, q + len) of the block and virtual pixels [v, v + len). bp_conv_pixel_runs returns the number
/// of runs (at most count / out_w + 2).
typedef struct {
    int64_t q, v, len;
} pixel_run;

int64_t bp_conv_pixel_runs(pixel_run *runs, const conv_layout *l, const bp_conv2d_params *p, int64_t p0, int64_t count);

/// What col2im needs of each tap: where it reads (phase plane, rows and columns into it) and, per
/// 8-lane vector of a buffer row, which lanes are its output columns.
typedef struct {
    int64_t phase, row, col;
} tap_place;

typedef struct {
    const float *src;  // the tap's dcol row at buffer column 0
    const v8i *mask;   // its masks
} tap_reach;

typedef struct {
    tap_place *place;            // [r · s]
    v8i *mask;                   // [r · s][vectors]
    int64_t vectors;             // an even number of vectors covering a buffer row of wq
    int64_t inner_lo, inner_hi;  // the vectors (in pairs from an even one) every tap's masks fill
} col2im_plan;

/// The plan of `p`'s layout; returns the bytes it could not allocate (then nothing is held).
int64_t bp_col2im_plan_build(col2im_plan *plan, const conv_layout *l, const bp_conv2d_params *p);
void bp_col2im_plan_free(col2im_plan *plan);

/// Floats a column gradient needs before and after it for bp_col2im_rows.
static inline int64_t bp_col2im_slack(const conv_layout *l) { return l->wq + 16; }

/// Where col2im reads one image-group's column gradient: tap t's output row oh (out_w pixels) at
/// dcol + t · ld + (oh mod ring) · out_w, with bp_col2im_slack floats before and after the R · ld.
/// The whole gradient is {dcol, out_h · out_w, out_h}; a ring of the last `ring` output rows lets
/// it be computed a few rows at a time while they are in cache.
typedef struct {
    const float *dcol;
    int64_t ld, ring;
} dcol_rows;

/// The most output rows below an input row that reach it: an input row (of a phase plane) takes
/// output rows hrow − row_t, from hrow − bp_col2im_reach down to hrow.
static inline int64_t bp_col2im_reach(const bp_conv2d_params *p) { return (p->r - 1) * p->dilation_h / p->stride_h; }

/// col2im as a gather, written straight into dx (one image-group's input gradient, + bias[ci]
/// unless bias is NULL): element (ci, phase, hrow, col) of the layout's buffer is the sum, in tap
/// order, of dcol[t][oh = hrow − row_t][ow = col − col_t] over the taps t of channel ci placed in
/// that phase, for the (oh, ow) that are output pixels. The column phases of one buffer row are
/// made side by side in `rows` (scratch of bp_col2im_row_floats) and interleaved into the input
/// row they make, which is stored whole: every element of dx written once, a row at a time. For
/// every channel's and row phase's rows [h0, h1), whose output rows must all be in the ring.
/// `reaching` is scratch for r · s taps.
void bp_col2im_rows(float *dx, const float *bias, dcol_rows d, int64_t h0, int64_t h1, const conv_layout *l,
                    const col2im_plan *plan, tap_reach *reaching, float *rows, const bp_conv2d_params *p);
/// The floats of bp_col2im_rows's `rows` scratch.
static inline int64_t bp_col2im_row_floats(const col2im_plan *plan, const bp_conv2d_params *p) {
    return 2 * p->stride_w * 8 * plan->vectors;
}

/// row[v] = x[2v + off] for v in [v0, v1), reading only x[0 … width): every other float of a row.
void bp_gather_stride2(float *row, const float *x, int64_t width, int64_t off, int64_t v0, int64_t v1);
/// x[2v + off] = row[v] (+ b where bias is not NULL) for v in [v0, v1).
void bp_scatter_stride2(float *x, int64_t off, const float *row, int64_t v0, int64_t v1, const float *bias, float b);

/// Whether skipping the taps that read padding pays (stride 1, at least 64 taps, 2% of them on
/// padding).
int bp_conv_padding_pays(const bp_conv2d_params *p);
/// bp_conv2d_forward computed directly from the buffer with output channels in the lanes, skipping
/// the taps that read padding (conv2d_direct.c): the same bits, on CPUs with AVX-512 only; used where
/// bp_conv_padding_pays.
int64_t bp_conv2d_forward_direct(float *y, const float *x, const float *weight, const float *bias,
                                 const bp_conv2d_params *p);
/// Whether bp_conv2d_forward_stride2 serves `p` with the AVX-512 kernel (`avx512`) or the AVX2
/// one: 3 × 3, stride 2, padding 0 or 1, no dilation or groups, at least a block of outputs (32 or
/// 16; on AVX2 at most 64) and 8 inputs, at most 1.5 MB (384 KB) of weights, and blocks of taps
/// (bp_kc_block) of whole input channels.
int bp_conv_stride2_fits(const bp_conv2d_params *p, int avx512);
/// bp_conv2d_forward read from x itself, 32 (AVX-512) or 16 (AVX2) output channels in the lanes of
/// two accumulators a pixel (conv2d_stride2.c): the same bits.
int64_t bp_conv2d_forward_stride2(float *y, const float *x, const float *weight, const float *bias,
                                  const bp_conv2d_params *p, int avx512);

/// The backward-data of `p` as a forward convolution (conv2d.c): of dy with the kernel flipped and
/// its channel roles swapped, its geometry into *q. Whether that is one: stride 1 and the padding it
/// needs not negative.
int bp_conv_transposed_forward(const bp_conv2d_params *p, bp_conv2d_params *q);

/// Whether the forward of `p` runs by Winograd's F(2 × 2, r × r) (conv2d_winograd.c): square
/// kernels of 2, 3 or 5, stride and dilation 1, one group, padding below r, and 16 or more input and
/// output channels. A function of the shape alone, on every CPU.
int bp_conv_winograd_fits(const bp_conv2d_params *p);
/// bp_conv2d_forward by Winograd's F(2 × 2, r × r), where bp_conv_winograd_fits. With `in_phases`
/// (conv2d_phases.c), x is that stride-2 convolution's input and p's input channels are its
/// stacked phases; with `out_phases`, y is that convolution's input gradient and p's output
/// channels are its stacked phases (gathered back, bias added, 0 + bias where no phase lands).
int64_t bp_conv2d_forward_winograd(float *y, const float *x, const float *weight, const float *bias,
                                   const bp_conv2d_params *p, const bp_conv2d_params *in_phases,
                                   const bp_conv2d_params *out_phases);
/// bp_conv2d_backward_weights by Winograd's F(2 × 2, r × r), where bp_conv_winograd_fits; x through
/// `in_phases` as above.
int64_t bp_conv2d_backward_weights_winograd(float *dweight, float *dbias, const float *dy, const float *x,
                                            const bp_conv2d_params *p, const bp_conv2d_params *in_phases);

/// Whether `p` runs as a stride-1 convolution over its input's four phases (conv2d_phases.c): stride
/// 2, square kernels of 4, 6 or 10, dilation 1, one group, 4 or more input and 16 or more output
/// channels (the stacked convolution then runs by Winograd). A function of the shape alone.
int bp_conv_phases_fit(const bp_conv2d_params *p);
/// One image of a stride-2 convolution `p`'s input x into the stacked convolution `q`'s padded
/// planes (plane pitch hp · wp, row pitch wp; q has no padding): plane (2qh + qw) · c + c, row u,
/// column v holds x[c][2u + qh − pad_h][2v + qw − pad_w] where that is inside x (the rest is not
/// written).
void bp_phases_copy_in(float *planes, int64_t hp, int64_t wp, const float *x, const bp_conv2d_params *p,
                       const bp_conv2d_params *q);
/// One image's input gradient dx of `p` set to 0 + bias[c] (bias NULL: 0), before the phases land.
void bp_phases_fill(float *dx, const float *bias, const bp_conv2d_params *p);
/// Rows [u0, u0 + lines) of the stacked gradient's channel `channel` (rows of `s`'s out_w, from
/// `rows`) into one image's dx: dx[c][2u + qh − pad_h][2v + qw − pad_w] = rows[…] + bias[c].
void bp_phases_copy_out(float *dx, const float *rows, int64_t channel, int64_t u0, int64_t lines, const float *bias,
                        const bp_conv2d_params *p, const bp_conv2d_params *s);
/// bp_conv2d_forward, bp_conv2d_backward_data and bp_conv2d_backward_weights over the stacked
/// phases, where bp_conv_phases_fit.
int64_t bp_conv2d_forward_phases(float *y, const float *x, const float *weight, const float *bias,
                                 const bp_conv2d_params *p);
int64_t bp_conv2d_backward_data_phases(float *dx, const float *dy, const float *weight, const float *bias,
                                       const bp_conv2d_params *p);
int64_t bp_conv2d_backward_weights_phases(float *dweight, float *dbias, const float *dy, const float *x,
                                          const bp_conv2d_params *p);

/// The bias gradient's sums, one order for every path of the weight gradient: dbias[o] (a
/// double per output channel of the group, o < kg) += Σ of dy's row o (hw pixels) over pixels
/// [p0, p1) (p0 a multiple of 256), in chunks of 256 pixels each summed in float lanes
/// (bp_lane_sum); and at the end dbias[o] += the blocks' partials [blocks][k] added in block
/// order, rounded to float.
void bp_conv_add_bias_sums(double *dbias, const float *dy, int64_t kg, int64_t hw, int64_t p0, int64_t p1);
void bp_conv_bias_finish(float *dbias, const double *partial, int64_t blocks, int64_t k);

/// The direct weight gradients' partial sums are [R][ld], 16 output channels in the lanes: ld is
/// the group's channels rounded up to 16.
static inline int64_t bp_conv_weights_direct_ld(const bp_conv2d_params *p) { return (p->k / p->groups + 15) / 16 * 16; }
/// Whether a direct weight gradient can hold `p`: dilation 1 and partial sums of at most 1 MB
/// (each pays function below adds the kernel widths, strides and shapes where it gains).
static inline int bp_conv_weights_direct_fits(const bp_conv2d_params *p) {
    return p->dilation_h == 1 && p->dilation_w == 1 && bp_conv_taps(p) * bp_conv_weights_direct_ld(p) <= (1 << 18);
}
/// Whether the direct weight gradient serves `p` and pays (bp_conv_weights_direct_fits, kernels 3,
/// 5 or 7 wide, and skipping padding pays, every tap fits one block, or stride 2).
int bp_conv_weights_direct_pays(const bp_conv2d_params *p);
/// The pixels whose dy the direct weight gradient packs at a time: four chunks.
static inline int64_t bp_conv_weights_direct_piece(int64_t chunk) { return 4 * chunk; }
/// One image-group's weight gradient by the direct kernel (AVX-512, stride 1 or 2), the padding
/// skipped: partial [R][ld] (bp_conv_weights_direct_ld) += its sums over the
/// pixels in chunks of `chunk` (256), from dy [kg][pixels] and the group's input x [cg][h][w] read
/// in place; `zeros` holds at least stride_w · out_w + s zeros; dyt is scratch of ld ·
/// bp_conv_weights_direct_piece(chunk) floats, zero past the group's last channel (a piece of dy
/// packed pixel-major there, chunk by chunk, each chunk's bias sums added to dbias while it is in
/// cache, unless dbias is NULL).
void bp_conv_weights_direct(float *partial, int64_t ld, double *dbias, const float *x, const float *zeros,
                            const float *dy, float *dyt, int64_t chunk, const bp_conv2d_params *p);
/// The same on AVX2 (conv2d_direct_avx2.c), where it serves and pays (bp_conv_weights_direct_fits,
/// stride 1, kernels 3 or 5 wide, at most 25 taps a group: a few input channels).
/// Its dyt is scratch of 16 · chunk floats (16 channels of a chunk of dy at a time); `zeros` as above.
int bp_conv_weights_direct_avx2_pays(const bp_conv2d_params *p);
void bp_conv_weights_direct_avx2(float *partial, int64_t ld, double *dbias, const float *x, const float *zeros,
                                 const float *dy, float *dyt, int64_t chunk, const bp_conv2d_params *p);

#endif
