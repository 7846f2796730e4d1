/* lines_helper.h — a function defined in a header, so its leak's line is in a second file of the
 * same compilation unit (the DWARF line table's file list has more than one entry). */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) static void *helper_leak(size_t n)
{
    void *p = malloc(n); printf("LEAK %p %s:%d\n", p, __FILE__, __LINE__);
    return p;
}
