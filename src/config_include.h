/* The configuration file and every file it @includes, checked before libconfig reads them:
 * libconfig 1.5's scanner ends the whole process (exit 2, "input in flex scanner failed") when a
 * file it reads is a directory or cannot be read, which would turn a bad reload into a dead
 * daemon. */
#ifndef QWORKER_CONFIG_INCLUDE_H
#define QWORKER_CONFIG_INCLUDE_H

#include <stddef.h>

/* 0 if path and all it includes (joined to dir, absolute or not, as libconfig 1.5 resolves them;
 * NULL: as written) are readable regular files, nested at most as deep as libconfig allows;
 * else -1 with "file:line: message" in err. */
int config_check_includes(const char *path, const char *dir, char *err, size_t errlen);

#endif
