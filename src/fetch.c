#include "fetch.h"

#include <poll.h>
#include <string.h>

#include "capacity.h"
#include "clock.h"
#include "health.h"
#include "log.h"
#include "task.h"
#include "taskq.h"
#include "unique.h"

/* After Redis refused a fetch: the first wait, doubling up to the last. */
#define REFUSED_MIN_MS 50
#define REFUSED_MAX_MS 1000

/* No fetch for *ms (at least the first wait); the next wait is twice as long, up to the last. */
static void back_off(struct fetch_ctx *ctx, int *ms)
{
    if (*ms < REFUSED_MIN_MS)
        *ms = REFUSED_MIN_MS;
    ctx->pause_until_us = clock_mono_us() + (int64_t)*ms * 1000;
    *ms = *ms * 2 > REFUSED_MAX_MS ? REFUSED_MAX_MS : *ms * 2;
}

void fetch_backoff(struct fetch_ctx *ctx)
{
    back_off(ctx, &ctx->refused_backoff_ms);
}

void fetch_refused(struct fetch_ctx *ctx, const redisReply *reply, enum rclass cls)
{
    rcond_begin(&ctx->refused, cls == RC_RETRY ? LOG_WARNING : LOG_ERR, reply_text(reply),
                "redis does not hand out tasks (%s); trying again", rclass_name(cls));
    fetch_backoff(ctx);
}

struct task *fetch_task(const struct queue_conf *queue, const char *payload, size_t len,
                        const char *id)
{
    struct task *t = id != NULL ? task_new_with_id(queue, payload, len, id)
                                : task_new(queue, payload, len);

    if (t != NULL)
        t->mem = task_mem_estimate(t);
    return t;
}

size_t fetch_max_bytes(struct fetch_ctx *ctx)
{
    size_t left = capacity_bytes_free(ctx->cap) / 32;

    return left < FETCH_MAX_BYTES ? left : FETCH_MAX_BYTES;
}

/* Not claimed: they go back to their queue (loop.c); Redis refusing is said once, and the next
 * fetches wait longer and longer, so that a claim refused every time does not spin. */
static void claim_unique(struct fetch_ctx *ctx, struct taskq_chain *chain)
{
    redisReply *refusal;
    int claimed = unique_claim(ctx->rc, ctx->conf, chain, &refusal);

    if (claimed < 0 && refusal != NULL) {
        rcond_begin(&ctx->claim_refused, LOG_ERR, reply_text(refusal),
                    "redis refuses to claim the ids of unique tasks (\"unique_for\"): they go "
                    "back to their queue, and are tried again");
        back_off(ctx, &ctx->claim_backoff_ms);
        freeReplyObject(refusal);
    } else if (claimed > 0) {
        rcond_end(&ctx->claim_refused, "unique tasks' ids are claimed again");
        ctx->claim_backoff_ms = 0;
    }
}

void fetch_hand_over(struct fetch_ctx *ctx, struct taskq_chain *chain)
{
    size_t bytes = 0;
    bool envelopes = false;

    for (const struct task *t = chain->first; t != NULL; t = t->next) {
        bytes += t->mem;
        envelopes = envelopes || task_is_envelope(t);
    }
    if (envelopes) /* plain payloads never ask for a claim: no second pass over them */
        claim_unique(ctx, chain);
    capacity_charge(ctx->cap, bytes);
    taskq_push_batch(ctx->out, chain);
}

void fetch_taken(struct fetch_ctx *ctx)
{
    rcond_end(&ctx->refused, "redis hands out tasks again");
    ctx->refused_backoff_ms = REFUSED_MIN_MS;
}

void fetch_queue_bad(struct fetch_ctx *ctx, int q, const char *why)
{
    if (strncmp(why, "PAUSED", 6) == 0)
        rcond_begin(&ctx->queue_bad[q], LOG_NOTICE, why,
                    "queue %s is paused (qworkerctl pause): no task is taken from it until it "
                    "is resumed; running ones go on",
                    ctx->conf->queues[q].name);
    else
        rcond_begin(&ctx->queue_bad[q], LOG_ERR, why,
                    "queue %s is skipped: it cannot be read as a list; nothing in it is touched "
                    "and the other queues are served",
                    ctx->conf->queues[q].name);
}

void fetch_queue_good(struct fetch_ctx *ctx, int q)
{
    rcond_end(&ctx->queue_bad[q], "queue %s is served again", ctx->conf->queues[q].name);
}

int fetch_slice_ms(int64_t left_us)
{
    int64_t ms = (left_us + 999) / 1000;

    return ms < health_period_ms() ? (int)ms : health_period_ms();
}

void fetch_pause(struct fetch_ctx *ctx, int ms)
{
    struct pollfd pfd = {.fd = ctx->wakefd, .events = POLLIN};

    if (ms > 0 && poll(&pfd, 1, ms < health_period_ms() ? ms : health_period_ms()) > 0)
        ctx->interrupted(ctx->owner);
}
