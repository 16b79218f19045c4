#include "beat.h"

#include <errno.h>
#include <stdint.h>

#include "clock.h"
#include "health.h"
#include "loop.h"

/* Until the next beat is due, or the stop; never longer than a watchdog period. */
static bool wait_until(struct beat *b, int64_t due_us)
{
    int64_t ms = (due_us - clock_mono_us() + 999) / 1000;
    struct timespec deadline;
    bool stop;

    if (ms > health_period_ms())
        ms = health_period_ms();
    deadline = clock_mono_deadline(ms > 0 ? (int)ms : 0);
    pthread_mutex_lock(&b->mu);
    while (!b->stop && pthread_cond_timedwait(&b->cond, &b->mu, &deadline) != ETIMEDOUT)
        ;
    stop = b->stop;
    pthread_mutex_unlock(&b->mu);
    return !stop;
}

static void *beat_main(void *arg)
{
    struct beat *b = arg;
    int64_t interval_us = (int64_t)identity_beat_interval_ms(b->id) * 1000;
    int64_t due_us = clock_mono_us() + interval_us;

    health_beat(THREAD_BEAT);
    while (wait_until(b, due_us)) {
        size_t running = 0, waiting = 0;

        health_beat(THREAD_BEAT);
        if (clock_mono_us() < due_us)
            continue;
        if (rconn_try(&b->rc) < 0) {
            due_us = clock_mono_us() + (int64_t)rconn_wait_ms(&b->rc) * 1000;
            continue;
        }
        if (b->loop != NULL)
            loop_counts(b->loop, &running, &waiting);
        if (identity_beat(b->id, &b->rc, (long)running) == 0)
            due_us = clock_mono_us() + interval_us;
        else /* the connection was lost: again as soon as a new one may be tried */
            due_us = clock_mono_us() + (int64_t)rconn_wait_ms(&b->rc) * 1000;
    }
    rconn_close(&b->rc);
    return NULL;
}

int beat_start(struct beat *b, const struct config *conf, struct identity *id, struct loop *loop)
{
    b->stop = false;
    b->running = false;
    b->id = id;
    b->loop = loop;
    pthread_mutex_init(&b->mu, NULL);
    cond_init_monotonic(&b->cond);
    rconn_init(&b->rc, &conf->redis, "heartbeat");
    /* Connected now, not at the first beat: the worker's connections are all open once it
     * says it is ready, and a refused one is said at start. */
    (void)rconn_try(&b->rc);
    if (pthread_create(&b->thread, NULL, beat_main, b) != 0) {
        rconn_close(&b->rc);
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cond);
        return -1;
    }
    pthread_setname_np(b->thread, "qw-beat"); /* for top -H, ps -L, gdb */
    b->running = true;
    return 0;
}

void beat_stop(struct beat *b)
{
    if (!b->running)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    b->running = false;
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cond);
}
