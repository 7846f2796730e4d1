/* annotations.c — the annotation API (native-shim/interposer.h), one mode per behaviour; the
 * same binary runs under Interposer and under gcc's liblsan (the __lsan_* modes), and prints the
 * same lines under both. Leaked addresses are kept masked so that only what the mode intends
 * holds them.
 *
 *   annotations lsan        __lsan_ignore_object, __lsan_disable/enable, root regions,
 *                           recoverable leak checks
 *   annotations kmemleak    not_leak, ignore, no_scan, a custom allocator (alloc/free)
 *   annotations leakcheck   __lsan_do_leak_check with a leak: the process ends with exit code 23
 *   annotations scanarea    kmemleak_scan_area: only the areas of a block are scanned
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

/* Block i (n bytes, held by a global) with a pointer to a fresh block at each offset given. */
void *g_hold[8]; /* global roots (external linkage: stores to it are kept) */
static NOINLINE void *holder(int slot, size_t n)
{
    void **h = calloc(1, n);
    g_hold[slot] = h;
    return h;
}

static NOINLINE void point(void *h, size_t offset, int i, size_t n, const char *tag)
{
    leak(i, n);
    *(void **)((char *)h + offset) = unmask(i);
    printf("%s %p\n", tag, unmask(i));
}

static NOINLINE void scan_area_modes(void)
{
    /* Only [h, h+64) is scanned: the pointer at 0 holds its block, the one at 128 does not. */
    char *h = holder(0, 256);
    point(h, 0, 0, 24, "KEEP");
    point(h, 128, 1, 24, "LEAK");
    INTERPOSER_CALL(kmemleak_scan_area, h, 64, 0);

    /* SIZE_MAX: from the area's start to the block's end; an interior start address. */
    char *h2 = holder(1, 256);
    point(h2, 16, 2, 32, "LEAK");
    point(h2, 200, 3, 32, "KEEP");
    INTERPOSER_CALL(kmemleak_scan_area, h2 + 128, SIZE_MAX, 0);

    /* Areas die with their block: a later block at the same address is scanned whole. */
    char *old = malloc(192);
    INTERPOSER_CALL(kmemleak_scan_area, old, 8, 0);
    free(old);
    char *h3 = holder(2, 192);
    printf("REUSED %s\n", (void *)h3 == (void *)old ? "same" : "different");
    old = NULL;
    point(h3, 96, 4, 40, "KEEP");

    /* Overlapping areas are read once: a min_count-2 block held by one pointer in the overlap
       is still a leak. */
    char *h4 = holder(3, 64);
    char *pool = malloc(256);
    INTERPOSER_CALL(kmemleak_ignore, pool);
    INTERPOSER_CALL(kmemleak_alloc, pool + 64, 48, 2, 0);
    *(void **)(h4 + 8) = pool + 64;
    printf("LEAK %p\n", (void *)(pool + 64));
    INTERPOSER_CALL(kmemleak_scan_area, h4, 16, 0);
    INTERPOSER_CALL(kmemleak_scan_area, h4 + 8, 16, 0);
    pool = NULL;

    /* Refused with a word on stderr, and the block is scanned whole: an area outside every
       block, and one longer than its block. */
    long on_stack[4];
    INTERPOSER_CALL(kmemleak_scan_area, on_stack, sizeof on_stack, 0);
    char *h5 = holder(4, 64);
    point(h5, 48, 5, 24, "KEEP");
    INTERPOSER_CALL(kmemleak_scan_area, h5, 4096, 0);

    h = h2 = h3 = h4 = h5 = NULL;
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
    else if (strcmp(argv[1], "scanarea") == 0)
        scan_area_modes();
    else if (strcmp(argv[1], "leakcheck") == 0) {
        leak(0, 70);
        scrub();
        INTERPOSER_CALL(__lsan_do_leak_check);
        printf("not reached with a leak\n");
    } else
        return 2;
    return 0;
}
