/* Each thread's last sign of progress, for the systemd watchdog: a thread beats at least once a
 * period (every wait it makes is bounded by the period), and the main thread pings the watchdog
 * only while every beat is recent, so that one hung thread lets the watchdog fire. */
#ifndef QWORKER_HEALTH_H
#define QWORKER_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

enum worker_thread { THREAD_CONSUMER, THREAD_LOOP, THREAD_REPORTER, THREAD_BEAT, THREAD_COUNT };

void health_set_period_ms(int ms);
/* How long a thread may wait before it beats again. */
int health_period_ms(void);
void health_beat(enum worker_thread thread);
/* Whether every thread beat within max_age_us; if not, *stale names one that did not. */
bool health_all_fresh(int64_t max_age_us, const char **stale);

#endif
