/* The consumer's two ways of taking tasks from Redis, behind one table as handler_ops is for
 * handlers: at-least-once (fetch_script.c: a Lua script moves tasks into the in-flight hash, and
 * waiter connections blocked in BLMOVE say when an empty queue gets one) and at-most-once
 * (fetch_pop.c: BLMPOP, as the original example). Everything here runs on the consumer thread;
 * consumer.c owns the thread, the capacity it reserves, pauses, reloads and stops. */
#ifndef QWORKER_FETCH_H
#define QWORKER_FETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "redis.h"
#include "reply.h"

struct capacity;
struct task;
struct taskq;
struct taskq_chain;

/* A fetch reply holds at most this many payload bytes (the first task always goes): a batch of
 * large payloads must not take the worker's memory in one reply. */
#define FETCH_MAX_BYTES ((size_t)8 << 20)

/* How long one blocking command (BLMPOP, BLMOVE) blocks in Redis: each expiry costs one round
 * trip and proves the connection alive. */
#define FETCH_BLOCK_SECONDS 5

/* What the consumer lends a protocol, and what both protocols share. */
struct fetch_ctx {
    const struct config *conf; /* in force; replaced on a reload (then ops->reconfigure) */
    struct capacity *cap;
    struct taskq *out;   /* where fetched tasks go (the loop thread's inbox) */
    struct rconn *rc;    /* the consumer's own connection */
    int wakefd;          /* rung on stop, reload and pause */
    /* Whether a wake-up means stop, reload or pause (end any wait); consumes a stray one. */
    bool (*interrupted)(void *owner);
    void *owner;

    int64_t pause_until_us;  /* no fetch before (after a refusal) */
    bool more;               /* the last fetch took nothing yet did something: fetch again */
    int refused_backoff_ms;
    struct rcond refused;    /* Redis refusing to hand out tasks: said once */
    struct rcond claim_refused; /* Redis refusing unique tasks' claims (unique.h): said once */
    int claim_backoff_ms;
    struct rcond *queue_bad; /* per queue of conf: it cannot be read: said once */
};

struct fetch_ops {
    /* State built from ctx->conf; NULL if out of memory. */
    void *(*create)(struct fetch_ctx *ctx);
    /* After ctx->conf changed (a reload: queues, their order, fetch_batch). -1: out of memory,
     * to be tried again. */
    int (*reconfigure)(void *state);
    /* Before each fetch, with ctx->rc connected: what is owed from earlier (a rescue). -1: not
     * now. */
    int (*prepare)(void *state);
    /* Takes up to n tasks, n slots being reserved, and hands them over. How many, or -1 if Redis
     * refused (the backoff is set). */
    int (*fetch)(void *state, int n);
    /* The last fetch found nothing: waits for a push, a wake-up or a timeout. */
    void (*idle)(void *state);
    /* Gives back slots held for later (fetches armed behind waiters); whether there were. */
    bool (*take_back)(void *state);
    /* At exit: closes its connections and puts back what it owes; frees the state. */
    void (*destroy)(void *state);
};

extern const struct fetch_ops fetch_script_ops; /* at-least-once */
extern const struct fetch_ops fetch_pop_ops;    /* at-most-once */

/* fetch.c: what both protocols use. */

/* No fetch before a growing wait (reset by fetch_taken). */
void fetch_backoff(struct fetch_ctx *ctx);
/* Redis refused a fetch: said once, tried again after a growing wait. */
void fetch_refused(struct fetch_ctx *ctx, const redisReply *reply, enum rclass cls);
/* Redis handed out tasks (or answered as expected): the refusal, if any, is over. */
void fetch_taken(struct fetch_ctx *ctx);
/* A queue cannot be read (not a list, not allowed): said once; it is skipped meanwhile. */
void fetch_queue_bad(struct fetch_ctx *ctx, int q, const char *why);
void fetch_queue_good(struct fetch_ctx *ctx, int q);
/* A task for a payload taken from Redis (id NULL: a new one), with the bytes it will hold; the
 * caller charges a batch's to the memory budget at once (fetch_charge). NULL if out of memory. */
struct task *fetch_task(const struct queue_conf *queue, const char *payload, size_t len,
                        const char *id);
/* The payload bytes the next fetch may bring: parsing can multiply them twenty to thirty times
 * (JSON of small values), so at most a 32nd of what is left of the memory budget, and at most
 * FETCH_MAX_BYTES (the first task always comes). */
size_t fetch_max_bytes(struct fetch_ctx *ctx);
/* Hands a batch to the loop thread: unique tasks' ids claimed first (unique.h), the batch
 * charged to the memory budget in one lock. */
void fetch_hand_over(struct fetch_ctx *ctx, struct taskq_chain *chain);
/* Sleeps up to ms unless woken (stop, reload, pause). */
void fetch_pause(struct fetch_ctx *ctx, int ms);
/* A poll timeout: left_us rounded up, at most a health period (the watchdog sees progress). */
int fetch_slice_ms(int64_t left_us);

#endif
