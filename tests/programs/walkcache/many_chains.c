/* many_chains.c — one call site at one stack depth reached through six outer chains in turn,
   3000 times each (sqlite3's shape: a malloc wrapper called from many places at one depth). Each
   malloc's chain differs from the one before it, so the stored walk never fits whole; the walk
   memo must hold all six chains of that one (pc, sp) at once, or every malloc walks. 60 blocks
   stay live for the dump (10 per chain); the rest are freed at once. */
#include "../interposer_test.h"
#include <stdlib.h>

void *volatile g_keep[60];
static int g_kept;

__attribute__((noinline)) void *leaf_alloc(int n) { return malloc(16 + (n & 63)); }
__attribute__((noinline)) void wrapper(int n)
{
    void *p = leaf_alloc(n);
    if ((n / 6) % 300 == 0 && g_kept < 60) /* every 300th round, from each chain */
        g_keep[g_kept++] = p;
    else
        free(p);
    __asm__ volatile("");
}
#define CHAIN(name) __attribute__((noinline)) void name(int n) { wrapper(n); __asm__ volatile(""); }
CHAIN(chain_a) CHAIN(chain_b) CHAIN(chain_c) CHAIN(chain_d) CHAIN(chain_e) CHAIN(chain_f)

int main(void)
{
    for (int i = 0; i < 3000; i++) {
        chain_a(6 * i);
        chain_b(6 * i + 1);
        chain_c(6 * i + 2);
        chain_d(6 * i + 3);
        chain_e(6 * i + 4);
        chain_f(6 * i + 5);
    }
    return dump_live(getenv("DUMP_PATH")) == 0 ? 0 : 1;
}
