/* Text from outside (payloads, ids, handler names, children's output, Redis errors) made safe for
 * a log line: nothing in it can end the line, move the cursor or change a terminal's state. */
#ifndef QWORKER_LOGTEXT_H
#define QWORKER_LOGTEXT_H

#include <stddef.h>

/* Copies in[0..len) to out as printable text: printable ASCII and well-formed UTF-8 pass as they
 * are; \n \r \t become those two-character escapes; every other control character (C0, DEL, C1
 * in either its raw or its UTF-8 form), the Unicode line and paragraph separators and the bidi
 * overrides, and each byte of malformed UTF-8 become \xNN. An escape is never cut: when out is
 * full the text ends at a whole character. out is always NUL-terminated (outlen > 0). Returns
 * the length written. */
size_t logtext_escape(const char *in, size_t len, char *out, size_t outlen);

#endif
