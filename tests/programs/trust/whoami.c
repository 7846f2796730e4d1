/* whoami.c — says whether Interposer is loaded (FaultTests: setuid programs). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    void *scan = dlsym(RTLD_DEFAULT, "interposer_scan");
    printf("uid %d euid %d interposer %s\n", (int)getuid(), (int)geteuid(), scan ? "loaded" : "not loaded");
    return 0;
}
