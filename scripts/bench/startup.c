/* startup.c — the cost a preloaded library adds to every process, for scripts/bench.sh.
 *
 *   startup <count> [NAME=value ...] -- <program> [args ...]
 *
 * Runs <program> <count> times, one after the other (fork, execve, waitpid), each with exactly the
 * NAME=value environment given (nothing inherited), and prints the median and the 90th
 * percentile of the wall time from fork to the child's reaping. This program itself should run
 * without any preload: a parent that has loaded the library hands its child a state (a descriptor
 * table already grown) that hides part of the cost a shell or make pays.
 *
 * Output, one line:  ms_median=<m> ms_p90=<p> runs=<count>
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int sep = 2;
    while (sep < argc && strcmp(argv[sep], "--") != 0)
        sep++;
    int count = argc > 1 ? atoi(argv[1]) : 0;
    if (count < 1 || count > 100000 || sep + 1 >= argc) {
        fprintf(stderr, "usage: startup <count> [NAME=value ...] -- <program> [args ...]\n");
        return 2;
    }
    char **env = calloc((size_t)(sep - 1), sizeof *env);
    double *t = calloc((size_t)count, sizeof *t);
    if (env == NULL || t == NULL)
        return 3;
    for (int i = 2; i < sep; i++)
        env[i - 2] = argv[i];
    for (int i = 0; i < count; i++) {
        double start = now_ms();
        pid_t pid = fork();
        if (pid == 0) {
            execve(argv[sep + 1], argv + sep + 1, env);
            _exit(127);
        }
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) == 127) {
            fprintf(stderr, "startup: %s did not run\n", argv[sep + 1]);
            return 1;
        }
        t[i] = now_ms() - start;
    }
    qsort(t, (size_t)count, sizeof *t, cmp);
    printf("ms_median=%.3f ms_p90=%.3f runs=%d\n", t[count / 2], t[(count * 9) / 10], count);
    return 0;
}
