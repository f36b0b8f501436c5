/*
 * loadclient: a native Pusher load client for the end-to-end benchmarks.
 *
 * One thread, epoll, non-blocking sockets, many WebSocket connections and
 * HTTP/1.1 keep-alive publisher connections.  Publisher and receivers live in
 * this one process, so a CLOCK_MONOTONIC timestamp written into the payload
 * at publish time gives the end-to-end latency on receipt.  JSON is handled
 * by string search only: the client looks for the markers it put in itself.
 *
 * Modes (first argument):
 *   fanout    N subscribers on one public channel; events published through
 *             POST /apps/{id}/events (signed), K requests in flight, either at
 *             saturation (--rate 0) or at a fixed rate.
 *   ping      N connections doing pusher:ping -> pusher:pong round trips.
 *   conns     open N connections (--inflight handshakes at a time), subscribe
 *             each, print a "ready" line, hold until stdin has a line (or
 *             --hold seconds), close, print results.  With --channels N each
 *             connection subscribes to a channel of its own; with the default
 *             (1) all share one channel, where a server whose subscribe costs
 *             O(subscribers), as soketi 1.6.1's does, becomes quadratic.
 *   presence  N users join one presence channel, then half of them leave.
 *   client    N members of a private channel; member 0 sends client events
 *             at saturation (--window messages not yet fully delivered).
 *
 * A connection is "in flight" from its connect() until its first answer:
 * pusher_internal:subscription_succeeded in the modes that subscribe on
 * connection_established (fanout, conns, client), connection_established otherwise.
 *
 * fanout (and conns) with --channels C: subscriber i joins channel "<channel>-<i mod C>"
 * and publish number s goes to "<channel>-<s mod C>" (round-robin), so every
 * publish reaches conns/C subscribers.  With --ramp F1,F2,... it is a rate
 * search over one set of connections: first --duration seconds at saturation
 * (S publishes/s), then one --step-duration step at each rate F*S, stopping at
 * the first rate that breaks a bound twice in a row (p99 above --p99-bound ms,
 * a delivery lost or refused, or less than 97% of the offered rate delivered),
 * then --bisect halvings between the last good rate and that one.  In a
 * step the latency runs from the publish's scheduled time, not its send time,
 * so a client that falls behind the schedule shows as latency (open loop).
 *
 * Output: one JSON line on stdout (plus the "ready" line in conns mode).
 * Build: gcc -O2 -o loadclient loadclient.c -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ------------------------------------------------------------------ config */

enum { M_FANOUT, M_PING, M_CONNS, M_PRESENCE, M_CLIENT };

static struct {
    int mode;
    const char *host;
    int port;
    const char *key, *secret, *app_id;
    const char *channel;
    int conns;          /* WebSocket connections */
    int inflight;       /* handshakes in flight while connecting */
    int http;           /* publisher HTTP connections (= requests in flight) */
    int window;         /* publishes not yet fully delivered */
    double rate;        /* publishes per second, 0 = saturation */
    double duration;    /* measured seconds */
    double warmup;      /* unmeasured seconds before */
    double timeout;     /* cap on every waiting phase */
    double hold;        /* conns mode: max seconds to hold */
    int payload;        /* payload size in bytes (approximate) */
    int channels;       /* fanout: channels the subscribers and publishes are spread over */
    const char *ramp;   /* fanout: comma-separated fractions of saturation, or NULL */
    double step_duration; /* ramp: measured seconds per step */
    double p99_bound;   /* ramp: a step with a higher p99 (ms) is not sustainable */
    int bisect;         /* ramp: halvings between the last good and the first bad rate */
} cfg = {
    .mode = M_FANOUT, .host = "127.0.0.1", .port = 6001, .key = "app-key",
    .secret = "app-secret", .app_id = "app-id", .channel = NULL, .conns = 1000,
    .inflight = 100, .http = 8, .window = 64, .rate = 0, .duration = 3,
    .warmup = 0.5, .timeout = 30, .hold = 30, .payload = 64, .channels = 1,
    .ramp = NULL, .step_duration = 1.5, .p99_bound = 10, .bisect = 2,
};

/* ------------------------------------------------------------------ time */

static inline uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadclient: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ------------------------------------------------------------------ histogram
 * 1 us buckets up to 100 ms, then 1 ms buckets up to 100 s. */
#define H_FINE 100000
#define H_COARSE 100000
static uint32_t hist[H_FINE + H_COARSE + 1];
static uint64_t h_count, h_max, h_sum;

static void h_add(uint64_t us) {
    size_t b = us < H_FINE ? us : H_FINE + (us - H_FINE) / 1000;
    if (b > H_FINE + H_COARSE) b = H_FINE + H_COARSE;
    hist[b]++;
    h_count++;
    h_sum += us;
    if (us > h_max) h_max = us;
}

static double h_pct(double p) {
    if (!h_count) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h_count);
    if (want >= h_count) want = h_count - 1;
    uint64_t seen = 0;
    for (size_t b = 0; b <= H_FINE + H_COARSE; b++) {
        seen += hist[b];
        if (seen > want) return b < H_FINE ? (double)b : (double)H_FINE + (double)(b - H_FINE) * 1000.0;
    }
    return (double)h_max;
}

/* ------------------------------------------------------------------ crypto */

static void hexify(const unsigned char *in, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = 0;
}

static void hmac_hex(const char *msg, size_t n, char out[65]) {
    unsigned char md[32];
    unsigned int len = 32;
    HMAC(EVP_sha256(), cfg.secret, (int)strlen(cfg.secret), (const unsigned char *)msg, n, md, &len);
    hexify(md, 32, out);
}

static void md5_hex(const char *msg, size_t n, char out[33]) {
    unsigned char md[16];
    unsigned int len = 16;
    EVP_Digest(msg, n, md, &len, EVP_md5(), NULL);
    hexify(md, 16, out);
}

/* ------------------------------------------------------------------ connections */

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };
enum { K_WS, K_HTTP };

typedef struct conn {
    int fd, idx, kind, state;
    char *rbuf; size_t rlen, rcap;
    char *wbuf; size_t wlen, woff, wcap;
    int epout;                 /* EPOLLOUT armed */
    int established, subscribed;
    char socket_id[40];
    int view;                  /* presence: members this connection believes in */
    int left;                  /* presence: has unsubscribed */
    uint64_t ping_sent;        /* ping mode: time of outstanding ping, 0 = none */
    int busy;                  /* http: request outstanding */
    uint64_t req_sent;
} conn;

static int ep;
static conn *ws;               /* cfg.conns WebSocket connections */
static conn *hc;               /* cfg.http HTTP connections */
static struct sockaddr_in addr;

/* counters */
static uint64_t n_established, n_subscribed, n_errors, n_closed, n_connect_fail;
static uint64_t n_deliveries, n_deliveries_window, n_member_events;
static uint64_t n_pongs, n_pongs_window;
static uint64_t n_pub_sent, n_pub_ok, n_pub_bad, n_http_reconnects, n_lost;
static uint64_t t_meas_start, t_meas_end;
static int measuring_done;
static char first_error[300];

static void arm(conn *c, int out) {
    if (c->epout == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = out;
}

static void conn_close(conn *c) {
    if (c->state == ST_CLOSED) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = ST_CLOSED;
    c->rlen = c->wlen = c->woff = 0;
    c->epout = 0;
    if (c->kind == K_WS) n_closed++;
}

static int conn_open(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->rlen = c->wlen = c->woff = 0;
    c->epout = 1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        n_connect_fail++;
        conn_close(c);
        return -1;
    }
    return 0;
}

static void wbuf_append(conn *c, const char *p, size_t n) {
    if (c->wlen + n > c->wcap) {
        if (c->woff) {
            memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
            c->wlen -= c->woff;
            c->woff = 0;
        }
        if (c->wlen + n > c->wcap) {
            c->wcap = (c->wlen + n) * 2;
            c->wbuf = realloc(c->wbuf, c->wcap);
        }
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += n;
}

static void conn_flush(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t w = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            conn_close(c);
            return;
        }
        c->woff += (size_t)w;
    }
    if (c->woff == c->wlen) {
        c->woff = c->wlen = 0;
        arm(c, 0);
    } else {
        arm(c, 1);
    }
}

static void conn_send(conn *c, const char *p, size_t n) {
    if (c->state == ST_CLOSED) return;
    if (c->wlen == 0 && c->state != ST_CONNECTING) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) { conn_close(c); return; }
            w = 0;
        }
        if ((size_t)w == n) return;
        p += w;
        n -= (size_t)w;
    }
    wbuf_append(c, p, n);
    if (c->state != ST_CONNECTING) arm(c, 1);
}

/* One masked client text frame. */
static void ws_send(conn *c, const char *payload, size_t n, int opcode) {
    char stackbuf[4096];
    char *f = n + 14 <= sizeof stackbuf ? stackbuf : malloc(n + 14);
    size_t h = 0;
    f[h++] = (char)(0x80 | opcode);
    if (n < 126) {
        f[h++] = (char)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = (char)(0x80 | 126);
        f[h++] = (char)(n >> 8);
        f[h++] = (char)(n & 255);
    } else {
        f[h++] = (char)(0x80 | 127);
        for (int i = 7; i >= 0; i--) f[h++] = (char)((uint64_t)n >> (8 * i));
    }
    static const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) f[h + i] = (char)(payload[i] ^ mask[i & 3]);
    conn_send(c, f, h + n);
    if (f != stackbuf) free(f);
}

static void ws_send_str(conn *c, const char *s) { ws_send(c, s, strlen(s), 1); }

/* ------------------------------------------------------------------ scenario state */

#define RING 8192
static uint32_t ring_cnt[RING];
static uint64_t ring_time[RING];
static uint64_t pub_seq, done_seq;     /* next seq to publish, first seq not finished */
static int expected_per_msg;           /* recipients of one message */
static int publishing;
static double next_due;                /* rate mode: time of the next publish (us) */
static uint64_t stamp_due;             /* ramp: scheduled time of the publish being sent */
static char pad[70000];

static uint64_t parse_u64(const char *p, const char *end) {
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

static void finish_seq(uint64_t now) {
    while (done_seq < pub_seq) {
        size_t s = done_seq % RING;
        if (ring_cnt[s] >= (uint32_t)expected_per_msg) {
        } else if (now - ring_time[s] > 2000000u) {
            n_lost += (uint64_t)expected_per_msg - ring_cnt[s];
        } else {
            break;
        }
        ring_cnt[s] = 0;
        done_seq++;
    }
}

static void on_delivery(const char *p, size_t n, uint64_t now) {
    const char *ts = memmem(p, n, "ts=", 3);
    if (!ts) return;
    const char *end = p + n;
    uint64_t t = parse_u64(ts + 3, end);
    const char *sq = memmem(ts, (size_t)(end - ts), "seq=", 4);
    uint64_t seq = sq ? parse_u64(sq + 4, end) : 0;
    n_deliveries++;
    if (now >= t_meas_start && now <= t_meas_end && t_meas_start) {
        n_deliveries_window++;
        h_add(now >= t ? now - t : 0);
    }
    if (seq >= done_seq && seq < pub_seq) {
        ring_cnt[seq % RING]++;
        if (seq == done_seq) finish_seq(now);
    }
}

/* Body of a publish carrying the timestamp and the sequence number. */
static size_t make_data(char *out, size_t cap, uint64_t seq) {
    uint64_t ts = stamp_due ? stamp_due : now_us();
    int n = snprintf(out, cap, "ts=%llu;seq=%llu;", (unsigned long long)ts, (unsigned long long)seq);
    int want = cfg.payload > n ? cfg.payload - n : 0;
    if ((size_t)(n + want) >= cap) want = (int)cap - n - 1;
    memcpy(out + n, pad, (size_t)want);
    out[n + want] = 0;
    return (size_t)(n + want);
}

static void http_publish(conn *c) {
    static char data[70100], body[70400], sig_str[72000], req[75000];
    uint64_t seq = pub_seq;
    make_data(data, sizeof data, seq);
    char chan[256];
    if (cfg.channels > 1) snprintf(chan, sizeof chan, "%s-%llu", cfg.channel, (unsigned long long)(seq % (uint64_t)cfg.channels));
    else snprintf(chan, sizeof chan, "%s", cfg.channel);
    int bl = snprintf(body, sizeof body, "{\"name\":\"bench\",\"channel\":\"%s\",\"data\":\"%s\"}", chan, data);
    char md5[33], sig[65];
    md5_hex(body, (size_t)bl, md5);
    long ts = (long)time(NULL);
    int ql = snprintf(sig_str, sizeof sig_str,
                      "POST\n/apps/%s/events\nauth_key=%s&auth_timestamp=%ld&auth_version=1.0&body_md5=%s",
                      cfg.app_id, cfg.key, ts, md5);
    hmac_hex(sig_str, (size_t)ql, sig);
    int rl = snprintf(req, sizeof req,
                      "POST /apps/%s/events?auth_key=%s&auth_timestamp=%ld&auth_version=1.0&body_md5=%s&auth_signature=%s HTTP/1.1\r\n"
                      "Host: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                      cfg.app_id, cfg.key, ts, md5, sig, cfg.host, cfg.port, bl, body);
    ring_cnt[seq % RING] = 0;
    ring_time[seq % RING] = now_us();
    pub_seq++;
    n_pub_sent++;
    c->busy = 1;
    c->req_sent = now_us();
    conn_send(c, req, (size_t)rl);
}

static void client_publish(conn *c) {
    char data[70100], msg[70400];
    uint64_t seq = pub_seq;
    make_data(data, sizeof data, seq);
    int ml = snprintf(msg, sizeof msg, "{\"event\":\"client-bench\",\"channel\":\"%s\",\"data\":\"%s\"}", cfg.channel, data);
    ring_cnt[seq % RING] = 0;
    ring_time[seq % RING] = now_us();
    pub_seq++;
    n_pub_sent++;
    ws_send(c, msg, (size_t)ml, 1);
}

/* Publish whatever the window, the rate and the free connections allow. */
static void pump(uint64_t now) {
    if (!publishing) return;
    finish_seq(now);
    int window = cfg.rate > 0 ? RING - 16 : cfg.window;
    if (cfg.mode == M_CLIENT) {
        conn *s = &ws[0];
        while ((int)(pub_seq - done_seq) < window && s->wlen == 0) {
            if (cfg.rate > 0) {
                if ((double)now < next_due) break;
                next_due += 1e6 / cfg.rate;
            }
            client_publish(s);
        }
        return;
    }
    for (int i = 0; i < cfg.http; i++) {
        conn *c = &hc[i];
        if (c->state != ST_OPEN || c->busy) continue;
        if ((int)(pub_seq - done_seq) >= window) break;
        if (cfg.rate > 0) {
            if ((double)now < next_due) break;
            if (cfg.ramp) stamp_due = (uint64_t)next_due;
            next_due += 1e6 / cfg.rate;
        }
        http_publish(c);
        stamp_due = 0;
    }
}

static void send_subscribe(conn *c) {
    char msg[1024], chbuf[256];
    const char *ch = cfg.channel;
    if (cfg.channels > 1) {
        snprintf(chbuf, sizeof chbuf, "%s-%d", cfg.channel, c->idx % cfg.channels);
        ch = chbuf;
    }
    if (strncmp(ch, "presence-", 9) == 0) {
        char cd[128], sigin[512], sig[65];
        snprintf(cd, sizeof cd, "{\"user_id\":\"u%d\",\"user_info\":{}}", c->idx);
        int l = snprintf(sigin, sizeof sigin, "%s:%s:%s", c->socket_id, ch, cd);
        hmac_hex(sigin, (size_t)l, sig);
        snprintf(msg, sizeof msg,
                 "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\",\"auth\":\"%s:%s\","
                 "\"channel_data\":\"{\\\"user_id\\\":\\\"u%d\\\",\\\"user_info\\\":{}}\"}}",
                 ch, cfg.key, sig, c->idx);
    } else if (strncmp(ch, "private-", 8) == 0) {
        char sigin[512], sig[65];
        int l = snprintf(sigin, sizeof sigin, "%s:%s", c->socket_id, ch);
        hmac_hex(sigin, (size_t)l, sig);
        snprintf(msg, sizeof msg,
                 "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\",\"auth\":\"%s:%s\"}}",
                 ch, cfg.key, sig);
    } else {
        snprintf(msg, sizeof msg, "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\"}}", ch);
    }
    ws_send_str(c, msg);
}

static const char PING_MSG[] = "{\"event\":\"pusher:ping\",\"data\":{}}";

static int auto_subscribe;   /* subscribe on connection_established */

static void on_text(conn *c, const char *p, size_t n, uint64_t now) {
    if (memmem(p, n, "ts=", 3)) {
        on_delivery(p, n, now);
        return;
    }
    if (!c->established && memmem(p, n, "connection_established", 22)) {
        const char *s = memmem(p, n, "socket_id", 9);
        if (s) {
            const char *end = p + n;
            s += 9;
            while (s < end && !isdigit((unsigned char)*s)) s++;
            size_t k = 0;
            while (s < end && (isdigit((unsigned char)*s) || *s == '.') && k < sizeof c->socket_id - 1)
                c->socket_id[k++] = *s++;
            c->socket_id[k] = 0;
        }
        c->established = 1;
        n_established++;
        if (auto_subscribe) send_subscribe(c);
        return;
    }
    if (memmem(p, n, "pusher:ping", 11)) {
        /* A server's activity check on an idle connection (conns mode holds them):
         * answer as pusher-js does. */
        static const char PONG_MSG[] = "{\"event\":\"pusher:pong\",\"data\":{}}";
        ws_send(c, PONG_MSG, sizeof PONG_MSG - 1, 1);
        return;
    }
    if (memmem(p, n, "pusher:pong", 11)) {
        n_pongs++;
        if (c->ping_sent) {
            if (now >= t_meas_start && now <= t_meas_end && t_meas_start) {
                n_pongs_window++;
                h_add(now - c->ping_sent);
            }
            c->ping_sent = 0;
            if (!measuring_done) {
                c->ping_sent = now_us();
                ws_send(c, PING_MSG, sizeof PING_MSG - 1, 1);
            }
        }
        return;
    }
    if (memmem(p, n, "subscription_succeeded", 22)) {
        if (!c->subscribed) {
            c->subscribed = 1;
            n_subscribed++;
        }
        const char *cnt = memmem(p, n, "count", 5);
        if (cnt) {
            const char *end = p + n;
            cnt += 5;
            while (cnt < end && !isdigit((unsigned char)*cnt)) cnt++;
            c->view += (int)parse_u64(cnt, end);
        }
        return;
    }
    if (memmem(p, n, "member_added", 12)) {
        c->view++;
        n_member_events++;
        return;
    }
    if (memmem(p, n, "member_removed", 14)) {
        c->view--;
        n_member_events++;
        return;
    }
    if (memmem(p, n, "error", 5)) {
        n_errors++;
        if (!first_error[0]) snprintf(first_error, sizeof first_error, "%.*s", (int)(n < 250 ? n : 250), p);
    }
}

/* Parse complete WebSocket frames from the read buffer. */
static void ws_process(conn *c, uint64_t now) {
    size_t off = 0;
    if (c->state == ST_HANDSHAKE) {
        char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!e) return;
        if (c->rlen < 12 || memcmp(c->rbuf + 9, "101", 3) != 0) {
            n_errors++;
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "handshake: %.*s", (int)(c->rlen < 200 ? c->rlen : 200), c->rbuf);
            conn_close(c);
            return;
        }
        c->state = ST_OPEN;
        off = (size_t)(e - c->rbuf) + 4;
    }
    while (c->state == ST_OPEN) {
        size_t avail = c->rlen - off;
        if (avail < 2) break;
        unsigned char *f = (unsigned char *)c->rbuf + off;
        int opcode = f[0] & 15;
        uint64_t len = f[1] & 127;
        size_t h = 2;
        if (len == 126) {
            if (avail < 4) break;
            len = ((uint64_t)f[2] << 8) | f[3];
            h = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | f[2 + i];
            h = 10;
        }
        if (f[1] & 0x80) h += 4; /* servers do not mask, but be lenient */
        if (avail < h + len) break;
        const char *pl = (const char *)f + h;
        if (opcode == 1 || opcode == 0) {
            on_text(c, pl, (size_t)len, now);
        } else if (opcode == 9) {
            ws_send(c, pl, (size_t)len, 10);
        } else if (opcode == 8) {
            conn_close(c);
            return;
        }
        off += h + (size_t)len;
    }
    if (c->state == ST_CLOSED) return;
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
}

static int hdr_int(const char *head, size_t n, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl < n; i++) {
        if ((i == 0 || head[i - 1] == '\n') && strncasecmp(head + i, name, nl) == 0) {
            const char *p = head + i + nl;
            while (*p == ' ' || *p == ':') p++;
            return atoi(p);
        }
    }
    return -1;
}

static void http_process(conn *c, uint64_t now) {
    for (;;) {
        char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!e) return;
        size_t hl = (size_t)(e - c->rbuf) + 4;
        int cl = hdr_int(c->rbuf, hl, "content-length");
        size_t total;
        if (cl >= 0) {
            total = hl + (size_t)cl;
            if (c->rlen < total) return;
        } else {
            char *z = memmem(c->rbuf + hl, c->rlen - hl, "0\r\n\r\n", 5);
            if (!z) return;
            total = (size_t)(z - c->rbuf) + 5;
        }
        int ok = c->rlen >= 12 && memcmp(c->rbuf + 9, "200", 3) == 0;
        if (ok) n_pub_ok++;
        else {
            n_pub_bad++;
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "publish: %.*s", (int)(c->rlen < 250 ? c->rlen : 250), c->rbuf);
        }
        int do_close = memmem(c->rbuf, hl, "onnection: close", 16) != NULL;
        memmove(c->rbuf, c->rbuf + total, c->rlen - total);
        c->rlen -= total;
        c->busy = 0;
        if (do_close) {
            conn_close(c);
            n_http_reconnects++;
            conn_open(c);
            return;
        }
        (void)now;
    }
}

static void on_connected(conn *c) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        n_connect_fail++;
        if (!first_error[0]) snprintf(first_error, sizeof first_error, "connect: %s", strerror(err));
        conn_close(c);
        return;
    }
    if (c->kind == K_HTTP) {
        c->state = ST_OPEN;
        c->busy = 0;
    } else {
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET /app/%s?protocol=7&client=js&version=8.6.0&flash=false HTTP/1.1\r\n"
                         "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         cfg.key, cfg.host, cfg.port);
        c->state = ST_HANDSHAKE;
        conn_send(c, req, (size_t)n);
    }
    conn_flush(c);
}

static void on_event(conn *c, uint32_t evs, uint64_t now) {
    if (c->state == ST_CLOSED) return;
    if (c->state == ST_CONNECTING) {
        if (evs & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    if (evs & EPOLLOUT) conn_flush(c);
    if (c->state == ST_CLOSED) return;
    if (evs & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
            if (c->rcap - c->rlen < 8192) {
                c->rcap = c->rcap ? c->rcap * 2 : 16384;
                if (c->rcap < c->rlen + 16384) c->rcap = c->rlen + 16384;
                c->rbuf = realloc(c->rbuf, c->rcap);
            }
            ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
            if (r > 0) {
                c->rlen += (size_t)r;
                if ((size_t)r < c->rcap - c->rlen + (size_t)r) break; /* short read: drained */
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
            /* EOF or error */
            if (c->kind == K_HTTP) {
                conn_close(c);
                c->busy = 0;
                n_http_reconnects++;
                if (publishing) conn_open(c);
            } else {
                if (c->rlen) ws_process(c, now);
                conn_close(c);
            }
            return;
        }
        if (c->kind == K_HTTP) http_process(c, now);
        else ws_process(c, now);
        /* Keep read buffers small for idle connections (conns mode holds 10k). */
        if (c->rlen == 0 && c->rcap > 65536) {
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = 0;
        }
    }
}

/* ------------------------------------------------------------------ loop */

static struct epoll_event events[1024];
static volatile sig_atomic_t interrupted;

static void poll_once(int timeout_ms) {
    int n = epoll_wait(ep, events, 1024, timeout_ms);
    /* A fresh timestamp per ready socket: working through a batch of 1000 sockets
     * takes long enough to bias the latency of the last ones otherwise. */
    for (int i = 0; i < n; i++) on_event(events[i].data.ptr, events[i].events, now_us());
    pump(now_us());
}

typedef int (*cond_fn)(void);

/* Run the loop until cond() or the deadline; returns 1 when cond() held. */
static int run_until(cond_fn cond, uint64_t deadline) {
    while (!interrupted) {
        if (cond && cond()) return 1;
        uint64_t now = now_us();
        if (now >= deadline) return cond ? cond() : 1;
        uint64_t left = (deadline - now) / 1000;
        int to = left > 5 ? 5 : (int)left;
        if (publishing && cfg.rate > 0) to = 1;
        poll_once(to);
    }
    return 0;
}

/* Open the WebSocket connections, at most cfg.inflight handshakes at a time. */
static int next_to_open;
static uint64_t t_conn_start, t_all_established, t_all_subscribed;

static int all_established(void) {
    /* With auto_subscribe a connection stays in flight until its subscription
     * succeeded: the subscribe is part of opening it, and counting only up to
     * connection_established would let subscribes pile up beyond the window. */
    uint64_t done = auto_subscribe ? n_subscribed : n_established;
    uint64_t pending = (uint64_t)next_to_open - done - n_closed;
    while (next_to_open < cfg.conns && pending < (uint64_t)cfg.inflight) {
        conn_open(&ws[next_to_open++]);
        pending++;
    }
    return n_established + n_closed >= (uint64_t)cfg.conns;
}
static int all_subscribed(void) { return n_subscribed + n_closed >= (uint64_t)cfg.conns; }

static int connect_all(int subscribe) {
    auto_subscribe = subscribe;
    t_conn_start = now_us();
    uint64_t deadline = t_conn_start + (uint64_t)(cfg.timeout * 1e6);
    int ok = run_until(all_established, deadline);
    t_all_established = now_us();
    if (ok && subscribe) ok = run_until(all_subscribed, deadline);
    t_all_subscribed = now_us();
    return ok && n_closed == 0;
}

/* ------------------------------------------------------------------ output */

static char out[16384];
static size_t outl;
static void jput(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    outl += (size_t)vsnprintf(out + outl, sizeof out - outl, fmt, ap);
    va_end(ap);
}

static void put_hist(void) {
    jput(",\"lat_samples\":%llu,\"lat_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f,\"max\":%llu,\"mean\":%.1f}",
         (unsigned long long)h_count, h_pct(50), h_pct(90), h_pct(99), h_pct(99.9),
         (unsigned long long)h_max, h_count ? (double)h_sum / (double)h_count : 0.0);
}

static void put_common(int ok) {
    jput(",\"ok\":%s,\"conns\":%d,\"established\":%llu,\"closed\":%llu,\"connect_fail\":%llu,\"errors\":%llu",
         ok ? "true" : "false", cfg.conns, (unsigned long long)n_established, (unsigned long long)n_closed,
         (unsigned long long)n_connect_fail, (unsigned long long)n_errors);
    if (first_error[0]) {
        jput(",\"first_error\":\"");
        for (const char *p = first_error; *p; p++) {
            if (*p == '"' || *p == '\\') jput("\\%c", *p);
            else if ((unsigned char)*p < 32) jput(" ");
            else jput("%c", *p);
        }
        jput("\"");
    }
}

/* Time this process spent runnable but waiting for a CPU (ns) and the number of
 * times it was scheduled, from schedstat: the honest measure of other work taking
 * our core on a shared machine. */
static void run_delay(uint64_t *wait_ns, uint64_t *slices) {
    FILE *f = fopen("/proc/self/schedstat", "r");
    unsigned long long run = 0, wait = 0, n = 0;
    if (f) {
        if (fscanf(f, "%llu %llu %llu", &run, &wait, &n) != 3) wait = n = 0;
        fclose(f);
    }
    *wait_ns = wait;
    *slices = n;
}

static const char *mode_name(void) {
    static const char *n[] = {"fanout", "ping", "conns", "presence", "client"};
    return n[cfg.mode];
}

/* ------------------------------------------------------------------ scenarios */

static int publish_done(void) {
    if (done_seq < pub_seq) return 0;
    for (int i = 0; hc && i < cfg.http; i++)
        if (hc[i].busy && hc[i].state != ST_CLOSED) return 0;
    return 1;
}

static int run_publish(void) {
    /* fanout and client: the measured window, then a bounded drain. */
    uint64_t t0 = now_us();
    t_meas_start = t0 + (uint64_t)(cfg.warmup * 1e6);
    t_meas_end = t_meas_start + (uint64_t)(cfg.duration * 1e6);
    next_due = (double)t0;
    publishing = 1;
    run_until(NULL, t_meas_end);
    publishing = 0;
    measuring_done = 1;
    uint64_t pub_end_seq = pub_seq;
    run_until(publish_done, now_us() + 3000000u);
    finish_seq(now_us() + 10000000u); /* count what never arrived as lost */
    (void)pub_end_seq;
    return 1;
}

static int http_all_open(void) {
    for (int i = 0; i < cfg.http; i++)
        if (hc[i].state != ST_OPEN) return 0;
    return 1;
}

static int pings_done(void) {
    for (int i = 0; i < cfg.conns; i++)
        if (ws[i].ping_sent && ws[i].state == ST_OPEN) return 0;
    return 1;
}

static int presence_target;
static int presence_joined(void) {
    if (n_subscribed + n_closed < (uint64_t)cfg.conns) return 0;
    for (int i = 0; i < cfg.conns; i++)
        if (ws[i].state == ST_OPEN && !ws[i].left && ws[i].view != presence_target) return 0;
    return 1;
}

static int stdin_line(void) {
    struct pollfd p = {.fd = 0, .events = POLLIN};
    if (poll(&p, 1, 0) > 0) {
        char b[256];
        ssize_t r = read(0, b, sizeof b);
        (void)r;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ ramp (rate search) */

typedef struct {
    double offered, delivered, p50, p99, max;
    uint64_t lost, bad, samples;
    double client_cpu;         /* this process's CPU seconds per wall second during the step */
    int good;
} step_t;

#define MAX_STEPS 32
static step_t steps[MAX_STEPS + 1];   /* [0] = saturation */
static int n_steps;

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* One publishing phase at cfg.rate (0 = saturation) with fresh counters. */
static void run_step(step_t *st, double rate, double duration) {
    memset(hist, 0, sizeof hist);
    h_count = h_max = h_sum = 0;
    n_deliveries_window = 0;
    n_lost = 0;
    uint64_t bad0 = n_pub_bad;
    measuring_done = 0;
    cfg.rate = rate;
    cfg.duration = duration;
    double cpu0 = self_cpu_s();
    uint64_t w0 = now_us();
    run_publish();
    double wall = (double)(now_us() - w0) / 1e6;
    st->client_cpu = wall > 0 ? (self_cpu_s() - cpu0) / wall : 0;
    st->offered = rate;
    st->delivered = expected_per_msg ? (double)n_deliveries_window / duration / expected_per_msg : 0;
    st->p50 = h_pct(50);
    st->p99 = h_pct(99);
    st->max = (double)h_max;
    st->samples = h_count;
    st->lost = n_lost;
    st->bad = n_pub_bad - bad0;
    st->good = st->lost == 0 && st->bad == 0 && h_count > 0 && st->p99 <= cfg.p99_bound * 1000.0 &&
               (rate <= 0 || st->delivered >= 0.97 * rate);
}

/* One step at `rate`; a step that breaks a bound is measured once more (a few ms
 * of another process on a shared core is enough to break a p99 bound once). */
static int try_rate(double rate) {
    for (int attempt = 0; attempt < 2 && n_steps <= MAX_STEPS && !interrupted; attempt++) {
        step_t *st = &steps[n_steps++];
        run_step(st, rate, cfg.step_duration);
        if (st->good) return 1;
    }
    return 0;
}

/* Saturation first, then each fraction of it until a rate breaks a bound (twice),
 * then --bisect halvings of the interval between the last good and that rate. */
static void run_ramp(void) {
    double sat_duration = cfg.duration;
    run_step(&steps[0], 0, sat_duration);
    n_steps = 1;
    double sat = steps[0].delivered, good = 0, bad = 0;
    const char *p = cfg.ramp;
    while (p && *p && sat > 0 && !interrupted) {
        char *end;
        double f = strtod(p, &end);
        if (end == p) break;
        p = *end == ',' ? end + 1 : end;
        if (f <= 0) continue;
        if (!try_rate(f * sat)) {
            bad = f * sat;
            break;
        }
        good = f * sat;
    }
    for (int i = 0; i < cfg.bisect && bad > 0 && !interrupted; i++) {
        double mid = (good + bad) / 2;
        if (try_rate(mid)) good = mid;
        else bad = mid;
    }
    cfg.duration = sat_duration;
}

static void put_ramp(void) {
    int best = -1;
    for (int i = 1; i < n_steps; i++)
        if (steps[i].good && (best < 0 || steps[i].offered > steps[best].offered)) best = i;
    /* deliveries and published: the whole run (saturation, every step, warm-ups), the
     * count the runner divides the server's CPU over the run by */
    jput(",\"channels\":%d,\"p99_bound_ms\":%g,\"saturation_publishes_per_s\":%.1f,\"saturation_p99_us\":%.0f,"
         "\"saturation_client_cpu\":%.3f,\"deliveries\":%llu,\"published\":%llu,\"steps\":[",
         cfg.channels, cfg.p99_bound, steps[0].delivered, steps[0].p99, steps[0].client_cpu,
         (unsigned long long)n_deliveries, (unsigned long long)n_pub_sent);
    for (int i = 1; i < n_steps; i++) {
        step_t *s = &steps[i];
        jput("%s{\"offered\":%.1f,\"publishes_per_s\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f,\"max_us\":%.0f,"
             "\"samples\":%llu,\"lost\":%llu,\"bad\":%llu,\"client_cpu\":%.3f,\"good\":%s}",
             i > 1 ? "," : "", s->offered, s->delivered, s->p50, s->p99, s->max, (unsigned long long)s->samples,
             (unsigned long long)s->lost, (unsigned long long)s->bad, s->client_cpu, s->good ? "true" : "false");
    }
    jput("]");
    if (best > 0) {
        step_t *s = &steps[best];
        jput(",\"sustained_publishes_per_s\":%.1f,\"sustained_offered\":%.1f,\"sustained_deliveries_per_s\":%.1f,"
             "\"lat_us\":{\"p50\":%.0f,\"p99\":%.0f,\"max\":%.0f},\"lost\":%llu",
             s->delivered, s->offered, s->delivered * expected_per_msg, s->p50, s->p99, s->max,
             (unsigned long long)s->lost);
    } else {
        jput(",\"sustained_publishes_per_s\":0");
    }
}

static void on_sigint(int s) { (void)s; interrupted = 1; }

static void usage(void) {
    fprintf(stderr,
            "usage: loadclient fanout|ping|conns|presence|client [--port P] [--host H] [--key K]\n"
            "  [--secret S] [--app-id ID] [--channel C] [--conns N] [--inflight N] [--http K]\n"
            "  [--window W] [--rate R] [--duration S] [--warmup S] [--timeout S] [--hold S] [--payload B]\n"
            "  [--channels C] [--ramp F1,F2,...] [--step-duration S] [--p99-bound MS] [--bisect N]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *m = argv[1];
    if (!strcmp(m, "fanout")) cfg.mode = M_FANOUT;
    else if (!strcmp(m, "ping")) cfg.mode = M_PING;
    else if (!strcmp(m, "conns")) cfg.mode = M_CONNS;
    else if (!strcmp(m, "presence")) cfg.mode = M_PRESENCE;
    else if (!strcmp(m, "client")) cfg.mode = M_CLIENT;
    else usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) cfg.port = atoi(v);
        else if (!strcmp(a, "--host")) cfg.host = v;
        else if (!strcmp(a, "--key")) cfg.key = v;
        else if (!strcmp(a, "--secret")) cfg.secret = v;
        else if (!strcmp(a, "--app-id")) cfg.app_id = v;
        else if (!strcmp(a, "--channel")) cfg.channel = v;
        else if (!strcmp(a, "--conns")) cfg.conns = atoi(v);
        else if (!strcmp(a, "--inflight")) cfg.inflight = atoi(v);
        else if (!strcmp(a, "--http")) cfg.http = atoi(v);
        else if (!strcmp(a, "--window")) cfg.window = atoi(v);
        else if (!strcmp(a, "--rate")) cfg.rate = atof(v);
        else if (!strcmp(a, "--duration")) cfg.duration = atof(v);
        else if (!strcmp(a, "--warmup")) cfg.warmup = atof(v);
        else if (!strcmp(a, "--timeout")) cfg.timeout = atof(v);
        else if (!strcmp(a, "--hold")) cfg.hold = atof(v);
        else if (!strcmp(a, "--payload")) cfg.payload = atoi(v);
        else if (!strcmp(a, "--channels")) cfg.channels = atoi(v);
        else if (!strcmp(a, "--ramp")) cfg.ramp = v;
        else if (!strcmp(a, "--step-duration")) cfg.step_duration = atof(v);
        else if (!strcmp(a, "--p99-bound")) cfg.p99_bound = atof(v);
        else if (!strcmp(a, "--bisect")) cfg.bisect = atoi(v);
        else usage();
    }
    if (!cfg.channel) {
        cfg.channel = cfg.mode == M_PRESENCE ? "presence-bench" : cfg.mode == M_CLIENT ? "private-bench" : "bench";
    }
    if (cfg.window >= RING - 16) cfg.window = RING - 16;
    if (cfg.channels < 1 || cfg.conns % cfg.channels != 0) die("--conns must be a multiple of --channels");
    if (cfg.payload > 65536) cfg.payload = 65536;
    memset(pad, 'x', sizeof pad);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg.port);
    if (inet_pton(AF_INET, cfg.host, &addr.sin_addr) != 1) die("bad host %s (IPv4 only)", cfg.host);

    ep = epoll_create1(0);
    ws = calloc((size_t)cfg.conns, sizeof *ws);
    for (int i = 0; i < cfg.conns; i++) {
        ws[i].idx = i;
        ws[i].kind = K_WS;
        ws[i].state = ST_CLOSED;
    }
    int ok = 1;
    uint64_t delay0, slices0, delay1, slices1;
    run_delay(&delay0, &slices0);
    outl = 0;
    jput("{\"mode\":\"%s\"", mode_name());

    if (cfg.mode == M_FANOUT) {
        int subs = connect_all(1);
        hc = calloc((size_t)cfg.http, sizeof *hc);
        for (int i = 0; i < cfg.http; i++) {
            hc[i].idx = i;
            hc[i].kind = K_HTTP;
            conn_open(&hc[i]);
        }
        ok = subs && run_until(http_all_open, now_us() + 5000000u);
        expected_per_msg = (int)n_subscribed / cfg.channels;
        if (ok && cfg.ramp) {
            run_ramp();
            put_ramp();
            put_common(ok);
            goto done;
        }
        if (ok) run_publish();
        double win = cfg.duration;
        jput(",\"rate\":%g,\"http_inflight\":%d,\"window\":%d,\"subscribers\":%llu,\"published\":%llu,\"publish_ok\":%llu,"
             "\"publish_bad\":%llu,\"http_reconnects\":%llu,\"deliveries\":%llu,\"deliveries_window\":%llu,"
             "\"deliveries_per_s\":%.1f,\"publishes_per_s\":%.1f,\"lost\":%llu,\"connect_s\":%.3f",
             cfg.rate, cfg.http, cfg.window, (unsigned long long)n_subscribed, (unsigned long long)n_pub_sent,
             (unsigned long long)n_pub_ok, (unsigned long long)n_pub_bad, (unsigned long long)n_http_reconnects,
             (unsigned long long)n_deliveries, (unsigned long long)n_deliveries_window,
             (double)n_deliveries_window / win, expected_per_msg ? (double)n_deliveries_window / win / expected_per_msg : 0.0,
             (unsigned long long)n_lost, (double)(t_all_subscribed - t_conn_start) / 1e6);
        put_hist();
    } else if (cfg.mode == M_CLIENT) {
        int subs = connect_all(1);
        expected_per_msg = (int)n_subscribed - 1;
        ok = subs && expected_per_msg > 0;
        if (ok) run_publish();
        double win = cfg.duration;
        jput(",\"rate\":%g,\"window\":%d,\"members\":%llu,\"published\":%llu,\"deliveries\":%llu,"
             "\"deliveries_window\":%llu,\"deliveries_per_s\":%.1f,\"messages_per_s\":%.1f,\"lost\":%llu",
             cfg.rate, cfg.window, (unsigned long long)n_subscribed, (unsigned long long)n_pub_sent,
             (unsigned long long)n_deliveries, (unsigned long long)n_deliveries_window,
             (double)n_deliveries_window / win, expected_per_msg > 0 ? (double)n_deliveries_window / win / expected_per_msg : 0.0,
             (unsigned long long)n_lost);
        put_hist();
    } else if (cfg.mode == M_PING) {
        ok = connect_all(0);
        if (ok) {
            uint64_t t0 = now_us();
            t_meas_start = t0 + (uint64_t)(cfg.warmup * 1e6);
            t_meas_end = t_meas_start + (uint64_t)(cfg.duration * 1e6);
            for (int i = 0; i < cfg.conns; i++) {
                ws[i].ping_sent = now_us();
                ws_send(&ws[i], PING_MSG, sizeof PING_MSG - 1, 1);
            }
            run_until(NULL, t_meas_end);
            measuring_done = 1;
            run_until(pings_done, now_us() + 2000000u);
        }
        jput(",\"pongs\":%llu,\"pongs_window\":%llu,\"round_trips_per_s\":%.1f", (unsigned long long)n_pongs,
             (unsigned long long)n_pongs_window, (double)n_pongs_window / cfg.duration);
        put_hist();
    } else if (cfg.mode == M_CONNS) {
        ok = connect_all(1);
        double est_s = (double)(t_all_established - t_conn_start) / 1e6;
        double sub_s = (double)(t_all_subscribed - t_conn_start) / 1e6;
        printf("{\"phase\":\"ready\",\"ok\":%s,\"established\":%llu,\"subscribed\":%llu}\n", ok ? "true" : "false",
               (unsigned long long)n_established, (unsigned long long)n_subscribed);
        fflush(stdout);
        /* Hold: keep answering (server pings) until the runner writes a line. */
        uint64_t deadline = now_us() + (uint64_t)(cfg.hold * 1e6);
        uint64_t closed_before = n_closed;
        run_until(stdin_line, deadline);
        uint64_t dropped = n_closed - closed_before;
        /* connections_per_s: opened AND subscribed per second (first connect()
         * to the last subscription_succeeded); established_per_s: up to the
         * last connection_established only. */
        jput(",\"subscribed\":%llu,\"inflight\":%d,\"channels\":%d,\"establish_s\":%.3f,\"subscribe_s\":%.3f,"
             "\"connections_per_s\":%.1f,\"established_per_s\":%.1f,\"dropped_while_held\":%llu",
             (unsigned long long)n_subscribed, cfg.inflight, cfg.channels, est_s, sub_s,
             sub_s > 0 ? (double)n_subscribed / sub_s : 0.0,
             est_s > 0 ? (double)n_established / est_s : 0.0, (unsigned long long)dropped);
    } else if (cfg.mode == M_PRESENCE) {
        ok = connect_all(0);
        double join_s = -1, leave_s = -1;
        uint64_t join_events = 0, leave_events = 0;
        if (ok) {
            presence_target = cfg.conns;
            uint64_t t0 = now_us();
            for (int i = 0; i < cfg.conns; i++) send_subscribe(&ws[i]);
            int j = run_until(presence_joined, t0 + (uint64_t)(cfg.timeout * 1e6));
            uint64_t t1 = now_us();
            join_s = (double)(t1 - t0) / 1e6;
            join_events = n_member_events;
            if (!j) ok = 0;
            if (ok) {
                int half = cfg.conns / 2;
                presence_target = cfg.conns - half;
                char msg[256];
                snprintf(msg, sizeof msg, "{\"event\":\"pusher:unsubscribe\",\"data\":{\"channel\":\"%s\"}}", cfg.channel);
                uint64_t t2 = now_us();
                for (int i = 0; i < half; i++) {
                    ws[i].left = 1;
                    ws_send_str(&ws[i], msg);
                }
                int l = run_until(presence_joined, t2 + (uint64_t)(cfg.timeout * 1e6));
                leave_s = (double)(now_us() - t2) / 1e6;
                leave_events = n_member_events - join_events;
                if (!l) ok = 0;
            }
        }
        int wrong = 0;
        for (int i = 0; i < cfg.conns; i++)
            if (!ws[i].left && ws[i].view != presence_target) wrong++;
        jput(",\"members\":%d,\"subscribed\":%llu,\"join_s\":%.3f,\"leave_s\":%.3f,\"member_added_received\":%llu,"
             "\"member_removed_received\":%llu,\"member_events_per_s\":%.1f,\"wrong_views\":%d",
             cfg.conns, (unsigned long long)n_subscribed, join_s, leave_s, (unsigned long long)join_events,
             (unsigned long long)leave_events,
             (join_s + leave_s) > 0 ? (double)(join_events + leave_events) / (join_s + (leave_s > 0 ? leave_s : 0)) : 0.0,
             wrong);
    }
    put_common(ok);
done:
    run_delay(&delay1, &slices1);
    jput(",\"client_run_delay_s\":%.3f,\"client_slices\":%llu}", (double)(delay1 - delay0) / 1e9,
         (unsigned long long)(slices1 - slices0));
    for (int i = 0; i < cfg.conns; i++) conn_close(&ws[i]);
    for (int i = 0; hc && i < cfg.http; i++) conn_close(&hc[i]);
    printf("%s\n", out);
    fflush(stdout);
    return ok ? 0 : 1;
}
