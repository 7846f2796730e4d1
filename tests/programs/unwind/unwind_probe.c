/* unwind_probe.c — test helper for FastUnwinder (tests/Interposer.Tests/Unwinding).
 *
 * Built by the tests at run time with:
 *   gcc -O2 -fomit-frame-pointer -shared -fPIC -o libunwind_probe.so unwind_probe.c -ldl -lpthread
 * so that, like Debian's libc, none of its frames has a frame pointer.
 *
 * Each probe_* entry point builds a particular call chain and, at its bottom, calls capture_here(),
 * which records the state "just after a call returned" (exactly what the malloc hook sees: the
 * return address, the caller's rsp after the return, its rbp), the thread's stack bounds, and two
 * reference backtraces taken from the same function: glibc backtrace() and libunwind's
 * unw_backtrace(). Then, with the whole chain still live on the stack, it calls the test's
 * callback, which runs FastUnwinder on the recorded state.
 *
 * Reference frames: the capture's frame 0 and the references' frame 0 are different return
 * addresses inside capture_here (after two different calls); frames 1.. must be identical.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PROBE_MAX 128

struct probe_capture {
    uint64_t pc, sp, bp;            /* filled by probe_capture_state: offsets 0, 8, 16 */
    uint64_t stack_lo, stack_hi;    /* this thread's stack, from pthread_getattr_np */
    uint64_t outer_ra;              /* return address of the probe_* entry into the test */
    int32_t nref, nunw;             /* frames in ref[] and unw[] */
    void (*callback)(struct probe_capture *);
    uint64_t ref[PROBE_MAX];        /* glibc backtrace() */
    uint64_t unw[PROBE_MAX];        /* libunwind unw_backtrace(), nunw = -1 if unavailable */
};

/* Records return address, CFA (rsp after the return) and rbp of its caller into *rdi. Written in
 * assembly so the compiler cannot move anything around it; hidden so calls do not go via the PLT. */
__attribute__((visibility("hidden"))) void probe_capture_state(struct probe_capture *c);
__asm__(
    ".text\n"
    ".globl probe_capture_state\n"
    ".hidden probe_capture_state\n"
    ".type probe_capture_state, @function\n"
    "probe_capture_state:\n"
    ".cfi_startproc\n"
    "    movq (%rsp), %rax\n"
    "    movq %rax, 0(%rdi)\n"
    "    leaq 8(%rsp), %rax\n"
    "    movq %rax, 8(%rdi)\n"
    "    movq %rbp, 16(%rdi)\n"
    "    ret\n"
    ".cfi_endproc\n"
    ".size probe_capture_state, .-probe_capture_state\n");

static int (*s_unw_backtrace)(void **, int);
static volatile int s_sink;

__attribute__((constructor)) static void probe_init(void)
{
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (h)
        s_unw_backtrace = (int (*)(void **, int))dlsym(h, "unw_backtrace");
}

static void stack_bounds(struct probe_capture *c)
{
    pthread_attr_t attr;
    void *addr = 0;
    size_t size = 0;
    c->stack_lo = c->stack_hi = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            c->stack_lo = (uint64_t)addr;
            c->stack_hi = (uint64_t)addr + size;
        }
        pthread_attr_destroy(&attr);
    }
}

__attribute__((noinline)) static void capture_here(struct probe_capture *c)
{
    probe_capture_state(c);
    c->nref = backtrace((void **)c->ref, PROBE_MAX);
    c->nunw = s_unw_backtrace ? s_unw_backtrace((void **)c->unw, PROBE_MAX) : -1;
    stack_bounds(c);
    c->callback(c);
    __asm__ volatile("" ::: "memory"); /* keep the callback out of tail position */
}

/* --- qsort: the chain passes through libc's msort, which has no frame pointers --- */

static struct probe_capture *s_qsort_capture;
static int s_qsort_captured;

static int compare_and_capture(const void *a, const void *b)
{
    if (!s_qsort_captured) {
        s_qsort_captured = 1;
        capture_here(s_qsort_capture);
    }
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int probe_qsort(struct probe_capture *c)
{
    int v[64];
    for (int i = 0; i < 64; i++)
        v[i] = (i * 37) % 64;
    c->outer_ra = (uint64_t)__builtin_return_address(0);
    s_qsort_capture = c;
    s_qsort_captured = 0;
    qsort(v, 64, sizeof v[0], compare_and_capture);
    return v[0] + v[63];
}

/* --- deep recursion --- */

__attribute__((noinline)) static int recurse(int depth, struct probe_capture *c)
{
    if (depth == 0) {
        capture_here(c);
        return 0;
    }
    int r = recurse(depth - 1, c);
    s_sink = r; /* work after the call: no tail call, no accumulator loop */
    return r + 1;
}

int probe_recurse(int depth, struct probe_capture *c)
{
    c->outer_ra = (uint64_t)__builtin_return_address(0);
    int r = recurse(depth, c);
    s_sink = r;
    return r;
}

/* --- alloca: gcc gives these frames an rbp-based CFA even with -fomit-frame-pointer. Two of them
 * nested, so the outer one's CFA needs the rbp that the inner one saved --- */

__attribute__((noinline)) static int with_alloca(int n, int depth, struct probe_capture *c)
{
    char *buf = __builtin_alloca(n);
    memset(buf, n + depth, n);
    if (depth == 0)
        capture_here(c);
    else
        s_sink = with_alloca(n + 16, depth - 1, c);
    s_sink = buf[n - 1];
    return buf[0];
}

int probe_alloca(int n, struct probe_capture *c)
{
    c->outer_ra = (uint64_t)__builtin_return_address(0);
    int r = with_alloca(n, 1, c);
    s_sink = r;
    return r;
}

/* --- a call that is the last instruction of its function: its return address is the first byte
 * of the next function, so the unwinder must look the rule up at return address - 1. The two
 * functions are written in assembly to make them adjacent; probe_after_last_call's first row
 * (CFA = rsp+8) differs from probe_last_call's row at the call (CFA = rsp+16). --- */

static jmp_buf s_last_call_exit;

__attribute__((visibility("hidden"), noreturn, noinline)) void probe_last_call_target(struct probe_capture *c)
{
    capture_here(c);
    longjmp(s_last_call_exit, 1);
}

__attribute__((visibility("hidden"))) void probe_last_call(struct probe_capture *c);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".globl probe_last_call\n"
    ".hidden probe_last_call\n"
    ".type probe_last_call, @function\n"
    "probe_last_call:\n"
    ".cfi_startproc\n"
    "    subq $8, %rsp\n"
    ".cfi_def_cfa_offset 16\n"
    "    call probe_last_call_target\n"
    ".cfi_endproc\n"
    ".size probe_last_call, .-probe_last_call\n"
    ".globl probe_after_last_call\n"
    ".type probe_after_last_call, @function\n"
    "probe_after_last_call:\n"
    ".cfi_startproc\n"
    "    subq $24, %rsp\n"
    ".cfi_def_cfa_offset 32\n"
    "    addq $24, %rsp\n"
    ".cfi_def_cfa_offset 8\n"
    "    ret\n"
    ".cfi_endproc\n"
    ".size probe_after_last_call, .-probe_after_last_call\n");

int probe_call_at_end(struct probe_capture *c)
{
    c->outer_ra = (uint64_t)__builtin_return_address(0);
    if (setjmp(s_last_call_exit) == 0)
        probe_last_call(c);
    return 0;
}

/* --- a new thread: the walk must end at clone3/start_thread's undefined return address --- */

static void *thread_main(void *arg)
{
    capture_here((struct probe_capture *)arg);
    return 0;
}

int probe_thread(struct probe_capture *c)
{
    pthread_t t;
    c->outer_ra = 0;
    if (pthread_create(&t, 0, thread_main, c) != 0)
        return -1;
    return pthread_join(t, 0);
}

/* --- a signal handler: the walk must stop at the __restore_rt trampoline --- */

static struct probe_capture *s_signal_capture;

static void on_signal(int sig)
{
    (void)sig;
    capture_here(s_signal_capture);
}

int probe_signal(struct probe_capture *c)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    c->outer_ra = (uint64_t)__builtin_return_address(0);
    s_signal_capture = c;
    if (sigaction(SIGUSR1, &sa, &old) != 0)
        return -1;
    raise(SIGUSR1);
    sigaction(SIGUSR1, &old, 0);
    return 0;
}

/* --- guarded memory for bounds tests: [lo, lo + size) with PROT_NONE pages on both sides, so a
 * single read outside the buffer kills the test process --- */

void *probe_guarded_alloc(size_t size)
{
    size_t page = 4096, rounded = (size + page - 1) & ~(page - 1);
    char *base = mmap(0, rounded + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return 0;
    if (mprotect(base + page, rounded, PROT_READ | PROT_WRITE) != 0)
        return 0;
    /* Place the buffer so that it ends exactly at the upper guard page. */
    return base + page + (rounded - size);
}

void probe_guarded_free(void *p, size_t size)
{
    size_t page = 4096, rounded = (size + page - 1) & ~(page - 1);
    char *base = (char *)p - (rounded - size) - page;
    munmap(base, rounded + 2 * page);
}
