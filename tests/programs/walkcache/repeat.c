/* repeat.c — one call site, 5000 times, from one call chain: after the first walk every
   malloc's backtrace is the stored walk's (a whole hit the shim finds itself), so the core walks
   almost never. 100 blocks stay live for the dump; the rest are freed at once. */
#include "../interposer_test.h"
#include <stdlib.h>

void *volatile g_keep[100];

__attribute__((noinline)) void *leaf_alloc(int n) { return malloc(16 + (n & 63)); }
__attribute__((noinline)) void middle(int n)
{
    void *p = leaf_alloc(n);
    if (n % 50 == 0)
        g_keep[n / 50] = p;
    else
        free(p);
    __asm__ volatile("");
}
__attribute__((noinline)) void outer(int n) { middle(n); __asm__ volatile(""); }

int main(void)
{
    for (int i = 0; i < 5000; i++)
        outer(i);
    return dump_live(getenv("DUMP_PATH")) == 0 ? 0 : 1;
}
