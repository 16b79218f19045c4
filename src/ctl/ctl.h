/* qworkerctl: what an operator does by hand, on the Redis of a worker's configuration. Each
 * command is a function taking the parsed context; they share the connection and the output
 * (human tables on a terminal, JSON with --json). */
#ifndef QWORKER_CTL_H
#define QWORKER_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "config.h"
#include "redis.h"

/* Exit statuses (sysexits.h's where there is one). */
#define CTL_OK 0
#define CTL_FAILED 1
#define CTL_USAGE 64
#define CTL_UNAVAILABLE 69 /* Redis did not answer */

struct ctl {
    const struct config *conf;
    struct rconn rc;
    bool json;
    int argc; /* the command's own arguments */
    char **argv;
};

/* One command, or NULL with CTL_USAGE said. Each returns an exit status. */
int ctl_status(struct ctl *c);
int ctl_workers(struct ctl *c);
int ctl_dead(struct ctl *c);
int ctl_push(struct ctl *c);
int ctl_pause(struct ctl *c, bool pause);
int ctl_cancel(struct ctl *c);

/* A command whose reply is NULL (connection lost) or an error: says why on stderr and returns
 * the exit status for it. */
int ctl_redis_failed(struct ctl *c, const char *what, const redisReply *reply);
/* Sends a command (printf-like, as redisCommand); NULL once the connection is lost. */
redisReply *ctl_command(struct ctl *c, const char *fmt, ...);

/* Output: a table of rows of cells for people, or the JSON value for scripts. The text of a
 * cell may come from a task: it is escaped (logtext) before it reaches the terminal. */
struct table;
struct table *table_new(const char *const *headers, int ncols);
void table_add(struct table *t, const char *const *cells);
void table_print(struct table *t);
void table_free(struct table *t);
/* Prints v as one line of JSON and frees it. */
int json_print(json_t *v);
/* Writes label, then text from outside escaped, and a newline. */
void print_safe(FILE *out, const char *label, const char *text);

#endif
