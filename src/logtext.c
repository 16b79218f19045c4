#include "logtext.h"

#include <stdbool.h>
#include <stdio.h>

/* Length of the well-formed UTF-8 sequence at s (2 to 4), or 0 (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t left)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t n;

    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

/* Well-formed, yet it moves or hides text on a terminal: C1 controls (U+0080-U+009F), the line
 * and paragraph separators (U+2028-U+2029), bidi embeddings and overrides (U+202A-U+202E) and
 * isolates (U+2066-U+2069). */
static bool utf8_hostile(const unsigned char *s, size_t n)
{
    if (n == 2)
        return s[0] == 0xc2 && s[1] <= 0x9f;
    if (n == 3 && s[0] == 0xe2 && s[1] == 0x80)
        return s[2] >= 0xa8 && s[2] <= 0xae;
    if (n == 3 && s[0] == 0xe2 && s[1] == 0x81)
        return s[2] >= 0xa6 && s[2] <= 0xa9;
    return false;
}

size_t logtext_escape(const char *in, size_t len, char *out, size_t outlen)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;

    if (outlen == 0)
        return 0;
    while (i < len) {
        unsigned char c = s[i];
        char esc[5 * 4 + 1];
        size_t n = 1, w;

        if (c >= 0x20 && c < 0x7f) {
            esc[0] = (char)c;
            w = 1;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\';
            esc[1] = (char)(c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
            w = 2;
        } else if (c >= 0x80 && (n = utf8_len(s + i, len - i)) > 0 && !utf8_hostile(s + i, n)) {
            for (w = 0; w < n; w++)
                esc[w] = (char)s[i + w];
        } else {
            n = n > 0 ? n : 1; /* a hostile sequence goes byte by byte */
            for (w = 0; w < n; w++)
                snprintf(esc + 4 * w, 5, "\\x%02x", s[i + w]);
            w = 4 * n;
        }
        if (o + w >= outlen)
            break;
        for (size_t k = 0; k < w; k++)
            out[o++] = esc[k];
        i += n;
    }
    out[o] = '\0';
    return o;
}
