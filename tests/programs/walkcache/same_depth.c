/* same_depth.c — allocations from one function reached from different call sites at the same
   stack depth, and from recursion of varying depth: the per-thread walk reuse must never hand a
   walk the outer frames of a previous, different call chain. */
#include "../interposer_test.h"
#include <stdlib.h>

void *volatile g_keep[64];
static int g_n;

__attribute__((noinline)) void *leaf_alloc(int n) { return malloc(16 + n); }
__attribute__((noinline)) void via_a(int n) { g_keep[g_n++] = leaf_alloc(n); __asm__ volatile(""); }
__attribute__((noinline)) void via_b(int n) { g_keep[g_n++] = leaf_alloc(n); __asm__ volatile(""); }
/* A variable-length array forces an rbp-based frame: its caller's CFA is computed from rbp, so
   the walk cache must compare rbp there. */
__attribute__((noinline)) void via_vla(int len, int n)
{
    volatile char buf[len + 16];
    buf[0] = (char)n;
    g_keep[g_n++] = leaf_alloc(n + buf[0] - n);
    __asm__ volatile("");
}
__attribute__((noinline)) void vla_at_depth(int depth, int len, int n)
{
    if (depth == 0) { via_vla(len, n); return; }
    vla_at_depth(depth - 1, len + 8, n);
    __asm__ volatile("");
}

__attribute__((noinline)) void recurse(int depth, int n)
{
    if (depth == 0) { g_keep[g_n++] = leaf_alloc(n); return; }
    recurse(depth - 1, n);
    __asm__ volatile("");
}

/* Two outer callers of one shared chain: the walks agree on every level but the outermost ones,
   so a reuse of the whole previous walk must notice the change far from the leaf. */
__attribute__((noinline)) void shared_mid2(int n) { via_a(n); __asm__ volatile(""); }
__attribute__((noinline)) void shared_mid1(int n) { shared_mid2(n); __asm__ volatile(""); }
__attribute__((noinline)) void outer_x(int n) { shared_mid1(n); __asm__ volatile(""); }
__attribute__((noinline)) void outer_y(int n) { shared_mid1(n); __asm__ volatile(""); }

int main(int argc, char **argv)
{
    (void)argv;
    for (int round = 0; round < 3; round++) {
        via_a(1);                     /* same depth, different callers, alternating */
        via_b(2);
        if (argc > 0) via_a(3);       /* same caller function, a different call site in main */
    }
    recurse(3, 4);
    recurse(1, 5);
    recurse(3, 6);
    for (int i = 0; i < 3; i++) {      /* rbp-based frames, same and different depths */
        vla_at_depth(2, 8 * i, 7);
        vla_at_depth(i, 16, 8);
    }
    for (int i = 0; i < 2; i++) {      /* same leaf, same depth, only the outer frames differ */
        outer_x(9);
        outer_y(10);
    }
    return dump_live(getenv("DUMP_PATH")) == 0 ? 0 : 1;
}
