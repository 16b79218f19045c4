/* qworkerctl pause|resume QUEUE: fleet-wide, through <prefix>:paused, which every worker's fetch
 * script reads on each call (src/lua/fetch.lua): no worker takes from a paused queue from its
 * next fetch on; tasks already taken run to their end. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

int ctl_pause(struct ctl *c, bool pause)
{
    const char *cmd = pause ? "pause" : "resume";
    redisReply *r;
    int rc = CTL_OK;

    if (c->argc != 1 || c->argv[0][0] == '-') {
        fprintf(stderr, "qworkerctl: %s QUEUE\n", cmd);
        return CTL_USAGE;
    }
    if (config_queue(c->conf, c->argv[0], strlen(c->argv[0])) == NULL)
        print_safe(stderr, "qworkerctl: note: not a queue of this configuration: ", c->argv[0]);
    r = ctl_command(c, pause ? "SADD %s:paused %s" : "SREM %s:paused %s", c->conf->prefix,
                    c->argv[0]);
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        rc = ctl_redis_failed(c, cmd, r);
    } else if (c->json) {
        json_print(json_pack("{s:s, s:b, s:b}", "queue", c->argv[0], "paused", pause, "changed",
                             r->integer == 1));
    } else {
        print_safe(stdout, r->integer == 1 ? (pause ? "paused " : "resumed ")
                                           : (pause ? "already paused: " : "was not paused: "),
                   c->argv[0]);
    }
    freeReplyObject(r);
    return rc;
}
