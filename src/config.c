/* libconfig does the syntax; this file does the meaning: types, ranges, references between
 * sections, defaults, and an error with its line for any setting it does not know, so that a typo
 * is never silently ignored. */
#include "config.h"

#include "config_include.h"
#include "config_secret.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libconfig.h>

struct parse {
    const char *path;
    const char *dir; /* where @include looks (the file's own directory); NULL: as written */
    char *err;
    size_t errlen;
};

static const char *const top_names[] = {"redis",    "worker", "queues", "handlers",
                                        "log",      "metrics", "schedules", NULL};
static const char *const schedule_names[] = {"name",    "cron",     "every", "queue",
                                             "payload", "timezone", NULL};
static const char *const redis_names[] = {
    "host",     "port",          "unix_socket",     "db",              "username",
    "password", "password_file", "connect_timeout", "command_timeout", "sentinel", NULL};
static const char *const sentinel_names[] = {"master", "addresses", "username", "password", NULL};
static const char *const worker_names[] = {"id",       "concurrency",      "fetch_batch",
                                           "delivery", "prefix",           "shutdown_timeout",
                                           "heartbeat_ttl", "max_payload",     "max_recoveries",
                                           "task_memory_mb", "task_user", "queue_order",
                                           "cancel_remember",
                                           NULL};
static const char *const queue_names[] = {"name", "handler", "weight", NULL};
static const char *const sleep_names[] = {"name", "type", "max_seconds", "rate_limit",
                                          "rate_burst", NULL};
static const char *const exec_names[] = {
    "name",    "type",        "command",     "args",        "env",        "cwd",
    "timeout", "kill_grace",  "max_attempts", "backoff",    "backoff_max", "concurrency",
    "max_output", "max_line", "timeout_max", "max_attempts_max", "network", "rate_limit",
    "rate_burst", NULL};
static const char *const log_names[] = {"level", "target", NULL};
static const char *const metrics_names[] = {"listen", NULL};

static void failv(struct parse *p, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the error and is -1. A macro so that clang's analyser sees the -1: it does not follow
 * calls to variadic functions, and without it reports a dozen false paths. */
#define fail(p, s, ...) (failv((p), (s), __VA_ARGS__), -1)

static void failv(struct parse *p, const config_setting_t *s, const char *fmt, ...)
{
    char msg[512];
    const char *file = p->path;
    int line = 0;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s != NULL) {
        line = config_setting_source_line(s);
        if (config_setting_source_file(s) != NULL)
            file = config_setting_source_file(s);
    }
    snprintf(p->err, p->errlen, "%s:%d: %s", file, line, msg);
}

static bool in_list(const char *name, const char *const names[])
{
    for (int i = 0; names[i] != NULL; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

/* Where: "the redis section", "queue 2", ...: named in every error about a member of a group. */
static int check_known(struct parse *p, const config_setting_t *group, const char *where,
                       const char *const names[])
{
    for (int i = 0; i < config_setting_length(group); i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        if (!in_list(config_setting_name(s), names))
            return fail(p, s, "unknown setting '%s' in %s", config_setting_name(s), where);
    }
    return 0;
}

static int get_group(struct parse *p, const config_setting_t *parent, const char *name,
                     const config_setting_t **out)
{
    const config_setting_t *s = config_setting_get_member(parent, name);

    *out = NULL;
    if (s == NULL)
        return 0;
    if (!config_setting_is_group(s))
        return fail(p, s, "'%s' must be a group: %s = { ... };", name, name);
    *out = s;
    return 0;
}

static int get_string(struct parse *p, const config_setting_t *group, const char *name,
                      const char *def, char **out)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    const char *v = def;

    if (s != NULL) {
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
            return fail(p, s, "'%s' must be a string in double quotes", name);
        v = config_setting_get_string(s);
        if (v == NULL) /* never for a setting read from a file; the analyser cannot know */
            v = def;
    }
    *out = v ? strdup(v) : NULL;
    if (v != NULL && *out == NULL)
        return fail(p, s, "out of memory");
    return 0;
}

static int get_bool(struct parse *p, const config_setting_t *group, const char *name, bool def,
                    bool *out)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;

    *out = def;
    if (s == NULL)
        return 0;
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        return fail(p, s, "'%s' must be true or false", name);
    *out = config_setting_get_bool(s) != 0;
    return 0;
}

/* libconfig 1.5 reads an integer literal with atoi() unless it ends in L: 4294967297 silently
 * becomes 1. So read the literal again from the source line and take that value instead. */
static void source_literal(const struct parse *p, const config_setting_t *s, const char *name,
                          long long *v)
{
    const char *file = config_setting_source_file(s) ? config_setting_source_file(s) : p->path;
    unsigned line = config_setting_source_line(s);
    char *text = NULL, *at;
    size_t cap = 0, len = strlen(name);
    long long parsed = *v;
    FILE *f;

    if (line == 0 || (f = fopen(file, "r")) == NULL)
        return;
    for (unsigned i = 0; i < line; i++)
        if (getline(&text, &cap, f) < 0) {
            free(text);
            fclose(f);
            return;
        }
    fclose(f);
    for (at = strstr(text, name); at != NULL; at = strstr(at + 1, name)) {
        char *q = at + len, *end;
        long long lit;
        if (at > text && (isalnum((unsigned char)at[-1]) || at[-1] == '_'))
            continue;
        q += strspn(q, " \t");
        if (*q != '=' && *q != ':')
            continue;
        q++;
        q += strspn(q, " \t");
        errno = 0;
        lit = strtoll(q, &end, 0);
        /* The same setting may come twice on one line (two queues' weights): the literal is
         * the one libconfig's cut value came from. */
        if (end == q || (int)lit != (int)parsed)
            continue;
        *v = lit; /* LLONG_MAX or LLONG_MIN when even 64 bits overflow: out of any range */
        break;
    }
    free(text);
}

static int get_int(struct parse *p, const config_setting_t *group, const char *name, long long min,
                   long long max, long long def, int *out)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    long long v = def;

    if (s != NULL) {
        /* Read as int64: libconfig 1.5 returns 0 for a 64-bit value read as int. */
        if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
            return fail(p, s, "'%s' must be a whole number", name);
        v = config_setting_get_int64(s);
        source_literal(p, s, name, &v);
        if (v < min || v > max)
            return fail(p, s, "'%s' = %lld is out of range (%lld to %lld)", name, v, min, max);
    }
    *out = (int)v;
    return 0;
}

static int get_seconds(struct parse *p, const config_setting_t *group, const char *name,
                       double min, double max, double def, double *out)
{
    const config_setting_t *s = group ? config_setting_get_member(group, name) : NULL;
    double v = def;

    if (s != NULL) {
        if (!config_setting_is_number(s))
            return fail(p, s, "'%s' must be a number of seconds", name);
        v = config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                       : (double)config_setting_get_int64(s);
        if (!(v >= min && v <= max))
            return fail(p, s, "'%s' = %g is out of range (%g to %g seconds)", name, v, min, max);
    }
    *out = v;
    return 0;
}

/* The file a setting was read from: the configuration, or an @include as libconfig 1.5 names
 * it (as written: joined here to the include directory, as libconfig itself joins it). */
static char *source_path(const struct parse *p, const config_setting_t *s)
{
    const char *file = config_setting_source_file(s);
    char *path;

    if (file == NULL || strcmp(file, p->path) == 0 || p->dir == NULL)
        return strdup(file != NULL ? file : p->path);
    return asprintf(&path, "%s/%s", p->dir, file) < 0 ? NULL : path;
}

/* password_file = "...": the password is read from it, so that the configuration itself may
 * be readable by more than the daemon. A relative name is a systemd credential (LoadCredential=),
 * which is how a DynamicUser= service gets a file only root may read. */
static int read_password_file(struct parse *p, const config_setting_t *s, const char *name,
                              struct redis_conf *r)
{
    char why[512];
    int credential = 0;

    if (name == NULL || name[0] == '\0') /* (NULL: never for a setting read from a file) */
        return fail(p, s, "'password_file' must not be empty");
    r->password_path = secret_path(name, &credential, why, sizeof(why));
    if (r->password_path == NULL)
        return fail(p, s, "'password_file' \"%s\" %s", name, why);
    if (secret_read(r->password_path, &r->password, why, sizeof(why)) < 0)
        return fail(p, s, "'password_file' %s %s%s", r->password_path, why,
                    credential && strcmp(why, "is empty") == 0
                        ? " (is the file its LoadCredential= reads missing or empty?)"
                        : "");
    return 0;
}

/* The password, inline or from password_file; and which file holds it, for the warning when
 * others may read that file (see main.c). */
static int parse_password(struct parse *p, const config_setting_t *g, struct redis_conf *r)
{
    const config_setting_t *inline_s = g ? config_setting_get_member(g, "password") : NULL;
    const config_setting_t *file_s = g ? config_setting_get_member(g, "password_file") : NULL;
    char *name = NULL;
    int rc;

    if (inline_s != NULL && file_s != NULL)
        return fail(p, file_s, "set 'password' or 'password_file', not both");
    if (inline_s != NULL) {
        r->password_inline = true;
        if (get_string(p, g, "password", NULL, &r->password) < 0)
            return -1;
        r->password_path = source_path(p, inline_s);
        return r->password_path != NULL ? 0 : fail(p, inline_s, "out of memory");
    }
    if (file_s == NULL)
        return 0;
    if (get_string(p, g, "password_file", NULL, &name) < 0)
        return -1;
    rc = read_password_file(p, file_s, name, r);
    free(name);
    return rc;
}

/* "10.0.0.5:26379" or "[fe80::1]:26379" into host and port; -1 if it is not that shape. */
static int split_host_port(const char *text, char **host, int *port)
{
    const char *colon = strrchr(text, ':'), *start = text, *stop = colon;
    char *end;
    long n;

    if (colon == NULL || colon == text || colon[1] == '\0')
        return -1;
    n = strtol(colon + 1, &end, 10);
    if (*end != '\0' || n < 1 || n > 65535)
        return -1;
    if (text[0] == '[') {
        if (colon[-1] != ']' || colon - text < 3)
            return -1;
        start = text + 1;
        stop = colon - 1;
    } else if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
        return -1; /* an IPv6 address needs its brackets */
    }
    *host = strndup(start, (size_t)(stop - start));
    *port = (int)n;
    return *host ? 0 : -1;
}

/* redis.sentinel = { master = "mymaster"; addresses = ("10.0.0.5:26379", ...); }. */
static int parse_sentinel(struct parse *p, const config_setting_t *g, struct sentinel_conf *s)
{
    const config_setting_t *list;
    int n;

    if (check_known(p, g, "redis.sentinel", sentinel_names) < 0 ||
        get_string(p, g, "master", NULL, &s->master) < 0 ||
        get_string(p, g, "username", NULL, &s->username) < 0 ||
        get_string(p, g, "password", NULL, &s->password) < 0)
        return -1;
    if (s->master == NULL || s->master[0] == '\0' || strpbrk(s->master, " \t\r\n") != NULL)
        return fail(p, g, "redis.sentinel needs 'master': the name the sentinels monitor the "
                          "master under (sentinel monitor NAME ...), without spaces");
    if (s->username != NULL && s->password == NULL)
        return fail(p, config_setting_get_member(g, "username"),
                    "redis.sentinel 'username' needs a 'password'");
    list = config_setting_get_member(g, "addresses");
    n = list ? config_setting_length(list) : 0;
    if (list == NULL || !(config_setting_is_array(list) || config_setting_is_list(list)) || n < 1)
        return fail(p, list ? list : g, "redis.sentinel needs 'addresses': a list of "
                                        "\"HOST:PORT\" strings, like (\"10.0.0.5:26379\", "
                                        "\"10.0.0.6:26379\", \"10.0.0.7:26379\")");
    if (n > SENTINELS_MAX)
        return fail(p, list, "redis.sentinel 'addresses': at most %d sentinels", SENTINELS_MAX);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
        const char *text = config_setting_get_string(e);
        if (text == NULL || split_host_port(text, &s->hosts[i], &s->ports[i]) < 0)
            return fail(p, list, "redis.sentinel 'addresses': element %d is not \"HOST:PORT\" "
                                 "(\"[ADDRESS]:PORT\" for IPv6)", i + 1);
        s->n = i + 1;
    }
    return 0;
}

static int parse_redis(struct parse *p, const config_setting_t *root, struct redis_conf *r)
{
    const config_setting_t *g, *sg;
    double t;

    if (get_group(p, root, "redis", &g) < 0)
        return -1;
    if (g != NULL && check_known(p, g, "the redis section", redis_names) < 0)
        return -1;
    if (get_string(p, g, "host", "127.0.0.1", &r->host) < 0 ||
        get_int(p, g, "port", 1, 65535, 6379, &r->port) < 0 ||
        get_string(p, g, "unix_socket", NULL, &r->unix_socket) < 0 ||
        get_int(p, g, "db", 0, INT_MAX, 0, &r->db) < 0 ||
        get_string(p, g, "username", NULL, &r->username) < 0 ||
        parse_password(p, g, r) < 0)
        return -1;
    if (r->username != NULL && r->password == NULL)
        return fail(p, config_setting_get_member(g, "username"),
                    "'username' needs a 'password' or a 'password_file' (Redis ACL: AUTH "
                    "username password)");
    if (get_seconds(p, g, "connect_timeout", 0.01, 3600, 2, &t) < 0)
        return -1;
    r->connect_timeout_ms = (int)(t * 1000);
    if (get_seconds(p, g, "command_timeout", 0.01, 3600, 5, &t) < 0)
        return -1;
    r->command_timeout_ms = (int)(t * 1000);
    if (g == NULL || get_group(p, g, "sentinel", &sg) < 0)
        return g == NULL ? 0 : -1;
    if (sg == NULL)
        return 0;
    for (const char *const *k = (const char *const[]){"host", "port", "unix_socket", NULL}; *k;
         k++)
        if (config_setting_get_member(g, *k) != NULL)
            return fail(p, config_setting_get_member(g, *k),
                        "'%s' and 'sentinel' exclude each other: with Sentinel the master's "
                        "address comes from the sentinels",
                        *k);
    return parse_sentinel(p, sg, &r->sentinel);
}

static char *default_worker_id(void)
{
    char host[256] = "localhost";
    char *id;

    const char *instance = getenv("QWORKER_INSTANCE");

    gethostname(host, sizeof(host) - 1);
    if (instance == NULL || instance[0] == '\0')
        instance = "1";
    if (asprintf(&id, "%s:%s", host, instance) < 0)
        return NULL;
    return id;
}

/* Takes ownership of name. */
static int parse_delivery(struct parse *p, const config_setting_t *s, char *name,
                          enum delivery *out)
{
    int rc = 0;

    if (strcmp(name, "at-most-once") == 0)
        *out = DELIVERY_AT_MOST_ONCE;
    else if (strcmp(name, "at-least-once") == 0)
        *out = DELIVERY_AT_LEAST_ONCE;
    else
        rc = fail(p, s, "'delivery' must be \"at-most-once\" or \"at-least-once\", not \"%s\"",
                  name);
    free(name);
    return rc;
}

/* worker.queue_order: "strict" (a higher queue is always served first) or "weighted" (each
 * queue's weight is its share of the fetches, so that none starves). */
static int parse_queue_order(struct parse *p, const config_setting_t *g, struct config *c)
{
    char *name;
    int rc = 0;

    if (get_string(p, g, "queue_order", "strict", &name) < 0)
        return -1;
    if (strcmp(name, "strict") == 0)
        c->queue_order = QUEUE_ORDER_STRICT;
    else if (strcmp(name, "weighted") == 0)
        c->queue_order = QUEUE_ORDER_WEIGHTED;
    else
        rc = fail(p, config_setting_get_member(g, "queue_order"),
                  "'queue_order' must be \"strict\" or \"weighted\", not \"%s\"", name);
    free(name);
    return rc;
}

/* worker.task_user, looked up once: the ids qworker-run takes for every exec handler. Never
 * root: a handler kept apart must be kept from everything qworker could reach. */
static int resolve_task_user(struct parse *p, const config_setting_t *s, struct config *c)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    int rc;

    c->task_uid = c->task_gid = -1;
    if (c->task_user == NULL)
        return 0;
    if (c->task_user[0] == '\0')
        return fail(p, s, "'task_user' must not be empty (leave it out to run handlers as qworker)");
    rc = getpwnam_r(c->task_user, &pw, buf, sizeof(buf), &found);
    if (found == NULL)
        return fail(p, s, "task_user \"%s\": %s", c->task_user,
                    rc != 0 ? strerror(rc) : "no such user");
    if (pw.pw_uid == 0 || pw.pw_gid == 0)
        return fail(p, s, "task_user \"%s\" is root or in its group: handlers must not run "
                          "with more than qworker has", c->task_user);
    c->task_uid = (long)pw.pw_uid;
    c->task_gid = (long)pw.pw_gid;
    return 0;
}

static int parse_worker(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *g, *s;
    char *delivery;
    double ttl;

    if (get_group(p, root, "worker", &g) < 0)
        return -1;
    if (g != NULL && check_known(p, g, "the worker section", worker_names) < 0)
        return -1;
    if (get_string(p, g, "id", NULL, &c->worker_id) < 0 ||
        get_int(p, g, "concurrency", 1, 10000000, 1000, &c->concurrency) < 0 ||
        get_int(p, g, "fetch_batch", 1, 10000, 100, &c->fetch_batch) < 0 ||
        get_string(p, g, "prefix", "qworker", &c->prefix) < 0 ||
        get_seconds(p, g, "shutdown_timeout", 0, 86400, 30, &c->shutdown_timeout) < 0 ||
        get_seconds(p, g, "cancel_remember", 1, 31536000, 86400, &c->cancel_remember) < 0 ||
        get_seconds(p, g, "heartbeat_ttl", 1, 3600, 15, &ttl) < 0 ||
        get_int(p, g, "max_payload", 16, 512 << 20, 1 << 20, &c->max_payload) < 0 ||
        get_int(p, g, "max_recoveries", 0, 1000, 3, &c->max_recoveries) < 0 ||
        get_int(p, g, "task_memory_mb", 1, 1 << 20, 256, &c->task_memory_mb) < 0 ||
        get_string(p, g, "task_user", NULL, &c->task_user) < 0 ||
        get_string(p, g, "delivery", "at-least-once", &delivery) < 0)
        return -1;
    if (resolve_task_user(p, g ? config_setting_get_member(g, "task_user") : NULL, c) < 0) {
        free(delivery);
        return -1;
    }
    c->heartbeat_ttl_ms = (int)(ttl * 1000);
    s = g ? config_setting_get_member(g, "delivery") : NULL;
    if (parse_delivery(p, s, delivery, &c->delivery) < 0)
        return -1;
    if (parse_queue_order(p, g, c) < 0)
        return -1;
    if (c->worker_id == NULL && (c->worker_id = default_worker_id()) == NULL)
        return fail(p, g, "out of memory");
    if (c->worker_id[0] == '\0')
        return fail(p, config_setting_get_member(g, "id"), "'id' must not be empty");
    if (c->prefix[0] == '\0')
        return fail(p, config_setting_get_member(g, "prefix"), "'prefix' must not be empty");
    /* Key names are built in fixed buffers (qworkerctl): a longer prefix would be cut short. */
    if (strlen(c->prefix) > PREFIX_MAX)
        return fail(p, config_setting_get_member(g, "prefix"),
                    "'prefix' is longer than %d bytes", PREFIX_MAX);
    return 0;
}

/* command = ["/abs/program", "fixed", "args"]: a whitelist entry, so the program must exist. */
static int parse_command(struct parse *p, const config_setting_t *h, struct handler_conf *out)
{
    const config_setting_t *cmd = config_setting_get_member(h, "command");
    int n;

    if (cmd == NULL)
        return fail(p, h, "exec handler '%s' needs a 'command' = [\"/path/to/program\", ...]",
                    out->name);
    n = config_setting_length(cmd);
    if (!(config_setting_is_array(cmd) || config_setting_is_list(cmd)) || n <= 0)
        return fail(p, cmd, "'command' must be a non-empty list of strings");
    out->argv = calloc((size_t)n + 1, sizeof(*out->argv));
    if (out->argv == NULL)
        return fail(p, cmd, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(cmd, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING)
            return fail(p, cmd, "'command' must be a list of strings");
        out->argv[i] = strdup(config_setting_get_string(e));
        out->argc = i + 1;
        if (out->argv[i] == NULL)
            return fail(p, cmd, "out of memory");
    }
    if (out->argv[0][0] != '/')
        return fail(p, cmd, "'command' must start with an absolute path, not \"%s\" (no PATH "
                            "search, no shell)", out->argv[0]);
    if (access(out->argv[0], X_OK) != 0)
        return fail(p, cmd, "'command': %s is not an executable file: %s", out->argv[0],
                    strerror(errno));
    return 0;
}

/* env = { LANG = "C.UTF-8"; }: the child's whole environment, with the QWORKER_* variables
 * qworker adds. PATH is /usr/local/bin:/usr/bin:/bin unless given. */
static int parse_env(struct parse *p, const config_setting_t *h, struct handler_conf *out)
{
    const config_setting_t *env = config_setting_get_member(h, "env");
    int n = env ? config_setting_length(env) : 0, k = 0;
    bool has_path = false;

    if (env != NULL && !config_setting_is_group(env))
        return fail(p, env, "'env' must be a group: env = { NAME = \"value\"; };");
    out->env = calloc((size_t)n + 2, sizeof(*out->env));
    if (out->env == NULL)
        return fail(p, env, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(env, (unsigned)i);
        if (config_setting_type(e) != CONFIG_TYPE_STRING)
            return fail(p, e, "environment variable '%s' must be a string", config_setting_name(e));
        if (strncmp(config_setting_name(e), "QWORKER_", 8) == 0)
            return fail(p, e, "'%s': QWORKER_* variables are set by qworker",
                        config_setting_name(e));
        has_path = has_path || strcmp(config_setting_name(e), "PATH") == 0;
        if (asprintf(&out->env[k++], "%s=%s", config_setting_name(e),
                     config_setting_get_string(e)) < 0)
            return fail(p, e, "out of memory");
    }
    if (!has_path && (out->env[k++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin")) == NULL)
        return fail(p, env, "out of memory");
    return 0;
}

static int parse_exec(struct parse *p, const config_setting_t *h, struct handler_conf *out)
{
    char *args;
    int max_bytes = 64 << 20;

    if (check_known(p, h, "an exec handler", exec_names) < 0 || parse_command(p, h, out) < 0 ||
        parse_env(p, h, out) < 0 || get_string(p, h, "cwd", "/", &out->cwd) < 0 ||
        get_seconds(p, h, "timeout", 0.001, 31536000, 60, &out->timeout) < 0 ||
        get_seconds(p, h, "kill_grace", 0, 3600, 5, &out->kill_grace) < 0 ||
        get_int(p, h, "max_attempts", 1, 1000, 3, &out->max_attempts) < 0 ||
        get_seconds(p, h, "backoff", 0, 86400, 1, &out->backoff) < 0 ||
        get_seconds(p, h, "backoff_max", 0, 31536000, 300, &out->backoff_max) < 0 ||
        get_int(p, h, "concurrency", 0, 10000000, 0, &out->concurrency) < 0 ||
        get_int(p, h, "max_output", 0, max_bytes, 64 << 10, &out->max_output) < 0 ||
        get_int(p, h, "max_line", 16, 1 << 20, 1024, &out->max_line) < 0 ||
        get_bool(p, h, "network", false, &out->network) < 0 ||
        get_string(p, h, "args", "argv", &args) < 0)
        return -1;
    /* Whoever can push may lower a limit, never raise it past what the operator allows. */
    if (get_seconds(p, h, "timeout_max", out->timeout, 31536000, out->timeout,
                    &out->timeout_max) < 0 ||
        get_int(p, h, "max_attempts_max", out->max_attempts, 1000, out->max_attempts,
                &out->max_attempts_max) < 0) {
        free(args);
        return -1;
    }
    if (strcmp(args, "argv") == 0 || strcmp(args, "stdin") == 0) {
        out->args_stdin = args[0] == 's';
        free(args);
    } else {
        failv(p, config_setting_get_member(h, "args"),
             "'args' must be \"argv\" or \"stdin\", not \"%s\"", args);
        free(args);
        return -1;
    }
    if (out->cwd[0] != '/')
        return fail(p, config_setting_get_member(h, "cwd"), "'cwd' must be an absolute path");
    return 0;
}

/* rate_limit = tasks a second, rate_burst = how many of them may start at once (its default:
 * one second's worth). */
static int parse_rate(struct parse *p, const config_setting_t *h, struct handler_conf *out)
{
    const config_setting_t *burst = config_setting_get_member(h, "rate_burst");
    double per_second;

    /* get_seconds reads any number; the unit in its messages is not this one's. */
    const config_setting_t *s = config_setting_get_member(h, "rate_limit");
    if (s != NULL && !config_setting_is_number(s))
        return fail(p, s, "'rate_limit' must be a number of tasks a second");
    per_second = s == NULL ? 0
                 : config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                              : (double)config_setting_get_int64(s);
    if (s != NULL && !(per_second >= 0.001 && per_second <= 1000000))
        return fail(p, s, "'rate_limit' = %g is out of range (0.001 to 1000000 tasks a second)",
                    per_second);
    out->rate_limit = per_second;
    if (burst != NULL && s == NULL)
        return fail(p, burst, "'rate_burst' needs a 'rate_limit' in handler '%s'", out->name);
    return get_int(p, h, "rate_burst", 1, 1000000,
                   per_second > 1 ? (long long)ceil(per_second) : 1, &out->rate_burst);
}

static int parse_handler(struct parse *p, const config_setting_t *h, struct handler_conf *out)
{
    char *type;

    if (!config_setting_is_group(h))
        return fail(p, h, "each handler must be a group: { name = \"...\"; type = \"...\"; }");
    if (get_string(p, h, "name", NULL, &out->name) < 0 ||
        get_string(p, h, "type", NULL, &type) < 0)
        return -1;
    if (out->name == NULL || out->name[0] == '\0') {
        free(type);
        return fail(p, h, "a handler needs a 'name'");
    }
    if (type == NULL)
        return fail(p, h, "handler '%s' needs a 'type' (\"sleep\" or \"exec\")", out->name);
    if (strcmp(type, "exec") == 0) {
        free(type);
        out->type = HANDLER_EXEC;
        return parse_exec(p, h, out) < 0 ? -1 : parse_rate(p, h, out);
    }
    if (strcmp(type, "sleep") != 0) {
        failv(p, config_setting_get_member(h, "type"),
             "handler '%s': unknown type \"%s\" (\"sleep\" or \"exec\")", out->name, type);
        free(type);
        return -1;
    }
    free(type);
    out->type = HANDLER_SLEEP;
    if (check_known(p, h, "a sleep handler", sleep_names) < 0 || parse_rate(p, h, out) < 0)
        return -1;
    return get_seconds(p, h, "max_seconds", 0, 31536000, 86400, &out->max_seconds);
}

static const struct handler_conf *find_handler(const struct config *c, const char *name)
{
    for (int i = 0; i < c->nhandlers; i++)
        if (strcmp(c->handlers[i].name, name) == 0)
            return &c->handlers[i];
    return NULL;
}

static int parse_handlers(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *list = config_setting_get_member(root, "handlers");
    int n = list ? config_setting_length(list) : 0;

    if (list != NULL && !config_setting_is_list(list))
        return fail(p, list, "'handlers' must be a list: handlers = ( { ... }, { ... } );");
    /* One more slot for the built-in sleep handler when the file does not declare it. */
    c->handlers = calloc((size_t)n + 1, sizeof(*c->handlers));
    if (c->handlers == NULL)
        return fail(p, list, "out of memory");
    c->nhandlers = 0; /* counts the slots filled so far: find_handler looks at no other */
    for (int i = 0; i < n; i++) {
        const config_setting_t *h = config_setting_get_elem(list, (unsigned)i);
        if (parse_handler(p, h, &c->handlers[i]) < 0) {
            c->nhandlers = i + 1;
            return -1;
        }
        c->nhandlers = i + 1;
        /* At-most-once pops with BLMPOP: no script to take a token in the same step. */
        if (c->handlers[i].rate_limit > 0 && c->delivery == DELIVERY_AT_MOST_ONCE)
            return fail(p, config_setting_get_member(h, "rate_limit"),
                        "handler '%s': 'rate_limit' needs worker.delivery = \"at-least-once\"",
                        c->handlers[i].name);
        c->handlers[i].task_uid = c->task_uid;
        c->handlers[i].task_gid = c->task_gid;
        if (find_handler(c, c->handlers[i].name) != &c->handlers[i])
            return fail(p, h, "handler '%s' is declared twice", c->handlers[i].name);
    }
    if (find_handler(c, "sleep") == NULL) {
        struct handler_conf *h = &c->handlers[c->nhandlers++];
        h->name = strdup("sleep");
        h->type = HANDLER_SLEEP;
        h->max_seconds = 86400;
        if (h->name == NULL)
            return fail(p, list, "out of memory");
    }
    return 0;
}

static int parse_queue(struct parse *p, const config_setting_t *q, struct config *c,
                       struct queue_conf *out)
{
    char *handler;

    if (!config_setting_is_group(q))
        return fail(p, q, "each queue must be a group: { name = \"...\"; handler = \"...\"; }");
    if (check_known(p, q, "a queue", queue_names) < 0 ||
        get_string(p, q, "name", NULL, &out->name) < 0 ||
        get_int(p, q, "weight", 1, 1000, 1, &out->weight) < 0 ||
        get_string(p, q, "handler", "sleep", &handler) < 0)
        return -1;
    if (out->name == NULL || out->name[0] == '\0') {
        free(handler);
        return fail(p, q, "a queue needs a 'name' (the Redis list to take tasks from)");
    }
    out->handler = find_handler(c, handler);
    if (out->handler == NULL) {
        const config_setting_t *hs = config_setting_get_member(q, "handler");
        failv(p, hs ? hs : q, "queue '%s': no handler named '%s' in 'handlers'", out->name,
             handler);
        free(handler);
        return -1;
    }
    free(handler);
    return 0;
}

static int parse_queues(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *list = config_setting_get_member(root, "queues");
    int n = list ? config_setting_length(list) : 1;

    if (list != NULL && !config_setting_is_list(list))
        return fail(p, list, "'queues' must be a list: queues = ( { name = \"queue\"; } );");
    if (n == 0)
        return fail(p, list, "'queues' is empty: name at least one queue to take tasks from");
    c->queues = calloc((size_t)n, sizeof(*c->queues));
    if (c->queues == NULL)
        return fail(p, list, "out of memory");
    if (list == NULL) {
        c->nqueues = 1;
        c->queues[0].name = strdup("queue");
        c->queues[0].handler = find_handler(c, "sleep");
        c->queues[0].weight = 1;
        return c->queues[0].name ? 0 : fail(p, NULL, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *q = config_setting_get_elem(list, (unsigned)i);
        c->nqueues = i + 1;
        if (parse_queue(p, q, c, &c->queues[i]) < 0)
            return -1;
        if (config_queue(c, c->queues[i].name, strlen(c->queues[i].name)) != &c->queues[i])
            return fail(p, q, "queue '%s' is listed twice", c->queues[i].name);
    }
    return 0;
}

static int parse_schedule(struct parse *p, const config_setting_t *g, struct schedule_conf *out)
{
    const config_setting_t *cron = config_setting_get_member(g, "cron");
    const config_setting_t *every = config_setting_get_member(g, "every");
    char *zone = NULL, why[256];

    if (!config_setting_is_group(g))
        return fail(p, g, "each schedule must be a group: { name = \"...\"; every = 10; queue = "
                          "\"queue\"; payload = \"...\"; }");
    if (check_known(p, g, "a schedule", schedule_names) < 0 ||
        get_string(p, g, "name", NULL, &out->name) < 0 ||
        get_string(p, g, "queue", NULL, &out->queue) < 0 ||
        get_string(p, g, "payload", NULL, &out->payload) < 0)
        return -1;
    if (out->name == NULL || out->name[0] == '\0' || strpbrk(out->name, " \t\r\n:") != NULL)
        return fail(p, g, "a schedule needs a 'name', without spaces or ':'");
    if (out->queue == NULL || out->queue[0] == '\0')
        return fail(p, g, "schedule '%s' needs a 'queue' to push to", out->name);
    if (out->payload == NULL)
        return fail(p, g, "schedule '%s' needs a 'payload' (what each tick pushes)", out->name);
    out->payload_len = strlen(out->payload);
    if (get_string(p, g, "timezone", "UTC", &zone) < 0)
        return -1;
    if (strcmp(zone, "UTC") != 0) {
        failv(p, config_setting_get_member(g, "timezone"),
              "schedule '%s': timezone \"%s\": only \"UTC\" is supported (schedules run on UTC)",
              out->name, zone);
        free(zone);
        return -1;
    }
    free(zone);
    if ((cron == NULL) == (every == NULL))
        return fail(p, g, "schedule '%s' needs 'cron' (\"0 3 * * *\") or 'every' (seconds), "
                          "one of them",
                    out->name);
    if (every != NULL) {
        return get_int(p, g, "every", 1, 366LL * 86400, 0, &out->every);
    }
    if (get_string(p, g, "cron", NULL, &out->cron_text) < 0)
        return -1;
    if (cron_parse(out->cron_text, &out->cron, why, sizeof(why)) < 0)
        return fail(p, cron, "schedule '%s': cron \"%s\": %s", out->name, out->cron_text, why);
    if (cron_next(&out->cron, 0) < 0)
        return fail(p, cron, "schedule '%s': cron \"%s\" never fires", out->name,
                    out->cron_text);
    return 0;
}

static int parse_schedules(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *list = config_setting_get_member(root, "schedules");
    int n = list ? config_setting_length(list) : 0;

    if (list == NULL)
        return 0;
    if (!config_setting_is_list(list))
        return fail(p, list, "'schedules' must be a list: schedules = ( { name = \"tick\"; every "
                             "= 10; queue = \"queue\"; payload = \"0\"; } );");
    c->schedules = calloc((size_t)(n > 0 ? n : 1), sizeof(*c->schedules));
    if (c->schedules == NULL)
        return fail(p, list, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
        c->nschedules = i + 1;
        if (parse_schedule(p, g, &c->schedules[i]) < 0)
            return -1;
        for (int k = 0; k < i; k++)
            if (strcmp(c->schedules[k].name, c->schedules[i].name) == 0)
                return fail(p, g, "schedule '%s' is listed twice", c->schedules[i].name);
    }
    return 0;
}

static int parse_log(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *g;
    char *level, *target;
    int rc = 0;

    if (get_group(p, root, "log", &g) < 0)
        return -1;
    if (g != NULL && check_known(p, g, "the log section", log_names) < 0)
        return -1;
    if (get_string(p, g, "level", "info", &level) < 0)
        return -1;
    if (get_string(p, g, "target", "auto", &target) < 0) {
        free(level);
        return -1;
    }
    c->log_level = log_level_parse(level);
    if (c->log_level < 0)
        rc = fail(p, config_setting_get_member(g, "level"),
                  "log level \"%s\" is not one of err, warning, notice, info, debug", level);
    else if (strcmp(target, "auto") == 0)
        c->log_target = LOG_TARGET_AUTO;
    else if (strcmp(target, "journal") == 0)
        c->log_target = LOG_TARGET_JOURNAL;
    else if (strcmp(target, "stderr") == 0)
        c->log_target = LOG_TARGET_STDERR;
    else
        rc = fail(p, config_setting_get_member(g, "target"),
                  "log target \"%s\" is not one of auto, journal, stderr", target);
    free(level);
    free(target);
    return rc;
}

/* metrics = { listen = "127.0.0.1:9464"; }: an address literal (IPv6 in brackets) and a port.
 * No host name: what it resolves to could change under a running worker. */
static int parse_metrics(struct parse *p, const config_setting_t *root, struct config *c)
{
    const config_setting_t *g, *s;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char *listen, *colon, *end;
    long port;

    if (get_group(p, root, "metrics", &g) < 0)
        return -1;
    if (g == NULL)
        return 0;
    if (check_known(p, g, "the metrics section", metrics_names) < 0 ||
        get_string(p, g, "listen", "127.0.0.1:9464", &listen) < 0)
        return -1;
    s = config_setting_get_member(g, "listen");
    colon = strrchr(listen, ':');
    port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
        failv(p, s, "metrics listen \"%s\": want ADDRESS:PORT, like \"127.0.0.1:9464\"",
              listen);
        free(listen);
        return -1;
    }
    *colon = '\0';
    if (listen[0] == '[' && colon > listen + 1 && colon[-1] == ']') {
        colon[-1] = '\0';
        memmove(listen, listen + 1, strlen(listen));
    }
    if (getaddrinfo(listen, NULL, &hints, &ai) != 0) {
        failv(p, s, "metrics listen: \"%s\" is not an IP address (a name could change under a "
                    "running worker)", listen);
        free(listen);
        return -1;
    }
    freeaddrinfo(ai);
    c->metrics_addr = listen;
    c->metrics_port = (int)port;
    return 0;
}

static int parse_root(struct parse *p, const config_setting_t *root, struct config *c)
{
    if (check_known(p, root, "the file", top_names) < 0)
        return -1;
    if (parse_redis(p, root, &c->redis) < 0 || parse_worker(p, root, c) < 0 ||
        parse_handlers(p, root, c) < 0 || parse_queues(p, root, c) < 0 || parse_log(p, root, c) < 0 ||
        parse_metrics(p, root, c) < 0 || parse_schedules(p, root, c) < 0)
        return -1;
    return 0;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct parse p = {.path = path, .err = err, .errlen = errlen};
    struct config *c;
    config_t cf;
    char *dir, *slash;

    c = calloc(1, sizeof(*c));
    if (c == NULL || (c->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        free(c);
        return NULL;
    }
    config_init(&cf);
    /* @include is relative to the config's own directory, not to the working directory
     * (which is / under systemd). */
    dir = strdup(path);
    slash = dir ? strrchr(dir, '/') : NULL;
    if (slash != NULL) {
        *slash = '\0';
        p.dir = dir[0] ? dir : "/";
        config_set_include_dir(&cf, p.dir);
    }
    if (config_check_includes(path, p.dir, err, errlen) < 0)
        goto fail;
    if (!config_read_file(&cf, path)) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            snprintf(err, errlen, "%s:0: cannot read: %s", path, strerror(errno));
        else
            snprintf(err, errlen, "%s:%d: %s",
                     config_error_file(&cf) ? config_error_file(&cf) : path,
                     config_error_line(&cf), config_error_text(&cf));
        goto fail;
    }
    if (parse_root(&p, config_root_setting(&cf), c) < 0)
        goto fail;
    config_destroy(&cf);
    free(dir);
    return c;
fail:
    config_destroy(&cf);
    free(dir);
    config_free(c);
    return NULL;
}

void config_free(struct config *c)
{
    if (c == NULL)
        return;
    free(c->path);
    free(c->redis.host);
    free(c->redis.unix_socket);
    free(c->redis.username);
    secret_free(c->redis.password);
    free(c->redis.password_path);
    free(c->redis.sentinel.master);
    for (int i = 0; i < c->redis.sentinel.n; i++)
        free(c->redis.sentinel.hosts[i]);
    free(c->redis.sentinel.username);
    secret_free(c->redis.sentinel.password);
    free(c->worker_id);
    free(c->prefix);
    free(c->task_user);
    free(c->metrics_addr);
    for (int i = 0; i < c->nschedules; i++) {
        free(c->schedules[i].name);
        free(c->schedules[i].cron_text);
        free(c->schedules[i].queue);
        free(c->schedules[i].payload);
    }
    free(c->schedules);
    for (int i = 0; i < c->nqueues; i++)
        free(c->queues[i].name);
    free(c->queues);
    for (int i = 0; i < c->nhandlers; i++) {
        struct handler_conf *h = &c->handlers[i];
        free(h->name);
        for (int k = 0; h->argv && h->argv[k]; k++)
            free(h->argv[k]);
        free(h->argv);
        for (int k = 0; h->env && h->env[k]; k++)
            free(h->env[k]);
        free(h->env);
        free(h->cwd);
    }
    free(c->handlers);
    free(c);
}

const struct queue_conf *config_queue(const struct config *c, const char *name, size_t len)
{
    for (int i = 0; i < c->nqueues; i++)
        if (strlen(c->queues[i].name) == len && memcmp(c->queues[i].name, name, len) == 0)
            return &c->queues[i];
    return NULL;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_sentinels(const struct sentinel_conf *a, const struct sentinel_conf *b)
{
    if (!same_str(a->master, b->master) || !same_str(a->username, b->username) ||
        !same_str(a->password, b->password) || a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->hosts[i], b->hosts[i]) != 0 || a->ports[i] != b->ports[i])
            return false;
    return true;
}

const char *config_fixed_change(const struct config *old, const struct config *next)
{
    const struct redis_conf *a = &old->redis, *b = &next->redis;

    if (!same_str(a->host, b->host) || a->port != b->port ||
        !same_str(a->unix_socket, b->unix_socket) || a->db != b->db ||
        !same_str(a->username, b->username) || a->connect_timeout_ms != b->connect_timeout_ms ||
        a->command_timeout_ms != b->command_timeout_ms)
        return "the redis section";
    if (!same_sentinels(&a->sentinel, &b->sentinel))
        return "redis.sentinel";
    /* Compared by value: where it is kept may move, the connections keep using the old one. */
    if (!same_str(a->password, b->password))
        return "the redis password (inline or in its password_file)";
    if (strcmp(old->worker_id, next->worker_id) != 0)
        return "worker.id";
    if (strcmp(old->prefix, next->prefix) != 0)
        return "worker.prefix";
    if (old->delivery != next->delivery)
        return "worker.delivery";
    if (old->heartbeat_ttl_ms != next->heartbeat_ttl_ms)
        return "worker.heartbeat_ttl";
    if (old->log_target != next->log_target)
        return "log.target";
    /* qworker confined itself at start to taking this one identity (isolate.c). */
    if (old->task_uid != next->task_uid || old->task_gid != next->task_gid)
        return "worker.task_user";
    if (!same_str(old->metrics_addr, next->metrics_addr) || old->metrics_port != next->metrics_port)
        return "metrics.listen";
    return NULL;
}
