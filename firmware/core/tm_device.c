#include "tm_device.h"
#include <math.h>
#include <string.h>

static const char *const kErrorText[] = TM_ERROR_TEXTS;
/* One text per error code: a code added to tm_config.h without its text fails the build here. */
typedef char tm_error_text_covers_every_code[sizeof(kErrorText) / sizeof(kErrorText[0]) == TM_E_COUNT ? 1 : -1];

/* One encoded message out: bare to a message transport, framed to a serial one. */
static void emit(tm_device_t *d, const uint8_t *msg, size_t n)
{
    if (d->hal.send_message) {
        d->hal.send_message(d->hal.ctx, msg[1], msg, n);
        return;
    }
    size_t f = tm_frame_encode(msg, n, d->frame, sizeof(d->frame));
    if (f) d->hal.write(d->hal.ctx, d->frame, f);
}

static void send(tm_device_t *d, tm_msg_t *m)
{
    size_t n = tm_encode(m, d->tx, sizeof(d->tx));
    if (!n) return;
    tm_dup_record(&d->dup, d->tx, n); /* a reply to the command being handled, kept for a duplicate */
    emit(d, d->tx, n);
}

static uint16_t next_seq(tm_device_t *d) { return d->seq++; }

static void send_error(tm_device_t *d, uint16_t seq, uint8_t ref, int code)
{
    tm_msg_t m = {TM_ERROR, seq, {{0}}};
    m.u.error.ref_type = ref;
    m.u.error.code = (uint16_t)code;
    m.u.error.message = tm_str(code > 0 && code < TM_E_COUNT ? kErrorText[code] : "error");
    send(d, &m);
}

static void send_ack(tm_device_t *d, uint16_t seq, uint8_t ref)
{
    tm_msg_t m = {TM_ACK, seq, {{0}}};
    m.u.ack.ref_type = ref;
    send(d, &m);
}

static void send_event(tm_device_t *d, uint16_t code, const char *text)
{
    tm_msg_t m = {TM_EVENT, next_seq(d), {{0}}};
    m.u.event.code = code;
    m.u.event.message = tm_str(text);
    send(d, &m);
}

static int trial(const tm_device_t *d) { return d->store.meta.trial != 0; }

static void send_hello(tm_device_t *d, uint16_t seq)
{
    tm_msg_t m = {TM_HELLO, seq, {{0}}};
    tm_hello_t *h = &m.u.hello;
    h->proto_min = h->proto_max = TM_PROTOCOL_VERSION;
    h->caps = TM_CAP_STREAM | TM_CAP_PUSH | TM_CAP_TRIAL | TM_CAP_BENCHMARK | TM_CAP_SIGNED | TM_CAP_TRUST_ADMIN
              | (d->hal.set_fault ? TM_CAP_FAULT_SIM : 0) | (d->pull_begin ? TM_CAP_PULL : 0);
    h->trust_keys = d->trust.n;
    h->state = d->store.xfer ? TM_STATE_UPDATING : d->streaming ? TM_STATE_STREAMING : TM_STATE_ONLINE;
    h->device_id = tm_str(d->hal.device_id);
    h->location = tm_str(d->hal.location);
    h->profile = tm_str(d->hal.profile);
    h->firmware = tm_str(d->hal.firmware);
    static const uint8_t zeros[8] = {0};
    h->model_sha.len = 8;
    h->model_sha.p = zeros;
    if (d->has_model) {
        const tm_image_t *img = &d->model[d->cur].img;
        h->model_name = img->name;
        h->model_version = img->version;
        h->model_sha.p = d->store.meta.slot[d->store.meta.active].sha;
    }
    h->prev_version = tm_store_version(&d->store, d->store.meta.previous);
    h->trial = (uint8_t)trial(d);
    h->slot_size = d->store.slot_size;
    h->free_slot = d->store.slot_size;
    h->ram_budget = (uint32_t)d->arena_size;
    h->max_chunk = TM_MAX_CHUNK;
    h->sample_rate = TM_SAMPLE_RATE;
    h->uptime_s = d->hal.now_ms(d->hal.ctx) / 1000u;
    h->fault_mask = d->fault_mask;
    send(d, &m);
    d->next_hello_ms = d->hal.now_ms(d->hal.ctx) + TM_HELLO_INTERVAL_S * 1000u;
}

/* Load an image into model slot `which`, timing it; TM_OK or the load error. */
static int load_into(tm_device_t *d, int which, const uint8_t *image, uint32_t len, uint32_t *us)
{
    uint32_t t0 = d->hal.now_us(d->hal.ctx);
    int rc = tm_model_load(&d->model[which], image, len, d->arena[which], d->arena_size);
    *us = d->hal.now_us(d->hal.ctx) - t0;
    return rc;
}

static int load_active(tm_device_t *d)
{
    uint32_t len, us;
    const uint8_t *img = tm_store_active(&d->store, &len);
    d->has_model = 0;
    if (!img) return TM_E_NO_MODEL;
    int rc = load_into(d, d->cur, img, len, &us);
    if (rc == TM_OK) {
        d->has_model = 1;
        d->load_us = us;
    }
    return rc;
}

static void shell_sort(uint32_t *a, int n)
{
    for (int gap = n / 2; gap > 0; gap /= 2)
        for (int i = gap; i < n; i++) {
            uint32_t v = a[i];
            int j = i;
            for (; j >= gap && a[j - gap] > v; j -= gap) a[j] = a[j - gap];
            a[j] = v;
        }
}

static uint32_t nearest_rank(const uint32_t *sorted, int n, int pct)
{
    int rank = (pct * n + 99) / 100; /* ceil(p/100 * n) */
    if (rank < 1) rank = 1;
    return sorted[rank - 1];
}

/* Time `count` scores of the model's self-test input and fill a LATENCY reply. */
static void bench_into(tm_device_t *d, tm_model_t *m, uint16_t count, tm_latency_t *lat)
{
    int n = count > TM_MAX_BENCH ? TM_MAX_BENCH : count;
    float score;
    for (int i = 0; i < n; i++) {
        uint32_t t0 = d->hal.now_us(d->hal.ctx);
        if (m->img.selftest) (void)tm_model_selftest(m, &score);
        else (void)tm_engine_invoke(&m->eng);
        d->bench[i] = d->hal.now_us(d->hal.ctx) - t0;
    }
    lat->n = (uint16_t)n;
    if (n) {
        shell_sort(d->bench, n);
        lat->min_us = d->bench[0];
        lat->median_us = nearest_rank(d->bench, n, 50);
        lat->p95_us = nearest_rank(d->bench, n, 95);
        lat->max_us = d->bench[n - 1];
    }
}

static void arm_trial(tm_device_t *d, int is_trial, uint16_t timeout_s)
{
    d->trial_deadline_ms = 0;
    if (is_trial)
        d->trial_deadline_ms = d->hal.now_ms(d->hal.ctx) + 1000u * (timeout_s ? timeout_s : TM_DEFAULT_TRIAL_TIMEOUT_S);
}

/* Load + self-test an image into the spare model instance (d->cur ^ 1), leaving the running one
 * untouched; the caller switches d->cur once the journal records the change. */
static int prove_in_spare(tm_device_t *d, const uint8_t *img, uint32_t len, uint32_t *load_us)
{
    int spare = d->cur ^ 1;
    int rc = load_into(d, spare, img, len, load_us);
    if (rc) return rc;
    float score;
    return tm_model_selftest(&d->model[spare], &score);
}

/* tm_store_mount's check at boot: the image loads into the active model instance and passes its
 * self-test when it has one (every pushed image has; a factory image may not). */
static int boot_check(void *ctx, const uint8_t *img, uint32_t len)
{
    tm_device_t *d = (tm_device_t *)ctx;
    uint32_t us;
    d->has_model = 0;
    int rc = load_into(d, d->cur, img, len, &us);
    float score;
    if (!rc && d->model[d->cur].img.selftest) rc = tm_model_selftest(&d->model[d->cur], &score);
    if (rc) return rc;
    d->has_model = 1;
    d->load_us = us;
    return TM_OK;
}

static void reply_latency(tm_device_t *d, uint16_t seq, tm_model_t *m, uint32_t deploy_us, uint32_t load_us,
                          uint16_t bench)
{
    tm_msg_t r = {TM_LATENCY, seq, {{0}}};
    tm_latency_t *lat = &r.u.latency;
    lat->model_version = m->img.version;
    lat->flags = (uint8_t)((d->hal.emulated ? TM_LAT_EMULATED : 0) | (trial(d) ? TM_LAT_TRIAL : 0));
    lat->deploy_us = deploy_us;
    lat->load_us = load_us;
    bench_into(d, m, bench, lat);
    send(d, &r);
}

/* The trust store: the build-time keys, then those TRUST_ADD put in the store (PROTOCOL.md 6.2). */
static void load_trust(tm_device_t *d)
{
    tm_trust_init(&d->trust, d->build_keys, d->n_build_keys);
    for (uint8_t i = 0; i < d->store.trust_keys; i++) (void)tm_trust_add(&d->trust, tm_store_trust_key(&d->store, i));
}

/* REVOKED when the operator revoked this image's (name, version). */
static int check_revoked(const tm_device_t *d, const tm_image_t *img)
{
    uint8_t id[TM_REVOCATION_ID_LEN];
    tm_sign_revocation_id(img->name.p, img->name.len, img->version, id);
    return tm_store_is_revoked(&d->store, id) ? TM_E_REVOKED : TM_OK;
}

/* PROTOCOL.md 6.2: a revoked version is refused; with a trust store, the received image must carry
 * a valid signature by one of its keys (XFER_SIGN for this transfer); without one (not provisioned)
 * it is taken unsigned. */
static int check_signature(tm_device_t *d, uint32_t transfer_id, const uint8_t *img, uint32_t len)
{
    tm_image_t parsed;
    if (tm_image_parse(img, len, &parsed) != TM_OK) return TM_E_BAD_IMAGE;
    int rc = check_revoked(d, &parsed);
    if (rc) return rc;
    if (d->trust.n == 0) return TM_OK;
    if (!d->sig_valid || d->sig_transfer != transfer_id) return TM_E_BAD_SIGNATURE;
    uint8_t statement[TM_SIG_MAX_STATEMENT];
    size_t n = tm_sign_statement(d->store.sha, parsed.name.p, parsed.name.len, parsed.version,
                                 TM_FEATURE_SPEC_ID, statement);
    return tm_sign_verify(&d->trust, d->sig_block, statement, n);
}

static void handle_commit(tm_device_t *d, uint16_t seq, const tm_xfer_commit_t *c)
{
    const uint8_t *img;
    if (c->mode > TM_COMMIT_TRIAL) { send_error(d, seq, TM_XFER_COMMIT, TM_E_BAD_ARGUMENT); return; }
    int rc = tm_store_verify(&d->store, c->transfer_id, &img);
    if (rc) {
        if (rc == TM_E_HASH_MISMATCH) tm_store_abort(&d->store, c->transfer_id); /* a bad image is never kept */
        send_error(d, seq, TM_XFER_COMMIT, rc);
        return;
    }
    uint32_t deploy_us = d->hal.now_us(d->hal.ctx) - d->xfer_begin_us, load_us = 0;
    rc = check_signature(d, c->transfer_id, img, d->store.image_size);
    d->sig_valid = 0; /* a signature serves one commit */
    if (rc) {
        tm_store_abort(&d->store, c->transfer_id); /* an image that is not vouched for is never kept */
        send_error(d, seq, TM_XFER_COMMIT, rc);
        return;
    }
    rc = prove_in_spare(d, img, d->store.image_size, &load_us);
    if (rc) {
        tm_store_abort(&d->store, c->transfer_id);
        send_error(d, seq, TM_XFER_COMMIT, rc);
        return;
    }
    int activate = c->mode != TM_COMMIT_STORE;
    d->store.version = d->model[d->cur ^ 1].img.version; /* the image's META is authoritative */
    rc = tm_store_commit(&d->store, activate, c->mode == TM_COMMIT_TRIAL, c->trial_timeout_s);
    if (rc) { send_error(d, seq, TM_XFER_COMMIT, rc); return; }
    tm_model_t *m = &d->model[d->cur ^ 1];
    if (activate) {
        d->cur ^= 1;
        d->has_model = 1;
        d->load_us = load_us;
        arm_trial(d, c->mode == TM_COMMIT_TRIAL, c->trial_timeout_s);
    }
    reply_latency(d, seq, m, deploy_us, load_us, c->bench_count);
    if (activate) send_event(d, TM_EV_MODEL_ACTIVATED, c->mode == TM_COMMIT_TRIAL ? "model activated on trial" : "model activated");
}

static void handle_activate(tm_device_t *d, uint16_t seq, const tm_activate_t *a)
{
    uint32_t len, load_us = 0;
    const uint8_t *img = tm_store_slot(&d->store, tm_store_inactive(&d->store), &len);
    if (!img || d->store.xfer) { send_error(d, seq, TM_ACTIVATE, TM_E_NO_MODEL); return; }
    tm_image_t parsed;
    int rc = tm_image_parse(img, len, &parsed);
    if (!rc) rc = check_revoked(d, &parsed);
    if (!rc) rc = prove_in_spare(d, img, len, &load_us);
    if (!rc) rc = tm_store_activate_inactive(&d->store, a->trial != 0, a->trial_timeout_s);
    if (rc) { send_error(d, seq, TM_ACTIVATE, rc); return; }
    d->cur ^= 1;
    d->has_model = 1;
    d->load_us = load_us;
    arm_trial(d, a->trial != 0, a->trial_timeout_s);
    reply_latency(d, seq, &d->model[d->cur], 0, load_us, a->bench_count);
    send_event(d, TM_EV_MODEL_ACTIVATED, "model activated");
}

/* The previous image is proven in the spare instance before the journal switches (as COMMIT and
 * ACTIVATE do): one this firmware cannot run is refused and the running model stays. */
static void handle_rollback(tm_device_t *d, uint16_t seq)
{
    uint32_t len = 0, load_us = 0;
    const uint8_t *img = tm_store_previous(&d->store, &len);
    int rc = img ? prove_in_spare(d, img, len, &load_us) : TM_E_NO_PREVIOUS;
    if (!rc) rc = tm_store_rollback(&d->store);
    if (rc) { send_error(d, seq, TM_ROLLBACK, rc); return; }
    d->trial_deadline_ms = 0;
    d->cur ^= 1;
    d->has_model = 1;
    d->load_us = load_us;
    send_hello(d, seq);
}

/* TRUST_ADD (PROTOCOL.md 6.2): taken as it is while the store is empty, else only with `auth` by a
 * trusted key over the trust-add statement; kept in the store, answered with HELLO. */
static void handle_trust_add(tm_device_t *d, uint16_t seq, const tm_trust_add_t *a)
{
    uint8_t statement[TM_SIG_MAX_STATEMENT];
    int rc = TM_OK;
    if (d->trust.n)
        rc = tm_sign_verify(&d->trust, a->auth.p, statement, tm_sign_trust_add_statement(a->public_key.p, statement));
    if (!rc && !tm_trust_has(&d->trust, a->public_key.p)) {
        rc = d->trust.n >= TM_MAX_TRUST_KEYS ? TM_E_TOO_LARGE : tm_store_trust_add(&d->store, a->public_key.p);
        if (!rc) load_trust(d);
    }
    if (rc) { send_error(d, seq, TM_TRUST_ADD, rc); return; }
    send_hello(d, seq);
}

/* REVOKE (PROTOCOL.md 6.2): signed by a trusted key; the version is refused from now on (kept). */
static void handle_revoke(tm_device_t *d, uint16_t seq, const tm_revoke_t *r)
{
    uint8_t statement[TM_SIG_MAX_STATEMENT], id[TM_REVOCATION_ID_LEN];
    int rc = tm_sign_verify(&d->trust, r->auth.p, statement,
                            tm_sign_revoke_statement(r->model_name.p, r->model_name.len, r->model_version, statement));
    if (!rc) {
        tm_sign_revocation_id(r->model_name.p, r->model_name.len, r->model_version, id);
        rc = tm_store_revoke(&d->store, id);
    }
    if (rc) { send_error(d, seq, TM_REVOKE, rc); return; }
    send_ack(d, seq, TM_REVOKE);
}

static void send_status(tm_device_t *d, uint16_t seq)
{
    tm_msg_t m = {TM_XFER_STATUS, seq, {{0}}};
    tm_xfer_status_t *s = &m.u.xfer_status;
    s->transfer_id = d->store.xfer_id;
    s->image_size = d->store.image_size;
    s->chunk_size = d->store.chunk_size;
    s->n_chunks = d->store.n_chunks;
    s->received = d->store.received;
    s->bitmap.len = (d->store.n_chunks + 7u) / 8u;
    s->bitmap.p = d->store.bitmap;
    send(d, &m);
}

/* A pull needs a transport that fetches (hal.pull_begin) and a plain topic prefix to subscribe under. */
static int valid_pull_source(const tm_device_t *d, const tm_str_t *source)
{
    if (!d->pull_begin || source->len == 0) return 0;
    for (unsigned i = 0; i < source->len; i++)
        if (source->p[i] == '+' || source->p[i] == '#') return 0;
    return 1;
}

/* PROTOCOL.md 2.3: a command seen within the window is answered with its first replies, not acted on
 * again; a state report that was too large to keep goes out as it is now, with the command's seq. */
static void answer_duplicate(tm_device_t *d, const tm_dup_entry_t *e)
{
    tm_dup_reply_t r;
    size_t off = 0;
    while (tm_dup_next_reply(e, &off, &r)) {
        if (r.msg) emit(d, r.msg, r.len);
        else if (r.type == TM_HELLO) send_hello(d, r.seq);
        else if (r.type == TM_XFER_STATUS) send_status(d, r.seq);
    }
}

static void handle(tm_device_t *d, const uint8_t *buf, size_t len)
{
    tm_msg_t m;
    int rc = tm_decode(buf, len, &m);
    uint16_t seq = len >= 4 ? (uint16_t)(buf[2] | (buf[3] << 8)) : 0;
    uint8_t type = len >= 2 ? buf[1] : 0;
    if (rc) { send_error(d, seq, type, rc); return; }
    uint32_t now_ms = d->hal.now_ms(d->hal.ctx);
    if (tm_dup_covers(m.type)) {
        uint8_t digest[TM_DUP_DIGEST_LEN];
        const tm_dup_entry_t *dup = tm_dup_find(&d->dup, buf, len, now_ms, digest);
        if (dup) { answer_duplicate(d, dup); return; }
        tm_dup_begin(&d->dup, digest, len, now_ms);
    }
    switch (m.type) {
    case TM_GET_INFO: send_hello(d, seq); break;
    case TM_STREAM_START: {
        uint16_t lease = m.u.stream_start.lease_s;
        if (lease == 0 || lease > TM_STREAM_LEASE_MAX_S) lease = TM_STREAM_LEASE_MAX_S;
        d->streaming = 1;
        d->stream_until_ms = now_ms + 1000u * lease;
        send_ack(d, seq, m.type);
        break;
    }
    case TM_STREAM_STOP: d->streaming = 0; send_ack(d, seq, m.type); break;
    case TM_XFER_BEGIN: {
        const tm_xfer_begin_t *b = &m.u.xfer_begin;
        int pull = (b->flags & TM_XFER_FLAG_PULL) != 0;
        if (pull && !valid_pull_source(d, &b->source)) { send_error(d, seq, m.type, TM_E_BAD_ARGUMENT); break; }
        int resumed;
        rc = tm_store_begin(&d->store, b->transfer_id, b->image_size, b->chunk_size, TM_MAX_CHUNK, b->sha256.p,
                            b->model_version, now_ms, &resumed);
        if (rc) { send_error(d, seq, m.type, rc); break; }
        if (!resumed) d->xfer_begin_us = d->hal.now_us(d->hal.ctx);
        /* journaled, so that a reboot resumes the pull by itself (tm_device_set_pull) */
        rc = tm_store_set_source(&d->store, pull ? b->source.p : NULL, pull ? b->source.len : 0u);
        if (rc) { send_error(d, seq, m.type, rc); break; }
        d->pulling = pull;
        d->pull_status_ms = now_ms;
        send_status(d, seq);
        if (pull) d->pull_begin(d->pull_ctx, b->source.p, b->source.len);
        break;
    }
    case TM_XFER_CHUNK: {
        const tm_xfer_chunk_t *c = &m.u.xfer_chunk;
        rc = tm_store_chunk(&d->store, c->transfer_id, c->index, c->crc32, c->data.p, c->data.len, now_ms);
        if (rc) send_error(d, seq, m.type, rc); else send_ack(d, seq, m.type);
        break;
    }
    case TM_XFER_QUERY:
        if (!d->store.xfer || d->store.xfer_id != m.u.xfer_id.transfer_id) send_error(d, seq, m.type, TM_E_NO_TRANSFER);
        else send_status(d, seq);
        break;
    case TM_XFER_COMMIT: handle_commit(d, seq, &m.u.xfer_commit); break;
    case TM_XFER_SIGN:
        if (!d->store.xfer || d->store.xfer_id != m.u.xfer_sign.transfer_id) {
            send_error(d, seq, m.type, TM_E_NO_TRANSFER);
            break;
        }
        memcpy(d->sig_block, m.u.xfer_sign.block.p, TM_SIG_BLOCK_SIZE);
        d->sig_transfer = m.u.xfer_sign.transfer_id;
        d->sig_valid = 1;
        send_ack(d, seq, m.type);
        break;
    case TM_XFER_ABORT:
        rc = tm_store_abort(&d->store, m.u.xfer_id.transfer_id);
        if (rc) send_error(d, seq, m.type, rc); else send_ack(d, seq, m.type);
        break;
    case TM_CONFIRM:
        rc = tm_store_confirm(&d->store);
        if (rc) { send_error(d, seq, m.type, rc); break; }
        d->trial_deadline_ms = 0;
        send_hello(d, seq);
        break;
    case TM_ROLLBACK: handle_rollback(d, seq); break;
    case TM_BENCHMARK:
        if (!d->has_model) { send_error(d, seq, m.type, TM_E_NO_MODEL); break; }
        /* PROTOCOL.md 3: zero inferences time nothing; the same answer as the Python device */
        if (m.u.benchmark.count == 0) { send_error(d, seq, m.type, TM_E_BAD_ARGUMENT); break; }
        reply_latency(d, seq, &d->model[d->cur], 0, d->load_us, m.u.benchmark.count);
        break;
    case TM_REBOOT:
        send_hello(d, seq);
        d->hal.reboot(d->hal.ctx);
        break;
    case TM_SET_FAULT: {
        float sev = m.u.set_fault.severity;
        if (!d->hal.set_fault || !(sev >= 0.0f && sev <= 1.0f) || m.u.set_fault.mask > 31) {
            send_error(d, seq, m.type, TM_E_BAD_ARGUMENT);
            break;
        }
        d->hal.set_fault(d->hal.ctx, m.u.set_fault.mask, sev);
        d->fault_mask = m.u.set_fault.mask;
        send_ack(d, seq, m.type);
        send_event(d, TM_EV_FAULT_CHANGED, "fault mode changed");
        break;
    }
    case TM_ACTIVATE: handle_activate(d, seq, &m.u.activate); break;
    case TM_TRUST_ADD: handle_trust_add(d, seq, &m.u.trust_add); break;
    case TM_REVOKE: handle_revoke(d, seq, &m.u.revoke); break;
    default: send_error(d, seq, m.type, TM_E_UNKNOWN_TYPE); break; /* a device-to-host type */
    }
    tm_dup_end(&d->dup);
}

void tm_device_message(tm_device_t *d, const uint8_t *msg, size_t len) { handle(d, msg, len); }

void tm_device_set_pull(tm_device_t *d, void (*pull_begin)(void *ctx, const uint8_t *source, size_t len), void *ctx)
{
    d->pull_begin = pull_begin;
    d->pull_ctx = ctx;
    /* a pull the journal restored (a reboot, a power cut) goes on fetching without the host */
    uint32_t len;
    const uint8_t *source = tm_store_pull_source(&d->store, &len);
    if (pull_begin && source && d->store.received < d->store.n_chunks) {
        d->pulling = 1;
        d->pull_status_ms = d->hal.now_ms(d->hal.ctx);
        pull_begin(ctx, source, len);
    }
}

int tm_device_pulling(const tm_device_t *d)
{
    return d->pulling && d->store.xfer && d->store.received < d->store.n_chunks;
}

void tm_device_pull_chunk(tm_device_t *d, const uint8_t *msg, size_t len)
{
    tm_msg_t m;
    if (!tm_device_pulling(d) || tm_decode(msg, len, &m) != TM_OK || m.type != TM_XFER_CHUNK) return;
    const tm_xfer_chunk_t *c = &m.u.xfer_chunk;
    uint32_t now_ms = d->hal.now_ms(d->hal.ctx);
    /* chunks on the broker carry transfer_id 0: they belong to whichever transfer pulls this image */
    if (tm_store_chunk(&d->store, d->store.xfer_id, c->index, c->crc32, c->data.p, c->data.len, now_ms)) return;
    if (d->store.received == d->store.n_chunks || now_ms - d->pull_status_ms >= TM_PULL_STATUS_INTERVAL_MS) {
        d->pull_status_ms = now_ms;
        send_status(d, next_seq(d));
    }
}

void tm_device_rx(tm_device_t *d, const uint8_t *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        const uint8_t *msg;
        size_t n = tm_framer_feed(&d->rx, data[i], &msg);
        if (n) handle(d, msg, n);
    }
}

static void send_stream(tm_device_t *d)
{
    static int16_t samples[TM_STREAM_FRAMES * TM_AXES];
    for (int start = 0; start < TM_WINDOW; start += TM_STREAM_FRAMES) {
        for (int i = 0; i < TM_STREAM_FRAMES * TM_AXES; i++) {
            float v = d->window[start * TM_AXES + i] / TM_STREAM_SCALE;
            v = v > 32767.0f ? 32767.0f : v < -32768.0f ? -32768.0f : v;
            int16_t q = (int16_t)lrintf(v);
            samples[i] = q; /* little-endian target and host: in-memory layout is the wire layout */
        }
        tm_msg_t m = {TM_STREAM, next_seq(d), {{0}}};
        m.u.stream.window_seq = d->window_seq;
        m.u.stream.sample_rate = TM_SAMPLE_RATE;
        m.u.stream.scale = TM_STREAM_SCALE;
        m.u.stream.n = TM_STREAM_FRAMES;
        m.u.stream.axes = TM_AXES;
        m.u.stream.samples.len = sizeof(samples);
        m.u.stream.samples.p = (const uint8_t *)samples;
        send(d, &m);
    }
}

static void telemetry(tm_device_t *d)
{
    d->hal.read_window(d->hal.ctx, d->window, TM_WINDOW);
    d->window_seq++;
    tm_features_extract(d->window, d->features, &d->shaft_hz, &d->work);
    tm_msg_t m = {TM_TELEMETRY, next_seq(d), {{0}}};
    tm_telemetry_t *t = &m.u.telemetry;
    t->uptime_ms = d->hal.now_ms(d->hal.ctx);
    t->window_seq = d->window_seq;
    t->shaft_hz = d->shaft_hz;
    t->features.n = TM_N_FEATURES;
    t->features.vals = d->features;
    d->score = 0.0f;
    tm_model_t *mod = &d->model[d->cur];
    if (d->has_model && mod->img.n_features == TM_N_FEATURES && tm_model_score(mod, d->features, &d->score) == TM_OK) {
        t->model_version = mod->img.version;
        t->score = d->score;
        t->threshold = mod->img.threshold;
        if (d->score > mod->img.threshold) t->flags |= TM_TLM_ALARM;
    } else {
        t->flags |= TM_TLM_NO_MODEL; /* none, or one that does not take spec-1 features */
        if (d->has_model) t->model_version = mod->img.version;
    }
    if (trial(d)) t->flags |= TM_TLM_TRIAL;
    send(d, &m);
    if (d->streaming) send_stream(d);
}

void tm_device_poll(tm_device_t *d)
{
    uint32_t now = d->hal.now_ms(d->hal.ctx);
    if (d->streaming && (int32_t)(now - d->stream_until_ms) >= 0) d->streaming = 0;
    if (d->trial_deadline_ms && trial(d) && (int32_t)(now - d->trial_deadline_ms) >= 0) {
        d->trial_deadline_ms = 0;
        if (tm_store_rollback(&d->store) == TM_OK) {
            d->cur ^= 1;
            (void)load_active(d);
            send_event(d, TM_EV_TRIAL_REVERTED, "trial not confirmed: previous model restored");
            send_hello(d, next_seq(d));
        }
    }
    if ((int32_t)(now - d->next_tlm_ms) >= 0) {
        d->next_tlm_ms = now + TM_TELEMETRY_PERIOD_MS;
        telemetry(d);
    }
    if ((int32_t)(now - d->next_hello_ms) >= 0) send_hello(d, next_seq(d));
}

int tm_device_init(tm_device_t *d, const tm_hal_t *hal, const tm_flash_t *flash, uint32_t slot_size,
                   const uint8_t *factory, uint32_t factory_len, uint8_t *arena0, uint8_t *arena1, size_t arena_size)
{
    memset(d, 0, sizeof(*d));
    d->hal = *hal;
    d->arena[0] = arena0;
    d->arena[1] = arena1;
    d->arena_size = arena_size;
    tm_framer_init(&d->rx);
    int reverted = 0;
    /* the active image, or else the other slot or the factory image: one that loads */
    int rc = tm_store_mount(&d->store, flash, slot_size, factory, factory_len, &reverted, boot_check, d);
    uint32_t len;
    if (rc != TM_OK || !tm_store_active(&d->store, &len)) d->has_model = 0; /* boot_check's last word otherwise */
    load_trust(d); /* the keys TRUST_ADD kept: HELLO tells them from the first message on */
    uint32_t now = hal->now_ms(hal->ctx);
    d->next_tlm_ms = now + TM_TELEMETRY_PERIOD_MS;
    send_event(d, TM_EV_BOOTED, d->has_model ? "booted" : "booted without a model");
    if (reverted) send_event(d, TM_EV_TRIAL_REVERTED, "trial not confirmed before reboot: previous model restored");
    send_hello(d, next_seq(d));
    return rc;
}

void tm_device_set_trust(tm_device_t *d, const uint8_t (*keys)[TM_SIG_PUBLIC_LEN], int n)
{
    d->build_keys = keys;
    d->n_build_keys = n;
    load_trust(d);
    d->sig_valid = 0;
}
