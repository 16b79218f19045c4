#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "log.h"

#define MAX_ROUTES 8

struct route {
    char path[64];
    http_page page;
    void *arg;
};

struct conn {
    struct http *h;
    struct bufferevent *bev;
    struct event *deadline;
    bool answered;
    bool draining; /* answered and sent: reading what is left until the client closes */
    LIST_ENTRY(conn) link;
};

struct http {
    struct event_base *base;
    struct evconnlistener *listener;
    struct event *resume; /* re-enables the listener after an accept error */
    struct route routes[MAX_ROUTES];
    int nroutes;
    int nconn;
    bool paused; /* at the connection limit */
    /* cppcheck-suppress unusedStructMember ; used through the LIST_* macros */
    LIST_HEAD(, conn) conns;
};

static void conn_close(struct conn *c)
{
    struct http *h = c->h;

    LIST_REMOVE(c, link);
    event_free(c->deadline);
    bufferevent_free(c->bev);
    free(c);
    if (h->nconn-- == HTTP_MAX_CONNECTIONS && h->paused) {
        h->paused = false;
        evconnlistener_enable(h->listener);
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* The whole answer, then the connection closes once it is sent (on_write). */
static void answer(struct conn *c, int status, const char *type, struct evbuffer *body,
                   bool head)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t len = body ? evbuffer_get_length(body) : 0;
    struct timeval tv = {HTTP_TIMEOUT_SECONDS, 0};

    c->answered = true;
    bufferevent_disable(c->bev, EV_READ);
    evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n%s"
                        "Connection: close\r\n\r\n",
                        status, reason(status), type, len,
                        status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (body != NULL && !head)
        evbuffer_add_buffer(out, body);
    /* A client that will not read the answer has as long as one that would not send. */
    evtimer_add(c->deadline, &tv);
}

static void answer_text(struct conn *c, int status, const char *text, bool head)
{
    struct evbuffer *body = evbuffer_new();

    if (body != NULL)
        evbuffer_add(body, text, strlen(text));
    answer(c, status, "text/plain; charset=utf-8", body, head);
    if (body != NULL)
        evbuffer_free(body);
}

static const struct route *find_route(const struct http *h, const char *target, size_t len)
{
    for (int i = 0; i < h->nroutes; i++)
        if (strlen(h->routes[i].path) == len && memcmp(h->routes[i].path, target, len) == 0)
            return &h->routes[i];
    return NULL;
}

/* "GET /metrics?x HTTP/1.1": the request line only; the headers are read and ignored. */
static void serve(struct conn *c, char *line)
{
    char *method = line, *target, *version, *query;
    bool head;
    const struct route *r;
    struct evbuffer *body;
    const char *type = "text/plain; charset=utf-8";
    int status;

    target = strchr(method, ' ');
    version = target ? strchr(target + 1, ' ') : NULL;
    if (target == NULL || version == NULL || strchr(version + 1, ' ') != NULL ||
        (strcmp(version + 1, "HTTP/1.1") != 0 && strcmp(version + 1, "HTTP/1.0") != 0)) {
        answer_text(c, 400, "bad request line\n", false);
        return;
    }
    *target++ = '\0';
    *version = '\0';
    head = strcmp(method, "HEAD") == 0;
    if (!head && strcmp(method, "GET") != 0) {
        answer_text(c, 405, "GET or HEAD only\n", false);
        return;
    }
    query = strchr(target, '?');
    r = target[0] == '/' ? find_route(c->h, target, query ? (size_t)(query - target)
                                                            : strlen(target))
                         : NULL;
    if (r == NULL) {
        answer_text(c, 404, "not found: try /metrics, /healthz or /\n", head);
        return;
    }
    body = evbuffer_new();
    if (body == NULL) {
        answer_text(c, 500, "out of memory\n", head);
        return;
    }
    status = r->page(r->arg, body, &type);
    answer(c, status, type, body, head);
    evbuffer_free(body);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end;
    char *line;
    size_t n;

    if (c->answered) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        end = evbuffer_search(in, "\n\n", 2, NULL);
    if (end.pos < 0 || (size_t)end.pos > HTTP_MAX_REQUEST) {
        if (evbuffer_get_length(in) > HTTP_MAX_REQUEST)
            answer_text(c, 431, "request over 8192 bytes\n", false);
        return; /* more to come, within the deadline */
    }
    line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
    if (line == NULL || strlen(line) != n) { /* a NUL in the request line */
        answer_text(c, 400, "bad request line\n", false);
        free(line);
        return;
    }
    serve(c, line);
    free(line);
}

/* Sent. Closing now, with the rest of a long request unread, would make the kernel reset the
 * connection, and a reset can destroy the answer before the client reads it (a 431 above all):
 * so stop sending, read and drop what comes until the client closes, or the deadline. */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    if (!c->answered || c->draining)
        return;
    c->draining = true;
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    bufferevent_enable(bev, EV_READ);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what; /* EOF, an error or a timeout: the same end */
    conn_close(arg);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_close(arg);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
    struct http *h = arg;
    struct conn *c = calloc(1, sizeof(*c));
    struct timeval tv = {HTTP_TIMEOUT_SECONDS, 0};

    (void)sa;
    (void)socklen;
    if (c != NULL) {
        c->h = h;
        c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
        c->deadline = evtimer_new(h->base, on_deadline, c);
    }
    if (c == NULL || c->bev == NULL || c->deadline == NULL) {
        if (c != NULL && c->bev != NULL)
            bufferevent_free(c->bev);
        else
            evutil_closesocket(fd);
        if (c != NULL && c->deadline != NULL)
            event_free(c->deadline);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* Read no more than a request may take: past it the answer is 431, not more memory. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, HTTP_MAX_REQUEST + 1);
    bufferevent_enable(c->bev, EV_READ);
    evtimer_add(c->deadline, &tv);
    LIST_INSERT_HEAD(&h->conns, c, link);
    if (++h->nconn == HTTP_MAX_CONNECTIONS) {
        h->paused = true;
        evconnlistener_disable(listener);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct http *h = arg;

    (void)fd;
    (void)what;
    if (!h->paused)
        evconnlistener_enable(h->listener);
}

/* Out of descriptors, most likely: accepting again at once would spin. */
static void on_accept_error(struct evconnlistener *listener, void *arg)
{
    struct http *h = arg;
    struct timeval second = {1, 0};
    int err = EVUTIL_SOCKET_ERROR();

    log_warn("metrics: cannot accept a connection: %s; trying again in 1 s",
             evutil_socket_error_to_string(err));
    evconnlistener_disable(listener);
    evtimer_add(h->resume, &second);
}

static void release(struct http *h);

struct http *http_new(struct event_base *base, const char *addr, int port, char *err,
                      size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    struct http *h = calloc(1, sizeof(*h));
    char service[16];
    int rc;

    if (h == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->base = base;
    LIST_INIT(&h->conns);
    snprintf(service, sizeof(service), "%d", port);
    rc = getaddrinfo(addr, service, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: %s", addr, port, gai_strerror(rc));
        free(h);
        return NULL;
    }
    h->listener = evconnlistener_new_bind(base, on_accept, h,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                              LEV_OPT_CLOSE_ON_EXEC,
                                          HTTP_MAX_CONNECTIONS, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    h->resume = evtimer_new(base, on_resume, h);
    if (h->listener == NULL || h->resume == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", addr, port, strerror(errno));
        release(h);
        return NULL;
    }
    evconnlistener_set_error_cb(h->listener, on_accept_error);
    return h;
}

int http_route(struct http *h, const char *path, http_page page, void *arg)
{
    struct route *r;

    if (h->nroutes == MAX_ROUTES || strlen(path) >= sizeof(r->path))
        return -1;
    r = &h->routes[h->nroutes++];
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->page = page;
    r->arg = arg;
    return 0;
}

/* What http_new made; no connection exists without them. */
static void release(struct http *h)
{
    if (h->listener != NULL)
        evconnlistener_free(h->listener);
    if (h->resume != NULL)
        event_free(h->resume);
    free(h);
}

void http_free(struct http *h)
{
    struct conn *c, *next;

    if (h == NULL)
        return;
    for (c = LIST_FIRST(&h->conns); c != NULL; c = next) {
        next = LIST_NEXT(c, link);
        conn_close(c);
    }
    release(h);
}
