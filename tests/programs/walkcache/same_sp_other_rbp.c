/* same_sp_other_rbp.c — two call chains that reach malloc from the same call site at the same
   stack pointer, told apart only by a frame pointer above it.

     chain A: main -> dispatch -> padded -> vla_frame(len 0) -> inner -> malloc
     chain B: main -> dispatch -> direct -> vla_frame(len D) -> inner -> malloc

   `inner` has no frame pointer (its CFA is its sp) and leaves rbp alone; vla_frame's variable-length array makes its
   CFA rbp + 16. D is measured so that inner's sp is the same in both chains. Every other word a
   walk of chain A loads is either the same in chain B (dispatch's and main's frames: one call
   site each) or lies in chain B's unwritten array, which still holds chain A's value. So a walk
   reuse that ignored rbp would hand chain B chain A's stack.

   Round 1 runs A then B: the walk cache's arrays (the previous walk). After enough other walks
   for the per-thread memo to exist, round 2 runs A, then B whose `inner` first allocates from a
   deeper frame (that walk replaces the arrays and writes only below inner's sp): the memo. */
#include "../interposer_test.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void *volatile g_keep[64];
static int g_n;
static int g_probe;               /* 1: measure inner's sp, allocate nothing */
static int g_deeper;              /* 1: inner allocates from a deeper frame first */
static int g_len;                 /* direct's array length */
static uintptr_t g_inner_sp;
volatile uintptr_t g_sink;

__attribute__((noinline)) void deeper(int n)
{
    g_keep[g_n++] = malloc(32 + (size_t)n);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void keep(void *p) { g_keep[g_n++] = p; }

/* Must not touch rbp: then the rbp at malloc's return is vla_frame's, and the walk's step out
   of vla_frame consumes exactly the rbp the allocation came with. */
__attribute__((noinline)) void inner(int n)
{
    uintptr_t sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    g_inner_sp = sp;
    if (g_probe)
        return;
    size_t size = 16 + (size_t)n;
    if (g_deeper)
        deeper(n);
    keep(malloc(size));
}

__attribute__((noinline)) void vla_frame(int len, int n)
{
    char buf[len + 1]; /* left unwritten on purpose (see the file comment) */
    g_sink = (uintptr_t)buf;
    inner(n);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void padded(int n)
{
    volatile char pad[256];
    pad[0] = (char)n;
    vla_frame(0, n + pad[0] - pad[0]);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void direct(int n)
{
    vla_frame(g_len, n);
    __asm__ volatile("" ::: "memory");
}

/* Other call sites, for the walks that make the memo exist. */
__attribute__((noinline)) void other(int depth)
{
    if (depth == 0) {
        void *volatile p = malloc(8); /* volatile: gcc drops a plain free(malloc(n)) */
        free(p);
        return;
    }
    other(depth - 1);
    __asm__ volatile("" ::: "memory");
}

/* One call site for every chain: the return address in dispatch's caller is the same. */
__attribute__((noinline)) void dispatch(void (*f)(int), int n)
{
    f(n);
    __asm__ volatile("" ::: "memory");
}

static void (*const g_steps[])(int) = {padded, direct};
static volatile int g_rounds = 4;

/* A, B, A, B from one call site (a loop the compiler cannot unroll); with_deeper: B's inner
   allocates from a deeper frame first. */
__attribute__((noinline)) void alternate(int with_deeper, int n)
{
    for (int i = 0; i < g_rounds; i++) {
        g_deeper = with_deeper && (i & 1);
        dispatch(g_steps[i & 1], n);
    }
    g_deeper = 0;
}

int main(void)
{
    /* Find D: chain B's inner sp must equal chain A's. */
    g_probe = 1;
    dispatch(padded, 0);
    uintptr_t want = g_inner_sp;
    int d = -1;
    for (int len = 0; len <= 4096 && d < 0; len++) {
        g_len = len;
        dispatch(direct, 0);
        if (g_inner_sp == want)
            d = len;
    }
    g_probe = 0;
    if (d < 0) {
        fprintf(stderr, "same_sp_other_rbp: no array length gives the same sp\n");
        return 2;
    }
    g_len = d;
    alternate(0, 1);                 /* round 1: the arrays */
    for (int i = 0; i < 200; i++)    /* other walks: the memo comes to exist (WalkMemo.After) */
        other(i % 9);
    alternate(1, 2);                 /* round 2: the memo */
    return dump_live(getenv("DUMP_PATH")) == 0 ? 0 : 1;
}
