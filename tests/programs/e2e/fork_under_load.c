/* fork_under_load.c — fork while 8 threads churn malloc/free (so some thread is almost always
   inside the library, holding a metadata lock, when fork() runs: DESIGN guard rule 4).
     fork_under_load fork    FORKS times: the child mallocs, strdups, frees, asks live_blocks()
                             (which takes the library's locks) and exits 0
     fork_under_load exec    FORKS times: the child execs /bin/true
   Prints "forks N ok K" where K counts children that exited 0; the parent then stops the
   churners and prints "churn stopped". */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "../interposer_test.h"

enum { CHURNERS = 8, FORKS = 20 };
static atomic_int stop;

static void *churn(void *arg)
{
    uintptr_t seed = (uintptr_t)arg;
    void *slots[64] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        int i = (int)((seed >> 33) % 64);
        free(slots[i]);
        slots[i] = malloc(16 + (seed >> 40) % 512);
        if ((seed >> 50) % 16 == 0) {
            char *s = strdup("churn");
            slots[i] = realloc(slots[i], 1024);
            free(s);
        }
    }
    for (int i = 0; i < 64; i++)
        free(slots[i]);
    return NULL;
}

static int child_work(void)
{
    void *p[100];
    for (int i = 0; i < 100; i++)
        p[i] = malloc(32 + i);
    char *s = strdup("child");
    int64_t n = live_blocks();
    for (int i = 0; i < 100; i++)
        free(p[i]);
    free(s);
    /* live_blocks() is -1 without the library; with it, the child's 101 blocks were live */
    if (n != -1 && n < 101)
        return 4;
    return 0;
}

int main(int argc, char **argv)
{
    int exec_mode = argc > 1 && strcmp(argv[1], "exec") == 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("mode %s\n", exec_mode ? "exec" : "fork");
    int64_t before = live_blocks();
    pthread_t th[CHURNERS];
    for (int i = 0; i < CHURNERS; i++)
        pthread_create(&th[i], NULL, churn, (void *)(uintptr_t)(i + 1));
    struct timespec pause = {0, 2 * 1000 * 1000};
    int ok = 0;
    for (int f = 0; f < FORKS; f++) {
        nanosleep(&pause, NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 3;
        }
        if (pid == 0) {
            if (exec_mode) {
                execl("/bin/true", "true", (char *)NULL);
                _exit(127);
            }
            exit(child_work());
        }
        int status = 0;
        if (waitpid(pid, &status, 0) != pid)
            return 3;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            ok++;
        else
            fprintf(stderr, "child %d: status %#x\n", f, status);
    }
    printf("forks %d ok %d\n", FORKS, ok);
    atomic_store(&stop, 1);
    for (int i = 0; i < CHURNERS; i++)
        pthread_join(th[i], NULL);
    printf("churn stopped\n");
    /* every churner freed its blocks; what may stay is one DTV per cached thread stack */
    fprintf(stderr, "record delta %ld\n", (long)(live_blocks() - before));
    return 0;
}
