/* A small HTTP/1.1 server for the monitor's pages: GET and HEAD of a few fixed paths, one
 * request per connection (Connection: close), bounded in what it reads, how long it waits and
 * how many connections it holds. Not libevent's evhttp: in 2.1 it has no connection limit and no
 * way to count idle connections, and each holds a descriptor that qworker's Redis connections
 * and its handlers' pipes need. Runs on the caller's event base (the monitor thread's). */
#ifndef QWORKER_HTTP_H
#define QWORKER_HTTP_H

#include <stddef.h>

struct event_base;
struct evbuffer;
struct http;

#define HTTP_MAX_REQUEST 8192   /* request line and headers together */
#define HTTP_MAX_CONNECTIONS 64 /* past them the listener waits; the kernel queues the rest */
#define HTTP_TIMEOUT_SECONDS 5  /* to send a whole request, and to take the whole answer */

/* Fills body (empty on entry) and returns the status code; *type is the Content-Type. */
typedef int (*http_page)(void *arg, struct evbuffer *body, const char **type);

/* Listens on addr ("127.0.0.1", "::1", ...) and port; NULL with the reason in err. */
struct http *http_new(struct event_base *base, const char *addr, int port, char *err,
                      size_t errlen);
/* path: exact, query string ignored. At most a handful. */
int http_route(struct http *h, const char *path, http_page page, void *arg);
/* Closes the listener and every connection. */
void http_free(struct http *h);

#endif
