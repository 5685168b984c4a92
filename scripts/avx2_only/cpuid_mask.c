/*
 * Makes a Python process on an AVX-512 x86 see an AVX2-only CPU (no AVX-512, no VNNI, no AMX), at native speed.
 *
 * Loaded through /etc/ld.so.preload inside the mount namespace `scripts/avx2_only.sh` makes. In processes whose
 * executable is a Python, the constructor turns on the kernel's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0)):
 * every CPUID instruction then traps, and the SIGSEGV handler below executes it for real with those feature bits
 * cleared. Libraries choose their kernels from CPUID (ONNX Runtime's MLAS, PyTorch's cpuinfo, oneDNN, FBGEMM), so
 * they run their AVX2 code paths: the arithmetic an AVX2-only CPU performs, on this CPU's AVX2 units.
 *
 * The setting survives fork and threads, not exec: every new Python process loads this file again. The program's
 * own SIGSEGV handlers (Python's faulthandler) are kept and called for every other fault.
 * Needs the cpuid_fault CPU flag (Intel, and KVM guests of either vendor).
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction;
static struct sigaction program_handler; /* what the program asked for SIGSEGV; called for other faults */
static int active;

static int cpuid_faulting(int on) { return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

#define BIT(n) (1u << (n))

static void mask(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d) {
    if (leaf == 7 && sub == 0) {
        /* AVX-512 F DQ IFMA PF ER CD BW VL */
        *b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* AVX-512 VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        *c &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* AVX-512 4VNNIW 4FMAPS VP2INTERSECT, AMX-BF16, AVX-512 FP16, AMX-TILE, AMX-INT8 */
        *d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        /* AVX-VNNI, AVX-512 BF16, AMX-FP16, AVX-IFMA */
        *a &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        /* AVX-VNNI-INT8, AVX-NE-CONVERT, AMX-COMPLEX, AVX-VNNI-INT16, AVX10 */
        *d &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(10) | BIT(19));
    } else if (leaf == 0xd && sub == 0) {
        /* the opmask, ZMM and AMX tile states among the supported XSAVE components */
        *a &= ~(BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18));
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AMX tile and AVX10 information */
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    /* A faulting CPUID arrives as a general-protection SIGSEGV (SI_KERNEL) with RIP on 0F A2. */
    if (active && info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
        cpuid_faulting(0);
        __cpuid_count(leaf, sub, a, b, c, d);
        cpuid_faulting(1);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a;
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    if (program_handler.sa_flags & SA_SIGINFO) {
        program_handler.sa_sigaction(sig, info, context);
    } else if (program_handler.sa_handler != SIG_DFL && program_handler.sa_handler != SIG_IGN) {
        program_handler.sa_handler(sig);
    } else {
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        real_sigaction(SIGSEGV, &dfl, NULL); /* the fault repeats on return and takes the default action */
    }
}

/* The program's SIGSEGV handler is recorded, not installed: ours stays in front and passes other faults on. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (!active || sig != SIGSEGV) return real_sigaction(sig, act, old);
    if (old) *old = program_handler;
    if (act) program_handler = *act;
    return 0;
}

static int is_python(void) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = 0;
    const char *base = strrchr(exe, '/');
    return strncmp(base ? base + 1 : exe, "python", 6) == 0;
}

__attribute__((constructor)) static void start(void) {
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (!is_python()) return;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_segv;
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&ours.sa_mask);
    if (real_sigaction(SIGSEGV, &ours, &program_handler) != 0) return;
    active = 1;
    if (cpuid_faulting(1) != 0) {
        active = 0;
        real_sigaction(SIGSEGV, &program_handler, NULL);
        fprintf(stderr, "avx2-only: CPUID faulting unavailable (no cpuid_fault flag): this process sees the real CPU\n");
        if (getenv("EDGE_AVX2_ONLY_STRICT")) _exit(70);
    }
}
