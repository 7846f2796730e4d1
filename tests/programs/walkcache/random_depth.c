/* random_depth.c — 600 allocations from call chains of random depth (0..45 levels, past the walk
   cache's 32) through two recursive functions, one of them rbp-framed (a variable-length array).
   Each chain is the previous one with its depth nudged and one branch flipped, so a walk mostly
   shares inner or outer levels with the last: the splices, the re-centrings and the extensions
   of the walk reuse (WalkCache.cs, LAYOUT) all run. Every block stays live for the dump. */
#include "../interposer_test.h"
#include <stdint.h>
#include <stdlib.h>

#define N 600
void *volatile g_keep[N];
static int g_n;

__attribute__((noinline)) void *leaf_alloc(int n) { return malloc(16 + (size_t)n); }

__attribute__((noinline)) void rec_b(int depth, uint64_t mask, int n);
__attribute__((noinline)) void rec_a(int depth, uint64_t mask, int n)
{
    if (depth == 0) { g_keep[g_n++] = leaf_alloc(n); return; }
    if (mask & 1) rec_a(depth - 1, mask >> 1, n);
    else          rec_b(depth - 1, mask >> 1, n);
    __asm__ volatile("");
}
__attribute__((noinline)) void rec_b(int depth, uint64_t mask, int n)
{
    volatile char buf[(depth & 7) + 8]; /* rbp-based frame */
    buf[0] = (char)depth;
    if (depth == 0) { g_keep[g_n++] = leaf_alloc(n + buf[0]); return; }
    if (mask & 1) rec_a(depth - 1, mask >> 1, n);
    else          rec_b(depth - 1, mask >> 1, n);
    __asm__ volatile("");
}

static uint64_t g_seed = 0x9E3779B97F4A7C15ull;
static uint64_t next_random(void)
{
    g_seed ^= g_seed << 13;
    g_seed ^= g_seed >> 7;
    g_seed ^= g_seed << 17;
    return g_seed;
}

int main(void)
{
    int depth = 5;
    uint64_t mask = next_random();
    for (int i = 0; i < N; i++) {
        uint64_t r = next_random();
        switch (r % 8) {
        case 0: depth = (int)((r >> 8) % 46); mask = next_random(); break; /* a fresh chain */
        case 1: case 2: depth += 1 + (int)((r >> 8) % 6); break;             /* deeper */
        case 3: case 4: depth -= 1 + (int)((r >> 8) % 6); break;             /* shallower */
        case 5: mask ^= 1ull << ((r >> 8) % 46); break;                      /* one branch differs */
        default: break;                                                      /* the same chain */
        }
        if (depth < 0) depth = 0;
        if (depth > 45) depth = 45;
        /* depth counts from the leaf: flipping a low bit changes outer frames, a high one inner */
        rec_a(depth, mask, i % 7);
    }
    return dump_live(getenv("DUMP_PATH")) == 0 ? 0 : 1;
}
