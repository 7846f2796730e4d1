/* exit_handlers.c — allocation during process exit: in atexit handlers (one registered from a
   constructor before main, one from main), and in an __attribute__((destructor)) function. The
   handler registered last leaks one 77-byte block on purpose (the at-exit dump must list it).
   Each prints a line so the test sees they all ran, in order. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../interposer_test.h"

static char *s_global;

static void handler_registered_first(void)
{
    char *p = malloc(1000);
    memset(p, 'a', 999);
    p[999] = 0;
    char *q = strdup(p);
    printf("atexit (registered first) %zu\n", strlen(q));
    free(p);
    free(q);
    free(s_global);
}

static void handler_registered_last(void)
{
    void *leak = malloc(77); /* never freed */
    char *r = realloc(NULL, 10);
    r = realloc(r, 5000);
    free(r);
    printf("atexit (registered last) %s\n", leak ? "allocated" : "failed");
}

__attribute__((constructor)) static void early_constructor(void)
{
    s_global = strdup("allocated in a constructor, freed in an atexit handler");
    atexit(handler_registered_first);
}

__attribute__((destructor)) static void late_destructor(void)
{
    void *p = calloc(10, 10);
    char *s = NULL;
    if (asprintf(&s, "destructor %d", 42) < 0)
        abort();
    printf("%s %s\n", s, p ? "allocated" : "failed");
    free(s);
    free(p);
    fflush(stdout);
}

int main(void)
{
    void *p = malloc(10);
    atexit(handler_registered_last);
    printf("main returns\n");
    free(p);
    return 0;
}
