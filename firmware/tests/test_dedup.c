/* The duplicate-command cache (tm_dedup.h, PROTOCOL.md 2.3): the cache on its own (window expiry,
 * a different command with the same seq, eviction of the oldest, replies too large to keep), then
 * the device over both of its links (serial frames, bare messages): a resent XFER_ABORT is answered
 * with the first ACK instead of being acted on again (which would answer NO_TRANSFER). */
#include <string.h>
#include "flashsim.h"
#include "testutil.h"
#include "tm_crc32.h"
#include "tm_dedup.h"
#include "tm_device.h"
#include "tm_vibration.h"

#define PAGE 4096u
#define SLOT (64u * 1024u)
#define FLASH_SIZE (2u * SLOT + 2u * PAGE)
#define ARENA 8192u
#define MAX_OUT 16

/* ------------------------------------------------------------------ the cache alone */

/* A command's bytes: version 1, `type`, `seq`, a payload of `n` bytes of `fill`. */
static size_t command(uint8_t *buf, uint8_t type, uint16_t seq, uint8_t fill, size_t n)
{
    buf[0] = 1;
    buf[1] = type;
    buf[2] = (uint8_t)seq;
    buf[3] = (uint8_t)(seq >> 8);
    buf[4] = (uint8_t)n;
    buf[5] = (uint8_t)(n >> 8);
    memset(buf + 6, fill, n);
    return 6 + n;
}

/* Handle a command through the cache as tm_device does: 1 when it was a duplicate, else record
 * `replies` (ACK-sized messages echoing its seq) as its answer. */
static int through(tm_dup_t *c, const uint8_t *cmd, size_t len, uint32_t now, int replies)
{
    uint8_t digest[TM_DUP_DIGEST_LEN];
    if (tm_dup_find(c, cmd, len, now, digest)) return 1;
    tm_dup_begin(c, digest, len, now);
    for (int i = 0; i < replies; i++) {
        uint8_t ack[7];
        command(ack, TM_ACK, (uint16_t)(cmd[2] | cmd[3] << 8), (uint8_t)i, 1);
        tm_dup_record(c, ack, sizeof(ack));
    }
    tm_dup_end(c);
    return 0;
}

static void test_window_and_replies(void)
{
    static tm_dup_t c;
    memset(&c, 0, sizeof(c));
    uint8_t cmd[64], digest[TM_DUP_DIGEST_LEN];
    size_t n = command(cmd, TM_ROLLBACK, 0x7001, 0, 0);
    const uint32_t t0 = 5000;
    CHECK_EQ(through(&c, cmd, n, t0, 2), 0);
    const tm_dup_entry_t *e = tm_dup_find(&c, cmd, n, t0 + TM_DUP_WINDOW_MS - 1, digest);
    CHECK(e != NULL);
    if (e) { /* both replies, in order, byte for byte */
        tm_dup_reply_t r;
        size_t off = 0;
        for (int i = 0; i < 2; i++) {
            CHECK(tm_dup_next_reply(e, &off, &r));
            CHECK(r.msg && r.len == 7 && r.type == TM_ACK && r.seq == 0x7001 && r.msg[6] == i);
        }
        CHECK(!tm_dup_next_reply(e, &off, &r));
    }
    /* the window ends TM_DUP_WINDOW_MS after the first handling: then it is a new command again */
    CHECK(tm_dup_find(&c, cmd, n, t0 + TM_DUP_WINDOW_MS, digest) == NULL);
    CHECK_EQ(through(&c, cmd, n, t0 + TM_DUP_WINDOW_MS, 1), 0);
    CHECK_EQ(through(&c, cmd, n, t0 + TM_DUP_WINDOW_MS + 1, 1), 1);
    /* now_ms wraps after 49 days: a command just before the wrap is still a duplicate just after */
    uint8_t cmd2[64];
    size_t n2 = command(cmd2, TM_CONFIRM, 9, 0, 0);
    CHECK_EQ(through(&c, cmd2, n2, 0xFFFFFF00u, 1), 0);
    CHECK_EQ(through(&c, cmd2, n2, 0x00000100u, 1), 1);
}

static void test_same_seq_other_bytes(void)
{
    static tm_dup_t c;
    memset(&c, 0, sizeof(c));
    uint8_t a[64], b[64], shorter[64];
    size_t na = command(a, TM_BENCHMARK, 42, 0x01, 2);
    size_t nb = command(b, TM_BENCHMARK, 42, 0x02, 2); /* same seq and length, another payload */
    size_t ns = command(shorter, TM_BENCHMARK, 42, 0x01, 1);
    CHECK_EQ(through(&c, a, na, 100, 1), 0);
    CHECK_EQ(through(&c, b, nb, 101, 1), 0); /* acted on */
    CHECK_EQ(through(&c, shorter, ns, 102, 1), 0);
    CHECK_EQ(through(&c, a, na, 103, 1), 1);
    CHECK_EQ(through(&c, b, nb, 104, 1), 1);
}

static void test_eviction(void)
{
    static tm_dup_t c;
    memset(&c, 0, sizeof(c));
    uint8_t cmd[64];
    /* TM_DUP_ENTRIES + 1 commands within the window: the first is evicted, the others stay */
    for (int i = 0; i <= TM_DUP_ENTRIES; i++) {
        size_t n = command(cmd, TM_GET_INFO, (uint16_t)(100 + i), 0, 0);
        CHECK_EQ(through(&c, cmd, n, 1000 + (uint32_t)i, 1), 0);
    }
    for (int i = TM_DUP_ENTRIES; i >= 1; i--) {
        size_t n = command(cmd, TM_GET_INFO, (uint16_t)(100 + i), 0, 0);
        CHECK_EQ(through(&c, cmd, n, 2000, 1), 1);
    }
    size_t n = command(cmd, TM_GET_INFO, 100, 0, 0);
    CHECK_EQ(through(&c, cmd, n, 2000, 1), 0); /* evicted: acted on again */
}

static void test_replies_too_large(void)
{
    static tm_dup_t c;
    memset(&c, 0, sizeof(c));
    static uint8_t cmd[64], big[TM_DUP_REPLY_BYTES + 64], digest[TM_DUP_DIGEST_LEN];
    /* a HELLO larger than the entry: kept as "send the current HELLO with seq 7" */
    size_t n = command(cmd, TM_GET_INFO, 7, 0, 0);
    CHECK(tm_dup_find(&c, cmd, n, 0, digest) == NULL);
    tm_dup_begin(&c, digest, n, 0);
    size_t nb = command(big, TM_HELLO, 7, 0xAB, TM_DUP_REPLY_BYTES);
    tm_dup_record(&c, big, nb);
    tm_dup_end(&c);
    const tm_dup_entry_t *e = tm_dup_find(&c, cmd, n, 1, digest);
    CHECK(e != NULL);
    if (e) {
        tm_dup_reply_t r;
        size_t off = 0;
        CHECK(tm_dup_next_reply(e, &off, &r));
        CHECK(r.msg == NULL && r.type == TM_HELLO && r.seq == 7);
        CHECK(!tm_dup_next_reply(e, &off, &r));
    }
    /* any other reply that does not fit: the command is forgotten (handled again), never half answered */
    n = command(cmd, TM_BENCHMARK, 8, 5, 2);
    uint8_t d2[TM_DUP_DIGEST_LEN];
    CHECK(tm_dup_find(&c, cmd, n, 2, d2) == NULL);
    tm_dup_begin(&c, d2, n, 2);
    nb = command(big, TM_LATENCY, 8, 0xCD, TM_DUP_REPLY_BYTES);
    tm_dup_record(&c, big, nb);
    tm_dup_end(&c);
    CHECK(tm_dup_find(&c, cmd, n, 3, d2) == NULL);
}

static void test_covers(void)
{
    /* the commands that act (and BENCHMARK: its LATENCY is the answer) are kept; chunks and queries not */
    static const uint8_t kept[] = {TM_STREAM_START, TM_STREAM_STOP, TM_XFER_BEGIN, TM_XFER_COMMIT, TM_XFER_ABORT,
                                   TM_CONFIRM, TM_ROLLBACK, TM_BENCHMARK, TM_REBOOT, TM_SET_FAULT, TM_ACTIVATE,
                                   TM_XFER_SIGN, TM_TRUST_ADD, TM_REVOKE};
    for (size_t i = 0; i < sizeof(kept); i++) CHECK(tm_dup_covers(kept[i]));
    CHECK(!tm_dup_covers(TM_XFER_CHUNK) && !tm_dup_covers(TM_GET_INFO) && !tm_dup_covers(TM_XFER_QUERY));
}

/* ------------------------------------------------------------------ the device, both links */

static uint8_t mem[FLASH_SIZE], arena0[ARENA], arena1[ARENA], factory[16384];
static long factory_len;
static tm_device_t dev;
static tm_vib_t vib;
static uint64_t clock_us;
static tm_framer_t host_rx;
static uint8_t out_msgs[MAX_OUT][TM_MAX_MESSAGE];
static size_t out_len[MAX_OUT];
static int n_out;

static void keep(const uint8_t *msg, size_t n)
{
    if (n_out < MAX_OUT) {
        memcpy(out_msgs[n_out], msg, n);
        out_len[n_out++] = n;
    }
}
static void hal_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++) {
        const uint8_t *msg;
        size_t n = tm_framer_feed(&host_rx, data[i], &msg);
        if (n) keep(msg, n);
    }
}
static void hal_message(void *ctx, uint8_t type, const uint8_t *msg, size_t len)
{
    (void)ctx;
    (void)type;
    keep(msg, len);
}
static uint32_t hal_us(void *ctx) { (void)ctx; return (uint32_t)clock_us; }
static uint32_t hal_ms(void *ctx) { (void)ctx; return (uint32_t)(clock_us / 1000u); }
static void hal_window(void *ctx, float *s, int n) { (void)ctx; tm_vib_generate(&vib, s, n); }
static void hal_fault(void *ctx, uint8_t m, float sev) { (void)ctx; tm_vib_set_fault(&vib, m, sev); }
static void hal_reboot(void *ctx) { (void)ctx; }

/* Send one command over the device's link (framed on serial, bare on a message transport). */
static void send_cmd(tm_msg_t *m)
{
    static uint8_t buf[TM_MAX_MESSAGE], fr[TM_MAX_FRAME + 16];
    size_t n = tm_encode(m, buf, sizeof(buf));
    CHECK(n > 0);
    n_out = 0;
    if (dev.hal.send_message) {
        tm_device_message(&dev, buf, n);
        return;
    }
    size_t f = tm_frame_encode(buf, n, fr, sizeof(fr));
    tm_device_rx(&dev, fr, f);
}

static tm_msg_t *reply(int i)
{
    static tm_msg_t m;
    if (i >= n_out || tm_decode(out_msgs[i], out_len[i], &m) != TM_OK) memset(&m, 0, sizeof(m));
    return &m;
}

static void boot(int message_link)
{
    memset(mem, 0xFF, sizeof(mem));
    static flashsim_t fsim;
    fsim = (flashsim_t){mem, FLASH_SIZE, PAGE, 0, -1, 0};
    tm_flash_t fl = flashsim_hal(&fsim);
    tm_hal_t hal = {hal_write, hal_us, hal_ms, hal_window, hal_fault, hal_reboot, NULL,
                    "dup-1", "lab/bench/dup", "qemu-mps2-an386", "test", 0, message_link ? hal_message : NULL};
    tm_framer_init(&host_rx);
    clock_us = 1000000u;
    CHECK_EQ(tm_device_init(&dev, &hal, &fl, SLOT, factory, (uint32_t)factory_len, arena0, arena1, ARENA), TM_OK);
}

static void begin_transfer(uint32_t id, uint16_t seq)
{
    static const uint8_t sha[32] = {1};
    tm_msg_t b = {TM_XFER_BEGIN, seq, {{0}}};
    b.u.xfer_begin.transfer_id = id;
    b.u.xfer_begin.image_size = 2048;
    b.u.xfer_begin.chunk_size = 1024;
    b.u.xfer_begin.sha256.len = 32;
    b.u.xfer_begin.sha256.p = sha;
    b.u.xfer_begin.model_name = tm_str("dup");
    b.u.xfer_begin.model_version = 2;
    send_cmd(&b);
    CHECK(n_out == 1 && reply(0)->type == TM_XFER_STATUS && reply(0)->seq == seq);
}

/* The replies of the last command, as raw bytes, to compare a duplicate's answer with. */
static size_t snapshot(uint8_t *buf, size_t cap)
{
    size_t n = 0;
    for (int i = 0; i < n_out && n + out_len[i] <= cap; i++) {
        memcpy(buf + n, out_msgs[i], out_len[i]);
        n += out_len[i];
    }
    return n;
}

static void test_device_link(int message_link)
{
    boot(message_link);
    begin_transfer(50, 1);
    tm_msg_t abort_cmd = {TM_XFER_ABORT, 0x7001, {{0}}};
    abort_cmd.u.xfer_id.transfer_id = 50;
    send_cmd(&abort_cmd);
    CHECK(n_out == 1 && reply(0)->type == TM_ACK && reply(0)->seq == 0x7001);
    /* the host lost that ACK and resends: the same ACK, not NO_TRANSFER (acting on it again) */
    clock_us += (TM_DUP_WINDOW_MS - 1u) * 1000u;
    send_cmd(&abort_cmd);
    CHECK(n_out == 1 && reply(0)->type == TM_ACK && reply(0)->seq == 0x7001);

    /* the same seq with other bytes (another transfer id) is a new command: acted on */
    abort_cmd.u.xfer_id.transfer_id = 51;
    send_cmd(&abort_cmd);
    CHECK(n_out == 1 && reply(0)->type == TM_ERROR && reply(0)->u.error.code == TM_E_NO_TRANSFER);

    /* after the window the first ABORT is a new command again: the transfer is gone */
    abort_cmd.u.xfer_id.transfer_id = 50;
    clock_us += 1000u;
    send_cmd(&abort_cmd);
    CHECK(n_out == 1 && reply(0)->type == TM_ERROR && reply(0)->u.error.code == TM_E_NO_TRANSFER);

    /* every reply a command gave comes back byte for byte: SET_FAULT's ACK and its EVENT (same seq) */
    static uint8_t first[512], again[512];
    tm_msg_t sf = {TM_SET_FAULT, 0x7002, {{0}}};
    sf.u.set_fault.mask = 1;
    sf.u.set_fault.severity = 0.5f;
    send_cmd(&sf);
    CHECK(n_out == 2 && reply(0)->type == TM_ACK && reply(1)->type == TM_EVENT);
    size_t n1 = snapshot(first, sizeof(first));
    send_cmd(&sf);
    size_t n2 = snapshot(again, sizeof(again));
    CHECK(n_out == 2 && n1 == n2 && memcmp(first, again, n1) == 0);

    /* a query changes nothing: answered anew, with the state as it is now. The MQTT port asks the
     * core for its HELLO with one fixed GET_INFO (seq 0) after every command to refresh the
     * retained status: a cached answer would hold the status back for the whole window. */
    static const uint8_t probe[TM_HEADER_SIZE] = {TM_PROTOCOL_VERSION, TM_GET_INFO, 0, 0, 0, 0};
    n_out = 0;
    tm_device_message(&dev, probe, sizeof(probe)); /* the port's path; a serial device answers it alike */
    CHECK(n_out == 1 && reply(0)->type == TM_HELLO && reply(0)->u.hello.fault_mask == 1);
    sf.seq = 0x7004;
    sf.u.set_fault.mask = 2;
    send_cmd(&sf);
    n_out = 0;
    tm_device_message(&dev, probe, sizeof(probe));
    CHECK(n_out == 1 && reply(0)->type == TM_HELLO && reply(0)->u.hello.fault_mask == 2);

    /* a chunk is never answered from the cache (idempotent anyway): resent, it is stored again */
    begin_transfer(60, 3);
    static uint8_t data[1024];
    tm_msg_t ch = {TM_XFER_CHUNK, 0x7003, {{0}}};
    ch.u.xfer_chunk.transfer_id = 60;
    ch.u.xfer_chunk.crc32 = tm_crc32(0, data, sizeof(data));
    ch.u.xfer_chunk.data.len = sizeof(data);
    ch.u.xfer_chunk.data.p = data;
    send_cmd(&ch);
    CHECK(n_out == 1 && reply(0)->type == TM_ACK);
    tm_msg_t abort60 = {TM_XFER_ABORT, 4, {{0}}};
    abort60.u.xfer_id.transfer_id = 60;
    send_cmd(&abort60);
    send_cmd(&ch); /* the transfer is gone: a chunk acted on again says so */
    CHECK(n_out == 1 && reply(0)->type == TM_ERROR && reply(0)->u.error.code == TM_E_NO_TRANSFER);
}

int main(void)
{
    test_window_and_replies();
    test_same_seq_other_bytes();
    test_eviction();
    test_replies_too_large();
    test_covers();
    factory_len = read_file(TM_DATA_DIR "/../../../resources/models/factory.tmlm", factory, sizeof(factory));
    CHECK(factory_len > 0);
    if (factory_len <= 0) return TEST_DONE();
    tm_vib_init(&vib, 1, 24.7f, TM_SAMPLE_RATE);
    test_device_link(0); /* serial frames (a UART, the POSIX --pty) */
    test_device_link(1); /* bare messages (MQTT) */
    return TEST_DONE();
}
