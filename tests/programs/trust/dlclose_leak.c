/* dlclose_leak.c — a leak allocated by a library that is dlclose'd before the scan: the report
   must still name the library (FaultTests). */
#include <dlfcn.h>
#include <stdio.h>
#include "../interposer_test.h"

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (h == NULL) {
        printf("dlopen: %s\n", dlerror());
        return 3;
    }
    void (*make)(void) = (void (*)(void))dlsym(h, "leaklib_make_leak");
    make();
    printf("dlclose %d\n", dlclose(h));
    printf("scan %d\n", scan_now());
    return 0;
}
