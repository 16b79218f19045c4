/* Fuzz target: payload_excerpt() (src/task.c) and base64_encode()/base64_decode() (src/base64.c).
 *
 * Input: byte 0 is payload_excerpt()'s max, byte 1 its outlen (255: room for any excerpt of the
 * rest), the rest is the payload. Buffers are malloc'ed with their exact sizes, so
 * AddressSanitizer reports any access past outlen or past the payload.
 *
 * Beyond "no crash, no leak" it checks:
 * - payload_excerpt: returns out; outlen 0 writes nothing; outlen < 8 gives ""; otherwise the
 *   excerpt is NUL-terminated within outlen, printable ASCII only (0x20..0x7e), starts with '"',
 *   and its quoted part, unescaped (\" \\ \xNN), is a prefix of the payload of at most max
 *   bytes, followed by nothing, or by (a cut of) "...(N bytes)" with N the payload's length when
 *   the payload was cut; with room enough, the whole of min(len, max) bytes is shown;
 * - base64: base64_encode() of the payload is (len + 2) / 3 * 4 characters of the RFC 4648
 *   alphabet with '=' padding only at the end, and base64_decode() gives the payload back byte
 *   for byte;
 * - base64_decode() of the whole input as text (NUL-terminated copy, cut at its first NUL):
 *   no crash, no leak; when it accepts, the text's length is a multiple of 4 and the result is at
 *   most 3/4 of it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "check.h"
#include "task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void check_excerpt(const char *p, size_t len, size_t max, size_t outlen)
{
    char *out = malloc(outlen > 0 ? outlen : 1), suffix[64];
    size_t o, i = 0, n;

    CHECK(out != NULL);
    out[0] = 'Z';
    CHECK(payload_excerpt(p, len, max, out, outlen) == out);
    if (outlen == 0) {
        CHECK(out[0] == 'Z');
        free(out);
        return;
    }
    CHECK(memchr(out, '\0', outlen) != NULL);
    n = strlen(out);
    for (o = 0; o < n; o++)
        CHECK(out[o] >= 0x20 && out[o] <= 0x7e);
    if (outlen < 8) {
        CHECK(n == 0);
        free(out);
        return;
    }
    CHECK(out[0] == '"');
    /* Unescape the quoted part and compare it with the payload. */
    for (o = 1; o < n && out[o] != '"'; i++) {
        unsigned char c;
        if (out[o] == '\\') {
            CHECK(o + 1 < n);
            if (out[o + 1] == 'x') {
                CHECK(o + 3 < n && hexval(out[o + 2]) >= 0 && hexval(out[o + 3]) >= 0);
                c = (unsigned char)(hexval(out[o + 2]) << 4 | hexval(out[o + 3]));
                CHECK(c < 0x20 || c >= 0x7f); /* printable bytes are not escaped */
                o += 4;
            } else {
                CHECK(out[o + 1] == '"' || out[o + 1] == '\\');
                c = (unsigned char)out[o + 1];
                o += 2;
            }
        } else {
            c = (unsigned char)out[o++];
        }
        CHECK(i < len && i < max);
        CHECK((unsigned char)p[i] == c);
    }
    CHECK(o < n && out[o] == '"'); /* the closing quote is always there */
    o++;
    if (i < len) {
        /* Cut: the rest is a prefix of "...(N bytes)". */
        snprintf(suffix, sizeof(suffix), "...(%zu bytes)", len);
        CHECK(n - o <= strlen(suffix) && memcmp(out + o, suffix, n - o) == 0);
        /* With room for every byte escaped, only max cuts it. */
        if (outlen >= 4 * (len < max ? len : max) + 8 + strlen(suffix))
            CHECK(i == max && strcmp(out + o, suffix) == 0);
    } else {
        CHECK(o == n);
    }
    free(out);
}

static void check_base64(const uint8_t *p, size_t len)
{
    char *enc = base64_encode(p, len);
    uint8_t *dec;
    size_t n, elen, pad = 0;

    CHECK(enc != NULL);
    elen = strlen(enc);
    CHECK(elen == (len + 2) / 3 * 4);
    for (size_t i = 0; i < elen; i++) {
        char c = enc[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '+' || c == '/';
        if (c == '=')
            pad++;
        else
            CHECK(alpha && pad == 0);
    }
    CHECK(pad == (3 - len % 3) % 3);
    n = (size_t)-1;
    dec = base64_decode(enc, &n);
    CHECK(dec != NULL);
    CHECK(n == len);
    CHECK(len == 0 || memcmp(dec, p, len) == 0);
    free(dec);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max = size > 0 ? data[0] : 32, outlen = size > 1 ? data[1] : 96, len, n, tlen;
    const uint8_t *payload = size > 2 ? data + 2 : data + size;
    char *p, *text;
    void *dec;

    len = size > 2 ? size - 2 : 0;
    if (outlen == 255)
        outlen = 4 * len + 64;
    p = malloc(len > 0 ? len : 1);
    CHECK(p != NULL);
    memcpy(p, payload, len);
    check_excerpt(p, len, max, outlen);
    check_base64((const uint8_t *)p, len);
    free(p);

    text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    tlen = strlen(text);
    dec = base64_decode(text, &n);
    if (dec != NULL) {
        CHECK(tlen % 4 == 0);
        CHECK(n <= tlen / 4 * 3);
        free(dec);
    }
    free(text);
    return 0;
}
