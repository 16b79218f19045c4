#include "base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

char *base64_encode(const void *data, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    size_t o = 0;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = (char)(i + 1 < len ? tbl[(v >> 6) & 63] : '=');
        out[o++] = (char)(i + 2 < len ? tbl[v & 63] : '=');
    }
    out[o] = '\0';
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

void *base64_decode(const char *text, size_t *len)
{
    size_t n = strlen(text), o = 0;
    unsigned char *out;
    uint32_t acc = 0;
    int bits = 0;

    if (n % 4 != 0 || (out = malloc(n / 4 * 3 + 1)) == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)text[i]);
        /* Padding only at the end, and nothing after it: "AA=A" is not base64. */
        if (text[i] == '=' && (i == n - 1 || (i == n - 2 && text[n - 1] == '=')))
            break;
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}
