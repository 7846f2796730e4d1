/* sigpipe_probe.c — the SIGPIPE disposition the program starts with must be the one its parent
   gave it, not the managed runtime's SIG_IGN (DESIGN: restore the host's SIGPIPE after runtime
   start). Prints the disposition, then writes into a pipe whose read end is closed:
     "write: EPIPE"   when SIGPIPE is ignored,
   or the process dies of SIGPIPE (exit status 141 as the shell reports it) when it is not. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    struct sigaction sa;
    sigaction(SIGPIPE, NULL, &sa);
    printf("SIGPIPE %s\n", sa.sa_handler == SIG_DFL ? "default" : sa.sa_handler == SIG_IGN ? "ignored" : "handled");
    fflush(stdout);
    int fds[2];
    if (pipe(fds) != 0)
        return 3;
    close(fds[0]);
    char *buf = malloc(16);
    strcpy(buf, "x");
    ssize_t n = write(fds[1], buf, 1);
    printf("write: %s\n", n < 0 ? (errno == EPIPE ? "EPIPE" : strerror(errno)) : "ok");
    free(buf);
    return 0;
}
