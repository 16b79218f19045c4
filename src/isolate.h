/* Handlers kept apart from qworker: worker.task_user gives them a user of their own, and a
 * handler without `network = true` gets no IPv4/IPv6 socket. Both are done by qworker-run
 * (src/run/), which each such spawn runs in the handler's place. */
#ifndef QWORKER_ISOLATE_H
#define QWORKER_ISOLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* What qworker-run's part of a command line may take, for the kernel's argument limit. */
#define ISOLATE_ARGS 10
#define ISOLATE_ARG_BYTES 4224 /* PATH_MAX for its path, and short options and ids */

/* Once at start, before any thread: finds qworker-run, checks that qworker may switch to
 * task_user and confines it to that one identity (a seccomp filter: a qworker taken over by a
 * payload could become no one else), or drops the capabilities it has no use for. Logs why and
 * returns -1 when handlers could not be kept apart as configured. */
int isolate_init(const struct config *conf);

/* With task_user, qworker-run reads qworker's orders (signal the handler's group) on this
 * descriptor, a pipe; see src/run/qworker-run.c. */
#define ISOLATE_CONTROL_FD 3
#define ISOLATE_CONTROL_FD_TEXT "3"

/* Whether spawning h goes through qworker-run, and whether it was found at start. */
bool isolate_needed(const struct handler_conf *h);
bool isolate_ready(void);

/* Writes qworker-run's part of h's command line into argv (at most ISOLATE_ARGS), with the ids
 * in ids[2][24]; returns how many it wrote. The handler's own argv follows it. */
int isolate_argv(const struct handler_conf *h, char *argv[], char ids[2][24]);

#endif
