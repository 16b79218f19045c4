#include "config_secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *secret_path(const char *name, int *credential, char *why, size_t whylen)
{
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    char *path = NULL;

    *credential = name[0] != '/';
    if (!*credential)
        path = strdup(name);
    else if (dir == NULL || dir[0] == '\0') {
        /* An operator's `qworker -t` outside the unit has no credentials: say how to check. */
        snprintf(why, whylen,
                 "is relative, so it names a systemd credential in $CREDENTIALS_DIRECTORY, "
                 "which is not set (systemd sets it for a unit with LoadCredential=; to check "
                 "outside the unit, set it to the directory holding the file, e.g. "
                 "CREDENTIALS_DIRECTORY=/etc/qworker qworker -t)");
        return NULL;
    } else if (asprintf(&path, "%s/%s", dir, name) < 0)
        path = NULL;
    if (path == NULL)
        snprintf(why, whylen, "cannot be resolved: out of memory");
    return path;
}

/* Up to SECRET_MAX + 1 bytes of fd into buf (so that one byte more tells a file too long);
 * the count, or -1 with errno. */
static ssize_t read_bounded(int fd, char *buf)
{
    size_t got = 0;

    while (got < SECRET_MAX + 1) {
        ssize_t n = read(fd, buf + got, SECRET_MAX + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* The content's faults, in the order an operator fixes them; NULL when it is a password. */
static const char *content_fault(const char *buf, size_t len, size_t *stripped)
{
    if (len > SECRET_MAX)
        return "is larger than 4 KiB (4096 bytes): not a password";
    /* One newline, as `echo` or an editor leaves it; any other byte is part of the password. */
    *stripped = len > 0 && buf[len - 1] == '\n' ? len - 1 : len;
    if (*stripped == 0)
        return "is empty";
    if (memchr(buf, '\0', *stripped) != NULL)
        return "holds a NUL byte, which a Redis password cannot";
    return NULL;
}

/* fd's content as a secret in *out; -1 with the reason in why. */
static int read_secret_fd(int fd, char **out, char *why, size_t whylen)
{
    char buf[SECRET_MAX + 1];
    const char *fault;
    size_t len = 0;
    ssize_t n = read_bounded(fd, buf);
    int rc = -1;

    if (n < 0)
        snprintf(why, whylen, "cannot be read: %s", strerror(errno));
    else if ((fault = content_fault(buf, (size_t)n, &len)) != NULL)
        snprintf(why, whylen, "%s", fault);
    else if ((*out = strndup(buf, len)) == NULL)
        snprintf(why, whylen, "cannot be read: out of memory");
    else
        rc = 0;
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

int secret_read(const char *path, char **out, char *why, size_t whylen)
{
    struct stat st;
    /* O_NONBLOCK: a FIFO put there must not hang a reload; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    int rc = -1;

    *out = NULL;
    if (fd < 0) {
        snprintf(why, whylen, "cannot be read: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0)
        snprintf(why, whylen, "cannot be read: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode))
        snprintf(why, whylen, "is not a regular file");
    else
        rc = read_secret_fd(fd, out, why, whylen);
    close(fd);
    return rc;
}

int secret_exposed(const char *path, mode_t mask, mode_t *mode)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return 0;
    *mode = st.st_mode & 07777;
    return (st.st_mode & mask) != 0;
}

void secret_free(char *secret)
{
    if (secret == NULL)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}
