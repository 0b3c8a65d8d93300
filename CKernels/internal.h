// Helpers shared by the kernel files; not part of the public C API.
#ifndef BACKPROP_CKERNELS_INTERNAL_H
#define BACKPROP_CKERNELS_INTERNAL_H

#include <stdint.h>

// Loops this short run on the calling thread: a parallel region costs more than it saves.
#define BP_PARALLEL_MIN 32768

/// Sums `block(ctx, begin, end)` over consecutive blocks of a fixed size covering [0, n):
/// the blocks are computed in parallel and their sums added in block order, so the result
/// does not depend on the thread count.
double bp_blocked_sum(int64_t n, double (*block)(const void *ctx, int64_t begin, int64_t end),
                      const void *ctx);

#endif
