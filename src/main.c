/* Start-up order, signal handling and shutdown order; the work itself is in the three threads:
 * consumer (Redis -> loop), loop (runs tasks), reporter (loop -> log and Redis). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "capacity.h"
#include "cancel.h"
#include "config.h"
#include "config_secret.h"
#include "consumer.h"
#include "daemon.h"
#include "health.h"
#include "held.h"
#include "jsonmem.h"
#include "notify.h"
#include "identity.h"
#include "isolate.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "monitor.h"
#include "redis.h"
#include "sentinel.h"
#include "reporter.h"
#include "taskq.h"

#ifndef QWORKER_VERSION
#define QWORKER_VERSION "0.0.0"
#endif

#define DEFAULT_CONFIG "/etc/qworker/worker.conf"
#define EXIT_USAGE 64 /* EX_USAGE */

#define EXIT_ID_IN_USE 75 /* EX_TEMPFAIL: systemd may try again once the other is gone */

static void usage(FILE *out)
{
    fprintf(out, "usage: qworker [-c FILE] [-t] [--version] [-h]\n"
                 "  -c, --config FILE  configuration file (default " DEFAULT_CONFIG ")\n"
                 "  -t, --test         check the configuration and exit: 0 if valid, 78 if not\n"
                 "      --version      print the version and exit\n"
                 "  -h, --help         print this help and exit\n");
}

/* A task's arguments follow the configured command: without a final "--", whoever can push to
 * a queue chooses the program's options too (--output=/etc/passwd). Said by -t and at start. */
static void warn_option_injection(const struct config *conf, FILE *out)
{
    for (int i = 0; i < conf->nhandlers; i++) {
        const struct handler_conf *h = &conf->handlers[i];
        char line[512];

        if (h->type != HANDLER_EXEC || h->args_stdin || strcmp(h->argv[h->argc - 1], "--") == 0)
            continue;
        snprintf(line, sizeof(line),
                 "handler %s: its command does not end with \"--\": a task's arguments may be "
                 "taken as options of %s by whoever can push to its queue (add \"--\" if %s "
                 "accepts it)",
                 h->name, h->argv[0], h->argv[0]);
        if (out != NULL)
            fprintf(out, "%s: warning: %s\n", conf->path, line);
        else
            log_warn("%s", line);
    }
}

/* Whoever can read the password can use the queues: said by -t and at start when a file holding
 * it is open to more than the daemon. The configuration may be readable by its group (the
 * package gives it to the daemon's group, 0640); a password_file is for the daemon alone. */
static void warn_readable_password(const struct config *conf, FILE *out)
{
    const struct redis_conf *r = &conf->redis;
    mode_t mode = 0;
    char line[1024];

    if (r->password_path == NULL ||
        !secret_exposed(r->password_path, r->password_inline ? 0004 : 0044, &mode))
        return;
    if (r->password_inline)
        snprintf(line, sizeof(line),
                 "%s holds the redis password and every user may read it (mode %04o): run "
                 "chmod 0640 %s (0600 if the daemon owns it), or move the password to a "
                 "password_file",
                 r->password_path, (unsigned)mode, r->password_path);
    else
        snprintf(line, sizeof(line),
                 "the redis password_file %s may be read by more than its owner (mode %04o): "
                 "run chmod 0600 %s",
                 r->password_path, (unsigned)mode, r->password_path);
    if (out != NULL)
        fprintf(out, "%s: warning: %s\n", conf->path, line);
    else
        log_warn("%s", line);
}

/* A thread that would not start: the ones before it stop, nothing having been taken yet. */
static int unwind(struct daemon *d, const char *thread)
{
    log_err("cannot start the %s thread: %s", thread, strerror(errno));
    taskq_close(loop_inbox(d->loop));
    loop_stop(d->loop, true);
    loop_join(d->loop);
    reporter_join(d->reporter);
    return -1;
}

static int start_threads(struct daemon *d)
{
    if (d->conf->delivery == DELIVERY_AT_LEAST_ONCE && d->conf->redis.sentinel.master != NULL)
        held_enable(); /* only a failover needs to know (held.h) */
    capacity_init(&d->cap, d->conf->concurrency);
    capacity_set_bytes_limit(&d->cap, (size_t)d->conf->task_memory_mb << 20);
    d->reporter = reporter_new(d->conf, &d->id, &d->cap);
    d->loop = d->reporter ? loop_new(d->conf, &d->cap, reporter_inbox(d->reporter),
                                     reporter_outlog(d->reporter))
                          : NULL;
    d->consumer = d->loop ? consumer_new(d->conf, &d->cap, loop_inbox(d->loop)) : NULL;
    if (d->consumer == NULL) {
        log_err("cannot set up the worker threads: out of memory or no event backend");
        return -1;
    }
    reporter_watch(d->reporter, d->loop);
    if (reporter_start(d->reporter) < 0) {
        log_err("cannot start the reporter thread: %s", strerror(errno));
        return -1;
    }
    if (loop_start(d->loop) < 0) {
        log_err("cannot start the loop thread: %s", strerror(errno));
        taskq_close(reporter_inbox(d->reporter));
        reporter_join(d->reporter);
        return -1;
    }
    if (d->monitor != NULL && monitor_start(d->monitor, d) < 0)
        return unwind(d, "monitor");
    if (sentinel_watch_start(&d->conf->redis, redis_probe_master) < 0)
        return unwind(d, "sentinel");
    if (cancel_watch_start(d->conf, loop_poke, d->loop) < 0)
        return unwind(d, "cancel");
    if (consumer_start(d->consumer) < 0)
        return unwind(d, "consumer");
    return 0;
}

static void log_starting(const struct config *conf)
{
    char addr[300], queues[512] = "";
    size_t off = 0;

    for (int i = 0; i < conf->nqueues && off < sizeof(queues); i++)
        off += (size_t)snprintf(queues + off, sizeof(queues) - off, "%s%s(%s)", i ? " " : "",
                                conf->queues[i].name, conf->queues[i].handler->name);
    log_notice("qworker %s starting: worker %s, queues %s, concurrency %d, redis %s, delivery %s",
               QWORKER_VERSION, conf->worker_id, queues, conf->concurrency,
               redis_addr(&conf->redis, addr, sizeof(addr)),
               conf->delivery == DELIVERY_AT_MOST_ONCE ? "at-most-once" : "at-least-once");
}

/* Takes the worker id on a connection of its own, before any thread starts: a second daemon
 * with the same id must not fetch anything. */
static enum claim_result claim_id(struct daemon *d, const sigset_t *set)
{
    struct rconn rc;
    enum claim_result r;

    rconn_init(&rc, &d->conf->redis, "start-up");
    r = identity_claim(&d->id, &rc, set);
    rconn_close(&rc);
    return r;
}

/* Everything between a valid config and exit; returns the exit status. */
static int run(struct daemon *d, const sigset_t *set)
{
    int status = 0;

    if (evthread_use_pthreads() < 0) {
        log_err("libevent has no pthreads support");
        return 1;
    }
    /* Logged before the threads exist, which also opens the journal socket on this thread:
     * libsystemd opens it lazily, in a way ThreadSanitizer cannot see is safe. */
    log_starting(d->conf);
    if (identity_init(&d->id, d->conf) < 0) {
        log_err("cannot set up the worker identity: out of memory or no random source");
        return 1;
    }
    if (d->conf->metrics_addr != NULL) {
        char err[256];
        /* Before the id is claimed: a port in use stops the start with nothing to undo. */
        d->monitor = monitor_new(d->conf, err, sizeof(err));
        if (d->monitor == NULL) {
            log_err("metrics: %s", err);
            return 1;
        }
    }
    switch (claim_id(d, set)) {
    case CLAIM_OK:
        break;
    case CLAIM_IN_USE:
        return EXIT_ID_IN_USE;
    case CLAIM_UNSUPPORTED:
        return CONFIG_EXIT_INVALID; /* the configuration names a server qworker cannot use */
    case CLAIM_STOPPED:
        log_notice("stopped before redis answered");
        return 0;
    }
    if (start_threads(d) < 0) {
        status = 1;
    } else {
        control_serve(d, set);
        control_stop(d, set);
        log_notice("stopped");
    }
    monitor_free(d->monitor); /* its thread reads the loop's counts: it stops first */
    d->monitor = NULL;
    sentinel_watch_stop();
    cancel_watch_stop(); /* it pokes the loop: it stops first */
    consumer_free(d->consumer);
    loop_free(d->loop);
    reporter_free(d->reporter);
    capacity_destroy(&d->cap);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    bool test = false;
    struct daemon d = {0};
    struct config *conf;
    char err[1024];
    sigset_t set;
    int c, status;

    jsonmem_init(); /* before any thread, and before the configuration uses jansson */
    while ((c = getopt_long(argc, argv, "c:th", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = true;
            break;
        case 'V':
            printf("qworker %s\n", QWORKER_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "qworker: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    conf = config_load(path, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err);
        return CONFIG_EXIT_INVALID;
    }
    if (test) {
        warn_option_injection(conf, stderr);
        warn_readable_password(conf, stderr);
        fprintf(stderr, "%s: configuration is valid\n", path);
        config_free(conf);
        return 0;
    }
    log_init(conf->log_target, conf->log_level);
    d.conf = conf;
    warn_option_injection(conf, NULL);
    warn_readable_password(conf, NULL);
    if (isolate_init(conf) < 0) {
        config_free(conf);
        return CONFIG_EXIT_INVALID;
    }
    /* Every thread waits at most a quarter of the watchdog interval between beats. */
    if (notify_watchdog_usec() > 0)
        health_set_period_ms((int)(notify_watchdog_usec() / 4000));

    /* Block the signals before any thread exists, so that every thread inherits the mask and
     * only sigwaitinfo() below sees them. A peer closing a socket must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2); /* the consumer's "ready": see control.c */
    sigaddset(&set, SIGTSTP);
    sigaddset(&set, SIGCONT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    {
        /* Children are watched by pidfds: a SIGCHLD per exit would only wake the main thread
         * (thousands a second under load). Blocked, it stays pending and harmless; spawned
         * programs start with an empty mask. */
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        pthread_sigmask(SIG_BLOCK, &chld, NULL);
    }
    status = run(&d, &set);
    monitor_free(d.monitor); /* left by a start that ended before the threads ran */
    identity_free(&d.id);
    for (int i = 0; i < d.nretired; i++)
        config_free(d.retired[i]);
    free(d.retired);
    config_free((struct config *)d.conf);
    metrics_free();
    return status;
}
