/* lines.c — leaks whose allocation lines are known: each LEAK line prints the block and the
 * file:line of the call that allocated it, and the report must name the same file:line in the
 * block's backtrace. Built with -g at several optimisation levels and DWARF versions. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"
#include "lines_helper.h"

#define NOINLINE __attribute__((noinline))
#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)

uintptr_t g_masked[4]; /* masked: nothing holds the blocks */

static NOINLINE void scrub(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
}

static NOINLINE void leak_here(void)
{
    void *p = malloc(48); printf("LEAK %p %s:%d\n", p, __FILE__, __LINE__);
    g_masked[0] = (uintptr_t)p ^ MASK;
}

static NOINLINE void leak_strdup(void)
{
    char *s = strdup("a string that leaks"); printf("LEAK %p %s:%d\n", (void *)s, __FILE__, __LINE__);
    g_masked[1] = (uintptr_t)s ^ MASK;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    leak_here();
    leak_strdup();
    g_masked[2] = (uintptr_t)helper_leak(72) ^ MASK;
    scrub();
    printf("SCANNED %d\n", interposer_scan ? interposer_scan() : -1);
    return 0;
}
