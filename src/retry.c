#include "retry.h"

#include <math.h>

#include "task.h"

int retry_max_attempts(const struct task *t)
{
    if (t->max_attempts > 0)
        return t->max_attempts;
    return t->handler->type == HANDLER_EXEC ? t->handler->max_attempts : 1;
}

int64_t retry_backoff_ms(const struct task *t, uint64_t draw)
{
    double base = t->handler->backoff * pow(2, t->attempt - 1);
    double jitter = 0.75 + 0.5 * (double)(draw % 1000001) / 1e6;

    if (base > t->handler->backoff_max)
        base = t->handler->backoff_max;
    return (int64_t)(base * jitter * 1000);
}

void retry_decide(struct task *t, int64_t now_us, uint64_t draw)
{
    int64_t now_ms = (now_us + 999) / 1000;

    switch (t->outcome) {
    case OUTCOME_FAILED:
    case OUTCOME_TIMEOUT:
        if (t->attempt < retry_max_attempts(t))
            t->due_ms = now_ms + retry_backoff_ms(t, draw);
        else
            t->dead = true;
        break;
    case OUTCOME_INVALID:
        t->dead = true;
        break;
    case OUTCOME_DELAYED:
        t->due_ms = now_ms + (int64_t)ceil(t->delay * 1000);
        break;
    case OUTCOME_OK:
    case OUTCOME_REQUEUED:
    case OUTCOME_DUPLICATE:
    case OUTCOME_CANCELLED:
        break;
    }
}
