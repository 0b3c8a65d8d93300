// Does OpenBLAS use kernels as wide as this CPU allows?
//
// OpenBLAS 0.3.21 does not know some newer CPUs and falls back to its Prescott (SSE3) kernels:
// sgemm runs about 5x slower than with OPENBLAS_CORETYPE=SkylakeX on an AVX-512 machine. OpenBLAS
// reads that variable only when it loads, so the remedy is the environment of a new process.
#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

int bp_cpu_vector_level(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int fma = (ecx >> 12) & 1, osxsave = (ecx >> 27) & 1, avx = (ecx >> 28) & 1;
    if (!osxsave || !avx) return 0;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return 0;  // the OS saves XMM and YMM state
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    int avx2 = (ebx >> 5) & 1;
    int avx512 = ((ebx >> 16) & 1) && ((ebx >> 17) & 1) && ((ebx >> 30) & 1) && ((ebx >> 31) & 1);  // F DQ BW VL
    if (avx512 && (xcr0 & 0xe0) == 0xe0) return 2;  // and opmask and ZMM state
    return avx2 && fma ? 1 : 0;
}
#else
int bp_cpu_vector_level(void) { return 0; }
#endif

// Cores whose sgemm kernels use AVX2 and FMA, and those among them that use AVX-512.
static const char *const avx2_cores[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", NULL};
static const char *const avx512_cores[] = {"skylakex", "cooperlake", "sapphirerapids", NULL};

static int listed(const char *core, const char *const *list) {
    for (; *list; list++)
        if (strcasecmp(core, *list) == 0) return 1;
    return 0;
}

const char *bp_blas_better_coretype(const char *core, int vector_level) {
    if (vector_level >= 2 && !listed(core, avx512_cores)) return "SkylakeX";
    if (vector_level == 1 && !listed(core, avx2_cores)) return "Haswell";
    return NULL;
}

const char *bp_blas_check(void) { return bp_blas_better_coretype(bp_blas_corename(), bp_cpu_vector_level()); }
