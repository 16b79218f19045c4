/* What a payload asks for: a plain payload goes to its queue's default handler as one argument;
 * a JSON object is an envelope naming the handler, its arguments and limits:
 *   {"id": "...", "handler": "thumb", "args": ["a.jpg"], "timeout": 30, "max_attempts": 5,
 *    "delay": 10}
 * A dead letter moved back into a queue (it carries "reason" and the original "payload") runs
 * again as the task it was. */
#ifndef QWORKER_ENVELOPE_H
#define QWORKER_ENVELOPE_H

#include "config.h"
#include "task.h"

/* Fills task->handler, json, args, label, timeout, max_attempts, delay and attempt. Returns 0, or
 * -1 with the reason in task->reason. */
int envelope_parse(struct task *task, const struct config *conf);

#endif
