// Allocation for the kernels: every request checked, a failure recorded as the bytes asked, and
// a test hook that makes a chosen allocation fail. Keeping freed memory for the next tensor.
#include "CKernels.h"
#include "internal.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

// This thread's allocations left before the one that fails (bp_fail_allocation); 0: none fails.
// Per thread, so that tests running at the same time on other threads are not touched.
static _Thread_local int64_t fail_countdown = 0;

void bp_fail_allocation(int64_t count) { fail_countdown = count > 0 ? count : 0; }

// Whether this allocation is the one the test hook makes fail.
static int injected_failure(void) { return fail_countdown > 0 && --fail_countdown == 0; }

// The bytes of count · size rounded up to `alignment`, or 0 when that overflows int64.
static int64_t request_bytes(int64_t count, int64_t size, int64_t alignment) {
    int64_t bytes;
    if (count < 0 || size < 0 || __builtin_mul_overflow(count, size, &bytes) || bytes > INT64_MAX - alignment) return 0;
    return (bytes + alignment - 1) / alignment * alignment;
}

// Records the first failure's size in *missing (other threads may be recording theirs).
static void *failed(int64_t count, int64_t size, int64_t *missing) {
    int64_t bytes, expected = 0;
    if (__builtin_mul_overflow(count, size, &bytes)) bytes = INT64_MAX;
    __atomic_compare_exchange_n(missing, &expected, bytes > 0 ? bytes : 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return NULL;
}

void *bp_aligned_alloc(int64_t alignment, int64_t count, int64_t size, int zero, int64_t *missing) {
    int64_t bytes = request_bytes(count, size, alignment);
    if (bytes == 0 && count > 0 && size > 0) return failed(count, size, missing);
    if (injected_failure()) return failed(count, size, missing);
    void *memory = alignment > 16 ? aligned_alloc((size_t)alignment, (size_t)(bytes > 0 ? bytes : alignment))
                                  : malloc((size_t)(bytes > 0 ? bytes : 1));
    if (!memory) return failed(count, size, missing);
    if (zero) memset(memory, 0, (size_t)bytes);
    return memory;
}

void *bp_malloc(int64_t count, int64_t size, int64_t *missing) { return bp_aligned_alloc(16, count, size, 0, missing); }

void *bp_calloc(int64_t count, int64_t size, int64_t *missing) { return bp_aligned_alloc(16, count, size, 1, missing); }

// Keeping freed memory for the next tensor: glibc serves allocations above its mmap threshold with
// new mappings and unmaps them on free, so each call of a memory-bound kernel paid a page fault per
// 4 KiB of its output. Serving every allocation from the heap and never trimming it keeps freed
// blocks for the next call; the process keeps its peak.
void bp_retain_freed_memory(void) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);  // the largest value: never give the heap's top back
}

// The lines before dst's first 64-byte boundary and after its last are stored as usual.
BP_MULTIVERSION
void bp_stream_copy(float *dst, const float *src, int64_t n) {
    int64_t j = 0;
    for (; j < n && (uintptr_t)(dst + j) % 64 != 0; j++) dst[j] = src[j];
    for (; j + 16 <= n; j += 16) {
        v16f v;
        memcpy(&v, src + j, sizeof v);
        __builtin_nontemporal_store(v, (v16f *)(dst + j));
    }
    for (; j < n; j++) dst[j] = src[j];
}
