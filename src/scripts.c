#include "scripts.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* The scripts live in src/lua/, one file each; the build embeds them (src/lua/embed.awk). */
static const char *const sources[SCRIPT_COUNT] = {
    [SCRIPT_FETCH] =
#include "fetch.lua.h"
    ,
    [SCRIPT_CLAIM] =
#include "claim.lua.h"
    ,
    [SCRIPT_BEAT] =
#include "beat.lua.h"
    ,
    [SCRIPT_REAP] =
#include "reap.lua.h"
    ,
    [SCRIPT_RELEASE] =
#include "release.lua.h"
    ,
    [SCRIPT_DUE] =
#include "due.lua.h"
    ,
    [SCRIPT_RESCUE] =
#include "rescue.lua.h"
    ,
    [SCRIPT_REQUEUE] =
#include "requeue.lua.h"
    ,
    [SCRIPT_RECORD] =
#include "record.lua.h"
    ,
    [SCRIPT_DEAD_MOVE] =
#include "dead_move.lua.h"
    ,
    [SCRIPT_TICK] =
#include "tick.lua.h"
    ,
    [SCRIPT_UNSCHEDULE] =
#include "unschedule.lua.h"
    ,
};

static const char *const names[SCRIPT_COUNT] = {
    "fetch", "claim", "beat", "reap", "release", "due", "rescue", "requeue", "record",
    "dead_move", "tick", "unschedule"};

const char *script_name(enum script s)
{
    return names[s];
}

/* SHA1s are learnt from SCRIPT LOAD; Redis answers the same one to every thread. */
static char shas[SCRIPT_COUNT][41];
static pthread_mutex_t shas_mu = PTHREAD_MUTEX_INITIALIZER;

static int load(struct rconn *r, enum script s, char *sha, redisReply **refused)
{
    const char *argv[] = {"SCRIPT", "LOAD", sources[s]};
    redisReply *reply = rconn_command(r, 3, argv, NULL);

    *refused = NULL;
    if (reply == NULL)
        return -1;
    if (reply->type == REDIS_REPLY_ERROR) {
        *refused = reply; /* the caller says why, once */
        return -1;
    }
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        freeReplyObject(reply);
        rconn_lost(r, "SCRIPT LOAD: a reply that is not a SHA1");
        return -1;
    }
    memcpy(sha, reply->str, 41);
    freeReplyObject(reply);
    pthread_mutex_lock(&shas_mu);
    memcpy(shas[s], sha, 41);
    pthread_mutex_unlock(&shas_mu);
    return 0;
}

bool script_sha(enum script s, char sha[41])
{
    pthread_mutex_lock(&shas_mu);
    memcpy(sha, shas[s], 41);
    pthread_mutex_unlock(&shas_mu);
    return sha[0] != '\0';
}

redisReply *script_run(struct rconn *r, enum script s, int nkeys, const char **keys,
                       const size_t *keylens, int nargs, const char **args, const size_t *arglens)
{
    int argc = 3 + nkeys + nargs;
    const char **argv = malloc((size_t)argc * sizeof(*argv));
    size_t *lens = malloc((size_t)argc * sizeof(*lens));
    char sha[41], numkeys[16];
    redisReply *reply = NULL;

    if (argv == NULL || lens == NULL)
        goto out;
    pthread_mutex_lock(&shas_mu);
    memcpy(sha, shas[s], sizeof(sha));
    pthread_mutex_unlock(&shas_mu);
    if (sha[0] == '\0' && load(r, s, sha, &reply) < 0)
        goto out;
    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = numkeys;
    for (int i = 0; i < 3; i++)
        lens[i] = strlen(argv[i]);
    for (int i = 0; i < nkeys; i++) {
        argv[3 + i] = keys[i];
        lens[3 + i] = keylens ? keylens[i] : strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = args[i];
        lens[3 + nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        reply = rconn_command(r, argc, argv, lens);
        if (reply == NULL || reply->type != REDIS_REPLY_ERROR ||
            strncmp(reply->str, "NOSCRIPT", 8) != 0)
            break;
        /* The server restarted or was flushed: teach it the script again. */
        freeReplyObject(reply);
        reply = NULL;
        if (load(r, s, sha, &reply) < 0)
            break;
    }
out:
    free(argv);
    free(lens);
    return reply;
}
