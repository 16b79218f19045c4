/* The configuration, parsed once from a libconfig file into an immutable struct. Every setting has
 * its default here, in config.c's tables, and is documented in worker.conf.example. */
#ifndef QWORKER_CONFIG_H
#define QWORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "cron.h"
#include "log.h"

#define CONFIG_EXIT_INVALID 78 /* EX_CONFIG, so that systemd's RestartPreventExitStatus=78 works */
/* worker.prefix, at most: key names are built in fixed buffers. */
#define PREFIX_MAX 128

enum delivery { DELIVERY_AT_MOST_ONCE, DELIVERY_AT_LEAST_ONCE };
enum handler_type { HANDLER_SLEEP, HANDLER_EXEC };

/* redis.sentinel: the master's address comes from these sentinels (sentinel.c). */
#define SENTINELS_MAX 16
struct sentinel_conf {
    char *master; /* the name the sentinels monitor it under; NULL: no Sentinel */
    char *hosts[SENTINELS_MAX];
    int ports[SENTINELS_MAX];
    int n;
    char *username; /* the sentinels' own credentials, if they want any */
    char *password;
};

struct redis_conf {
    char *host;
    int port;
    char *unix_socket; /* used instead of host/port when set */
    int db;
    char *username;
    char *password;      /* inline, or the content of password_file; wiped when freed */
    char *password_path; /* the file holding it: the config file (or @include) for an inline
                          * one, else the password_file, resolved; NULL without a password */
    bool password_inline;
    int connect_timeout_ms;
    int command_timeout_ms;
    struct sentinel_conf sentinel;
};

struct handler_conf {
    char *name;
    enum handler_type type;
    double max_seconds; /* sleep */

    /* exec */
    char **argv; /* the command, NULL-terminated; the task's arguments follow it */
    int argc;
    bool args_stdin; /* the task's arguments go to stdin as JSON instead of argv */
    char **env;      /* "KEY=value", NULL-terminated: the child's whole environment */
    char *cwd;
    double timeout;
    double timeout_max; /* the most an envelope may ask for (payloads never raise a limit) */
    double kill_grace;
    int max_attempts;
    int max_attempts_max;
    double backoff;
    double backoff_max;
    int concurrency; /* 0: only the worker's own limit */
    /* Tasks a second the whole fleet may start (0: no limit), and how many at once after a
     * quiet spell: a token bucket in Redis (src/lua/rate_fn.lua). */
    double rate_limit;
    int rate_burst;
    int max_output;  /* bytes of the child's output logged per task */
    int max_line;    /* bytes of one output line logged */
    bool network;    /* may open IPv4/IPv6 sockets (qworker-run forbids them otherwise) */
    /* worker.task_user's, copied here for the spawn: > 0 when set (never root) */
    long task_uid, task_gid;
};

struct queue_conf {
    char *name;
    const struct handler_conf *handler;
    int weight; /* queue_order = "weighted": its share of fetches */
};

enum queue_order { QUEUE_ORDER_STRICT, QUEUE_ORDER_WEIGHTED };

/* schedules = ( { name; cron | every; queue; payload; } ): pushed once per tick, fleet-wide
 * (periodic.c). */
struct schedule_conf {
    char *name;
    char *cron_text; /* NULL: every */
    struct cron cron;
    int every;       /* seconds; 0 with cron */
    char *queue;
    char *payload;
    size_t payload_len;
};

struct config {
    char *path;
    struct redis_conf redis;

    char *worker_id;
    int concurrency;
    int fetch_batch;
    enum delivery delivery;
    enum queue_order queue_order;
    double shutdown_timeout;
    int heartbeat_ttl_ms;
    int max_payload;
    int max_recoveries; /* put back from dead workers this often: poison; 0: never */
    double cancel_remember; /* seconds a cancel waits for its task (cancel.h) */
    int task_memory_mb; /* what the payloads of held tasks may take before fetching waits */
    char *task_user;    /* exec handlers run as this user (qworker-run); NULL: as qworker */
    long task_uid, task_gid; /* its ids, resolved at load; -1 without one, never 0 */
    char *prefix;

    struct queue_conf *queues; /* in priority order */
    int nqueues;
    struct handler_conf *handlers;
    int nhandlers;
    struct schedule_conf *schedules;
    int nschedules;

    int log_level;
    enum log_target log_target;

    char *metrics_addr; /* where /metrics, /healthz and / are served; NULL: nowhere */
    int metrics_port;
};

/* Loads and validates path. On error returns NULL and writes "file:line: message" into err. */
struct config *config_load(const char *path, char *err, size_t errlen);
void config_free(struct config *conf);

/* The first setting that differs between two configs and cannot change on a reload (it would
 * take reconnecting or another identity), or NULL. */
const char *config_fixed_change(const struct config *old, const struct config *next);

const struct queue_conf *config_queue(const struct config *conf, const char *name, size_t len);

#endif
