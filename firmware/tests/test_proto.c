/* Codec and framing against the golden vectors shared with the Python side (PROTOCOL.md 10). */
#include <string.h>
#include "testutil.h"
#include "tm_crc32.h"
#include "tm_frame.h"
#include "tm_proto.h"
#include "tm_sha256.h"
#include "vectors_gen.h"

static uint8_t out[TM_MAX_FRAME + 64];
static char text[64 * 1024];
static tm_framer_t fr;

static size_t feed_all(const uint8_t *data, size_t len, const uint8_t **msg)
{
    size_t got = 0;
    for (size_t i = 0; i < len; i++) {
        size_t n = tm_framer_feed(&fr, data[i], msg);
        if (n) got = n;
    }
    return got;
}

static void test_golden(void)
{
    for (size_t i = 0; i < sizeof(GOLDEN) / sizeof(GOLDEN[0]); i++) {
        const golden_t *g = &GOLDEN[i];
        tm_msg_t m;
        int rc = tm_decode(g->bin, g->bin_len, &m);
        if (rc != TM_OK) { fprintf(stderr, "%s: decode rc %d\n", g->name, rc); g_failures++; continue; }
        CHECK(tm_dump(&m, text, sizeof(text)) > 0 || g->dump[0] == 0);
        if (strcmp(text, g->dump) != 0) {
            fprintf(stderr, "%s: fields differ\n  got:  %s\n  want: %s\n", g->name, text, g->dump);
            g_failures++;
        }
        size_t n = tm_encode(&m, out, sizeof(out));
        CHECK_EQ(n, g->bin_len);
        CHECK(memcmp(out, g->bin, g->bin_len) == 0);
        n = tm_frame_encode(g->bin, g->bin_len, out, sizeof(out));
        if (n != g->frame_len || memcmp(out, g->frame, n) != 0) {
            fprintf(stderr, "%s: frame differs\n", g->name);
            g_failures++;
        }
        const uint8_t *msg = NULL;
        tm_framer_init(&fr);
        CHECK_EQ(feed_all(g->frame, g->frame_len, &msg), g->bin_len);
        CHECK(msg && memcmp(msg, g->bin, g->bin_len) == 0);
    }
}

static uint32_t *counter(const char *name)
{
    if (!strcmp(name, "bad_crc")) return &fr.counters.bad_crc;
    if (!strcmp(name, "truncated")) return &fr.counters.truncated;
    if (!strcmp(name, "bad_cobs")) return &fr.counters.bad_cobs;
    if (!strcmp(name, "oversized")) return &fr.counters.oversized;
    return NULL;
}

static void test_bad_frames(void)
{
    uint8_t good[64];
    size_t good_len = tm_frame_encode(GOOD_MESSAGE, sizeof(GOOD_MESSAGE), good, sizeof(good));
    tm_framer_init(&fr);
    for (size_t i = 0; i < sizeof(BAD_FRAMES) / sizeof(BAD_FRAMES[0]); i++) {
        const bad_frame_t *b = &BAD_FRAMES[i];
        uint32_t *c = counter(b->counter);
        CHECK(c != NULL);
        if (!c) continue;
        uint32_t before = *c;
        const uint8_t *msg = NULL;
        CHECK_EQ(feed_all(b->bytes, b->len, &msg), 0);
        if (*c != before + 1) { fprintf(stderr, "%s: counter %s not raised\n", b->name, b->counter); g_failures++; }
        /* the next good frame still gets through: garbage costs only the frame it hits */
        CHECK_EQ(feed_all(good, good_len, &msg), sizeof(GOOD_MESSAGE));
    }
    /* a good frame glued after garbage with no delimiter is lost, the one after it is not */
    static const uint8_t junk[] = {1, 2, 3, 0xFF, 0x10};
    const uint8_t *msg = NULL;
    feed_all(junk, sizeof(junk), &msg);
    feed_all(good, good_len, &msg);
    CHECK_EQ(feed_all(good, good_len, &msg), sizeof(GOOD_MESSAGE));
}

static void test_decode_errors(void)
{
    tm_msg_t m;
    uint8_t b[16] = {1, 0x2A, 0, 0, 2, 0, 5, 0};
    CHECK_EQ(tm_decode(b, 8, &m), TM_OK);
    CHECK_EQ(m.u.benchmark.count, 5);
    CHECK_EQ(tm_decode(b, 7, &m), TM_E_MALFORMED);     /* length field says 2, holds 1 */
    b[4] = 1;
    CHECK_EQ(tm_decode(b, 7, &m), TM_E_MALFORMED);     /* payload shorter than its fields */
    b[4] = 3; b[8] = 9;
    CHECK_EQ(tm_decode(b, 9, &m), TM_OK);              /* longer payload: extra bytes ignored */
    b[0] = 2;
    CHECK_EQ(tm_decode(b, 9, &m), TM_E_UNSUPPORTED_VERSION);
    b[0] = 1; b[1] = 0x7E;
    CHECK_EQ(tm_decode(b, 9, &m), TM_E_UNKNOWN_TYPE);
    uint8_t e[] = {1, TM_ERROR, 0, 0, 5, 0, 1, 1, 0, 1, 0xC3}; /* str with truncated UTF-8 */
    CHECK_EQ(tm_decode(e, sizeof(e), &m), TM_E_MALFORMED);
    e[10] = 'A';
    CHECK_EQ(tm_decode(e, sizeof(e), &m), TM_OK);
    CHECK_EQ(tm_decode(e, 3, &m), TM_E_MALFORMED);
}

static void test_crc_sha(void)
{
    CHECK_EQ(tm_crc32(0, "123456789", 9), 0xCBF43926u);
    uint8_t d[32];
    tm_sha256("abc", 3, d); /* the SHA-256 itself: test_sha256.c, against hashlib */
    static const uint8_t abc[4] = {0xba, 0x78, 0x16, 0xbf};
    CHECK(memcmp(d, abc, 4) == 0);
}

int main(void)
{
    test_golden();
    test_bad_frames();
    test_decode_errors();
    test_crc_sha();
    return TEST_DONE();
}
