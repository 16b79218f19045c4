/* qworker-run: the step between qworker and a handler that is kept apart from it.
 *
 *   qworker-run [--uid UID --gid GID --control FD] [--no-network] -- PROGRAM [ARG]...
 *
 * qworker spawns it in the handler's place (same pipes, directory, environment and process
 * group); it takes the task's identity and limits and then becomes PROGRAM by execv, so the
 * handler's parent is still qworker and its exit status is the handler's own. On any failure it
 * says why on stderr (the task's output) and exits 127 without running anything.
 *
 * With another user qworker may not signal the handler (only the same user, or CAP_KILL, may),
 * so with --uid it stays, as that user, the handler's supervisor: it runs PROGRAM in a process
 * group of its own and signals that group when qworker writes to FD ('T': SIGTERM, 'K':
 * SIGKILL) or closes it (SIGKILL: qworker gave up on the task, or is gone); once PROGRAM ends,
 * whatever it left in its group is killed, and it ends the same way (the same status, or the
 * same signal).
 *
 * Nothing done here can be undone by the handler: without CAP_SETUID it cannot take another
 * identity back, no_new_privs keeps set-user-ID programs and file capabilities from giving it
 * one, and a seccomp filter is inherited by every descendant and never removed.
 *
 * A program of its own, not code in the daemon: it runs single-threaded after posix_spawn, with
 * none of qworker's state, and stays small enough to read in one sitting. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seccomp.h>

#define EXIT_CANNOT 127
#define USAGE                                                                                   \
    "usage: qworker-run [--uid UID --gid GID --control FD] [--no-network] -- PROGRAM [ARG]..."

static _Noreturn void die(const char *what, int err)
{
    if (err != 0)
        fprintf(stderr, "qworker-run: %s: %s\n", what, strerror(err));
    else
        fprintf(stderr, "qworker-run: %s\n", what);
    exit(EXIT_CANNOT);
}

static long parse_id(const char *s, const char *what)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v >= 0xffffffffL)
        die(what, EINVAL);
    return v;
}

/* Groups first: once the user is no longer privileged, it could not drop them any more. */
static void become(uid_t uid, gid_t gid)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (setgroups(0, NULL) < 0)
        die("cannot drop the supplementary groups", errno);
    if (setresgid(gid, gid, gid) < 0)
        die("cannot take the task's group", errno);
    if (setresuid(uid, uid, uid) < 0)
        die("cannot take the task's user", errno);
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != uid ||
        eu != uid || su != uid || rg != gid || eg != gid || sg != gid)
        die("the task's identity did not take", 0);
}

/* qworker may hold CAP_SETUID and CAP_SETGID as ambient capabilities (its unit gives them to it
 * for this program), which also puts them in the inheritable set: through execve they would pass
 * to the handler, as ambient ones, or as inheritable ones to a program with file capabilities.
 * Taking another user does not drop them (only leaving root does). So every set is emptied, and
 * no_new_privs (set next) keeps the handler from gaining any. */
static void drop_capabilities(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct held[_LINUX_CAPABILITY_U32S_3], none[_LINUX_CAPABILITY_U32S_3];

    memset(none, 0, sizeof(none));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        die("cannot clear the ambient capabilities", errno);
    /* capset only when something is held: a unit that gives qworker no capability need not
     * allow the call (systemd's @privileged holds it). */
    if (syscall(SYS_capget, &hdr, held) < 0)
        die("cannot read the capabilities", errno);
    if (memcmp(held, none, sizeof(none)) != 0 && syscall(SYS_capset, &hdr, none) < 0)
        die("cannot drop the capabilities", errno);
}

/* No IPv4 or IPv6 socket: Redis, or anything else on the network, is out of reach. io_uring
 * could open sockets without socket(2), so it goes too. libseccomp writes the architecture
 * checks (x32 calls on x86-64 included) that a hand-written filter tends to miss. */
static void forbid_network(void)
{
    /* The kernel reads the family as an int: compared on the low 32 bits only, or a family
     * with high bits set (0x100000002) would pass the filter and still open an AF_INET socket.
     * Spelled out: clang finds a field missing in libseccomp's SCMP_A0() macro. */
    const struct scmp_arg_cmp inet = {.arg = 0, .op = SCMP_CMP_MASKED_EQ, .datum_a = 0xffffffff,
                                      .datum_b = AF_INET},
                              inet6 = {.arg = 0, .op = SCMP_CMP_MASKED_EQ,
                                       .datum_a = 0xffffffff, .datum_b = AF_INET6};
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int rc;

    if (ctx == NULL)
        die("cannot build the network filter", ENOMEM);
    rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1, &inet);
    if (rc == 0)
        rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1, &inet6);
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0);
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0)
        die("cannot load the network filter", -rc);
}

static int pidfd_of(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Ends as the handler did: its exit status, or its signal (a signal qworker's timeout sent is
 * reported as such, as when it signals a handler itself). */
static _Noreturn void end_like(int status)
{
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        raise(WTERMSIG(status));
    }
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_CANNOT);
}

/* qworker's orders on control, until the handler (child, leader of its own group) ends. */
static _Noreturn void supervise(pid_t child, int control)
{
    struct pollfd fds[2] = {{.fd = pidfd_of(child), .events = POLLIN},
                            {.fd = control, .events = POLLIN}};
    int status = 0;

    if (fds[0].fd < 0) {
        kill(-child, SIGKILL);
        waitpid(child, &status, 0);
        die("cannot watch the handler", errno);
    }
    for (;;) {
        char order[16];
        ssize_t n;

        if (poll(fds, fds[1].fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
            break;
        if (fds[0].revents != 0)
            break;
        if (fds[1].fd < 0 || fds[1].revents == 0)
            continue;
        n = read(control, order, sizeof(order));
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++)
                kill(-child, order[k] == 'T' ? SIGTERM : SIGKILL);
        } else if (n == 0 || errno != EINTR) {
            kill(-child, SIGKILL); /* qworker closed it: the task is over for it */
            close(control);
            fds[1].fd = -1;
        }
    }
    waitpid(child, &status, 0);
    kill(-child, SIGKILL); /* what it left behind: no task outlives its completion */
    end_like(status);
}

/* Runs PROGRAM as a child, in a group of its own, and supervises it. */
static _Noreturn void run_supervised(char **argv, int control)
{
    pid_t supervisor = getpid(), child = fork();

    if (child < 0)
        die("cannot start the handler", errno);
    if (child == 0) {
        /* The handler may kill its supervisor (they share a user): then it goes too, unless it
         * undid this first, and qworker's unit stops what is left when qworker stops. */
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        if (getppid() != supervisor)
            _exit(EXIT_CANNOT);
        setpgid(0, 0);
        close(control);
        execv(argv[0], argv);
        fprintf(stderr, "qworker-run: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(EXIT_CANNOT);
    }
    setpgid(child, child); /* whichever of the two runs first */
    supervise(child, control);
}

int main(int argc, char **argv)
{
    long uid = -1, gid = -1, control = -1;
    int network = 1, i;

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--uid") == 0 && i + 1 < argc)
            uid = parse_id(argv[++i], "--uid");
        else if (strcmp(argv[i], "--gid") == 0 && i + 1 < argc)
            gid = parse_id(argv[++i], "--gid");
        else if (strcmp(argv[i], "--control") == 0 && i + 1 < argc)
            control = parse_id(argv[++i], "--control");
        else if (strcmp(argv[i], "--no-network") == 0)
            network = 0;
        else
            die(USAGE, 0);
    }
    if (i + 1 >= argc || (uid < 0) != (gid < 0) || (control >= 0) != (uid >= 0))
        die(USAGE, 0);
    if (uid == 0 || gid == 0)
        die("will not run a task as root or in its group", 0);
    /* Without a user to take, qworker runs the handler as itself, capabilities and all (qworker
     * started by hand, as root say); its unit gives it some only with task_user. */
    if (uid > 0) {
        become((uid_t)uid, (gid_t)gid);
        drop_capabilities();
    }
    /* Also what lets a process without CAP_SYS_ADMIN load a seccomp filter. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die("cannot set no_new_privs", errno);
    if (!network)
        forbid_network();
    if (control >= 0)
        run_supervised(argv + i + 1, (int)control);
    execv(argv[i + 1], argv + i + 1);
    fprintf(stderr, "qworker-run: cannot run %s: %s\n", argv[i + 1], strerror(errno));
    return EXIT_CANNOT;
}
