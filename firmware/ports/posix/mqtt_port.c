#include "mqtt_port.h"
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/err.h>
#include "tm_crc32.h"
#include "tm_proto.h"

/* Dead broker noticed within 1.5 keepalives (as the Python devices' KEEPALIVE_S). */
#define KEEPALIVE_S 15
/* A connect attempt to an unreachable broker gives up after this long (the loop keeps running). */
#define CONNECT_TIMEOUT_S 5
/* Reconnect back-off: first wait, doubling up to the cap; a random part of up to a quarter spreads
 * a fleet whose broker came back, so it does not reconnect in one burst. */
#define BACKOFF_MIN_MS 250u
#define BACKOFF_MAX_MS 30000u
/* A graceful stop waits this long for the broker to take the OFFLINE status. */
#define OFFLINE_PUBLISH_TIMEOUT_MS 2000u
/* Retained status heartbeat (PROTOCOL.md 2.2 HELLO_INTERVAL_S) when no other HELLO went out. */
#define STATUS_INTERVAL_MS (TM_HELLO_INTERVAL_S * 1000u)
/* The status is compared with the device's state this often, so a change the device makes by itself
 * (a stream lease running out) reaches the retained status without waiting for the heartbeat. */
#define STATUS_PROBE_MS 250u
/* QoS 1 publishes awaiting their PUBACK. The synchronous client blocks a publish while this many
 * are out (waiting in ~100 ms steps), and its default lets one reply wait for the previous one's
 * PUBACK: a push window of chunk ACKs then costs ~100 ms each. */
#define MAX_INFLIGHT 64
#define QOS_RELIABLE 1
#define QOS_LOSSY 0

/* Default ports of the two schemes (as app/transport/urls.py). */
#define MQTT_PORT 1883
#define MQTTS_PORT 8883
/* MQTT 3.1.1 CONNACK codes that no retry changes: bad user name or password, not authorised. */
#define CONNACK_BAD_LOGIN 4
#define CONNACK_NOT_AUTHORISED 5
/* TLS connects refused in a row (the broker's port open) before the device gives up: one may be a
 * broker restarting under us, three within a second of back-off are a certificate the broker (or
 * we) will not accept. */
#define TLS_REFUSALS_MAX 3u

/* mqtt://host[:port] -> tcp://host:port, mqtts:// -> ssl://; *tls says which. The user name and the
 * certificate files are options of their own (--username, --ca...), never parts of the URL. */
static int parse_broker(const char *url, char *address, size_t cap, int *tls)
{
    const char *hostport;
    if (strncmp(url, "mqtt://", 7) == 0) {
        hostport = url + 7;
        *tls = 0;
    } else if (strncmp(url, "mqtts://", 8) == 0) {
        hostport = url + 8;
        *tls = 1;
    } else {
        return -1;
    }
    size_t n = strcspn(hostport, "/@?");
    if (n == 0 || !(hostport[n] == '\0' || strcmp(hostport + n, "/") == 0)) return -1;
    const char *colon = memchr(hostport, ':', n);
    int written = colon ? snprintf(address, cap, "%s://%.*s", *tls ? "ssl" : "tcp", (int)n, hostport)
                        : snprintf(address, cap, "%s://%.*s:%d", *tls ? "ssl" : "tcp", (int)n, hostport,
                                   *tls ? MQTTS_PORT : MQTT_PORT);
    return written > 0 && (size_t)written < cap ? 0 : -1;
}

/* Whether anything accepts a TCP connection at the broker's host and port (waiting at most
 * CONNECT_TIMEOUT_S). Paho's connect says only "failure"; when the broker is there, a TLS connect
 * that still fails is the handshake refused, which no retry makes good, and not a broker away. */
static int tcp_reachable(const char *address)
{
    const char *hostport = strstr(address, "://") + 3;
    const char *colon = strrchr(hostport, ':');
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return 0;
    int ok = 0;
    for (struct addrinfo *a = res; a && !ok; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {CONNECT_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() on Linux */
        ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

/* Paho's hook for OpenSSL's error queue, oldest first: the last line (the SSL layer's, above the
 * library's that led to it) says why a handshake failed. */
static int on_ssl_error(const char *str, size_t len, void *ctx)
{
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    /* closing a connection cut in its handshake says only that: not the reason */
    if (!strstr(str, "shutdown while in init"))
        snprintf(p->tls_error, sizeof(p->tls_error), "%.*s", (int)len, str);
    return 0;
}

static int check_readable(const char *what, const char *path, char *err, size_t err_cap)
{
    FILE *f = path ? fopen(path, "rb") : NULL;
    if (path && !f) {
        snprintf(err, err_cap, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    if (f) fclose(f);
    return 0;
}

/* The identity's files must exist before the first attempt: a typo is a sentence, not a retry loop. */
static int setup_identity(mqtt_port_t *p, const mqtt_identity_t *id, char *err, size_t err_cap)
{
    if (id) p->identity = *id;
    const mqtt_identity_t *i = &p->identity;
    if (!p->tls && (i->ca || i->cert || i->key)) {
        snprintf(err, err_cap, "--ca, --cert and --key need an mqtts:// broker");
        return -1;
    }
    if ((i->cert != NULL) != (i->key != NULL)) {
        snprintf(err, err_cap, "a client certificate needs its key (--cert and --key)");
        return -1;
    }
    if (check_readable("CA certificate", i->ca, err, err_cap) ||
        check_readable("client certificate", i->cert, err, err_cap) ||
        check_readable("client key", i->key, err, err_cap))
        return -1;
    if (i->username) p->password = getenv(MQTT_PASSWORD_ENV); /* NULL: the broker decides */
    if (p->tls) {
        MQTTClient_SSLOptions ssl = MQTTClient_SSLOptions_initializer;
        ssl.struct_version = 3; /* trustStore..verify, CApath, ssl_error_cb */
        ssl.trustStore = i->ca; /* NULL: the system's CAs */
        ssl.keyStore = i->cert;
        ssl.privateKey = i->key;
        ssl.enableServerCertAuth = 1;
        ssl.verify = 1; /* the broker's certificate must name the host we asked for */
        ssl.ssl_error_cb = on_ssl_error;
        ssl.ssl_error_context = p;
        p->ssl = ssl;
    }
    return 0;
}

int mqtt_port_init(mqtt_port_t *p, const char *broker, const mqtt_identity_t *identity, const char *site,
                   const char *device_id, uint32_t (*now_ms)(void), char *err, size_t err_cap)
{
    memset(p, 0, sizeof(*p));
    p->now_ms = now_ms;
    if (parse_broker(broker, p->address, sizeof(p->address), &p->tls)) {
        snprintf(err, err_cap, "broker %s: expected mqtt://host[:port] or mqtts://host[:port] "
                 "(user name and certificates as --username, --ca, --cert, --key)", broker);
        return -1;
    }
    if (setup_identity(p, identity, err, err_cap)) return -1;
    snprintf(p->client_id, sizeof(p->client_id), "tinymlops-c-%s", device_id);
    const char *root = "tinymlops/v1";
    snprintf(p->t_status, sizeof(p->t_status), "%s/%s/%s/status", root, site, device_id);
    snprintf(p->t_reply, sizeof(p->t_reply), "%s/%s/%s/reply", root, site, device_id);
    snprintf(p->t_telemetry, sizeof(p->t_telemetry), "%s/%s/%s/telemetry", root, site, device_id);
    snprintf(p->t_stream, sizeof(p->t_stream), "%s/%s/%s/stream", root, site, device_id);
    snprintf(p->t_cmd, sizeof(p->t_cmd), "%s/%s/%s/cmd", root, site, device_id);
    int rc = MQTTClient_create(&p->client, p->address, p->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        snprintf(err, err_cap, "cannot create the MQTT client for %s: %s", p->address, MQTTClient_strerror(rc));
        return -1;
    }
    p->created = 1;
    p->backoff_ms = BACKOFF_MIN_MS;
    return 0;
}

static void publish(mqtt_port_t *p, const char *topic, const uint8_t *msg, size_t len, int qos, int retained)
{
    if (!p->connected) return; /* lossy channels are not queued; replies are resent by the host */
    MQTTClient_deliveryToken token;
    int rc = MQTTClient_publish(p->client, topic, (int)len, (void *)msg, qos, retained, &token);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "tinymlops-device: publish on %s failed: %s\n", topic, MQTTClient_strerror(rc));
        if (!MQTTClient_isConnected(p->client)) p->connected = 0;
    }
}

/* What a status HELLO says that matters to the host (everything but uptime and seq). */
static size_t status_key(const uint8_t *msg, size_t len, uint8_t *key, size_t cap)
{
    tm_msg_t m;
    if (tm_decode(msg, len, &m) != TM_OK || m.type != TM_HELLO) return 0;
    const tm_hello_t *h = &m.u.hello;
    uint8_t sha[8] = {0};
    if (h->model_sha.len == 8) memcpy(sha, h->model_sha.p, 8);
    int n = snprintf((char *)key, cap, "%u/%u/%u/%u/%u/%u/%u/", h->state, h->caps, h->model_version, h->prev_version,
                     h->trial, h->fault_mask, h->trust_keys);
    if (n < 0 || (size_t)n + 8 > cap) return 0;
    memcpy(key + n, sha, 8);
    return (size_t)n + 8;
}

static void publish_status(mqtt_port_t *p, const uint8_t *msg, size_t len)
{
    publish(p, p->t_status, msg, len, QOS_RELIABLE, 1);
    p->status_key_len = status_key(msg, len, p->status_key, sizeof(p->status_key));
    p->last_status_ms = p->now_ms();
}

/* Ask the core for its HELLO without a host (a GET_INFO it answers into p->probe). */
static int probe_hello(mqtt_port_t *p)
{
    static const uint8_t get_info[TM_HEADER_SIZE] = {TM_PROTOCOL_VERSION, TM_GET_INFO, 0, 0, 0, 0};
    p->probing = 1;
    p->probe_len = 0;
    tm_device_message(p->dev, get_info, sizeof(get_info));
    p->probing = 0;
    return p->probe_len > 0;
}

/* The retained status follows the device: published when what it says changed, or when due. */
static void refresh_status(mqtt_port_t *p, int force)
{
    if (!probe_hello(p)) return;
    uint8_t key[64];
    size_t n = status_key(p->probe, p->probe_len, key, sizeof(key));
    int changed = n != p->status_key_len || memcmp(key, p->status_key, n) != 0;
    if (force || changed || p->now_ms() - p->last_status_ms >= STATUS_INTERVAL_MS)
        publish_status(p, p->probe, p->probe_len);
}

static void record_reply(mqtt_port_t *p, const uint8_t *msg, size_t len)
{
    mqtt_dedup_t *e = p->recording;
    if (!e || !e->cacheable) return;
    if (e->fill + 2u + len > sizeof(e->replies)) {
        e->cacheable = 0; /* too much to keep: a duplicate is handled again */
        return;
    }
    e->replies[e->fill] = (uint8_t)(len & 0xFFu);
    e->replies[e->fill + 1] = (uint8_t)(len >> 8);
    memcpy(e->replies + e->fill + 2, msg, len);
    e->fill += 2u + (uint32_t)len;
}

void mqtt_port_send(void *ctx, uint8_t type, const uint8_t *msg, size_t len)
{
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (p->probing) {
        if (type == TM_HELLO && len <= sizeof(p->probe)) {
            memcpy(p->probe, msg, len);
            p->probe_len = len;
        }
        return;
    }
    switch (type) {
    case TM_TELEMETRY: publish(p, p->t_telemetry, msg, len, QOS_LOSSY, 0); return;
    case TM_STREAM: publish(p, p->t_stream, msg, len, QOS_LOSSY, 0); return;
    case TM_HELLO:
        if (!p->in_command) { /* boot, heartbeat, trial revert: the retained status */
            publish_status(p, msg, len);
            return;
        }
        break;
    default: break;
    }
    if (p->in_command) record_reply(p, msg, len);
    publish(p, p->t_reply, msg, len, QOS_RELIABLE, 0);
}

static mqtt_dedup_t *dedup_find(mqtt_port_t *p, uint32_t crc, uint32_t len)
{
    uint32_t now = p->now_ms();
    for (int i = 0; i < MQTT_DEDUP_ENTRIES; i++) {
        mqtt_dedup_t *e = &p->dedup[i];
        if (e->used && e->cacheable && e->crc == crc && e->len == len && now - e->at_ms < MQTT_DEDUP_WINDOW_MS) return e;
    }
    return NULL;
}

static void handle_command(mqtt_port_t *p, const uint8_t *msg, size_t len)
{
    int chunk = len >= 2 && msg[1] == TM_XFER_CHUNK; /* chunks are idempotent: placed by index */
    uint32_t crc = tm_crc32(0, msg, len);
    if (!chunk) {
        mqtt_dedup_t *hit = dedup_find(p, crc, (uint32_t)len);
        if (hit) {
            for (uint32_t off = 0; off + 2u <= hit->fill;) {
                uint32_t n = hit->replies[off] | (uint32_t)hit->replies[off + 1] << 8;
                publish(p, p->t_reply, hit->replies + off + 2, n, QOS_RELIABLE, 0);
                off += 2u + n;
            }
            return;
        }
        mqtt_dedup_t *e = &p->dedup[p->dedup_next++ % MQTT_DEDUP_ENTRIES];
        e->crc = crc;
        e->len = (uint32_t)len;
        e->at_ms = p->now_ms();
        e->used = e->cacheable = 1;
        e->fill = 0;
        p->recording = e;
    }
    p->in_command = 1;
    tm_device_message(p->dev, msg, len);
    p->in_command = 0;
    p->recording = NULL;
    if (!chunk) refresh_status(p, 0);
}

void mqtt_port_pull_begin(void *ctx, const uint8_t *source, size_t len)
{
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (p->pull_subscribed && p->connected) MQTTClient_unsubscribe(p->client, p->pull_filter);
    p->pull_subscribed = 0; /* sync_pull subscribes (again): the broker then delivers every retained chunk */
    snprintf(p->pull_filter, sizeof(p->pull_filter), "%.*s/+", (int)len, (const char *)source);
    p->pull_prefix_len = len + 1u;
}

static int is_pull_chunk(const mqtt_port_t *p, const char *topic)
{
    return p->pull_prefix_len && strncmp(topic, p->pull_filter, p->pull_prefix_len) == 0 &&
           strchr(topic + p->pull_prefix_len, '/') == NULL;
}

/* Keep the chunk subscription in step with the core: subscribed while it pulls, again after
 * MQTT_PULL_REFETCH_MS without progress, dropped once the image is complete or the transfer gone. */
static void sync_pull(mqtt_port_t *p)
{
    if (!p->pull_prefix_len || !p->connected) return;
    uint32_t now = p->now_ms();
    if (!tm_device_pulling(p->dev)) {
        if (p->pull_subscribed) MQTTClient_unsubscribe(p->client, p->pull_filter);
        p->pull_subscribed = 0;
        p->pull_prefix_len = 0;
        return;
    }
    uint32_t held = p->dev->store.received;
    if (p->pull_subscribed && held != p->pull_received) {
        p->pull_received = held;
        p->pull_progress_ms = now;
    }
    if (p->pull_subscribed && now - p->pull_progress_ms < MQTT_PULL_REFETCH_MS) return;
    if (p->pull_subscribed) fprintf(stderr, "tinymlops-device: no pull chunk for %u ms, fetching again\n",
                                    MQTT_PULL_REFETCH_MS);
    int rc = MQTTClient_subscribe(p->client, p->pull_filter, QOS_RELIABLE);
    if (rc != MQTTCLIENT_SUCCESS)
        fprintf(stderr, "tinymlops-device: cannot subscribe to %s: %s\n", p->pull_filter, MQTTClient_strerror(rc));
    p->pull_subscribed = 1; /* a failed subscribe is tried again after the refetch period */
    p->pull_received = held;
    p->pull_progress_ms = now;
}

static void offline_hello(mqtt_port_t *p, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    tm_msg_t m;
    if (!probe_hello(p) || tm_decode(p->probe, p->probe_len, &m) != TM_OK) return;
    m.u.hello.state = TM_STATE_OFFLINE;
    *len = tm_encode(&m, out, cap);
}

static void try_connect(mqtt_port_t *p)
{
    uint8_t will_msg[TM_MAX_MESSAGE];
    size_t will_len;
    offline_hello(p, will_msg, sizeof(will_msg), &will_len);
    MQTTClient_connectOptions opts = MQTTClient_connectOptions_initializer;
    MQTTClient_willOptions will = MQTTClient_willOptions_initializer;
    will.topicName = p->t_status;
    will.payload.data = will_msg;
    will.payload.len = (int)will_len;
    will.qos = QOS_RELIABLE;
    will.retained = 1;
    opts.keepAliveInterval = KEEPALIVE_S;
    opts.cleansession = 1;
    opts.connectTimeout = CONNECT_TIMEOUT_S;
    opts.maxInflightMessages = MAX_INFLIGHT;
    opts.will = will_len ? &will : NULL;
    opts.username = p->identity.username;
    opts.password = p->identity.username ? p->password : NULL;
    opts.ssl = p->tls ? &p->ssl : NULL;
    p->tls_error[0] = 0;
    if (p->tls) ERR_clear_error();
    int rc = MQTTClient_connect(p->client, &opts);
    /* A broker that rejects our certificate says so in a TLS alert that often arrives only when the
     * client reads the CONNACK, where Paho hands OpenSSL's error queue (this thread's) to nobody. */
    if (rc != MQTTCLIENT_SUCCESS && p->tls && !p->tls_error[0]) ERR_print_errors_cb(on_ssl_error, p);
    if (rc == CONNACK_BAD_LOGIN || rc == CONNACK_NOT_AUTHORISED) {
        snprintf(p->refused_why, sizeof(p->refused_why), "broker %s refused the login%s%s (%s)", p->address,
                 p->identity.username ? " as " : "", p->identity.username ? p->identity.username : "",
                 rc == CONNACK_BAD_LOGIN ? "bad user name or password" : "not authorised");
        p->refused = 1;
        return;
    }
    int tls_refused = rc != MQTTCLIENT_SUCCESS && p->tls && tcp_reachable(p->address);
    p->tls_failures = tls_refused ? p->tls_failures + 1u : 0u;
    if (p->tls_failures >= TLS_REFUSALS_MAX) { /* a certificate no retry makes good */
        snprintf(p->refused_why, sizeof(p->refused_why),
                 "TLS handshake with %s refused %u times in a row: the broker is there but does not accept "
                 "this device's certificate, or --ca does not hold the broker's CA%s%s", p->address,
                 p->tls_failures, p->tls_error[0] ? "; OpenSSL: " : "", p->tls_error);
        p->refused = 1;
        return;
    }
    if (rc != MQTTCLIENT_SUCCESS) {
        uint32_t jitter = (uint32_t)rand() % (p->backoff_ms / 4u + 1u);
        fprintf(stderr, "tinymlops-device: cannot connect to %s (%s); retrying in %u ms\n", p->address,
                MQTTClient_strerror(rc), p->backoff_ms + jitter);
        p->next_attempt_ms = p->now_ms() + p->backoff_ms + jitter;
        p->backoff_ms = p->backoff_ms * 2u > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2u;
        return;
    }
    rc = MQTTClient_subscribe(p->client, p->t_cmd, QOS_RELIABLE);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "tinymlops-device: cannot subscribe to %s: %s\n", p->t_cmd, MQTTClient_strerror(rc));
        MQTTClient_disconnect(p->client, 0);
        p->next_attempt_ms = p->now_ms() + p->backoff_ms;
        return;
    }
    p->connected = 1;
    p->pull_subscribed = 0; /* a clean session holds no subscription: sync_pull makes it again */
    p->backoff_ms = BACKOFF_MIN_MS;
    fprintf(stderr, "tinymlops-device: connected to %s\n", p->address);
    refresh_status(p, 1);
}

void mqtt_port_poll(mqtt_port_t *p, unsigned wait_ms)
{
    if (p->connected && p->now_ms() - p->last_probe_ms >= STATUS_PROBE_MS) {
        p->last_probe_ms = p->now_ms();
        refresh_status(p, 0);
    }
    if (!p->connected && !p->stopping && !p->refused) {
        if ((int32_t)(p->now_ms() - p->next_attempt_ms) >= 0) try_connect(p);
        if (!p->connected) {
            usleep(wait_ms * 1000u);
            return;
        }
    }
    char *topic = NULL;
    int topic_len = 0;
    MQTTClient_message *message = NULL;
    int rc = MQTTClient_receive(p->client, &topic, &topic_len, &message, wait_ms);
    if (message) {
        const uint8_t *payload = (const uint8_t *)message->payload;
        if (strcmp(topic, p->t_cmd) == 0) handle_command(p, payload, (size_t)message->payloadlen);
        else if (is_pull_chunk(p, topic)) tm_device_pull_chunk(p->dev, payload, (size_t)message->payloadlen);
        MQTTClient_freeMessage(&message);
        MQTTClient_free(topic);
    }
    if ((rc != MQTTCLIENT_SUCCESS && rc != MQTTCLIENT_TOPICNAME_TRUNCATED) || !MQTTClient_isConnected(p->client)) {
        if (p->connected) fprintf(stderr, "tinymlops-device: lost the broker %s; reconnecting\n", p->address);
        p->connected = 0;
        p->pull_subscribed = 0; /* a clean session: the reconnect subscribes again */
        p->next_attempt_ms = p->now_ms() + p->backoff_ms;
    }
    sync_pull(p);
}

void mqtt_port_close(mqtt_port_t *p)
{
    p->stopping = 1;
    if (p->connected) {
        uint8_t msg[TM_MAX_MESSAGE];
        size_t len;
        offline_hello(p, msg, sizeof(msg), &len);
        MQTTClient_deliveryToken token = 0;
        if (len && MQTTClient_publish(p->client, p->t_status, (int)len, msg, QOS_RELIABLE, 1, &token) == MQTTCLIENT_SUCCESS)
            MQTTClient_waitForCompletion(p->client, token, OFFLINE_PUBLISH_TIMEOUT_MS);
        MQTTClient_disconnect(p->client, (int)OFFLINE_PUBLISH_TIMEOUT_MS);
        p->connected = 0;
    }
    if (p->created) MQTTClient_destroy(&p->client);
    p->created = 0;
}
