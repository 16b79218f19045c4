#include "capacity.h"

void capacity_init(struct capacity *c, int limit)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->limit = limit;
    c->used = 0;
    c->stopped = false;
}

void capacity_destroy(struct capacity *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cond);
}

int capacity_reserve(struct capacity *c, int max)
{
    int n;

    pthread_mutex_lock(&c->mu);
    while (!c->stopped && c->used >= c->limit)
        pthread_cond_wait(&c->cond, &c->mu);
    if (c->stopped) {
        pthread_mutex_unlock(&c->mu);
        return 0;
    }
    n = c->limit - c->used;
    if (n > max)
        n = max;
    c->used += n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

void capacity_release(struct capacity *c, int n)
{
    pthread_mutex_lock(&c->mu);
    c->used -= n;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
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
