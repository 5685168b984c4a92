/*
 * Makes the Python processes of an AVX-512 x86 see an AVX2-only CPU (no AVX-512, no VNNI, no AMX) when they ask
 * CPUID, at native speed.
 *
 * Loaded through /etc/ld.so.preload inside the mount namespace `scripts/avx2_only.sh` makes, by every dynamically
 * linked process there; it acts only in processes whose executable is a Python. There the constructor turns on the
 * kernel's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0)): every CPUID instruction then traps, and the SIGSEGV
 * handler below executes it for real with those feature bits cleared. Libraries choose their kernels from CPUID
 * (ONNX Runtime's MLAS, PyTorch's cpuinfo, oneDNN, FBGEMM), so they run their AVX2 code paths: the arithmetic an
 * AVX2-only CPU performs, on this CPU's AVX2 units.
 *
 * What it is not: a restriction of the instruction set. AVX-512 instructions still execute if a program uses them
 * without asking CPUID; XGETBV (which cannot trap) still reports the AVX-512 register state as enabled. glibc and
 * the dynamic loader choose their string functions before the constructor runs: the script's GLIBC_TUNABLES
 * (glibc.cpu.hwcaps) makes those choices follow the view.
 *
 * The setting survives fork and threads, not exec: every new Python process loads this file again. A program's
 * own SIGSEGV handlers, set with sigaction() or signal(), are recorded and called for every other fault
 * (faulthandler keeps working, on its alternate stack). Limits: a thread that blocks SIGSEGV and runs CPUID is
 * killed (the kernel forces the default action for a blocked synchronous fault); sysv_signal/sigset/raw
 * rt_sigaction calls bypass the recording.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
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

static long cpuid_faulting(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

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
    } else if (leaf == 0xd && (sub == 5 || sub == 6 || sub == 7 || sub == 17 || sub == 18)) {
        *a = *b = *c = *d = 0; /* those components' sizes and offsets */
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) {
        *a = *b = *c = *d = 0; /* AMX tile and AVX10 information */
    }
}

static void say(const char *text) { (void)!write(2, text, strlen(text)); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    int saved_errno = errno;
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    /* A faulting CPUID arrives as a general-protection SIGSEGV (SI_KERNEL) with RIP on 0F A2; the check of
       si_code comes first, so a jump to an unmapped address is never dereferenced here. */
    if (active && info->si_code == SI_KERNEL && ((const unsigned char *)r[REG_RIP])[0] == 0x0f &&
        ((const unsigned char *)r[REG_RIP])[1] == 0xa2) {
        uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
        /* No other handler may run (and ask CPUID unmasked) while faulting is off for this thread. */
        sigset_t all, before;
        sigfillset(&all);
        sigprocmask(SIG_SETMASK, &all, &before);
        if (cpuid_faulting(0) != 0) {
            say("avx2-only: could not execute CPUID (arch_prctl failed in the handler)\n");
            _exit(70);
        }
        __cpuid_count(leaf, sub, a, b, c, d);
        if (cpuid_faulting(1) != 0) {
            say("avx2-only: could not turn CPUID faulting on again: this thread now sees the real CPU\n");
            if (getenv("EDGE_AVX2_ONLY_STRICT")) _exit(70);
        }
        sigprocmask(SIG_SETMASK, &before, NULL);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a; /* CPUID writes 32-bit registers: the upper halves become zero */
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        errno = saved_errno;
        return;
    }
    struct sigaction program = program_handler;
    int sent = info->si_code <= 0; /* by kill() or raise(), not a fault */
    if (program.sa_flags & SA_RESETHAND) {
        memset(&program_handler, 0, sizeof program_handler);
        program_handler.sa_handler = SIG_DFL;
    }
    int has_function = (program.sa_flags & SA_SIGINFO) ? program.sa_sigaction != NULL
                                                       : program.sa_handler != SIG_DFL && program.sa_handler != SIG_IGN;
    if (has_function) {
        /* As the kernel would run it: its sa_mask blocked, and SIGSEGV too unless it asked for SA_NODEFER (so a
           handler that faults is killed, not re-entered). */
        sigset_t blocked = program.sa_mask, before;
        if (!(program.sa_flags & SA_NODEFER)) sigaddset(&blocked, SIGSEGV);
        sigprocmask(SIG_BLOCK, &blocked, &before);
        if (program.sa_flags & SA_SIGINFO) program.sa_sigaction(sig, info, context);
        else program.sa_handler(sig);
        sigprocmask(SIG_SETMASK, &before, NULL);
    } else if (!(sent && program.sa_handler == SIG_IGN)) {
        /* The default action (a fault kills even when SIGSEGV is ignored, as the kernel does it). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
        if (sent) raise(sig); /* delivered again, now with the default action */
        /* a fault: returning re-executes the instruction, which faults again and takes the default action */
    }
    errno = saved_errno;
}

/* The program's SIGSEGV handler is recorded, not installed: ours stays in front and passes other faults on. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (!active || sig != SIGSEGV) return real_sigaction(sig, act, old);
    struct sigaction previous = program_handler, requested;
    if (act) requested = *act; /* act and old may be the same struct */
    if (act) program_handler = requested;
    if (old) *old = previous;
    return 0;
}

/* glibc's signal() calls its internal sigaction, not the one above: this one takes its place (BSD semantics, as
   glibc's: SA_RESTART; siginterrupt() is not honoured in the view). */
sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0) return SIG_ERR;
    return old.sa_handler;
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
    ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART | SA_ONSTACK;
    sigemptyset(&ours.sa_mask);
    if (real_sigaction(SIGSEGV, &ours, &program_handler) != 0) {
        say("avx2-only: could not install the SIGSEGV handler: this process sees the real CPU\n");
        if (getenv("EDGE_AVX2_ONLY_STRICT")) _exit(70);
        return;
    }
    active = 1;
    if (cpuid_faulting(1) != 0) {
        int error = errno;
        active = 0;
        real_sigaction(SIGSEGV, &program_handler, NULL);
        /* EINVAL: not a Linux kernel that knows ARCH_SET_CPUID, i.e. an emulator such as qemu-user, whose guest
           sees the CPU the emulator presents: nothing to do. Otherwise (ENODEV: no cpuid_fault) say so. */
        if (error == EINVAL) return;
        char text[160];
        snprintf(text, sizeof text, "avx2-only: CPUID faulting unavailable (%s): this process sees the real CPU\n",
                 strerror(error));
        say(text);
        if (getenv("EDGE_AVX2_ONLY_STRICT")) _exit(70);
    }
}
