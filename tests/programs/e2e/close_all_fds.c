/* close_all_fds.c — a program that closes every descriptor above 2, as daemons and shells do
   when they start (closefrom, close_range), then opens a pipe of its own, which gets the lowest
   free numbers: where a preloaded library kept its own descriptors before. The library must
   neither read nor write the program's pipe, and its scan signal and control socket must still
   work.

   First it prints the size of its descriptor table as main starts (FDSize in /proc/self/status:
   "FDSIZE <n>"); the test raises the soft descriptor limit, and the library must not have grown
   the table to it (growing it once threads exist waits for an RCU grace period, 10-27 ms of
   every process's start-up). Then it runs a scan (under the library), which makes the runtime
   open and keep /dev/urandom, and counts the descriptors in [3, 900) that appeared meanwhile:
   "LOW <n>". Ours must not sit there, where the program's next open would land.

   Usage: close_all_fds   (stdin held open by the test)
   Prints "FDSIZE <n>", "LEAK 0x..." (a block nothing points to), "LOW <n>", "FDS <r> <w>", "READY"; then waits
   for EOF on stdin (meanwhile the test sends the scan signal and control commands), reads back the
   pipe and prints "PIPE <bytes> <text>". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>
#include "../interposer_test.h"

static const char g_msg[] = "the program's own bytes, all 40 of them!";

__attribute__((noinline)) static void make_leak(void)
{
    void *p = malloc(48);
    memset(p, 1, 48);
    printf("LEAK %p\n", p);
}

__attribute__((noinline)) static void scrub(void)
{
    volatile char pad[16384];
    memset((char *)pad, 0, sizeof pad);
}

static void print_fd_table_size(void)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "FDSize:", 7) == 0)
            printf("FDSIZE %ld\n", strtol(line + 7, NULL, 10));
    if (f != NULL)
        fclose(f);
}

int main(void)
{
    print_fd_table_size();
    make_leak();
    scrub();
    int low = 0; /* opened during the scan, minus closed (inherited ones are not ours) */
    for (int fd = 3; fd < 900; fd++)
        low -= fcntl(fd, F_GETFD) >= 0;
    scan_now(); /* -1 without the library */
    for (int fd = 3; fd < 900; fd++)
        low += fcntl(fd, F_GETFD) >= 0;
    printf("LOW %d\n", low);
    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
        for (int fd = 3; fd < 65536; fd++)
            close(fd);
    int p[2];
    if (pipe(p) != 0)
        return 2;
    if (write(p[1], g_msg, sizeof g_msg - 1) != (ssize_t)(sizeof g_msg - 1))
        return 3;
    printf("FDS %d %d\nREADY\n", p[0], p[1]);
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL)
        ;
    char buf[128] = {0};
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    printf("PIPE %zd %s\n", n, buf);
    return 0;
}
