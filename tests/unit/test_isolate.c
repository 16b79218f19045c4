/* qworker with worker.task_user confines itself: it may switch identity to that user only, the
 * way qworker-run does, never to root or anyone else. Each case runs in a child of its own (the
 * filter cannot be removed), as root: the only way to hold the capabilities it confines. */
#include <errno.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "isolate.h"

#define TASK_UID 65534
#define TASK_GID 65534

/* Exit status of the child: 0 when every expectation held, else the number of the first one
 * that did not. Raw syscalls: glibc would ask every thread to switch too, and check the result
 * its own way. */
static int confined_child(void)
{
    struct config conf = {.task_user = "nobody", .task_uid = TASK_UID, .task_gid = TASK_GID};
    gid_t root_group = 0;

    if (isolate_init(&conf) < 0)
        return 1;
    if (syscall(SYS_setresuid, 0, 0, 0) == 0 || errno != EPERM)
        return 2;
    if (syscall(SYS_setresuid, 1, 1, 1) == 0 || errno != EPERM)
        return 3;
    /* The kernel keeps 32 bits of an id: a value that cuts down to root is refused whole. */
    if (syscall(SYS_setresuid, 1ULL << 32, 1ULL << 32, 1ULL << 32) == 0 || errno != EPERM)
        return 4;
    if (syscall(SYS_setuid, TASK_UID) == 0 || errno != EPERM)
        return 5;
    if (syscall(SYS_setgroups, 1, &root_group) == 0 || errno != EPERM)
        return 6;
    if (syscall(SYS_setresgid, 0, 0, 0) == 0 || errno != EPERM)
        return 7;
    /* What qworker-run does is allowed. */
    if (syscall(SYS_setgroups, 0, NULL) != 0 || syscall(SYS_setresgid, TASK_GID, TASK_GID,
                                                        TASK_GID) != 0)
        return 8;
    if (syscall(SYS_setresuid, TASK_UID, TASK_UID, TASK_UID) != 0 || getuid() != TASK_UID)
        return 9;
    return 0;
}

static void switches_only_to_the_task_user(void **state)
{
    pid_t pid;
    int status;

    (void)state;
    if (geteuid() != 0)
        skip(); /* only root holds what the filter confines */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(confined_child());
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* As nobody, without capabilities: qworker refuses to start rather than run handlers as itself,
 * or as a user it cannot become. */
static int unprivileged_child(void)
{
    struct config conf = {.task_user = "nobody", .task_uid = TASK_UID, .task_gid = TASK_GID};

    if (getuid() == 0 && (setgroups(0, NULL) != 0 || setresgid(TASK_GID, TASK_GID, TASK_GID) != 0 ||
                          setresuid(TASK_UID, TASK_UID, TASK_UID) != 0))
        return 1;
    if (isolate_init(&conf) != -1) /* the task user is qworker's own */
        return 2;
    conf.task_uid = conf.task_gid = 1; /* daemon: another user, but no CAP_SETUID */
    if (isolate_init(&conf) != -1)
        return 3;
    return 0;
}

static void refuses_what_would_not_keep_handlers_apart(void **state)
{
    pid_t pid;
    int status;

    (void)state;
    if (geteuid() != 0 && getuid() != TASK_UID)
        skip(); /* needs to be, or become, the task user */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(unprivileged_child());
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(switches_only_to_the_task_user),
        cmocka_unit_test(refuses_what_would_not_keep_handlers_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
