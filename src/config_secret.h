/* Secrets kept out of the configuration file: redis.password_file, read whole at load (and so
 * again at each reload), and the check that a file holding a secret is closed to others. */
#ifndef QWORKER_CONFIG_SECRET_H
#define QWORKER_CONFIG_SECRET_H

#include <stddef.h>
#include <sys/types.h>

#define SECRET_MAX 4096 /* bytes: a password, not a file read by mistake */

/* The file a password_file names: an absolute path as it is; a relative one is a systemd
 * credential, in $CREDENTIALS_DIRECTORY. NULL with the reason in why (a phrase that follows the
 * name) when it cannot be resolved or memory runs out. *credential is set when it is one. */
char *secret_path(const char *name, int *credential, char *why, size_t whylen);

/* Reads the secret in path into *out (malloc'd), one trailing newline stripped. -1 with the
 * reason in why (a phrase that follows the path: "is empty", "cannot be read: ...") if the file
 * cannot be read, is not a regular file, is empty, is over SECRET_MAX bytes or holds a NUL. */
int secret_read(const char *path, char **out, char *why, size_t whylen);

/* 1 when path's permission bits include any of mask (0004: others may read; 0044: its group or
 * others may), with the mode in *mode; 0 when not, or when it cannot be stat()ed. */
int secret_exposed(const char *path, mode_t mask, mode_t *mode);

/* Overwrites and frees a secret; NULL is fine. */
void secret_free(char *secret);

#endif
