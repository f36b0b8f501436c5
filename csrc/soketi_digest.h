/* MD5 (RFC 1321) and SHA-256 (FIPS 180-4) block functions, unrolled.
 *
 * The two hashes of every signed HTTP API request (body_md5, the HMAC-SHA256
 * signature), used by src/soketi_impl/twins/_trigger_c.pyx, which does the padding,
 * HMAC and hex around them. Checked against hashlib by tests/test_trigger_twins.py.
 * Written from the two specifications; the loops are unrolled so that the compiler
 * keeps the working variables in registers (about twice as fast as the plain loop).
 */
#ifndef SOKETI_DIGEST_H
#define SOKETI_DIGEST_H

#include <stdint.h>

#define SK_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define SK_ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static inline uint32_t sk_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint32_t sk_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* ---- SHA-256 ---- */

static const uint32_t sk_k256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

#define SK_BS0(x) (SK_ROTR(x, 2) ^ SK_ROTR(x, 13) ^ SK_ROTR(x, 22))
#define SK_BS1(x) (SK_ROTR(x, 6) ^ SK_ROTR(x, 11) ^ SK_ROTR(x, 25))
#define SK_SS0(x) (SK_ROTR(x, 7) ^ SK_ROTR(x, 18) ^ ((x) >> 3))
#define SK_SS1(x) (SK_ROTR(x, 17) ^ SK_ROTR(x, 19) ^ ((x) >> 10))
#define SK_CH(e, f, g) ((g) ^ ((e) & ((f) ^ (g))))
#define SK_MAJ(a, b, c) (((a) & (b)) | ((c) & ((a) | (b))))

/* One round; the callers rotate the names instead of moving eight values. */
#define SK_ROUND(a, b, c, d, e, f, g, h, i) do { \
        uint32_t t1_ = (h) + SK_BS1(e) + SK_CH(e, f, g) + sk_k256[i] + w[i]; \
        uint32_t t2_ = SK_BS0(a) + SK_MAJ(a, b, c); \
        (d) += t1_; \
        (h) = t1_ + t2_; \
    } while (0)

/* Add one 64-byte block ``p`` to the state ``st`` (8 words). */
static void sk_sha256_block(uint32_t *st, const uint8_t *p)
{
    uint32_t w[64];
    uint32_t a, b, c, d, e, f, g, h;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = sk_be32(p + 4 * i);
    for (i = 16; i < 64; i++)
        w[i] = SK_SS1(w[i - 2]) + w[i - 7] + SK_SS0(w[i - 15]) + w[i - 16];
    a = st[0]; b = st[1]; c = st[2]; d = st[3]; e = st[4]; f = st[5]; g = st[6]; h = st[7];
    for (i = 0; i < 64; i += 8) {
        SK_ROUND(a, b, c, d, e, f, g, h, i);
        SK_ROUND(h, a, b, c, d, e, f, g, i + 1);
        SK_ROUND(g, h, a, b, c, d, e, f, i + 2);
        SK_ROUND(f, g, h, a, b, c, d, e, i + 3);
        SK_ROUND(e, f, g, h, a, b, c, d, i + 4);
        SK_ROUND(d, e, f, g, h, a, b, c, i + 5);
        SK_ROUND(c, d, e, f, g, h, a, b, i + 6);
        SK_ROUND(b, c, d, e, f, g, h, a, i + 7);
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
    st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

/* ---- MD5 ---- */

#define SK_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define SK_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define SK_H(x, y, z) ((x) ^ (y) ^ (z))
#define SK_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define SK_STEP(fn, a, b, c, d, xk, t, s) do { \
        (a) += fn(b, c, d) + (xk) + (t); \
        (a) = SK_ROTL(a, s) + (b); \
    } while (0)

/* Add one 64-byte block ``p`` to the state ``st`` (4 words). */
static void sk_md5_block(uint32_t *st, const uint8_t *p)
{
    uint32_t x[16];
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    int i;
    for (i = 0; i < 16; i++)
        x[i] = sk_le32(p + 4 * i);
    SK_STEP(SK_F, a, b, c, d, x[0], 0xd76aa478u, 7);
    SK_STEP(SK_F, d, a, b, c, x[1], 0xe8c7b756u, 12);
    SK_STEP(SK_F, c, d, a, b, x[2], 0x242070dbu, 17);
    SK_STEP(SK_F, b, c, d, a, x[3], 0xc1bdceeeu, 22);
    SK_STEP(SK_F, a, b, c, d, x[4], 0xf57c0fafu, 7);
    SK_STEP(SK_F, d, a, b, c, x[5], 0x4787c62au, 12);
    SK_STEP(SK_F, c, d, a, b, x[6], 0xa8304613u, 17);
    SK_STEP(SK_F, b, c, d, a, x[7], 0xfd469501u, 22);
    SK_STEP(SK_F, a, b, c, d, x[8], 0x698098d8u, 7);
    SK_STEP(SK_F, d, a, b, c, x[9], 0x8b44f7afu, 12);
    SK_STEP(SK_F, c, d, a, b, x[10], 0xffff5bb1u, 17);
    SK_STEP(SK_F, b, c, d, a, x[11], 0x895cd7beu, 22);
    SK_STEP(SK_F, a, b, c, d, x[12], 0x6b901122u, 7);
    SK_STEP(SK_F, d, a, b, c, x[13], 0xfd987193u, 12);
    SK_STEP(SK_F, c, d, a, b, x[14], 0xa679438eu, 17);
    SK_STEP(SK_F, b, c, d, a, x[15], 0x49b40821u, 22);
    SK_STEP(SK_G, a, b, c, d, x[1], 0xf61e2562u, 5);
    SK_STEP(SK_G, d, a, b, c, x[6], 0xc040b340u, 9);
    SK_STEP(SK_G, c, d, a, b, x[11], 0x265e5a51u, 14);
    SK_STEP(SK_G, b, c, d, a, x[0], 0xe9b6c7aau, 20);
    SK_STEP(SK_G, a, b, c, d, x[5], 0xd62f105du, 5);
    SK_STEP(SK_G, d, a, b, c, x[10], 0x02441453u, 9);
    SK_STEP(SK_G, c, d, a, b, x[15], 0xd8a1e681u, 14);
    SK_STEP(SK_G, b, c, d, a, x[4], 0xe7d3fbc8u, 20);
    SK_STEP(SK_G, a, b, c, d, x[9], 0x21e1cde6u, 5);
    SK_STEP(SK_G, d, a, b, c, x[14], 0xc33707d6u, 9);
    SK_STEP(SK_G, c, d, a, b, x[3], 0xf4d50d87u, 14);
    SK_STEP(SK_G, b, c, d, a, x[8], 0x455a14edu, 20);
    SK_STEP(SK_G, a, b, c, d, x[13], 0xa9e3e905u, 5);
    SK_STEP(SK_G, d, a, b, c, x[2], 0xfcefa3f8u, 9);
    SK_STEP(SK_G, c, d, a, b, x[7], 0x676f02d9u, 14);
    SK_STEP(SK_G, b, c, d, a, x[12], 0x8d2a4c8au, 20);
    SK_STEP(SK_H, a, b, c, d, x[5], 0xfffa3942u, 4);
    SK_STEP(SK_H, d, a, b, c, x[8], 0x8771f681u, 11);
    SK_STEP(SK_H, c, d, a, b, x[11], 0x6d9d6122u, 16);
    SK_STEP(SK_H, b, c, d, a, x[14], 0xfde5380cu, 23);
    SK_STEP(SK_H, a, b, c, d, x[1], 0xa4beea44u, 4);
    SK_STEP(SK_H, d, a, b, c, x[4], 0x4bdecfa9u, 11);
    SK_STEP(SK_H, c, d, a, b, x[7], 0xf6bb4b60u, 16);
    SK_STEP(SK_H, b, c, d, a, x[10], 0xbebfbc70u, 23);
    SK_STEP(SK_H, a, b, c, d, x[13], 0x289b7ec6u, 4);
    SK_STEP(SK_H, d, a, b, c, x[0], 0xeaa127fau, 11);
    SK_STEP(SK_H, c, d, a, b, x[3], 0xd4ef3085u, 16);
    SK_STEP(SK_H, b, c, d, a, x[6], 0x04881d05u, 23);
    SK_STEP(SK_H, a, b, c, d, x[9], 0xd9d4d039u, 4);
    SK_STEP(SK_H, d, a, b, c, x[12], 0xe6db99e5u, 11);
    SK_STEP(SK_H, c, d, a, b, x[15], 0x1fa27cf8u, 16);
    SK_STEP(SK_H, b, c, d, a, x[2], 0xc4ac5665u, 23);
    SK_STEP(SK_I, a, b, c, d, x[0], 0xf4292244u, 6);
    SK_STEP(SK_I, d, a, b, c, x[7], 0x432aff97u, 10);
    SK_STEP(SK_I, c, d, a, b, x[14], 0xab9423a7u, 15);
    SK_STEP(SK_I, b, c, d, a, x[5], 0xfc93a039u, 21);
    SK_STEP(SK_I, a, b, c, d, x[12], 0x655b59c3u, 6);
    SK_STEP(SK_I, d, a, b, c, x[3], 0x8f0ccc92u, 10);
    SK_STEP(SK_I, c, d, a, b, x[10], 0xffeff47du, 15);
    SK_STEP(SK_I, b, c, d, a, x[1], 0x85845dd1u, 21);
    SK_STEP(SK_I, a, b, c, d, x[8], 0x6fa87e4fu, 6);
    SK_STEP(SK_I, d, a, b, c, x[15], 0xfe2ce6e0u, 10);
    SK_STEP(SK_I, c, d, a, b, x[6], 0xa3014314u, 15);
    SK_STEP(SK_I, b, c, d, a, x[13], 0x4e0811a1u, 21);
    SK_STEP(SK_I, a, b, c, d, x[4], 0xf7537e82u, 6);
    SK_STEP(SK_I, d, a, b, c, x[11], 0xbd3af235u, 10);
    SK_STEP(SK_I, c, d, a, b, x[2], 0x2ad7d2bbu, 15);
    SK_STEP(SK_I, b, c, d, a, x[9], 0xeb86d391u, 21);
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
}

#endif /* SOKETI_DIGEST_H */
