/* The running daemon as the main thread sees it: the configuration in force, the worker
 * identity, and the three worker threads. */
#ifndef QWORKER_DAEMON_H
#define QWORKER_DAEMON_H

#include "capacity.h"
#include "config.h"
#include "identity.h"

struct monitor;

struct daemon {
    const struct config *conf; /* in force; earlier ones are kept in retired until exit */
    struct config **retired;
    int nretired;
    struct identity id;
    struct capacity cap;
    struct reporter *reporter;
    struct loop *loop;
    struct consumer *consumer;
    struct monitor *monitor; /* NULL without metrics.listen */
};

/* control.c: what the main thread does while the workers run. */

/* Waits for signals and keeps systemd informed (READY, STATUS, WATCHDOG, RELOADING) until
 * SIGTERM or SIGINT. */
void control_serve(struct daemon *d, const sigset_t *signals);
/* Stops the workers in order and waits for them, pinging the watchdog and asking systemd for
 * more time while tasks drain; a second SIGTERM/SIGINT cuts the drain short. */
void control_stop(struct daemon *d, const sigset_t *signals);

#endif
