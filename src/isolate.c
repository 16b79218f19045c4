#include "isolate.h"

#include <errno.h>
#include <linux/capability.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <seccomp.h>

#include "log.h"

/* Found once; the path each isolated spawn runs. Set before any thread, read-only after. */
static char run_path[PATH_MAX];

/* Installed beside qworker: $prefix/libexec/qworker/qworker-run next to $prefix/sbin/qworker,
 * or in the same directory (a build tree). Looked up from qworker's own path, not compiled in,
 * so that `make install PREFIX=...` and the package need no second build. */
static int find_run(bool needed)
{
    static const char *const where[] = {"/../libexec/qworker/qworker-run", "/qworker-run"};
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (n <= 0) {
        log_err("cannot find qworker-run: /proc/self/exe: %s", strerror(errno));
        return -1;
    }
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
        int len = snprintf(run_path, sizeof(run_path), "%s%s", self, where[i]);
        if (len > 0 && (size_t)len < sizeof(run_path) && access(run_path, X_OK) == 0)
            return 0;
    }
    run_path[0] = '\0';
    if (!needed)
        return 0; /* a reload may add a handler that needs it: that handler's tasks fail, loudly */
    log_err("cannot find qworker-run in %s/../libexec/qworker/ or %s/: handlers that must be "
            "kept apart (task_user, or no network) cannot run",
            self, self);
    return -1;
}

static void drop_capabilities(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct held[_LINUX_CAPABILITY_U32S_3], none[_LINUX_CAPABILITY_U32S_3];

    memset(none, 0, sizeof(none));
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (syscall(SYS_capget, &hdr, held) == 0 && memcmp(held, none, sizeof(none)) != 0 &&
        syscall(SYS_capset, &hdr, none) < 0)
        log_warn("cannot drop the capabilities it has no use for: %s", strerror(errno));
}

static bool can_switch_user(void)
{
    /* Root passes them to qworker-run by execve; anyone else only as ambient capabilities. */
    if (geteuid() == 0)
        return true;
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_SETUID, 0, 0) == 1 &&
           prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_SETGID, 0, 0) == 1;
}

static int deny_unless(scmp_filter_ctx ctx, int call, unsigned arg, scmp_datum_t value)
{
    /* Spelled out: clang finds a field missing in libseccomp's SCMP_CMP() macro. */
    const struct scmp_arg_cmp ne = {.arg = arg, .op = SCMP_CMP_NE, .datum_a = value, .datum_b = 0};

    return seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), call, 1, &ne);
}

/* qworker may switch identity only to become task_user, and only as qworker-run does it
 * (setgroups to none, setresgid, setresuid): the capabilities that let it do so would
 * otherwise let a qworker taken over by a payload become root. Full 64-bit compares: an id with
 * high bits set, which the kernel would cut to 32, is refused. */
static int confine(uid_t uid, gid_t gid)
{
    static const char *const never[] = {"setuid", "setgid", "setreuid", "setregid", "setfsuid",
                                        "setfsgid"};
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int rc = ctx == NULL ? -ENOMEM : 0;

    for (size_t i = 0; rc == 0 && i < sizeof(never) / sizeof(never[0]); i++)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), seccomp_syscall_resolve_name(never[i]),
                              0);
    for (unsigned a = 0; rc == 0 && a < 3; a++) {
        rc = deny_unless(ctx, SCMP_SYS(setresuid), a, uid);
        if (rc == 0)
            rc = deny_unless(ctx, SCMP_SYS(setresgid), a, gid);
    }
    if (rc == 0)
        rc = deny_unless(ctx, SCMP_SYS(setgroups), 0, 0);
    if (rc == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        rc = -errno;
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0)
        log_err("cannot confine qworker to worker.task_user's identity (seccomp): %s",
                strerror(-rc));
    return rc == 0 ? 0 : -1;
}

bool isolate_ready(void)
{
    return run_path[0] != '\0';
}

bool isolate_needed(const struct handler_conf *h)
{
    return h->type == HANDLER_EXEC && (h->task_uid > 0 || !h->network);
}

int isolate_init(const struct config *conf)
{
    bool needed = false;

    for (int i = 0; i < conf->nhandlers; i++)
        needed = needed || isolate_needed(&conf->handlers[i]);
    if (find_run(needed) < 0)
        return -1;
    if (conf->task_uid <= 0) {
        /* No use for any capability (the unit grants CAP_SETUID and CAP_SETGID for task_user):
         * none may pass to a handler, and a qworker taken over by a payload must not hold them. */
        if (geteuid() != 0)
            drop_capabilities();
        return 0;
    }
    if ((long)getuid() == conf->task_uid) {
        log_err("worker.task_user \"%s\" is the user qworker runs as: its handlers could signal "
                "it and read what it reads; give them a user of their own",
                conf->task_user);
        return -1;
    }
    if (!can_switch_user()) {
        log_err("worker.task_user \"%s\" needs CAP_SETUID and CAP_SETGID as ambient capabilities "
                "(the packaged unit's AmbientCapabilities=) or root; without them handlers would "
                "run as qworker itself",
                conf->task_user);
        return -1;
    }
    return confine((uid_t)conf->task_uid, (gid_t)conf->task_gid);
}

int isolate_argv(const struct handler_conf *h, char *argv[], char ids[2][24])
{
    int n = 0;

    argv[n++] = run_path;
    if (h->task_uid > 0) {
        snprintf(ids[0], 24, "%ld", h->task_uid);
        snprintf(ids[1], 24, "%ld", h->task_gid);
        argv[n++] = "--uid";
        argv[n++] = ids[0];
        argv[n++] = "--gid";
        argv[n++] = ids[1];
        argv[n++] = "--control"; /* qworker may not signal another user: it asks qworker-run */
        argv[n++] = ISOLATE_CONTROL_FD_TEXT;
    }
    if (!h->network)
        argv[n++] = "--no-network";
    argv[n++] = "--";
    return n;
}
