/* leaklib.c — a library that leaks one block and is then dlclose'd (FaultTests). */
#include <stdlib.h>
#include <string.h>

static volatile int g_never;
void *leaklib_sink;

__attribute__((noinline)) void leaklib_make_leak(void)
{
    char *p = malloc(72);
    strcpy(p, "from-closed-lib");
    if (g_never)
        leaklib_sink = p;
}
