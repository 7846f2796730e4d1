/* dlcycle.c — dlopen, touch the library's thread-local variable, dlclose, many times: the
   dynamic linker frees the closed module's TLS block lazily, from __tls_get_addr. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int rounds = atoi(argv[2]);
    for (int i = 0; i < rounds; i++) {
        void *h = dlopen(argv[1], RTLD_NOW);
        if (h == NULL) {
            printf("dlopen failed: %s\n", dlerror());
            return 3;
        }
        void (*set)(void *) = (void (*)(void *))dlsym(h, "tls_lib_set");
        set(&rounds);
        dlclose(h);
    }
    printf("%d rounds\n", rounds);
    return 0;
}
