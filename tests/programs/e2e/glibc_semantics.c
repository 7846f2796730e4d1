/* glibc_semantics.c — prints the results and errno of the malloc family's edge cases.
   The end-to-end test runs it with and without the library: stdout must be byte-identical.
   Nothing printed depends on addresses. On stderr (not compared) it reports record-count
   deltas that only make sense under the library ("-1" values without it). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../interposer_test.h"

/* The sizes go through volatile variables so the compiler cannot fold any call away. */
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Walloc-size-larger-than="
static volatile size_t v_size_max = SIZE_MAX;
static volatile size_t v_huge = SIZE_MAX - 4096;
static volatile size_t v_half = SIZE_MAX / 2;
static volatile size_t v_ptrdiff1 = (size_t)PTRDIFF_MAX + 1;

#define SENTINEL EDOM /* an errno value no allocator sets: shows errno was left alone */

static void show(const char *what, const void *p, int err)
{
    printf("%-44s %s errno=%s\n", what, p ? "non-NULL" : "NULL",
           err == 0 ? "0" : err == SENTINEL ? "untouched" : strerrorname_np(err));
}

static int aligned(const void *p, size_t a) { return p != NULL && ((uintptr_t)p % a) == 0; }

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *p, *q;
    int rc;

    errno = SENTINEL; p = malloc(0);
    show("malloc(0)", p, errno);
    printf("malloc_usable_size(malloc(0)) >= 0: %s\n", p ? "yes" : "no");
    free(p);

    errno = SENTINEL; p = malloc(v_size_max);
    show("malloc(SIZE_MAX)", p, errno);
    errno = SENTINEL; p = malloc(v_ptrdiff1);
    show("malloc(PTRDIFF_MAX+1)", p, errno);

    errno = SENTINEL; p = malloc(100);
    show("malloc(100)", p, errno);
    printf("malloc_usable_size(malloc(100)) = %zu (>= 100: %s)\n", malloc_usable_size(p),
           malloc_usable_size(p) >= 100 ? "yes" : "no");
    errno = SENTINEL; free(p);
    printf("free(p) errno=%s\n", errno == SENTINEL ? "untouched" : strerrorname_np(errno));
    errno = SENTINEL; free(NULL);
    printf("free(NULL) errno=%s\n", errno == SENTINEL ? "untouched" : strerrorname_np(errno));
    printf("malloc_usable_size(NULL) = %zu\n", malloc_usable_size(NULL));

    errno = SENTINEL; p = calloc(v_half, 3);
    show("calloc(SIZE_MAX/2, 3) overflow", p, errno);
    errno = SENTINEL; p = calloc((size_t)1 << 33, (size_t)1 << 33);
    show("calloc(2^33, 2^33) overflow", p, errno);
    errno = SENTINEL; p = calloc(0, 0);
    show("calloc(0, 0)", p, errno);
    free(p);
    errno = SENTINEL; p = calloc(1000, 3);
    show("calloc(1000, 3)", p, errno);
    {
        unsigned sum = 0;
        for (int i = 0; i < 3000; i++) sum += ((unsigned char *)p)[i];
        printf("calloc(1000, 3) zero-filled: %s\n", sum == 0 ? "yes" : "no");
    }
    free(p);

    errno = SENTINEL; p = realloc(NULL, 10);
    show("realloc(NULL, 10)", p, errno);
    strcpy(p, "abcdefghi");
    errno = SENTINEL; q = realloc(p, 100000);
    show("realloc(p, 100000)", q, errno);
    printf("realloc kept contents: %s\n", q && strcmp(q, "abcdefghi") == 0 ? "yes" : "no");
    p = q;
    int64_t before = live_blocks();
    errno = SENTINEL; q = realloc(p, v_size_max);
    fprintf(stderr, "failed realloc record delta %ld\n", (long)(live_blocks() - before));
    show("realloc(p, SIZE_MAX)", q, errno);
    printf("failed realloc left p intact: %s\n", strcmp(p, "abcdefghi") == 0 ? "yes" : "no");
    before = live_blocks();
    errno = SENTINEL; q = realloc(p, 0);
    show("realloc(p, 0)", q, errno);
    int64_t after = live_blocks();
    fprintf(stderr, "realloc(p,0) record delta %ld\n", (long)(after - before));

    errno = SENTINEL; p = reallocarray(NULL, 4, 8);
    show("reallocarray(NULL, 4, 8)", p, errno);
    memcpy(p, "0123456789abcdef0123456789abcde", 32);
    before = live_blocks();
    errno = SENTINEL; q = reallocarray(p, v_half, 3);
    show("reallocarray(p, SIZE_MAX/2, 3) overflow", q, errno);
    after = live_blocks();
    fprintf(stderr, "reallocarray overflow record delta %ld\n", (long)(after - before));
    printf("overflowed reallocarray left p intact: %s\n",
           memcmp(p, "0123456789abcdef0123456789abcde", 32) == 0 ? "yes" : "no");
    errno = SENTINEL; q = reallocarray(p, 100, 8);
    show("reallocarray(p, 100, 8)", q, errno);
    printf("reallocarray kept contents: %s\n",
           q && memcmp(q, "0123456789abcdef0123456789abcde", 32) == 0 ? "yes" : "no");
    p = q;
    before = live_blocks();
    errno = SENTINEL; q = reallocarray(p, 0, 8);
    show("reallocarray(p, 0, 8)", q, errno);
    after = live_blocks();
    fprintf(stderr, "reallocarray(p,0,8) record delta %ld\n", (long)(after - before));

    p = NULL;
    errno = SENTINEL; rc = posix_memalign(&p, 3, 16);
    printf("posix_memalign(align 3) = %s errno=%s\n", rc ? strerrorname_np(rc) : "0",
           errno == SENTINEL ? "untouched" : strerrorname_np(errno));
    errno = SENTINEL; rc = posix_memalign(&p, 4, 16); /* not a multiple of sizeof(void*) */
    printf("posix_memalign(align 4) = %s errno=%s\n", rc ? strerrorname_np(rc) : "0",
           errno == SENTINEL ? "untouched" : strerrorname_np(errno));
    errno = SENTINEL; rc = posix_memalign(&p, 64, v_huge);
    printf("posix_memalign(64, huge) = %s errno=%s\n", rc ? strerrorname_np(rc) : "0",
           errno == SENTINEL ? "untouched" : strerrorname_np(errno));
    errno = SENTINEL; rc = posix_memalign(&p, 256, 1000);
    printf("posix_memalign(256, 1000) = %s errno=%s aligned=%s\n", rc ? strerrorname_np(rc) : "0",
           errno == SENTINEL ? "untouched" : strerrorname_np(errno), aligned(p, 256) ? "yes" : "no");
    free(p);

    errno = SENTINEL; p = aligned_alloc(64, 128);
    show("aligned_alloc(64, 128)", p, errno);
    printf("aligned_alloc(64, 128) aligned: %s\n", aligned(p, 64) ? "yes" : "no");
    free(p);
    errno = SENTINEL; p = aligned_alloc(64, v_huge);
    show("aligned_alloc(64, huge)", p, errno);
    errno = SENTINEL; p = aligned_alloc(3, 16);
    show("aligned_alloc(3, 16)", p, errno);
    free(p);

    errno = SENTINEL; p = memalign(4096, 10);
    show("memalign(4096, 10)", p, errno);
    printf("memalign(4096, 10) aligned: %s\n", aligned(p, 4096) ? "yes" : "no");
    free(p);
    errno = SENTINEL; p = memalign(64, v_huge);
    show("memalign(64, huge)", p, errno);

    errno = SENTINEL; p = valloc(100);
    show("valloc(100)", p, errno);
    printf("valloc page-aligned: %s\n", aligned(p, (size_t)page) ? "yes" : "no");
    free(p);
    errno = SENTINEL; p = pvalloc(100);
    show("pvalloc(100)", p, errno);
    printf("pvalloc page-aligned: %s, usable >= page: %s\n", aligned(p, (size_t)page) ? "yes" : "no",
           malloc_usable_size(p) >= (size_t)page ? "yes" : "no");
    free(p);
    errno = SENTINEL; p = valloc(v_huge);
    show("valloc(huge)", p, errno);

    for (size_t n = 1; n <= 4096; n = n * 3 + 1) {
        p = malloc(n);
        printf("malloc_usable_size(malloc(%zu)) = %zu\n", n, malloc_usable_size(p));
        free(p);
    }
    return 0;
}
