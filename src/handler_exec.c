#include "handler_exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "log.h"
#include "loop.h"
#include "outlog.h"
#include "isolate.h"
#include "task.h"

/* How much one callback reads from a child's pipe: a child writing without pause cannot keep
 * the loop from serving other tasks. */
#define READ_CHUNK 16384
#define READS_PER_WAKE 4

struct exec_run;

struct stream {
    struct exec_run *run;
    const char *name; /* "stdout", "stderr" */
    int fd;
    struct event *ev;
    char *line; /* the line being read, at most max_line bytes kept */
    size_t len;
    bool cut;
};

struct exec_run {
    struct task *task;
    struct loop *loop;
    const struct handler_conf *h;
    pid_t pid;
    int pidfd;
    int control; /* qworker-run's orders (task_user): 'T', 'K'; -1: signal the group itself */
    struct event *exited;
    struct event *deadline;
    struct stream out, err;
    int in_fd;
    struct event *in_ev;
    char *in_buf;
    size_t in_len, in_off;
    size_t logged;
    bool truncated;
    bool timed_out;
    bool cancelled; /* qworkerctl cancel: stopped as a timeout stops it */
    bool killing; /* SIGTERM sent, SIGKILL next */
};

/* Hands one line to the reporter thread, which logs it (the loop never waits on the journal). */
static void log_line(struct stream *s)
{
    struct exec_run *r = s->run;
    struct outlog *out = loop_outlog(r->loop);
    char note[128];

    if (!log_enabled(LOG_INFO))
        return;
    /* The newline counts too: a flood of empty lines is output as well. */
    if (r->logged + s->len + 1 > (size_t)r->h->max_output) {
        if (!r->truncated) {
            snprintf(note, sizeof(note), "task %s: output beyond %d bytes not logged",
                     r->task->label, r->h->max_output);
            outlog_line(out, r->task->label, s->name, NULL, 0, false, note);
        }
        r->truncated = true;
        return;
    }
    r->logged += s->len + 1;
    for (size_t i = 0; i < s->len; i++)
        if ((unsigned char)s->line[i] < 0x20 && s->line[i] != '\t')
            s->line[i] = '?'; /* control bytes and NULs would cut or garble the log line */
    outlog_line(out, r->task->label, s->name, s->line, s->len, s->cut, NULL);
}

static void take_bytes(struct stream *s, const char *buf, size_t n)
{
    size_t max = (size_t)s->run->h->max_line;

    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            log_line(s);
            s->len = 0;
            s->cut = false;
        } else if (s->len < max) {
            s->line[s->len++] = buf[i];
        } else {
            s->cut = true;
        }
    }
}

static void stream_close(struct stream *s)
{
    if (s->len > 0 || s->cut)
        log_line(s);
    s->len = 0;
    if (s->ev != NULL)
        event_free(s->ev);
    s->ev = NULL;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* Reads what is there, a bounded amount; closes the stream at end of file. */
static void stream_read(struct stream *s)
{
    char buf[READ_CHUNK];

    for (int i = 0; i < READS_PER_WAKE && s->fd >= 0; i++) {
        ssize_t n = read(s->fd, buf, sizeof(buf));
        if (n > 0) {
            take_bytes(s, buf, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        stream_close(s);
    }
}

static void on_output(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_read(arg);
}

static void close_stdin(struct exec_run *r)
{
    if (r->in_ev != NULL)
        event_free(r->in_ev);
    r->in_ev = NULL;
    if (r->in_fd >= 0)
        close(r->in_fd);
    r->in_fd = -1;
    free(r->in_buf);
    r->in_buf = NULL;
}

static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
    struct exec_run *r = arg;
    ssize_t n;

    (void)what;
    n = write(fd, r->in_buf + r->in_off, r->in_len - r->in_off);
    if (n > 0)
        r->in_off += (size_t)n;
    if ((n < 0 && errno != EAGAIN && errno != EINTR) || r->in_off == r->in_len)
        close_stdin(r); /* done, or the child closed its end (EPIPE) */
}

static void free_run(struct exec_run *r)
{
    stream_close(&r->out);
    stream_close(&r->err);
    close_stdin(r);
    if (r->exited != NULL)
        event_free(r->exited);
    if (r->deadline != NULL)
        event_free(r->deadline);
    if (r->pidfd >= 0)
        close(r->pidfd);
    if (r->control >= 0)
        close(r->control); /* qworker-run kills what is left of the group, if anything */
    free(r->out.line);
    free(r->err.line);
    r->task->run = NULL;
    free(r);
}

/* Signals the handler's whole group: itself, or, when it runs as another user, through
 * qworker-run, which may (qworker may not, without CAP_KILL). */
static void group_signal(struct exec_run *r, int sig)
{
    char order = sig == SIGKILL ? 'K' : 'T';

    if (r->control < 0)
        kill(-r->pid, sig);
    else if (write(r->control, &order, 1) < 0 && errno != EPIPE && errno != EAGAIN)
        log_warn("task %s: cannot ask qworker-run to signal it: %s", r->task->label,
                 strerror(errno));
}

/* Whether the child has ended (not reaped): its exit event is then on its way, and what it did
 * stands; a timeout or a cancel that comes after it changes nothing. */
static bool child_ended(const struct exec_run *r)
{
    siginfo_t info = {0};

    return waitid(P_PID, (id_t)r->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid != 0;
}

static void on_child_exit(evutil_socket_t fd, short what, void *arg)
{
    struct exec_run *r = arg;
    struct task *t = r->task;
    struct loop *loop = r->loop;
    enum outcome outcome;
    int status = 0;

    (void)fd;
    (void)what;
    if (!child_ended(r))
        return; /* not yet: the pidfd fires once it has exited */
    /* Whatever it left running in its group goes now, so that no task outlives its completion;
     * before the reaping, while the group's id cannot have been taken by another process.
     * (qworker-run, when it supervises, did so before it ended.) */
    if (r->control < 0)
        kill(-r->pid, SIGKILL);
    waitpid(r->pid, &status, 0);
    /* What the child wrote last is still in the pipes. */
    stream_read(&r->out);
    stream_read(&r->err);
    if (r->cancelled) {
        outcome = OUTCOME_CANCELLED;
        task_set_reason(t, "cancelled (qworkerctl cancel) while it ran");
    } else if (r->timed_out) {
        outcome = OUTCOME_TIMEOUT;
        task_set_reason(t, "timed out after %g s",
                 t->timeout > 0 ? t->timeout : r->h->timeout);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        outcome = OUTCOME_OK;
    } else {
        outcome = OUTCOME_FAILED;
        if (WIFEXITED(status))
            task_set_reason(t, "exited with status %d", WEXITSTATUS(status));
        else
            task_set_reason(t, "killed by signal %d (%s)", WTERMSIG(status),
                     strsignal(WTERMSIG(status)));
    }
    t->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    free_run(r);
    loop_task_done(loop, t, outcome);
}

/* SIGTERM to the whole group, then SIGKILL after the grace (the deadline timer, re-armed). */
static void kill_step(struct exec_run *r)
{
    struct timeval grace;

    if (r->killing) {
        group_signal(r, SIGKILL);
        return;
    }
    r->killing = true;
    group_signal(r, SIGTERM);
    grace.tv_sec = (time_t)r->h->kill_grace;
    grace.tv_usec = (suseconds_t)((r->h->kill_grace - (double)grace.tv_sec) * 1e6);
    evtimer_add(r->deadline, &grace);
}

/* The timeout. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct exec_run *r = arg;

    (void)fd;
    (void)what;
    if (!r->killing && child_ended(r))
        return; /* it made its time: the exit event decides */
    if (!r->cancelled)
        r->timed_out = true;
    kill_step(r);
}

/* argv: qworker-run's part when the handler is kept apart (isolate.c), the configured command,
 * then the task's arguments (the plain payload, or "args"). */
static char **build_argv(const struct exec_run *r, char **payload_copy, char ids[2][24])
{
    const struct task *t = r->task;
    size_t extra = 0, k = 0, i;
    json_t *a;
    char **argv;

    if (!r->h->args_stdin)
        extra = t->json ? (t->args ? json_array_size(t->args) : 0) : 1;
    argv = calloc(ISOLATE_ARGS + (size_t)r->h->argc + extra + 1, sizeof(*argv));
    if (argv == NULL)
        return NULL;
    if (isolate_needed(r->h))
        k = (size_t)isolate_argv(r->h, argv, ids);
    for (int j = 0; j < r->h->argc; j++)
        argv[k++] = r->h->argv[j];
    if (extra > 0 && t->json == NULL) {
        *payload_copy = strndup(t->payload, t->len);
        if (*payload_copy == NULL) {
            free(argv);
            return NULL;
        }
        argv[k++] = *payload_copy;
    } else if (extra > 0) {
        json_array_foreach(t->args, i, a) argv[k++] = (char *)json_string_value(a);
    }
    return argv;
}

static char **build_env(const struct exec_run *r, char vars[3][256])
{
    const struct task *t = r->task;
    size_t n = 0, k = 0;
    char **env;

    while (r->h->env[n] != NULL)
        n++;
    env = calloc(n + 4, sizeof(*env));
    if (env == NULL)
        return NULL;
    for (; k < n; k++)
        env[k] = r->h->env[k];
    snprintf(vars[0], 256, "QWORKER_TASK_ID=%s", t->label);
    snprintf(vars[1], 256, "QWORKER_ATTEMPT=%d", t->attempt);
    snprintf(vars[2], 256, "QWORKER_QUEUE=%s", t->queue->name);
    for (int i = 0; i < 3; i++)
        env[k++] = vars[i];
    return env;
}

/* What goes to stdin with args = "stdin": the envelope's args as JSON, or the plain payload. */
static int prepare_stdin(struct exec_run *r)
{
    const struct task *t = r->task;

    if (t->json != NULL) {
        r->in_buf = t->args ? json_dumps(t->args, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
        if (r->in_buf == NULL)
            return -1;
        r->in_len = strlen(r->in_buf);
    } else {
        r->in_buf = malloc(t->len + 1);
        if (r->in_buf == NULL)
            return -1;
        memcpy(r->in_buf, t->payload, t->len);
        r->in_len = t->len;
    }
    return 0;
}

static int spawn(struct exec_run *r, int in[2], int out[2], int err[2], int control)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    char vars[3][256], ids[2][24], *payload_copy = NULL;
    char **argv = build_argv(r, &payload_copy, ids), **env = build_env(r, vars);
    int rc = ENOMEM;

    if (argv != NULL && env != NULL) {
        posix_spawn_file_actions_init(&fa);
        if (in[0] >= 0)
            posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        else
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, err[1], 2);
        /* hiredis sockets are not close-on-exec: no descriptor but 0-2 (and qworker-run's
         * orders) reaches the child. */
        if (control >= 0)
            posix_spawn_file_actions_adddup2(&fa, control, ISOLATE_CONTROL_FD);
        posix_spawn_file_actions_addclosefrom_np(&fa, control >= 0 ? ISOLATE_CONTROL_FD + 1 : 3);
        posix_spawn_file_actions_addchdir_np(&fa, r->h->cwd);
        posix_spawnattr_init(&attr);
        sigemptyset(&none);
        sigfillset(&all);
        /* Its own process group, so that a timeout reaches its children too; the signal mask
         * and dispositions qworker's threads use are not the child's. */
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        /* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): argc >= 1 (config.c) */
        rc = posix_spawn(&r->pid, argv[0], &fa, &attr, argv, env);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
    }
    free(argv);
    free(env);
    free(payload_copy);
    return rc;
}

static void close_pair(int p[2])
{
    for (int i = 0; i < 2; i++)
        if (p[i] >= 0)
            close(p[i]);
}

static int setup_stream(struct exec_run *r, struct stream *s, const char *name, int fd)
{
    s->run = r;
    s->name = name;
    s->fd = fd;
    s->line = malloc((size_t)r->h->max_line);
    s->ev = event_new(loop_base(r->loop), fd, EV_READ | EV_PERSIST, on_output, s);
    if (s->line == NULL || s->ev == NULL)
        return -1;
    return event_add(s->ev, NULL);
}

static int exec_start(struct loop *loop, struct task *t)
{
    const struct handler_conf *h = t->handler;
    struct exec_run *r = calloc(1, sizeof(*r));
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, control[2] = {-1, -1}, rc;
    double timeout = t->timeout > 0 ? t->timeout : h->timeout;
    struct timeval tv;

    t->outcome = OUTCOME_FAILED; /* if it cannot start: worth another attempt */
    if (r == NULL) {
        task_set_reason(t, "out of memory");
        return -1;
    }
    r->task = t;
    r->loop = loop;
    r->h = h;
    r->pidfd = r->in_fd = r->out.fd = r->err.fd = r->control = -1;
    t->run = r;
    if (isolate_needed(h) && !isolate_ready()) {
        task_set_reason(t, "handler %s must be kept apart (task_user, or no network) and "
                           "qworker-run was not found at start", h->name);
        free_run(r);
        return -1;
    }
    if ((h->args_stdin && (prepare_stdin(r) < 0 || pipe2(in, O_CLOEXEC) < 0)) ||
        pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        (h->task_uid > 0 && pipe2(control, O_CLOEXEC) < 0)) {
        task_set_reason(t, "cannot make pipes: %s", strerror(errno));
        goto fail;
    }
    rc = spawn(r, in, out, err, control[0]);
    if (rc != 0) {
        task_set_reason(t, "cannot run %s: %s", h->argv[0], strerror(rc));
        goto fail;
    }
    close(out[1]);
    close(err[1]);
    out[1] = err[1] = -1;
    if (control[0] >= 0) {
        close(control[0]);
        r->control = control[1];
        fcntl(r->control, F_SETFL, O_NONBLOCK);
        control[0] = control[1] = -1;
    }
    if (in[0] >= 0)
        close(in[0]);
    in[0] = -1;
    r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    r->out.fd = out[0];
    r->err.fd = err[0];
    out[0] = err[0] = -1; /* the streams own them now */
    if (r->pidfd < 0 || setup_stream(r, &r->out, "stdout", r->out.fd) < 0 ||
        setup_stream(r, &r->err, "stderr", r->err.fd) < 0) {
        task_set_reason(t, "cannot watch the child: %s", strerror(errno));
        group_signal(r, SIGKILL);
        waitpid(r->pid, NULL, 0);
        goto fail;
    }
    if (in[1] >= 0) {
        r->in_fd = in[1];
        fcntl(r->in_fd, F_SETFL, O_NONBLOCK);
        r->in_ev = event_new(loop_base(loop), r->in_fd, EV_WRITE | EV_PERSIST, on_stdin, r);
        event_add(r->in_ev, NULL);
    }
    r->exited = event_new(loop_base(loop), r->pidfd, EV_READ | EV_PERSIST, on_child_exit, r);
    r->deadline = evtimer_new(loop_base(loop), on_deadline, r);
    event_add(r->exited, NULL);
    tv.tv_sec = (time_t)timeout;
    tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
    evtimer_add(r->deadline, loop_timeout(loop, &tv));
    return 0;
fail:
    close_pair(in);
    close_pair(out);
    close_pair(err);
    close_pair(control);
    free_run(r);
    return -1;
}

static void exec_cancel(struct loop *loop, struct task *t)
{
    struct exec_run *r = t->run;

    (void)loop;
    if (r == NULL)
        return;
    /* Shutdown: the task goes back to its queue, so stop it now and reap it at once. */
    group_signal(r, SIGKILL);
    waitpid(r->pid, NULL, 0);
    free_run(r);
}

static void exec_stop(struct loop *loop, struct task *t)
{
    struct exec_run *r = t->run;

    (void)loop;
    if (r == NULL || r->cancelled || child_ended(r))
        return;
    r->cancelled = true; /* not retried, even if its time was up already */
    if (!r->killing)
        kill_step(r);
}

const struct handler_ops handler_exec_ops = {
    .start = exec_start,
    .cancel = exec_cancel,
    .stop = exec_stop,
};
