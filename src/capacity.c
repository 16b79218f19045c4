#include "capacity.h"

#include <errno.h>
#include <stdint.h>

#include "clock.h"

void capacity_init(struct capacity *c, int limit)
{
    pthread_mutex_init(&c->mu, NULL);
    cond_init_monotonic(&c->cond);
    c->limit = limit;
    c->used = 0;
    c->bytes = 0;
    c->bytes_limit = 0;
    c->stopped = false;
    c->paused = false;
}

void capacity_destroy(struct capacity *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
}

static bool over_budget(const struct capacity *c)
{
    return c->bytes_limit > 0 && c->bytes >= c->bytes_limit;
}

int capacity_reserve(struct capacity *c, int max, int timeout_ms)
{
    struct timespec deadline = clock_mono_deadline(timeout_ms);
    int n;

    pthread_mutex_lock(&c->mu);
    while (!c->stopped && (c->paused || c->used >= c->limit || over_budget(c)))
        if (pthread_cond_timedwait(&c->cond, &c->mu, &deadline) == ETIMEDOUT)
            break;
    if (c->stopped || c->paused || c->used >= c->limit || over_budget(c)) {
        n = c->stopped ? 0 : -1;
        pthread_mutex_unlock(&c->mu);
        return n;
    }
    n = c->limit - c->used;
    if (n > max)
        n = max;
    c->used += n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void capacity_set_limit(struct capacity *c, int limit)
{
    pthread_mutex_lock(&c->mu);
    c->limit = limit;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

void capacity_release(struct capacity *c, int n)
{
    pthread_mutex_lock(&c->mu);
    c->used -= n;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

void capacity_set_bytes_limit(struct capacity *c, size_t limit)
{
    pthread_mutex_lock(&c->mu);
    c->bytes_limit = limit;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

void capacity_charge(struct capacity *c, size_t bytes)
{
    pthread_mutex_lock(&c->mu);
    c->bytes += bytes;
    pthread_mutex_unlock(&c->mu);
}

void capacity_refund(struct capacity *c, size_t bytes)
{
    if (bytes == 0)
        return;
    pthread_mutex_lock(&c->mu);
    c->bytes -= bytes;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

size_t capacity_bytes_free(struct capacity *c)
{
    size_t n;

    pthread_mutex_lock(&c->mu);
    n = c->bytes_limit == 0 ? SIZE_MAX : c->bytes < c->bytes_limit ? c->bytes_limit - c->bytes : 0;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void capacity_stop(struct capacity *c)
{
    pthread_mutex_lock(&c->mu);
    c->stopped = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

int capacity_used(struct capacity *c)
{
    int n;

    pthread_mutex_lock(&c->mu);
    n = c->used;
    pthread_mutex_unlock(&c->mu);
    return n;
}

bool capacity_paused(struct capacity *c)
{
    bool paused;

    pthread_mutex_lock(&c->mu);
    paused = c->paused;
    pthread_mutex_unlock(&c->mu);
    return paused;
}

void capacity_pause(struct capacity *c, bool paused)
{
    pthread_mutex_lock(&c->mu);
    c->paused = paused;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}
