/* MD5 (RFC 1321) and SHA-256 (FIPS 180-4) block functions.
 *
 * The two hashes of every signed HTTP API request (body_md5, the HMAC-SHA256
 * signature), used by src/soketi_impl/twins/_trigger_c.pyx, which does the padding,
 * HMAC and hex around them. Checked against hashlib by tests/test_trigger_twins.py.
 * Written from the two specifications; the loops are unrolled so that the compiler
 * keeps the working variables in registers (about twice as fast as the plain loop).
 *
 * SHA-256 has two block functions: sk_sha256_block_portable (plain C, any platform)
 * and, on x86/x86-64 with GCC or Clang, sk_sha256_block_shani, written from Intel's
 * description of the SHA extensions (SHA256RNDS2, SHA256MSG1, SHA256MSG2) and
 * compiled for that target alone (a function attribute: no global compiler flag).
 * sk_sha256_block calls through a function pointer that picks one of them once, at
 * the first call or at sk_sha256_init() (the module's import): the SHA-NI one when
 * the CPU says it has SHA, SSE4.1 and SSSE3 (CPUID; under valgrind, whose CPUID does
 * not show SHA, that is the portable one), else the portable one. Elsewhere (aarch64,
 * other compilers) only the portable one is compiled and sk_sha256_block is it.
 * sk_sha256_use_portable() lets the tests run both (tests/test_trigger_twins.py).
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

/* Add one 64-byte block ``p`` to the state ``st`` (8 words: H0..H7). */
static void sk_sha256_block_portable(uint32_t *st, const uint8_t *p)
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

/* ---- SHA-256 with the SHA extensions, and the choice between the two ---- */

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SK_SHA256_HAVE_SHANI 1
#include <immintrin.h>
#include <cpuid.h>

#define SK_SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* Four rounds: ``m`` holds W[4i..4i+3]. SHA256RNDS2 does two rounds with the state
 * split in two registers, (A, B, E, F) and (C, D, G, H) from the high lane down, and
 * W+K of the two rounds in the low 64 bits of its third operand; it returns the new
 * (A, B, E, F), the old one being the new (C, D, G, H). So the two registers swap
 * roles at each call and are back in place after two. */
#define SK_NI_QUAD(m, i) do { \
        __m128i wk_ = _mm_add_epi32((m), _mm_loadu_si128((const __m128i *)(sk_k256 + 4 * (i)))); \
        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk_); \
        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk_, 0x0E)); \
    } while (0)

/* The next four message words in place of ``m0`` (W[t-16..t-13]): SHA256MSG1 adds
 * sigma0 of W[t-15..t-12], the W[t-7..t-4] are added from m2 and m3, and SHA256MSG2
 * adds sigma1 of W[t-2], W[t-1] (in m3) and of the two words it has just made. */
#define SK_NI_NEXT(m0, m1, m2, m3) \
    (m0) = _mm_sha256msg2_epu32( \
        _mm_add_epi32(_mm_sha256msg1_epu32((m0), (m1)), _mm_alignr_epi8((m3), (m2), 4)), (m3))

/* As sk_sha256_block_portable, with the SHA extensions (the caller checks the CPU). */
SK_SHANI_TARGET static void sk_sha256_block_shani(uint32_t *st, const uint8_t *p)
{
    /* bytes 3, 2, 1, 0 of each 32-bit lane: the big-endian words of the block */
    const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    __m128i lo = _mm_loadu_si128((const __m128i *)st);        /* lanes 0..3: A B C D */
    __m128i hi = _mm_loadu_si128((const __m128i *)(st + 4));  /* E F G H */
    __m128i t = _mm_shuffle_epi32(lo, 0xB1);                   /* B A D C */
    __m128i u = _mm_shuffle_epi32(hi, 0x1B);                   /* H G F E */
    __m128i abef = _mm_alignr_epi8(t, u, 8);                   /* F E B A */
    __m128i cdgh = _mm_blend_epi16(u, t, 0xF0);                /* H G D C */
    __m128i abef0 = abef, cdgh0 = cdgh;
    __m128i m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), bswap);
    __m128i m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16)), bswap);
    __m128i m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 32)), bswap);
    __m128i m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 48)), bswap);
    int i;
    SK_NI_QUAD(m0, 0);
    SK_NI_QUAD(m1, 1);
    SK_NI_QUAD(m2, 2);
    SK_NI_QUAD(m3, 3);
    for (i = 4; i < 16; i += 4) {
        SK_NI_NEXT(m0, m1, m2, m3);
        SK_NI_QUAD(m0, i);
        SK_NI_NEXT(m1, m2, m3, m0);
        SK_NI_QUAD(m1, i + 1);
        SK_NI_NEXT(m2, m3, m0, m1);
        SK_NI_QUAD(m2, i + 2);
        SK_NI_NEXT(m3, m0, m1, m2);
        SK_NI_QUAD(m3, i + 3);
    }
    abef = _mm_add_epi32(abef, abef0);
    cdgh = _mm_add_epi32(cdgh, cdgh0);
    t = _mm_shuffle_epi32(abef, 0x1B);                         /* A B E F */
    u = _mm_shuffle_epi32(cdgh, 0xB1);                         /* G H C D */
    _mm_storeu_si128((__m128i *)st, _mm_blend_epi16(t, u, 0xF0));        /* A B C D */
    _mm_storeu_si128((__m128i *)(st + 4), _mm_alignr_epi8(u, t, 8));     /* E F G H */
}

/* CPUID leaf 1 (ECX: SSSE3 bit 9, SSE4.1 bit 19) and leaf 7 (EBX: SHA bit 29). */
static inline int sk_cpuid_has_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19)))
        return 0;
    if (__get_cpuid_max(0, 0) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 29)) != 0;
}

static int sk_cpu_has_shani(void)
{
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    /* GCC knows "sha" from 11 on; Clang only recently: CPUID itself there */
    __builtin_cpu_init();
    return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1")
        && __builtin_cpu_supports("ssse3");
#else
    return sk_cpuid_has_shani();
#endif
}

typedef void (*sk_sha256_block_fn)(uint32_t *st, const uint8_t *p);
static void sk_sha256_block_first(uint32_t *st, const uint8_t *p);
/* the block function in use; the first call (or sk_sha256_init) sets it */
static sk_sha256_block_fn sk_sha256_block_impl = sk_sha256_block_first;

/* The best block function for this CPU, set once; 1 when it is the SHA-NI one. */
static int sk_sha256_init(void)
{
    sk_sha256_block_impl = sk_cpu_has_shani() ? sk_sha256_block_shani : sk_sha256_block_portable;
    return sk_sha256_block_impl == sk_sha256_block_shani;
}

static void sk_sha256_block_first(uint32_t *st, const uint8_t *p)
{
    sk_sha256_init();
    sk_sha256_block_impl(st, p);
}

/* Add one 64-byte block ``p`` to the state ``st`` (8 words: H0..H7). */
static inline void sk_sha256_block(uint32_t *st, const uint8_t *p)
{
    sk_sha256_block_impl(st, p);
}

/* 1 when the SHA-NI block function is in use (after the first block or sk_sha256_init). */
static inline int sk_sha256_is_shani(void)
{
    return sk_sha256_block_impl == sk_sha256_block_shani;
}

/* For the tests: the portable function (flag 1), or back to the best one (flag 0). */
static inline void sk_sha256_use_portable(int flag)
{
    if (flag)
        sk_sha256_block_impl = sk_sha256_block_portable;
    else
        sk_sha256_init();
}

#else /* not x86 with GCC/Clang: the portable function only */

static inline void sk_sha256_block(uint32_t *st, const uint8_t *p)
{
    sk_sha256_block_portable(st, p);
}

static inline int sk_sha256_init(void) { return 0; }
static inline int sk_sha256_is_shani(void) { return 0; }
static inline void sk_sha256_use_portable(int flag) { (void)flag; }

#endif

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
