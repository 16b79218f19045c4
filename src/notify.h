/* What systemd hears from qworker (sd_notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING,
 * EXTEND_TIMEOUT_USEC. All are no-ops when not run by systemd (no NOTIFY_SOCKET). */
#ifndef QWORKER_NOTIFY_H
#define QWORKER_NOTIFY_H

#include <stdint.h>

/* The watchdog interval systemd asked for, in microseconds; 0 if none. */
uint64_t notify_watchdog_usec(void);
void notify_ready(const char *status);
void notify_status(const char *status);
void notify_watchdog(void);
void notify_reloading(void);
void notify_stopping(const char *status);
/* Asks systemd for usec more before it kills a stop in progress. */
void notify_extend_timeout(uint64_t usec);

#endif
