/* qworkerctl [-c FILE] [--json] COMMAND [ARG]...: see qworkerctl(8). */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

#define DEFAULT_CONFIG "/etc/qworker/worker.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: qworkerctl [-c FILE] [--json] COMMAND [ARG]...\n"
            "  status                          queues, workers, counters, scheduled and dead\n"
            "  workers                         the workers alive, from their heartbeats\n"
            "  dead list [N]                   the N newest dead letters (default 20)\n"
            "  dead show ID                    every dead letter of task ID, whole\n"
            "  dead retry ID|--all [--queue Q] back into their queue (or Q), as first attempts\n"
            "  dead purge ID|--all             dropped, with their kept payloads\n"
            "  push QUEUE [--handler H] [--delay S] [--id ID] [--timeout S]\n"
            "       [--max-attempts N] -- ARG...  an envelope with these arguments\n"
            "  pause QUEUE / resume QUEUE      no worker takes from it / they do again\n"
            "  cancel ID...                    stop it if it runs, never start it; removed from\n"
            "                                  the schedule now (remembered for cancel_remember)\n"
            "  -c, --config FILE  the worker's configuration, for Redis and the key prefix\n"
            "                     (default " DEFAULT_CONFIG ")\n"
            "  --json             JSON on one line instead of tables\n"
            "exit: 0 done, 1 failed, 64 usage, 69 redis unreachable\n");
}

redisReply *ctl_command(struct ctl *c, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    if (c->rc.c == NULL)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(c->rc.c, fmt, ap);
    va_end(ap);
    if (r == NULL)
        rconn_lost(&c->rc, c->rc.c->errstr);
    return r;
}

int ctl_redis_failed(struct ctl *c, const char *what, const redisReply *reply)
{
    char addr[300];

    if (reply == NULL) {
        fprintf(stderr, "qworkerctl: %s: redis %s did not answer\n", what,
                redis_addr(&c->conf->redis, addr, sizeof(addr)));
        return CTL_UNAVAILABLE;
    }
    fprintf(stderr, "qworkerctl: %s: redis said: %s\n", what,
            reply->type == REDIS_REPLY_ERROR ? reply->str : "an unexpected reply");
    return CTL_FAILED;
}

/* The packaged unit hands the password file in as a credential; run by hand, the same file is
 * beside the configuration. */
static void default_credentials(const char *config)
{
    char *copy;

    if (getenv("CREDENTIALS_DIRECTORY") != NULL || (copy = strdup(config)) == NULL)
        return;
    setenv("CREDENTIALS_DIRECTORY", dirname(copy), 0);
    free(copy);
}

static int dispatch(struct ctl *c, const char *cmd)
{
    if (strcmp(cmd, "status") == 0)
        return ctl_status(c);
    if (strcmp(cmd, "workers") == 0)
        return ctl_workers(c);
    if (strcmp(cmd, "dead") == 0)
        return ctl_dead(c);
    if (strcmp(cmd, "push") == 0)
        return ctl_push(c);
    if (strcmp(cmd, "cancel") == 0)
        return ctl_cancel(c);
    if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0)
        return ctl_pause(c, cmd[0] == 'p');
    fprintf(stderr, "qworkerctl: unknown command '%s'\n", cmd);
    usage(stderr);
    return CTL_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = DEFAULT_CONFIG;
    struct ctl c = {0};
    struct config *conf;
    char err[1024];
    int opt, status;

    /* Options stop at the command: its own (push --id, dead retry --all) are its own. */
    while ((opt = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'j':
            c.json = true;
            break;
        case 'h':
            usage(stdout);
            return CTL_OK;
        default:
            usage(stderr);
            return CTL_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CTL_USAGE;
    }
    log_init(LOG_TARGET_STDERR, LOG_WARNING);
    default_credentials(path);
    conf = config_load(path, err, sizeof(err));
    if (conf == NULL) {
        fprintf(stderr, "qworkerctl: %s\n", err);
        return CTL_FAILED;
    }
    c.conf = conf;
    c.argc = argc - optind - 1;
    c.argv = argv + optind + 1;
    rconn_init(&c.rc, &conf->redis, "qworkerctl");
    c.rc.observer = true; /* its own failures are said by the command, once */
    if (rconn_try(&c.rc) < 0) {
        char addr[300];
        fprintf(stderr, "qworkerctl: redis %s unreachable\n",
                redis_addr(&conf->redis, addr, sizeof(addr)));
        config_free(conf);
        return CTL_UNAVAILABLE;
    }
    status = dispatch(&c, argv[optind]);
    rconn_close(&c.rc);
    config_free(conf);
    return status;
}
