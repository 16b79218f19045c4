#include "scripts.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* An in-flight entry is "<queue>\0<payload>": queue names cannot hold NUL, payloads can. Entries
 * are put back a chunk per call (requeue_some), so that a worker that died with a million tasks
 * in flight does not hold Redis in one script for seconds; each entry still moves exactly once.
 * A task put back because its worker died carries how many times that has happened in a wrapper
 * ({"payload" or "payload_base64", "recoveries", ...}, as for retries), so that envelope.c can send
 * it to the dead list as poison after max_recoveries instead of letting it kill worker after
 * worker. A payload goes as base64 unless it is text jansson takes back (UTF-8, no NUL). */
#define REQUEUE_FN                                                                                 \
    "local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'\n"            \
    "local function b64(s)\n"                                                                     \
    "  local out = {}\n"                                                                          \
    "  for i = 1, #s, 3 do\n"                                                                     \
    "    local a, b, c = string.byte(s, i, i + 2)\n"                                              \
    "    local n = a * 65536 + (b or 0) * 256 + (c or 0)\n"                                       \
    "    local q = {math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64,\n" \
    "               n % 64}\n"                                                                    \
    "    out[#out + 1] = string.sub(B64, q[1] + 1, q[1] + 1)\n"                                  \
    "      .. string.sub(B64, q[2] + 1, q[2] + 1)\n"                                              \
    "      .. (b and string.sub(B64, q[3] + 1, q[3] + 1) or '=')\n"                               \
    "      .. (c and string.sub(B64, q[4] + 1, q[4] + 1) or '=')\n"                               \
    "  end\n"                                                                                     \
    "  return table.concat(out)\n"                                                                \
    "end\n"                                                                                       \
    "local function textual(s)\n"                                                                 \
    "  if not string.find(s, '[%z\\128-\\255]') then return true end\n"                         \
    "  local i, n = 1, #s\n"                                                                      \
    "  while i <= n do\n"                                                                         \
    "    local c = string.byte(s, i)\n"                                                           \
    "    if c == 0 then return false end\n"                                                       \
    "    if c < 128 then\n"                                                                       \
    "      i = i + 1\n"                                                                           \
    "    else\n"                                                                                  \
    "      local len, lo, hi = 0, 128, 191\n"                                                     \
    "      if c >= 194 and c <= 223 then len = 2\n"                                               \
    "      elseif c >= 224 and c <= 239 then len = 3\n"                                           \
    "        if c == 224 then lo = 160 elseif c == 237 then hi = 159 end\n"                       \
    "      elseif c >= 240 and c <= 244 then len = 4\n"                                           \
    "        if c == 240 then lo = 144 elseif c == 244 then hi = 143 end\n"                       \
    "      else return false end\n"                                                               \
    "      local d = string.byte(s, i + 1)\n"                                                     \
    "      if not d or d < lo or d > hi then return false end\n"                                  \
    "      for j = i + 2, i + len - 1 do\n"                                                       \
    "        d = string.byte(s, j)\n"                                                             \
    "        if not d or d < 128 or d > 191 then return false end\n"                              \
    "      end\n"                                                                                 \
    "      i = i + len\n"                                                                         \
    "    end\n"                                                                                   \
    "  end\n"                                                                                     \
    "  return true\n"                                                                             \
    "end\n"                                                                                       \
    "local function recovered(p)\n"                                                               \
    "  if string.sub(p, 1, 1) == '{' then\n"                                                      \
    "    local ok, w = pcall(cjson.decode, p)\n"                                                  \
    "    if ok and type(w) == 'table' and (w.payload ~= nil or w.payload_base64 ~= nil) then\n"   \
    "      w.recoveries = (tonumber(w.recoveries) or 0) + 1\n"                                    \
    "      return cjson.encode(w)\n"                                                              \
    "    end\n"                                                                                   \
    "  end\n"                                                                                     \
    "  if textual(p) then return '{\"payload\":' .. cjson.encode(p) .. ',\"recoveries\":1}' end\n" \
    "  return '{\"payload_base64\":\"' .. b64(p) .. '\",\"recoveries\":1}'\n"                \
    "end\n"                                                                                       \
    "local function requeue_some(hash, n)\n"                                                      \
    "  local some = redis.call('HRANDFIELD', hash, n, 'WITHVALUES')\n"                            \
    "  local done = {}\n"                                                                         \
    "  for i = 1, #some, 2 do\n"                                                                  \
    "    local v = some[i + 1]\n"                                                                 \
    "    local z = string.find(v, '\\0', 1, true)\n"                                              \
    "    redis.call('RPUSH', string.sub(v, 1, z - 1), recovered(string.sub(v, z + 1)))\n"         \
    "    done[#done + 1] = some[i]\n"                                                             \
    "  end\n"                                                                                     \
    "  if #done > 0 then redis.call('HDEL', hash, unpack(done)) end\n"                            \
    "  return #done\n"                                                                            \
    "end\n"

/* Whether the heartbeat at key belongs to token (or is gone). */
#define OURS_FN                                                                                    \
    "local function ours(key, token)\n"                                                           \
    "  local cur = redis.call('GET', key)\n"                                                      \
    "  if not cur then return true end\n"                                                         \
    "  local ok, hb = pcall(cjson.decode, cur)\n"                                                 \
    "  return ok and type(hb) == 'table' and hb.token == token\n"                                 \
    "end\n"

static const char *const sources[SCRIPT_COUNT] = {
    /* KEYS: in-flight hash, queue 1..N. ARGV: n, then n task ids. Returns a flat array of
     * (queue index from 0, payload) pairs, in the order the ids were used. RPOP from the first
     * non-empty queue first: strict priority. */
    [SCRIPT_FETCH] =
        "local n = tonumber(ARGV[1])\n"
        "local out = {}\n"
        "local got = 0\n"
        "for q = 2, #KEYS do\n"
        "  if got >= n then break end\n"
        "  local items = redis.call('RPOP', KEYS[q], n - got)\n"
        "  if items then\n"
        "    local prefix = KEYS[q] .. '\\0'\n"
        "    local args = {}\n"
        "    for _, p in ipairs(items) do\n"
        "      got = got + 1\n"
        "      args[#args + 1] = ARGV[1 + got]\n"
        "      args[#args + 1] = prefix .. p\n"
        "      out[#out + 1] = q - 2\n"
        "      out[#out + 1] = p\n"
        /* One HSET per 1,000 tasks, not per task: a third less of Redis's time; unpack() stays
         * far below Lua's C stack limit. */
        "      if #args >= 2000 then\n"
        "        redis.call('HSET', KEYS[1], unpack(args))\n"
        "        args = {}\n"
        "      end\n"
        "    end\n"
        "    if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end\n"
        "  end\n"
        "end\n"
        "return out\n",

    /* KEYS: heartbeat, workers set. ARGV: heartbeat value (JSON with token), TTL in ms, id, the
     * value the caller saw (or "" for none). Returns -1 if the heartbeat changed since the caller
     * looked (someone else holds the id), else 0; SCRIPT_REQUEUE then puts the leftovers back. */
    [SCRIPT_CLAIM] =
        "local cur = redis.call('GET', KEYS[1])\n"
        "if (cur or '') ~= ARGV[4] then return -1 end\n"
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
        "redis.call('SADD', KEYS[2], ARGV[3])\n"
        "return 0\n",

    /* KEYS: in-flight hash. ARGV: how many at most. Puts that many back at the front of their
     * queues; returns {how many, how many are left}. */
    [SCRIPT_REQUEUE] =
        REQUEUE_FN
        "local moved = requeue_some(KEYS[1], tonumber(ARGV[1]))\n"
        "return {moved, redis.call('HLEN', KEYS[1])}\n",

    /* KEYS: heartbeat, workers set. ARGV: value, TTL in ms, id, token. 1 if refreshed, 0 if the
     * id now belongs to another process. */
    [SCRIPT_BEAT] =
        OURS_FN
        "if not ours(KEYS[1], ARGV[4]) then return 0 end\n"
        "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
        "redis.call('SADD', KEYS[2], ARGV[3])\n"
        "return 1\n",

    /* KEYS: workers set. ARGV: key prefix, own id, how many at most. Returns a flat array of (id,
     * requeued, left) for each dead worker seen; one is forgotten once nothing of it is left. Keys
     * are built here because which workers are dead is only known inside the script (fine on a
     * single Redis; not for Cluster). */
    [SCRIPT_REAP] =
        REQUEUE_FN
        "local out = {}\n"
        "local budget = tonumber(ARGV[3])\n"
        "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
        "  if budget <= 0 then break end\n"
        "  if id ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. ':worker:' .. id) == 0 then\n"
        "    local hash = ARGV[1] .. ':inflight:' .. id\n"
        "    local n = requeue_some(hash, budget)\n"
        "    local left = redis.call('HLEN', hash)\n"
        "    if left == 0 then redis.call('SREM', KEYS[1], id) end\n"
        "    budget = budget - n\n"
        "    out[#out + 1] = id\n"
        "    out[#out + 1] = n\n"
        "    out[#out + 1] = left\n"
        "  end\n"
        "end\n"
        "return out\n",

    /* KEYS: heartbeat, workers set, in-flight hash. ARGV: id, token. With nothing left in
     * flight the id is given back at once; otherwise the heartbeat is left to expire so that
     * another worker requeues what is left. */
    [SCRIPT_RELEASE] =
        OURS_FN
        "if not ours(KEYS[1], ARGV[2]) then return 0 end\n"
        "if redis.call('HLEN', KEYS[3]) > 0 then return 0 end\n"
        "redis.call('DEL', KEYS[1])\n"
        "redis.call('SREM', KEYS[2], ARGV[1])\n"
        "return 1\n",

    /* KEYS: schedule, dead list. ARGV: now (unix ms), how many at most. Each member is JSON {"queue",
     * "task"}; ZREM makes each entry move once, whichever worker runs this. Returns how many
     * moved and the next due time (or false). */
    [SCRIPT_DUE] =
        "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])\n"
        "for _, m in ipairs(due) do\n"
        "  if redis.call('ZREM', KEYS[1], m) == 1 then\n"
        "    local ok, e = pcall(cjson.decode, m)\n"
        "    if ok and type(e) == 'table' and e.queue and e.task then\n"
        "      redis.call('RPUSH', e.queue, e.task)\n"
        "    else\n"
        "      redis.call('LPUSH', KEYS[2], m)\n"
        "    end\n"
        "  end\n"
        "end\n"
        "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
        "return {#due, nxt[2] or false}\n",

    /* KEYS: in-flight hash. ARGV: ids of a fetch whose reply never arrived. Each that the fetch
     * did move goes back to the front of its queue. Returns how many. */
    [SCRIPT_RESCUE] =
        "local n = 0\n"
        "for i = 1, #ARGV do\n"
        "  local v = redis.call('HGET', KEYS[1], ARGV[i])\n"
        "  if v then\n"
        "    local z = string.find(v, '\\0', 1, true)\n"
        "    redis.call('RPUSH', string.sub(v, 1, z - 1), string.sub(v, z + 1))\n"
        "    redis.call('HDEL', KEYS[1], ARGV[i])\n"
        "    n = n + 1\n"
        "  end\n"
        "end\n"
        "return n\n",
};

static const char *const names[SCRIPT_COUNT] = {"fetch", "claim", "beat", "reap", "release",
                                                "due",   "rescue",
                                                "requeue"};

/* SHA1s are learnt from SCRIPT LOAD; Redis answers the same one to every thread. */
static char shas[SCRIPT_COUNT][41];
static pthread_mutex_t shas_mu = PTHREAD_MUTEX_INITIALIZER;

static int load(struct rconn *r, enum script s, char *sha)
{
    const char *argv[] = {"SCRIPT", "LOAD", sources[s]};
    redisReply *reply = rconn_command(r, 3, argv, NULL);

    if (reply == NULL)
        return -1;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        log_err("redis refused the %s script: %s", names[s],
                reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        freeReplyObject(reply);
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
    if (sha[0] == '\0' && load(r, s, sha) < 0)
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
        if (load(r, s, sha) < 0)
            break;
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        log_err("redis: the %s script failed: %s", names[s], reply->str);
out:
    free(argv);
    free(lens);
    return reply;
}
