/* The WebSocket handshake's Sec-WebSocket-Accept (RFC 6455 section 4.2.2): SHA-1
 * (FIPS 180-4) of the client's key and the protocol's GUID, in base64.
 *
 * Used by src/soketi_impl/twins/_ws_c.pyx: hashlib and base64 cost ~12k instructions
 * a connection through their Python objects; this is a few hundred. The pure-Python
 * twin (_ws_py.py) computes the same with hashlib, and tests/test_ws_frames.py checks
 * both against RFC 6455's example.
 */
#ifndef SOKETI_WSKEY_H
#define SOKETI_WSKEY_H

#include <stdint.h>
#include <string.h>

#define SKW_ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void skw_sha1_block(uint32_t *st, const uint8_t *p)
{
    uint32_t w[80];
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
               ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 80; i++)
        w[i] = SKW_ROTL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f, k, t;
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = d ^ (b & (c ^ d));
            k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & c) | (d & (b | c));
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6u;
        }
        t = SKW_ROTL(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = SKW_ROTL(b, 30);
        b = a;
        a = t;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
    st[4] += e;
}

static const char skw_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static inline int skw_is_b64(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* ``key`` (``n`` bytes) is the base64 of 16 bytes: 22 characters of the alphabet and
 * "==", as base64.b64decode(key, validate=True) of 16 bytes reads it. Then writes the
 * 28 characters of the accept value to ``out`` and returns 1; else returns 0. */
static int skw_accept(const uint8_t *key, size_t n, char *out)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t block[128];
    uint32_t st[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    uint8_t digest[20];
    int i;
    if (n != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (i = 0; i < 22; i++)
        if (!skw_is_b64(key[i]))
            return 0;
    /* 24 + 36 = 60 bytes of message: padded to two blocks, length 480 bits at the end */
    memcpy(block, key, 24);
    memcpy(block + 24, guid, 36);
    block[60] = 0x80;
    memset(block + 61, 0, 128 - 61);
    block[126] = (480 >> 8) & 0xFF;
    block[127] = 480 & 0xFF;
    skw_sha1_block(st, block);
    skw_sha1_block(st, block + 64);
    for (i = 0; i < 5; i++) {
        digest[4 * i] = (uint8_t)(st[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(st[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(st[i] >> 8);
        digest[4 * i + 3] = (uint8_t)st[i];
    }
    /* 20 bytes: six groups of three, then two bytes and one "=" */
    for (i = 0; i < 6; i++) {
        uint32_t v = ((uint32_t)digest[3 * i] << 16) | ((uint32_t)digest[3 * i + 1] << 8) | digest[3 * i + 2];
        out[4 * i] = skw_b64[(v >> 18) & 63];
        out[4 * i + 1] = skw_b64[(v >> 12) & 63];
        out[4 * i + 2] = skw_b64[(v >> 6) & 63];
        out[4 * i + 3] = skw_b64[v & 63];
    }
    {
        uint32_t v = ((uint32_t)digest[18] << 16) | ((uint32_t)digest[19] << 8);
        out[24] = skw_b64[(v >> 18) & 63];
        out[25] = skw_b64[(v >> 12) & 63];
        out[26] = skw_b64[(v >> 6) & 63];
        out[27] = '=';
    }
    return 1;
}

#endif /* SOKETI_WSKEY_H */
