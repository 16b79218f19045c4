/* One thread's Redis connection (hiredis contexts are not thread-safe): connecting with AUTH and
 * SELECT, reconnecting with capped exponential backoff and jitter, and reporting outages once for
 * the whole process, not once per attempt or per connection. */
#ifndef QWORKER_REDIS_H
#define QWORKER_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"

struct rconn {
    redisContext *c; /* NULL while disconnected */
    const struct redis_conf *conf;
    const char *role; /* "consumer", "reporter": in log lines and CLIENT SETNAME */
    long long client_id;
    int backoff_ms;
    int64_t next_attempt_us; /* monotonic; no connect before it */
    int64_t connected_us;
    bool down;               /* counted in the current outage */
    bool connected_once;     /* a connection made after this is a reconnect */
    /* Not counted in outages: a connection used only now and then (the monitor's), whose
     * failures would otherwise stand for the whole worker's until its next use. */
    bool observer;
    uint64_t rng;
    uint64_t gen;     /* Sentinel: the generation of the master's address it connected to */
    int64_t lost_us;  /* monotonic: when it last lost its connection or failed to connect */
};

void rconn_init(struct rconn *r, const struct redis_conf *conf, const char *role);
/* One connection attempt, unless the backoff says wait: 0 if connected, -1 if not (yet). */
int rconn_try(struct rconn *r);
/* Milliseconds until rconn_try may attempt again (0 if connected or due). */
int rconn_wait_ms(struct rconn *r);
/* The connection failed: free it, count the outage, and back off before the next attempt. */
void rconn_lost(struct rconn *r, const char *why);
void rconn_close(struct rconn *r);

/* Sends a command and reads its reply. NULL means the connection was lost (already handled); a
 * REDIS_REPLY_ERROR reply is returned to the caller, except LOADING, READONLY and UNBLOCKED,
 * which mean the server is not a usable master now and are treated as a lost connection. */
redisReply *rconn_command(struct rconn *r, int argc, const char **argv, const size_t *lens);
/* Reads one reply of a pipelined command, with the same rules. */
redisReply *rconn_reply(struct rconn *r);
bool reply_means_reconnect(const redisReply *reply);
/* Sentinel: the master moved since this connection was made; it is to a server that is no
 * longer the master, or soon will not be (rconn_try and rconn_command then leave it). */
bool rconn_moved(const struct rconn *r);
/* sentinel_try_fn for the +switch-master listener: whether host:port is the master (conf is the
 * redis_conf); the connection made to ask is closed. */
int redis_probe_master(const char *host, int port, void *conf, char *err, size_t errlen);

/* Whether Redis refuses to record finished tasks now (the reporter says so): the consumer takes
 * no new task meanwhile. */
void redis_refusing_set(bool on);
bool redis_refusing(void);

/* Whether a connection of this process is failing to reach Redis now. */
bool redis_outage(void);
/* Connections made again after one was lost, by every thread, since start. */
long long redis_reconnects(void);

/* "127.0.0.1:6379" or "unix:/run/redis.sock". */
const char *redis_addr(const struct redis_conf *conf, char *buf, size_t len);
/* One plain connection (AUTH, SELECT, timeouts), to the master the sentinels name if the
 * configuration has Sentinel; NULL with a reason in err. */
redisContext *redis_connect(const struct redis_conf *conf, const char *name, char *err,
                            size_t errlen);

#endif
