/* Fuzz target: logtext_escape() (src/logtext.c) against the contract in src/logtext.h.
 *
 * The first input byte chooses outlen: 0..191 as it is (small buffers, 0 included), 192..255
 * a buffer large enough for any escape of the rest (4 bytes out per byte in, plus the NUL). The
 * rest is the text. The output buffer is malloc'ed with exactly outlen bytes, so AddressSanitizer
 * reports any write past outlen; the text is a malloc'ed copy of exactly its length, so a read
 * past len is reported too.
 *
 * Beyond "no crash" it checks, for every outlen:
 * - outlen 0: returns 0; otherwise the result is < outlen, out[result] is the NUL and
 *   strlen(out) == result;
 * - the output has no byte < 0x20, no 0x7f, is valid UTF-8 (RFC 3629: no overlong form, no
 *   surrogate, nothing above U+10FFFF, no stray continuation byte: so no raw C1 byte either),
 *   and holds no C1 control in UTF-8 form (0xc2 0x80..0x9f), no U+2028/U+2029, no bidi embedding
 *   or override (U+202A..U+202E) and no bidi isolate (U+2066..U+2069);
 * - it equals an independent model of the contract: each input character becomes one unit
 *   (printable ASCII as is; \n \r \t as two-character escapes; well-formed non-hostile UTF-8 as
 *   is; every byte of a hostile sequence or of malformed UTF-8 and every other control byte as
 *   \xNN), and the output is the longest run of whole units that leaves room for the NUL: an
 *   escape or a character is never cut.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "logtext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes one well-formed UTF-8 character at s (RFC 3629) into *cp; returns its length, or 0. */
static size_t utf8_decode(const uint8_t *s, size_t left, uint32_t *cp)
{
    size_t n;
    uint32_t v;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        n = 2;
        v = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3;
        v = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4;
        v = s[0] & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if ((n == 2 && v < 0x80) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000) ||
        (v >= 0xd800 && v <= 0xdfff) || v > 0x10ffff)
        return 0;
    *cp = v;
    return n;
}

static bool hostile(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
           cp == 0x2029 || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The model: writes the escape of the whole text into out (large enough) and the end of each
 * unit into ends[]; returns the number of units. */
static size_t model(const uint8_t *in, size_t len, char *out, size_t *ends)
{
    size_t i = 0, o = 0, units = 0;

    while (i < len) {
        uint32_t cp;
        size_t n = utf8_decode(in + i, len - i, &cp);

        if (n == 1 && (cp == '\n' || cp == '\r' || cp == '\t')) {
            out[o++] = '\\';
            out[o++] = cp == '\n' ? 'n' : cp == '\r' ? 'r' : 't';
        } else if (n > 0 && !hostile(cp)) {
            memcpy(out + o, in + i, n);
            o += n;
        } else {
            n = n > 0 ? n : 1;
            for (size_t k = 0; k < n; k++) {
                static const char hex[] = "0123456789abcdef";
                out[o++] = '\\';
                out[o++] = 'x';
                out[o++] = hex[in[i + k] >> 4];
                out[o++] = hex[in[i + k] & 15];
            }
        }
        i += n;
        ends[units++] = o;
    }
    out[o] = '\0';
    return units;
}

static void check_output(const char *out, size_t n)
{
    const uint8_t *s = (const uint8_t *)out;
    size_t i = 0;

    while (i < n) {
        uint32_t cp;
        size_t k;
        CHECK(s[i] >= 0x20 && s[i] != 0x7f);
        k = utf8_decode(s + i, n - i, &cp);
        CHECK(k > 0);                         /* valid UTF-8 */
        CHECK(!(cp >= 0x80 && cp <= 0x9f));   /* no C1 in UTF-8 form (0xc2 0x80..0x9f) */
        CHECK(!hostile(cp));
        i += k;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len, outlen, got, units, want, *ends;
    char *in, *out, *full;

    if (size == 0)
        return 0;
    len = size - 1;
    outlen = data[0] < 0xc0 ? data[0] : 4 * len + 1;
    in = malloc(len > 0 ? len : 1);
    out = malloc(outlen > 0 ? outlen : 1);
    full = malloc(4 * len + 1);
    ends = malloc((len + 1) * sizeof(*ends));
    CHECK(in != NULL && out != NULL && full != NULL && ends != NULL);
    memcpy(in, data + 1, len);

    if (outlen == 0) {
        /* A one-byte canary that must stay as it is. */
        out[0] = 'Z';
        CHECK(logtext_escape(in, len, out, 0) == 0);
        CHECK(out[0] == 'Z');
    } else {
        got = logtext_escape(in, len, out, outlen);
        CHECK(got < outlen);
        CHECK(out[got] == '\0');
        CHECK(strlen(out) == got);
        check_output(out, got);

        units = model((const uint8_t *)in, len, full, ends);
        want = 0;
        for (size_t u = 0; u < units && ends[u] < outlen; u++)
            want = ends[u];
        if (got != want || memcmp(out, full, got) != 0) {
            fprintf(stderr, "outlen %zu: got %zu bytes \"%s\", the contract gives %zu \"%.*s\"\n",
                    outlen, got, out, want, (int)want, full);
            CHECK(!"output differs from the contract");
        }
    }
    free(in);
    free(out);
    free(full);
    free(ends);
    return 0;
}
