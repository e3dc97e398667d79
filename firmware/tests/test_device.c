/* Device logic end to end on the host: protocol in, protocol out, over an in-memory serial link,
 * with the real store (simulated NOR flash), engine, features and vibration source. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "flashsim.h"
#include "signatures_gen.h"
#include "testutil.h"
#include "tm_crc32.h"
#include "tm_device.h"
#include "tm_sha256.h"
#include "tm_vibration.h"

#define PAGE 4096u
#define SLOT (512u * 1024u)
#define FLASH_SIZE (2u * SLOT + 2u * PAGE)
#define ARENA 8192u /* small on purpose: the MLPerf AE (14 KB) must be refused */
#define MAX_OUT 64

static uint8_t mem[FLASH_SIZE];
static flashsim_t fsim;
static uint8_t arena0[ARENA], arena1[ARENA];
static tm_device_t dev;
static tm_vib_t vib;
static uint64_t clock_us;
static int rebooted;
static tm_framer_t host_rx;
static uint8_t out_msgs[MAX_OUT][TM_MAX_MESSAGE];
static size_t out_len[MAX_OUT];
static int n_out;
static uint8_t factory[16384], image[400 * 1024];
static long factory_len;

static void hal_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++) {
        const uint8_t *msg;
        size_t n = tm_framer_feed(&host_rx, data[i], &msg);
        if (n && n_out < MAX_OUT) {
            memcpy(out_msgs[n_out], msg, n);
            out_len[n_out++] = n;
        }
    }
}
static uint32_t hal_us(void *ctx) { (void)ctx; return (uint32_t)clock_us; }
static uint32_t hal_ms(void *ctx) { (void)ctx; return (uint32_t)(clock_us / 1000u); }
static void hal_window(void *ctx, float *s, int n) { (void)ctx; tm_vib_generate(&vib, s, n); }
static void hal_fault(void *ctx, uint8_t m, float sev) { (void)ctx; tm_vib_set_fault(&vib, m, sev); }
static void hal_reboot(void *ctx) { (void)ctx; rebooted = 1; }

static const tm_hal_t HAL = {hal_write, hal_us, hal_ms, hal_window, hal_fault, hal_reboot, NULL,
                             "host-1", "lab/bench/host", "qemu-mps2-an386", "test", 0, NULL};

static void boot(void)
{
    tm_flash_t fl = flashsim_hal(&fsim);
    n_out = 0;
    tm_framer_init(&host_rx);
    CHECK_EQ(tm_device_init(&dev, &HAL, &fl, SLOT, factory, (uint32_t)factory_len, arena0, arena1, ARENA), TM_OK);
}

static void cmd(tm_msg_t *m)
{
    static uint8_t buf[TM_MAX_MESSAGE], fr[TM_MAX_FRAME + 16];
    size_t n = tm_encode(m, buf, sizeof(buf));
    CHECK(n > 0);
    size_t f = tm_frame_encode(buf, n, fr, sizeof(fr));
    n_out = 0;
    tm_device_rx(&dev, fr, f);
}

/* The i-th output message decoded (static storage, valid until the next call). */
static tm_msg_t *out(int i)
{
    static tm_msg_t m;
    if (i >= n_out || tm_decode(out_msgs[i], out_len[i], &m) != TM_OK) { memset(&m, 0, sizeof(m)); m.type = 0; }
    return &m;
}

static tm_msg_t *find(uint8_t type)
{
    for (int i = 0; i < n_out; i++)
        if (out(i)->type == type) return out(i);
    return NULL;
}

static int expect_error(uint16_t code)
{
    tm_msg_t *e = find(TM_ERROR);
    if (!e || e->u.error.code != code) {
        fprintf(stderr, "expected ERROR %u, got %s %u\n", code, e ? "ERROR" : "no error", e ? e->u.error.code : 0);
        g_failures++;
        return 0;
    }
    return 1;
}

/* A seq no earlier command used: a host's seq is unique per command, and the same bytes again
 * within TM_DUP_WINDOW_MS would be a duplicate, answered with the first reply (tm_dedup.h). */
static uint16_t fresh_seq(void)
{
    static uint16_t next = 0x4000;
    return next++;
}

static uint32_t active_version(void)
{
    uint16_t seq = fresh_seq();
    tm_msg_t m = {TM_GET_INFO, seq, {{0}}};
    cmd(&m);
    tm_msg_t *h = find(TM_HELLO);
    CHECK(h && h->seq == seq);
    return h ? h->u.hello.model_version : 0xFFFFFFFFu;
}

/* Advance time by one telemetry period and return the TELEMETRY sent. */
static tm_msg_t *tick(void)
{
    clock_us += TM_TELEMETRY_PERIOD_MS * 1000u;
    n_out = 0;
    tm_device_poll(&dev);
    return find(TM_TELEMETRY);
}

static float mean_score(int windows)
{
    float s = 0;
    for (int i = 0; i < windows; i++) {
        tm_msg_t *t = tick();
        CHECK(t && !(t->u.telemetry.flags & TM_TLM_NO_MODEL));
        if (t) s += t->u.telemetry.score;
    }
    return s / windows;
}

/* Push an image in 1 KB chunks and commit it; returns the commit reply. */
/* When set, deploy() sends this signature block (XFER_SIGN) before the commit. */
static const uint8_t *g_sign_block;

static tm_msg_t *deploy(const uint8_t *img, uint32_t len, const uint8_t sha[32], uint8_t mode, uint16_t timeout)
{
    static uint32_t xfer_id = 100;
    xfer_id++;
    tm_msg_t b = {TM_XFER_BEGIN, 1, {{0}}};
    b.u.xfer_begin.transfer_id = xfer_id;
    b.u.xfer_begin.image_size = len;
    b.u.xfer_begin.chunk_size = 1024;
    b.u.xfer_begin.sha256.len = 32;
    b.u.xfer_begin.sha256.p = sha;
    b.u.xfer_begin.model_name = tm_str("x");
    cmd(&b);
    tm_msg_t *s = find(TM_XFER_STATUS);
    CHECK(s != NULL);
    if (!s) return out(0);
    CHECK_EQ(s->u.xfer_status.n_chunks, (len + 1023) / 1024);
    for (uint32_t i = 0; i * 1024 < len; i++) {
        uint32_t l = len - i * 1024 < 1024 ? len - i * 1024 : 1024;
        tm_msg_t c = {TM_XFER_CHUNK, (uint16_t)(10 + i), {{0}}};
        c.u.xfer_chunk.transfer_id = xfer_id;
        c.u.xfer_chunk.index = i;
        c.u.xfer_chunk.crc32 = tm_crc32(0, img + i * 1024, l);
        c.u.xfer_chunk.data.len = l;
        c.u.xfer_chunk.data.p = img + i * 1024;
        cmd(&c);
        tm_msg_t *a = find(TM_ACK);
        CHECK(a && a->seq == 10 + i);
    }
    if (g_sign_block) {
        tm_msg_t sg = {TM_XFER_SIGN, 8, {{0}}};
        sg.u.xfer_sign.transfer_id = xfer_id;
        sg.u.xfer_sign.block.len = TM_SIG_BLOCK_SIZE;
        sg.u.xfer_sign.block.p = g_sign_block;
        cmd(&sg);
        CHECK(find(TM_ACK) && find(TM_ACK)->seq == 8);
    }
    tm_msg_t c = {TM_XFER_COMMIT, 9, {{0}}};
    c.u.xfer_commit.transfer_id = xfer_id;
    c.u.xfer_commit.mode = mode;
    c.u.xfer_commit.trial_timeout_s = timeout;
    c.u.xfer_commit.bench_count = 20;
    cmd(&c);
    return out(0);
}

static long load(const char *name, uint8_t *buf, size_t cap)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TM_DATA_DIR, name);
    return read_file(path, buf, cap);
}

/* The message-transport path (MQTT on the ESP32 port): bare messages in and out, typed. */
static uint8_t msg_types[8];
static int n_msgs;
static void hal_message(void *ctx, uint8_t type, const uint8_t *msg, size_t len)
{
    (void)ctx;
    CHECK(len >= TM_HEADER_SIZE && msg[1] == type);
    if (n_msgs < 8) msg_types[n_msgs++] = type;
}

static void test_message_transport(void)
{
    static tm_device_t mdev;
    static uint8_t mem2[FLASH_SIZE];
    flashsim_t f2 = {mem2, FLASH_SIZE, PAGE, 0, -1, 0};
    memset(mem2, 0xFF, sizeof(mem2));
    tm_flash_t fl = flashsim_hal(&f2);
    tm_hal_t hal = HAL;
    hal.send_message = hal_message;
    CHECK_EQ(tm_device_init(&mdev, &hal, &fl, SLOT, factory, (uint32_t)factory_len, arena0, arena1, ARENA), TM_OK);
    CHECK(n_msgs >= 2 && msg_types[0] == TM_EVENT && msg_types[1] == TM_HELLO);
    n_msgs = 0;
    static const uint8_t get_info[] = {1, TM_GET_INFO, 9, 0, 0, 0};
    tm_device_message(&mdev, get_info, sizeof(get_info));
    CHECK(n_msgs == 1 && msg_types[0] == TM_HELLO);
    CHECK_EQ(n_out, 0); /* nothing went to the serial writer */
}

static void test_bad_input(void)
{
    uint32_t v = active_version();
    /* garbage, a bad CRC: dropped and counted, no reply, link still works */
    static const uint8_t junk[] = {0x13, 0x37, 0xFF, 0, 5, 1, 2, 3, 4, 0, 0, 0};
    n_out = 0;
    tm_device_rx(&dev, junk, sizeof(junk));
    CHECK_EQ(n_out, 0);
    CHECK(dev.rx.counters.bad_cobs + dev.rx.counters.truncated >= 1);
    static const uint8_t bad_crc[] = {0x04, 0x01, 0x2a, 0x01, 0x02, 0x02, 0x02, 0x05, 0x05, 0x4e, 0x56, 0x67, 0x21, 0x00};
    tm_device_rx(&dev, bad_crc, sizeof(bad_crc));
    CHECK_EQ(dev.rx.counters.bad_crc, 1);
    CHECK_EQ(active_version(), v);
    /* a message the codec refuses gets the protocol error */
    static uint8_t raw[16], fr[32];
    uint8_t unk[] = {1, 0x7F, 5, 0, 0, 0};
    size_t f = tm_frame_encode(unk, sizeof(unk), fr, sizeof(fr));
    n_out = 0;
    tm_device_rx(&dev, fr, f);
    expect_error(TM_E_UNKNOWN_TYPE);
    CHECK_EQ(out(0)->seq, 5);
    uint8_t ver[] = {9, 0x20, 6, 0, 0, 0};
    f = tm_frame_encode(ver, sizeof(ver), fr, sizeof(fr));
    n_out = 0;
    tm_device_rx(&dev, fr, f);
    expect_error(TM_E_UNSUPPORTED_VERSION);
    uint8_t mal[] = {1, TM_BENCHMARK, 7, 0, 1, 0, 5};
    f = tm_frame_encode(mal, sizeof(mal), fr, sizeof(fr));
    n_out = 0;
    tm_device_rx(&dev, fr, f);
    expect_error(TM_E_MALFORMED);
    (void)raw;
    tm_msg_t m = {TM_CONFIRM, 3, {{0}}};
    cmd(&m);
    expect_error(TM_E_NOT_TRIAL);
    tm_msg_t sf = {TM_SET_FAULT, 4, {{0}}};
    sf.u.set_fault.severity = 2.0f;
    cmd(&sf);
    expect_error(TM_E_BAD_ARGUMENT);
    tm_msg_t q = {TM_XFER_QUERY, 4, {{0}}};
    q.u.xfer_id.transfer_id = 12345;
    cmd(&q);
    expect_error(TM_E_NO_TRANSFER);
    tm_msg_t ch = {TM_XFER_CHUNK, 4, {{0}}};
    ch.u.xfer_chunk.transfer_id = 12345;
    cmd(&ch);
    expect_error(TM_E_NO_TRANSFER);
    tm_msg_t pull = {TM_XFER_BEGIN, 4, {{0}}};
    static const uint8_t zero_sha[32];
    pull.u.xfer_begin.flags = 1;
    pull.u.xfer_begin.image_size = 100;
    pull.u.xfer_begin.chunk_size = 100;
    pull.u.xfer_begin.sha256.len = 32;
    pull.u.xfer_begin.sha256.p = zero_sha;
    cmd(&pull);
    expect_error(TM_E_BAD_ARGUMENT); /* serial-only device: no PULL */
    CHECK_EQ(active_version(), v);
    CHECK(tick() != NULL); /* still running */
}

static void test_bad_models(void)
{
    uint32_t v = active_version();
    uint8_t sha[32];
    long len = load("fw_test_v2.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len, sha);
    sha[5] ^= 1;
    deploy(image, (uint32_t)len, sha, 1, 0);
    expect_error(TM_E_HASH_MISMATCH);
    len = load("tanh_v3.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len, sha);
    deploy(image, (uint32_t)len, sha, 1, 0);
    expect_error(TM_E_UNSUPPORTED_OP);
    len = load("mlperf_ad_v4.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len, sha);
    deploy(image, (uint32_t)len, sha, 1, 0);
    expect_error(TM_E_ARENA_TOO_SMALL);
    /* truncated container (its SHA is right: the host sent what it meant to) */
    len = load("fw_test_v2.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len - 100, sha);
    deploy(image, (uint32_t)len - 100, sha, 1, 0);
    expect_error(TM_E_BAD_IMAGE);
    /* truncated flatbuffer inside a well-formed container: shrink the TFLITE section to 1 KB */
    len = load("fw_test_v2.tmlm", image, sizeof(image));
    size_t pos = 16;
    for (int s = 0; s < 4; s++) {
        uint32_t type = image[pos], slen = image[pos + 4] | (image[pos + 5] << 8) | (image[pos + 6] << 16);
        if (type == 3) { image[pos + 4] = 0; image[pos + 5] = 4; image[pos + 6] = 0; break; }
        pos += 16 + slen + (16 - slen % 16) % 16;
    }
    tm_sha256(image, (size_t)len, sha);
    deploy(image, (uint32_t)len, sha, 1, 0);
    tm_msg_t *e = find(TM_ERROR);
    CHECK(e && (e->u.error.code == TM_E_LOAD_FAILED || e->u.error.code == TM_E_BAD_IMAGE));
    /* a self-test that fails: corrupt the expected score */
    len = load("fw_test_v2.tmlm", image, sizeof(image));
    image[len - 13] ^= 0x40; /* exponent byte of expected_score (SELFTEST is last, padded by 8) */
    tm_sha256(image, (size_t)len, sha);
    deploy(image, (uint32_t)len, sha, 1, 0);
    expect_error(TM_E_SELFTEST_FAILED);
    CHECK_EQ(active_version(), v); /* nothing was activated */
    tm_msg_t *t = tick();
    CHECK(t && t->u.telemetry.model_version == v && !(t->u.telemetry.flags & TM_TLM_NO_MODEL));
}

/* PROTOCOL.md 6.2: a provisioned device takes only images signed by a key it trusts; the running
 * model stays through every refusal. */
static void test_signatures(void)
{
    uint8_t sha[32], block[TM_SIG_BLOCK_SIZE], bad[TM_SIG_BLOCK_SIZE];
    long len = load("fw_test_v2.tmlm", image, sizeof(image));
    CHECK_EQ(load("fw_test_v2.tmlm.sig", block, sizeof(block)), TM_SIG_BLOCK_SIZE);
    tm_sha256(image, (size_t)len, sha);
    tm_device_set_trust(&dev, sig_keys, (int)sig_n_keys);
    tm_msg_t gi = {TM_GET_INFO, 50, {{0}}};
    cmd(&gi);
    tm_msg_t *h = find(TM_HELLO);
    CHECK(h && (h->u.hello.caps & TM_CAP_SIGNED) && h->u.hello.trust_keys == 1);
    uint32_t before = active_version();
    g_sign_block = NULL; /* unsigned */
    deploy(image, (uint32_t)len, sha, 1, 0);
    CHECK(expect_error(TM_E_BAD_SIGNATURE));
    CHECK_EQ(active_version(), before);
    memcpy(bad, block, sizeof bad);
    bad[40] ^= 0x01; /* one bit of the signature */
    g_sign_block = bad;
    deploy(image, (uint32_t)len, sha, 1, 0);
    CHECK(expect_error(TM_E_BAD_SIGNATURE));
    CHECK_EQ(active_version(), before);
    g_sign_block = block;
    tm_msg_t *l = deploy(image, (uint32_t)len, sha, 1, 0);
    CHECK(l && l->type == TM_LATENCY);
    CHECK_EQ(active_version(), 2);
    g_sign_block = NULL;
    tm_device_set_trust(&dev, sig_keys, 0); /* back to unprovisioned, and to the model before, for the tests after */
    tm_msg_t rb = {TM_ROLLBACK, 51, {{0}}};
    cmd(&rb);
    CHECK_EQ(active_version(), before);
}

/* Put an image into the inactive slot and activate it through the store alone, as a firmware that
 * could run it would have (the device's own COMMIT would refuse it). */
static void store_and_activate(const uint8_t *img, uint32_t len)
{
    uint8_t sha[32];
    tm_sha256(img, len, sha);
    int resumed;
    CHECK_EQ(tm_store_begin(&dev.store, 900, len, 4096, 4096, sha, 3, 0, &resumed), TM_OK);
    for (uint32_t i = 0; i * 4096 < len; i++) {
        uint32_t l = len - i * 4096 < 4096 ? len - i * 4096 : 4096;
        CHECK_EQ(tm_store_chunk(&dev.store, 900, i, tm_crc32(0, img + i * 4096, l), img + i * 4096, l, 0), TM_OK);
    }
    const uint8_t *p;
    CHECK_EQ(tm_store_verify(&dev.store, 900, &p), TM_OK);
    CHECK_EQ(tm_store_commit(&dev.store, 1, 0, 0), TM_OK);
}

/* An intact active image that does not load (say, a firmware update dropped its op) is passed over
 * at boot like a corrupt one: the other slot, then the factory image. The device always boots a
 * model that loads. */
static void test_boot_falls_back_to_a_loadable_model(void)
{
    memset(mem, 0xFF, sizeof(mem));
    boot();
    uint32_t factory_version = active_version();
    long len = load("tanh_v3.tmlm", image, sizeof(image)); /* intact, but TANH: UNSUPPORTED_OP */
    CHECK(len > 0);
    store_and_activate(image, (uint32_t)len);
    boot();
    CHECK(find(TM_EVENT) && find(TM_EVENT)->u.event.code == TM_EV_BOOTED && dev.has_model);
    CHECK_EQ(active_version(), factory_version); /* the other slot */
    tm_msg_t *t = tick();
    CHECK(t && !(t->u.telemetry.flags & TM_TLM_NO_MODEL));
    /* both slots hold it: the factory image is installed again */
    store_and_activate(image, (uint32_t)len);
    store_and_activate(image, (uint32_t)len);
    CHECK(dev.store.meta.slot[0].valid && dev.store.meta.slot[1].valid);
    boot();
    CHECK(dev.has_model);
    CHECK_EQ(active_version(), factory_version);
    boot(); /* and it stays */
    CHECK(dev.has_model);
    CHECK_EQ(active_version(), factory_version);
}

/* ROLLBACK to a previous image this firmware cannot run is refused with the load error, and the
 * running model stays active (it used to switch the journal first and end with no model). */
static void test_rollback_to_an_unloadable_image_is_refused(void)
{
    memset(mem, 0xFF, sizeof(mem));
    boot();
    uint32_t factory_version = active_version();
    long len = load("tanh_v3.tmlm", image, sizeof(image));
    CHECK(len > 0);
    store_and_activate(image, (uint32_t)len);
    CHECK_EQ(tm_store_rollback(&dev.store), TM_OK); /* the factory image active again, tanh previous */
    tm_msg_t rb = {TM_ROLLBACK, 60, {{0}}};
    cmd(&rb);
    expect_error(TM_E_UNSUPPORTED_OP);
    CHECK_EQ(active_version(), factory_version);
    tm_msg_t *t = tick();
    CHECK(t && t->u.telemetry.model_version == factory_version && !(t->u.telemetry.flags & TM_TLM_NO_MODEL));
    boot();
    CHECK_EQ(active_version(), factory_version);
}

static tm_msg_t *trust_add(const uint8_t *key, const uint8_t *auth)
{
    static const uint8_t none[TM_SIG_BLOCK_SIZE] = {0};
    tm_msg_t m = {TM_TRUST_ADD, 70, {{0}}};
    m.u.trust_add.public_key.len = TM_SIG_PUBLIC_LEN;
    m.u.trust_add.public_key.p = key;
    m.u.trust_add.auth.len = TM_SIG_BLOCK_SIZE;
    m.u.trust_add.auth.p = auth ? auth : none;
    cmd(&m);
    return out(0);
}

static tm_msg_t *revoke(const char *name, uint32_t version, const uint8_t *auth)
{
    tm_msg_t m = {TM_REVOKE, 71, {{0}}};
    m.u.revoke.model_name = tm_str(name);
    m.u.revoke.model_version = version;
    m.u.revoke.auth.len = TM_SIG_BLOCK_SIZE;
    m.u.revoke.auth.p = auth;
    cmd(&m);
    return out(0);
}

/* TRUST_ADD and REVOKE (PROTOCOL.md 6.2) with the golden cases of tests/vectors/signatures.json, as
 * the virtual device takes them (tests/fleet/test_device_trust.py): the first key of an empty store
 * is taken as it is, later ones and every revocation only when signed by a trusted key; both are
 * kept across a reboot, and a revoked version is refused at COMMIT even validly signed. */
static void test_trust_admin(void)
{
    memset(mem, 0xFF, sizeof(mem));
    boot();
    tm_msg_t *h = find(TM_HELLO);
    CHECK(h && (h->u.hello.caps & TM_CAP_TRUST_ADMIN) && h->u.hello.trust_keys == 0);
    CHECK(revoke("pump", 4, admin_cases[0].auth)->type == TM_ERROR); /* nothing to check it against */
    CHECK(expect_error(TM_E_BAD_SIGNATURE));
    h = trust_add(sig_keys[0], NULL); /* empty store: no auth needed */
    CHECK(h->type == TM_HELLO && h->u.hello.trust_keys == 1 && h->seq == 70);
    uint8_t keys = 1;
    for (unsigned i = 0; i < admin_n_cases; i++) {
        const admin_case_t *c = &admin_cases[i];
        tm_msg_t *r = c->revoke ? revoke(c->name, c->version, c->auth) : trust_add(c->public_key, c->auth);
        if (!c->valid) {
            if (!expect_error(TM_E_BAD_SIGNATURE)) fprintf(stderr, "admin case '%s' was taken\n", c->what);
            continue;
        }
        keys += !c->revoke;
        CHECK(c->revoke ? r->type == TM_ACK : r->type == TM_HELLO && r->u.hello.trust_keys == keys);
        if (r->type == TM_ERROR) fprintf(stderr, "admin case '%s' refused: %u\n", c->what, r->u.error.code);
    }
    CHECK(trust_add(sig_keys[0], NULL)->type == TM_ERROR); /* provisioned now: auth needed */
    CHECK(expect_error(TM_E_BAD_SIGNATURE));
    /* the vectors' valid image (pump v4), validly signed, but revoked above */
    const sig_case_t *valid = &sig_cases[0];
    uint8_t sha[32];
    tm_sha256(valid->image, valid->image_len, sha);
    uint32_t before = active_version();
    for (int reboot = 0; reboot < 2; reboot++) {
        g_sign_block = valid->block;
        deploy(valid->image, valid->image_len, sha, 1, 0);
        g_sign_block = NULL;
        CHECK(expect_error(TM_E_REVOKED));
        CHECK_EQ(active_version(), before);
        boot(); /* kept in the store's journal */
        h = find(TM_HELLO);
        CHECK(h && h->u.hello.trust_keys == keys);
    }
}

/* Pull transfers (PROTOCOL.md 5.2): refused without a transport that fetches from the broker; with
 * one, the device advertises PULL_XFER, tells it the source, stores the chunks it fetches (transfer_id
 * 0, as published) and drops bad ones without a word, and reports XFER_STATUS once complete. */
static char pull_source[300];
static int pull_calls;
static void hal_pull(void *ctx, const uint8_t *source, size_t len)
{
    CHECK(ctx == &pull_calls && len < sizeof(pull_source));
    memcpy(pull_source, source, len);
    pull_source[len] = 0;
    pull_calls++;
}

static void pull_begin(uint32_t id, uint32_t len, const uint8_t sha[32], const char *source)
{
    tm_msg_t b = {TM_XFER_BEGIN, fresh_seq(), {{0}}};
    b.u.xfer_begin.transfer_id = id;
    b.u.xfer_begin.image_size = len;
    b.u.xfer_begin.chunk_size = 1024;
    b.u.xfer_begin.flags = TM_XFER_FLAG_PULL;
    b.u.xfer_begin.sha256.len = 32;
    b.u.xfer_begin.sha256.p = sha;
    b.u.xfer_begin.model_name = tm_str("x");
    b.u.xfer_begin.model_version = 2;
    b.u.xfer_begin.source = tm_str(source);
    cmd(&b);
}

/* One chunk as the broker delivers it; `corrupt` flips a data byte after the CRC was taken. */
static void pull_chunk(const uint8_t *img, uint32_t len, uint32_t i, int corrupt)
{
    static uint8_t data[1024], buf[TM_MAX_MESSAGE];
    uint32_t l = len - i * 1024 < 1024 ? len - i * 1024 : 1024;
    memcpy(data, img + i * 1024, l);
    tm_msg_t c = {TM_XFER_CHUNK, 0, {{0}}};
    c.u.xfer_chunk.index = i;
    c.u.xfer_chunk.crc32 = tm_crc32(0, data, l);
    if (corrupt) data[0] ^= 0xFF;
    c.u.xfer_chunk.data.len = l;
    c.u.xfer_chunk.data.p = data;
    size_t n = tm_encode(&c, buf, sizeof(buf));
    CHECK(n > 0);
    n_out = 0;
    tm_device_pull_chunk(&dev, buf, n);
}

static void test_pull(const uint8_t *img, uint32_t len, const uint8_t sha[32])
{
    const char *source = "tinymlops/v1/lab/models/00ff";
    boot();
    pull_begin(200, len, sha, source);
    expect_error(TM_E_BAD_ARGUMENT); /* no transport that fetches: a serial link */
    tm_device_set_pull(&dev, hal_pull, &pull_calls);
    tm_msg_t gi = {TM_GET_INFO, 61, {{0}}};
    cmd(&gi);
    CHECK(find(TM_HELLO) && (find(TM_HELLO)->u.hello.caps & TM_CAP_PULL));
    pull_begin(200, len, sha, "tinymlops/v1/lab/models/+");
    expect_error(TM_E_BAD_ARGUMENT); /* a wildcard is no topic prefix */
    CHECK_EQ(pull_calls, 0);
    pull_begin(200, len, sha, source);
    tm_msg_t *s = find(TM_XFER_STATUS);
    CHECK(s && s->u.xfer_status.received == 0);
    CHECK(pull_calls == 1 && strcmp(pull_source, source) == 0 && tm_device_pulling(&dev));
    uint32_t n = (len + 1023) / 1024;
    pull_chunk(img, len, 0, 1);
    CHECK_EQ(n_out, 0); /* dropped in silence: nobody asked */
    static const uint8_t garbage[] = {1, TM_XFER_CHUNK, 0};
    tm_device_pull_chunk(&dev, garbage, sizeof(garbage));
    CHECK_EQ(dev.store.received, 0);
    for (uint32_t i = 0; i < n; i++) pull_chunk(img, len, i, 0);
    s = find(TM_XFER_STATUS); /* the last chunk completes the image: reported at once */
    CHECK(s && s->u.xfer_status.transfer_id == 200 && s->u.xfer_status.received == n);
    CHECK(!tm_device_pulling(&dev));
    pull_chunk(img, len, 0, 0);
    CHECK_EQ(n_out, 0); /* a late retained chunk is nothing new */
    tm_msg_t c = {TM_XFER_COMMIT, 62, {{0}}};
    c.u.xfer_commit.transfer_id = 200;
    c.u.xfer_commit.mode = 1;
    cmd(&c);
    CHECK(find(TM_LATENCY) && find(TM_LATENCY)->u.latency.model_version == 2);
}

int main(void)
{
    factory_len = load("../../../resources/models/factory.tmlm", factory, sizeof(factory));
    CHECK(factory_len > 0);
    if (factory_len <= 0) return TEST_DONE();
    memset(mem, 0xFF, sizeof(mem));
    fsim.mem = mem; fsim.size = FLASH_SIZE; fsim.page = PAGE; fsim.cut_at = -1;
    tm_vib_init(&vib, 1, 24.7f, TM_SAMPLE_RATE);
    boot();
    CHECK(find(TM_EVENT) && find(TM_EVENT)->u.event.code == TM_EV_BOOTED);
    tm_msg_t *h = find(TM_HELLO);
    CHECK(h && h->u.hello.model_version >= 1 && h->u.hello.max_chunk == 4096);
    CHECK(h && h->u.hello.caps == (59 | TM_CAP_SIGNED | TM_CAP_TRUST_ADMIN));
    uint32_t v1 = active_version();

    /* telemetry with a score; a fault raises it */
    tm_msg_t *t = tick();
    CHECK(t && t->u.telemetry.features.n == 36 && t->u.telemetry.model_version == v1);
    CHECK(t && fabsf(t->u.telemetry.shaft_hz - 24.7f) < 2.0f);
    float healthy = mean_score(5);
    tm_msg_t sf = {TM_SET_FAULT, 21, {{0}}};
    sf.u.set_fault.mask = 1;
    sf.u.set_fault.severity = 1.0f;
    cmd(&sf);
    CHECK(find(TM_ACK) && find(TM_ACK)->seq == 21);
    CHECK(find(TM_EVENT) && find(TM_EVENT)->u.event.code == TM_EV_FAULT_CHANGED);
    float faulty = mean_score(5);
    printf("score healthy %.4f, imbalance %.4f\n", healthy, faulty);
    CHECK(faulty > 2.0f * healthy);
    sf.u.set_fault.mask = 0;
    sf.u.set_fault.severity = 0.0f;
    cmd(&sf);

    test_bad_input();
    test_bad_models();
    test_signatures();
    n_out = 0;
    test_message_transport();

    /* deploy v2, see it in telemetry and latency, roll back */
    uint8_t sha[32];
    long len = load("fw_test_v2.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len, sha);
    tm_msg_t *l = deploy(image, (uint32_t)len, sha, 1, 0);
    CHECK_EQ(l->type, TM_LATENCY);
    CHECK_EQ(l->u.latency.model_version, 2);
    CHECK_EQ(l->u.latency.n, 20);
    CHECK(l->u.latency.min_us <= l->u.latency.median_us && l->u.latency.median_us <= l->u.latency.p95_us &&
          l->u.latency.p95_us <= l->u.latency.max_us);
    CHECK_EQ(active_version(), 2);
    t = tick();
    CHECK(t && t->u.telemetry.model_version == 2);
    tm_msg_t rb = {TM_ROLLBACK, 30, {{0}}};
    cmd(&rb);
    h = find(TM_HELLO);
    CHECK(h && h->seq == 30);
    if (h) { CHECK_EQ(h->u.hello.model_version, v1); CHECK_EQ(h->u.hello.prev_version, 2); }
    /* BENCHMARK */
    tm_msg_t bm = {TM_BENCHMARK, 31, {{0}}};
    bm.u.benchmark.count = 50;
    cmd(&bm);
    CHECK(find(TM_LATENCY) && find(TM_LATENCY)->u.latency.n == 50 && find(TM_LATENCY)->seq == 31);

    /* trial that is not confirmed reverts by timeout */
    l = deploy(image, (uint32_t)len, sha, 2, 3);
    CHECK_EQ(l->type, TM_LATENCY);
    CHECK(l->u.latency.flags & TM_LAT_TRIAL);
    CHECK_EQ(active_version(), 2);
    int reverted_at = -1;
    for (int i = 0; i < 5 && reverted_at < 0; i++) {
        tick();
        if (find(TM_EVENT) && find(TM_EVENT)->u.event.code == TM_EV_TRIAL_REVERTED) reverted_at = i;
    }
    CHECK_EQ(reverted_at, 2); /* the third second: not before its 3 s timeout, not later */
    CHECK_EQ(active_version(), v1);
    /* a confirmed trial stays, also across a reboot */
    l = deploy(image, (uint32_t)len, sha, 2, 60);
    tm_msg_t cf = {TM_CONFIRM, 40, {{0}}};
    cmd(&cf);
    CHECK(find(TM_HELLO) && find(TM_HELLO)->u.hello.trial == 0);
    tm_msg_t rbt = {TM_REBOOT, 41, {{0}}};
    cmd(&rbt);
    CHECK(rebooted && find(TM_HELLO));
    boot();
    CHECK_EQ(active_version(), 2);
    /* store only, then ACTIVATE */
    tm_msg_t rb2 = {TM_ROLLBACK, 42, {{0}}};
    cmd(&rb2);
    CHECK_EQ(active_version(), v1);
    l = deploy(image, (uint32_t)len, sha, 0, 0);
    CHECK_EQ(l->type, TM_LATENCY);
    CHECK_EQ(active_version(), v1);
    tm_msg_t act = {TM_ACTIVATE, 43, {{0}}};
    act.u.activate.bench_count = 5;
    cmd(&act);
    CHECK(find(TM_LATENCY) && find(TM_LATENCY)->u.latency.model_version == 2);
    CHECK_EQ(active_version(), 2);

    /* streaming with a lease */
    tm_msg_t ss = {TM_STREAM_START, 50, {{0}}};
    ss.u.stream_start.lease_s = 2;
    cmd(&ss);
    CHECK(find(TM_ACK));
    tick();
    int streams = 0;
    for (int i = 0; i < n_out; i++) streams += out(i)->type == TM_STREAM;
    CHECK_EQ(streams, TM_WINDOW / TM_STREAM_FRAMES);
    tm_msg_t *sm = find(TM_STREAM);
    CHECK(sm && sm->u.stream.n == 256 && sm->u.stream.axes == 3);
    tick(); tick();
    CHECK(find(TM_STREAM) == NULL); /* lease ran out */

    test_boot_falls_back_to_a_loadable_model();
    test_rollback_to_an_unloadable_image_is_refused();
    len = load("fw_test_v2.tmlm", image, sizeof(image));
    tm_sha256(image, (size_t)len, sha);
    test_pull(image, (uint32_t)len, sha); /* before the trust store holds keys: the image is unsigned */
    test_trust_admin();
    return TEST_DONE();
}
