/* annotations.c — the annotation API (native-shim/interposer.h), one mode per behaviour; the
 * same binary runs under Interposer and under gcc's liblsan (the __lsan_* modes), and prints the
 * same lines under both. Leaked addresses are kept masked so that only what the mode intends
 * holds them.
 *
 *   annotations lsan        __lsan_ignore_object, __lsan_disable/enable, root regions,
 *                           recoverable leak checks
 *   annotations kmemleak    not_leak, ignore, no_scan, a custom allocator (alloc/free)
 *   annotations leakcheck   __lsan_do_leak_check with a leak: the process ends with exit code 23
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "interposer.h"

#define MASK ((uintptr_t)0x5a5a5a5a5a5a5a5aULL)
#define NOINLINE __attribute__((noinline))

static uintptr_t g_masked[16];
void *g_holder;  /* a global root */
static volatile int g_never;

static NOINLINE void scrub(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
}

static NOINLINE void *unmask(int i) { return (void *)(g_masked[i] ^ MASK); }

static NOINLINE void leak(int i, size_t n)
{
    char *p = malloc(n);
    memset(p, 0x33, n);
    g_masked[i] = (uintptr_t)p ^ MASK;
}

static int check(void)
{
    scrub();
    return __lsan_do_recoverable_leak_check ? __lsan_do_recoverable_leak_check() : -1;
}

static NOINLINE void ignore_it(int i) { INTERPOSER_CALL(__lsan_ignore_object, unmask(i)); }
static NOINLINE void free_it(int i) { free(unmask(i)); }

static NOINLINE void lsan_modes(void)
{
    leak(0, 40);
    printf("a leak: %d\n", check());
    ignore_it(0);
    printf("after __lsan_ignore_object: %d\n", check());

    INTERPOSER_CALL(__lsan_disable);
    leak(1, 50);
    INTERPOSER_CALL(__lsan_enable);
    printf("leaked between __lsan_disable and __lsan_enable: %d\n", check());

    /* A pointer kept only in memory nothing else scans: a heap block whose own pointer is lost
       (LeakSanitizer scans no mmap'ed memory; Interposer does, so use a malloc'ed buffer). */
    leak(2, 4096);
    leak(3, 60);
    ((void **)unmask(2))[7] = unmask(3);
    ignore_it(2); /* the buffer itself is not a leak; what it points to is, unless registered */
    free_it(2);   /* ...so free it and keep a plain mmap'ed page instead */
    void **page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[7] = unmask(3);
    printf("held only by an unregistered region: %d\n", check());
    INTERPOSER_CALL(__lsan_register_root_region, page, 4096);
    printf("held by a registered root region: %d\n", check());
    INTERPOSER_CALL(__lsan_unregister_root_region, page, 4096);
    printf("after __lsan_unregister_root_region: %d\n", check());
    page[7] = NULL;
    free_it(3);
    printf("all freed: %d\n", check());
}

/* A tiny custom allocator: carves blocks out of one malloc'ed arena and tells kmemleak. */
static char *g_arena;
static size_t g_used;
static NOINLINE void *pool_alloc(size_t n)
{
    void *p = g_arena + g_used;
    g_used += (n + 15) & ~(size_t)15;
    INTERPOSER_CALL(kmemleak_alloc, p, n, 1, 0);
    return p;
}

static NOINLINE void kmemleak_modes(void)
{
    g_arena = malloc(1 << 16);
    INTERPOSER_CALL(kmemleak_ignore, g_arena); /* the arena itself: never reported, never scanned */

    leak(0, 24);
    INTERPOSER_CALL(kmemleak_not_leak, unmask(0));               /* KEEP: not_leak */
    printf("KEEP %p\n", unmask(0));

    leak(1, 32);                                 /* LEAK: held only by an ignored block */
    leak(2, 32);
    ((void **)unmask(2))[0] = unmask(1);
    INTERPOSER_CALL(kmemleak_ignore, unmask(2));
    printf("LEAK %p\n", unmask(1));
    printf("KEEP %p\n", unmask(2));

    leak(3, 48);                                 /* LEAK: held only by a no_scan block */
    leak(4, 48);
    ((void **)unmask(4))[0] = unmask(3);
    g_holder = unmask(4);
    INTERPOSER_CALL(kmemleak_no_scan, unmask(4));
    printf("LEAK %p\n", unmask(3));
    printf("KEEP %p\n", unmask(4));

    void *kept = pool_alloc(40);                 /* custom allocator: held */
    g_masked[5] = (uintptr_t)kept ^ MASK;
    static void *holder2;
    holder2 = kept;
    printf("KEEP %p\n", kept);
    kept = NULL;
    void *lost = pool_alloc(56);                 /* custom allocator: leaked */
    g_masked[6] = (uintptr_t)lost ^ MASK;
    printf("LEAK %p\n", lost);
    lost = NULL;
    void *gone = pool_alloc(64);                 /* custom allocator: freed */
    INTERPOSER_CALL(kmemleak_free, gone);
    printf("FREED %p\n", gone);
    gone = NULL;
    if (g_never)
        printf("%p\n", holder2);
    fflush(stdout);
    scrub();
    printf("SCANNED %d\n", interposer_scan ? interposer_scan() : -1);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return 2;
    if (strcmp(argv[1], "lsan") == 0)
        lsan_modes();
    else if (strcmp(argv[1], "kmemleak") == 0)
        kmemleak_modes();
    else if (strcmp(argv[1], "leakcheck") == 0) {
        leak(0, 70);
        scrub();
        INTERPOSER_CALL(__lsan_do_leak_check);
        printf("not reached with a leak\n");
    } else
        return 2;
    return 0;
}
