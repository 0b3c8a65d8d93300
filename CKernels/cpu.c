// Which vector extensions this CPU and its OS support (cpuid and xgetbv), and whose cores it has.
#include "CKernels.h"
#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int read_vector_level(void) {
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

int bp_cpu_vector_level(void) {
    static _Atomic int level = -1;  // cpuid is slow (under a hypervisor especially): asked once
    if (level < 0) level = read_vector_level();
    return level;
}
#else
int bp_cpu_vector_level(void) { return 0; }
#endif

static int vendor_override = -1;

void bp_cpu_vendor_override(int amd) { __atomic_store_n(&vendor_override, amd < 0 ? -1 : amd != 0, __ATOMIC_RELAXED); }

int bp_cpu_is_amd(void) {
    int forced = __atomic_load_n(&vendor_override, __ATOMIC_RELAXED);
    if (forced >= 0) return forced;
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

int bp_cpu_is_amd_avx512(void) {
    int forced = __atomic_load_n(&vendor_override, __ATOMIC_RELAXED);
    return forced >= 0 ? forced : bp_cpu_is_amd() && bp_cpu_vector_level() >= 2;
}
