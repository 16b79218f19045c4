/* The machine's own ceiling for the exec workload: one process per core spawning /bin/true with
 * posix_spawn and waiting for it, nothing else. Prints spawns per second. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void spawn_loop(int n)
{
    char *argv[] = {"/bin/true", NULL};

    for (int i = 0; i < n; i++) {
        pid_t pid;
        if (posix_spawn(&pid, argv[0], NULL, NULL, argv, environ) != 0)
            exit(1);
        waitpid(pid, NULL, 0);
    }
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long c = 0; c < cores; c++)
        if (fork() == 0) {
            spawn_loop(n);
            _exit(0);
        }
    while (wait(NULL) > 0)
        ;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("%.0f\n", (double)(n * cores) /
                         ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9));
    return 0;
}
