#include "mqtt_port.h"
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/x509.h>
#include "tm_proto.h"

/* Dead broker noticed within 1.5 keepalives (as the Python devices' KEEPALIVE_S). */
#define KEEPALIVE_S 15
/* A connect attempt (TCP, TLS handshake, CONNACK) not answered within this long has failed: an
 * unreachable broker is retried with back-off (the device loop keeps running meanwhile). */
#define CONNECT_TIMEOUT_MS 5000u
/* The plain TCP probe that tells a refused TLS handshake from a broker away gives up after this. */
#define PROBE_TIMEOUT_S 5
/* Reconnect back-off: first wait, doubling up to the cap; a random part of up to a quarter spreads
 * a fleet whose broker came back, so it does not reconnect in one burst. */
#define BACKOFF_MIN_MS 250u
#define BACKOFF_MAX_MS 30000u
/* A graceful stop waits this long for the broker to take the OFFLINE status, and as long again for
 * the DISCONNECT to go out. */
#define OFFLINE_PUBLISH_TIMEOUT_MS 2000u
/* One pass of the library's loop during the graceful stop (it returns sooner when a packet comes). */
#define CLOSE_LOOP_MS 50
/* Retained status heartbeat (PROTOCOL.md 2.2 HELLO_INTERVAL_S) when no other HELLO went out. */
#define STATUS_INTERVAL_MS (TM_HELLO_INTERVAL_S * 1000u)
/* The status is compared with the device's state this often, so a change the device makes by itself
 * (a stream lease running out) reaches the retained status without waiting for the heartbeat. */
#define STATUS_PROBE_MS 250u
/* QoS 1 publishes awaiting their PUBACK (libmosquitto queues the ones beyond, it never blocks): a
 * push window's chunk ACKs go out together instead of one per round trip. */
#define MAX_INFLIGHT 64
#define QOS_RELIABLE 1
#define QOS_LOSSY 0
/* SUBACK's return code for a refused subscription (MQTT 3.1.1 3.9.3). */
#define SUBACK_FAILURE 0x80

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
/* How libmosquitto's log lines that carry OpenSSL's error queue begin (lib/net_mosq.c). */
#define OPENSSL_LOG_PREFIX "OpenSSL Error"

/* mqtt://host[:port] (plain) or mqtts://host[:port] (TLS, *tls set) -> host and port, and the address
 * tcp://host:port or ssl://host:port that messages name. The user name and the certificate files are
 * options of their own (--username, --ca...), never parts of the URL. */
static int parse_broker(mqtt_port_t *p, const char *url)
{
    const char *hostport;
    if (strncmp(url, "mqtt://", 7) == 0) {
        hostport = url + 7;
        p->tls = 0;
    } else if (strncmp(url, "mqtts://", 8) == 0) {
        hostport = url + 8;
        p->tls = 1;
    } else {
        return -1;
    }
    size_t n = strcspn(hostport, "/@?");
    if (n == 0 || !(hostport[n] == '\0' || strcmp(hostport + n, "/") == 0)) return -1;
    const char *colon = memchr(hostport, ':', n);
    size_t host_len = colon ? (size_t)(colon - hostport) : n;
    if (host_len == 0 || host_len >= sizeof(p->host)) return -1;
    memcpy(p->host, hostport, host_len);
    p->host[host_len] = '\0';
    p->port = p->tls ? MQTTS_PORT : MQTT_PORT;
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (end != hostport + n || port < 1 || port > 65535) return -1;
        p->port = (int)port;
    }
    int written = snprintf(p->address, sizeof(p->address), "%s://%s:%d", p->tls ? "ssl" : "tcp", p->host, p->port);
    return written > 0 && (size_t)written < sizeof(p->address) ? 0 : -1;
}

/* Whether anything accepts a TCP connection at the broker's host and port (waiting at most
 * PROBE_TIMEOUT_S). When the broker is there, a TLS connect that still failed is the handshake
 * refused, which no retry makes good, and not a broker away. */
static int tcp_reachable(const mqtt_port_t *p)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", p->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(p->host, port, &hints, &res) != 0) return 0;
    int ok = 0;
    for (struct addrinfo *a = res; a && !ok; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {PROBE_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() on Linux */
        ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}

/* libmosquitto's log: OpenSSL's error queue arrives here, oldest first; the last line (the SSL
 * layer's, above the library's that led to it) says why a handshake failed. Other errors and
 * warnings go to stderr; its debug chatter (every packet) does not. */
static void on_log(struct mosquitto *mosq, void *ctx, int level, const char *str)
{
    (void)mosq;
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (strncmp(str, OPENSSL_LOG_PREFIX, strlen(OPENSSL_LOG_PREFIX)) == 0) {
        const char *text = strstr(str, ": ");
        text = text ? text + 2 : str;
        /* closing a connection cut in its handshake says only that: not the reason */
        if (!strstr(text, "shutdown while in init")) snprintf(p->tls_error, sizeof(p->tls_error), "%s", text);
        return;
    }
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) fprintf(stderr, "tinymlops-device: mosquitto: %s\n", str);
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
    return 0;
}

/* The client's options, kept for every reconnect: login, TLS (the broker's certificate checked
 * against --ca, or without it the system's CAs, and its name against HOST: libmosquitto's default,
 * tls_insecure off), our certificate, the in-flight window, Nagle off (a reply is one small packet). */
static int configure_client(mqtt_port_t *p, char *err, size_t err_cap)
{
    const mqtt_identity_t *i = &p->identity;
    int rc = MOSQ_ERR_SUCCESS;
    if (i->username) rc = mosquitto_username_pw_set(p->mosq, i->username, p->password);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_int_option(p->mosq, MOSQ_OPT_SEND_MAXIMUM, MAX_INFLIGHT);
    if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_int_option(p->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (rc == MOSQ_ERR_SUCCESS && p->tls) {
        /* tls_set wants a CA file or directory: without --ca, OpenSSL's default directory and the
         * system's default store (MOSQ_OPT_TLS_USE_OS_CERTS) */
        if (!i->ca) rc = mosquitto_int_option(p->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_tls_set(p->mosq, i->ca, i->ca ? NULL : X509_get_default_cert_dir(), i->cert, i->key, NULL);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        snprintf(err, err_cap, "cannot set up the MQTT client for %s: %s", p->address, mosquitto_strerror(rc));
        return -1;
    }
    return 0;
}

static void on_connect(struct mosquitto *mosq, void *ctx, int rc);
static void on_disconnect(struct mosquitto *mosq, void *ctx, int rc);
static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *m);
static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int qos_count, const int *granted);
static void on_publish(struct mosquitto *mosq, void *ctx, int mid);

int mqtt_port_init(mqtt_port_t *p, const char *broker, const mqtt_identity_t *identity, const char *site,
                   const char *device_id, uint32_t (*now_ms)(void), char *err, size_t err_cap)
{
    memset(p, 0, sizeof(*p));
    p->now_ms = now_ms;
    if (parse_broker(p, broker)) {
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
    mosquitto_lib_init();
    p->lib_ready = 1;
    p->mosq = mosquitto_new(p->client_id, true, p); /* a clean session: PROTOCOL.md 2.2 */
    if (!p->mosq) {
        snprintf(err, err_cap, "cannot create the MQTT client for %s: %s", p->address, strerror(errno));
        return -1;
    }
    if (configure_client(p, err, err_cap)) return -1;
    mosquitto_log_callback_set(p->mosq, on_log);
    mosquitto_connect_callback_set(p->mosq, on_connect);
    mosquitto_disconnect_callback_set(p->mosq, on_disconnect);
    mosquitto_message_callback_set(p->mosq, on_message);
    mosquitto_subscribe_callback_set(p->mosq, on_subscribe);
    mosquitto_publish_callback_set(p->mosq, on_publish);
    p->backoff_ms = BACKOFF_MIN_MS;
    return 0;
}

/* Subscription changes while connected (a clean session keeps none across connections). */
static void subscribe(mqtt_port_t *p, const char *filter, int *mid)
{
    int rc = mosquitto_subscribe(p->mosq, mid, filter, QOS_RELIABLE);
    if (rc != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "tinymlops-device: cannot subscribe to %s: %s\n", filter, mosquitto_strerror(rc));
}

static void unsubscribe(mqtt_port_t *p, const char *filter)
{
    int rc = mosquitto_unsubscribe(p->mosq, NULL, filter);
    if (rc != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "tinymlops-device: cannot unsubscribe from %s: %s\n", filter, mosquitto_strerror(rc));
}

static void publish(mqtt_port_t *p, const char *topic, const uint8_t *msg, size_t len, int qos, int retained)
{
    if (!p->connected) return; /* lossy channels are not queued; replies are resent by the host */
    int rc = mosquitto_publish(p->mosq, NULL, topic, (int)len, msg, qos, retained != 0);
    if (rc != MOSQ_ERR_SUCCESS) /* a lost connection is noticed (and retried) by the loop */
        fprintf(stderr, "tinymlops-device: publish on %s failed: %s\n", topic, mosquitto_strerror(rc));
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
    publish(p, p->t_reply, msg, len, QOS_RELIABLE, 0);
}

static void handle_command(mqtt_port_t *p, const uint8_t *msg, size_t len)
{
    /* a duplicate (QoS 1 redelivery, a host's resend) is answered by the core's cache (tm_dedup) */
    int chunk = len >= 2 && msg[1] == TM_XFER_CHUNK;
    p->in_command = 1;
    tm_device_message(p->dev, msg, len);
    p->in_command = 0;
    if (!chunk) refresh_status(p, 0); /* chunks change no status field: no probe per chunk */
}

void mqtt_port_pull_begin(void *ctx, const uint8_t *source, size_t len)
{
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (p->pull_subscribed && p->connected) unsubscribe(p, p->pull_filter);
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
        if (p->pull_subscribed) unsubscribe(p, p->pull_filter);
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
    subscribe(p, p->pull_filter, NULL);
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

/* The next attempt after the back-off (doubled for the one after, up to BACKOFF_MAX_MS). */
static void schedule_retry(mqtt_port_t *p, const char *why)
{
    uint32_t jitter = (uint32_t)rand() % (p->backoff_ms / 4u + 1u);
    fprintf(stderr, "tinymlops-device: cannot connect to %s (%s); retrying in %u ms\n", p->address, why,
            p->backoff_ms + jitter);
    p->next_attempt_ms = p->now_ms() + p->backoff_ms + jitter;
    p->backoff_ms = p->backoff_ms * 2u > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2u;
}

/* A connect attempt ended without a session. `before_connack`: it failed in TCP or TLS (a CONNACK
 * refusal says the TLS handshake worked). Three TLS failures in a row with the broker's port open
 * are a certificate no retry makes good: p->refused. */
static void connect_failed(mqtt_port_t *p, const char *why, int before_connack)
{
    p->connecting = 0;
    int tls_refused = before_connack && p->tls && tcp_reachable(p);
    p->tls_failures = tls_refused ? p->tls_failures + 1u : 0u;
    if (p->tls_failures >= TLS_REFUSALS_MAX) {
        snprintf(p->refused_why, sizeof(p->refused_why),
                 "TLS handshake with %s refused %u times in a row: the broker is there but does not accept "
                 "this device's certificate, or --ca does not hold the broker's CA%s%s", p->address,
                 p->tls_failures, p->tls_error[0] ? "; OpenSSL: " : "", p->tls_error);
        p->refused = 1;
        return;
    }
    schedule_retry(p, why);
}

/* The connection is gone (the loop or the library said so); safe to call more than once. */
static void connection_ended(mqtt_port_t *p, int rc)
{
    if (p->connecting) {
        connect_failed(p, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), 1);
    } else if (p->connected) {
        if (!p->stopping) fprintf(stderr, "tinymlops-device: lost the broker %s (%s); reconnecting\n", p->address,
                                  rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        p->connected = 0;
        p->pull_subscribed = 0; /* a clean session: the reconnect subscribes again */
        p->next_attempt_ms = p->now_ms() + p->backoff_ms;
    }
}

static void on_connect(struct mosquitto *mosq, void *ctx, int rc)
{
    (void)mosq;
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (!p->connecting) return;
    if (rc == CONNACK_BAD_LOGIN || rc == CONNACK_NOT_AUTHORISED) {
        snprintf(p->refused_why, sizeof(p->refused_why), "broker %s refused the login%s%s (%s)", p->address,
                 p->identity.username ? " as " : "", p->identity.username ? p->identity.username : "",
                 rc == CONNACK_BAD_LOGIN ? "bad user name or password" : "not authorised");
        p->connecting = 0;
        p->refused = 1;
        return;
    }
    if (rc != 0) {
        connect_failed(p, mosquitto_connack_string(rc), 0);
        return;
    }
    p->connecting = 0;
    p->connected = 1;
    p->tls_failures = 0;
    p->pull_subscribed = 0; /* a clean session holds no subscription: sync_pull makes it again */
    p->backoff_ms = BACKOFF_MIN_MS;
    fprintf(stderr, "tinymlops-device: connected to %s\n", p->address);
    /* the broker takes the SUBSCRIBE before the HELLO behind it: a host that sees the device on line
     * can command it */
    subscribe(p, p->t_cmd, &p->cmd_mid);
    refresh_status(p, 1);
}

static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int qos_count, const int *granted)
{
    (void)mosq;
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (mid != p->cmd_mid || qos_count < 1 || granted[0] != SUBACK_FAILURE) return;
    /* deaf to commands: better off line (the will says so) and trying again */
    fprintf(stderr, "tinymlops-device: the broker refused the subscription to %s; reconnecting\n", p->t_cmd);
    mosquitto_disconnect(p->mosq);
    connection_ended(p, MOSQ_ERR_NOT_SUPPORTED);
}

static void on_disconnect(struct mosquitto *mosq, void *ctx, int rc)
{
    (void)mosq;
    connection_ended((mqtt_port_t *)ctx, rc ? rc : MOSQ_ERR_CONN_LOST);
}

static void on_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *m)
{
    (void)mosq;
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    const uint8_t *payload = (const uint8_t *)m->payload;
    if (strcmp(m->topic, p->t_cmd) == 0) handle_command(p, payload, (size_t)m->payloadlen);
    else if (is_pull_chunk(p, m->topic)) tm_device_pull_chunk(p->dev, payload, (size_t)m->payloadlen);
}

static void on_publish(struct mosquitto *mosq, void *ctx, int mid)
{
    (void)mosq;
    mqtt_port_t *p = (mqtt_port_t *)ctx;
    if (p->stopping && mid == p->offline_mid) p->offline_acked = 1;
}

/* Start a connect (TCP connect, TLS handshake and CONNACK complete in the loop) with the last will
 * as the device is now: its HELLO with state OFFLINE, retained. */
static void start_connect(mqtt_port_t *p)
{
    uint8_t will_msg[TM_MAX_MESSAGE];
    size_t will_len;
    offline_hello(p, will_msg, sizeof(will_msg), &will_len);
    if (will_len) mosquitto_will_set(p->mosq, p->t_status, (int)will_len, will_msg, QOS_RELIABLE, true);
    p->tls_error[0] = 0;
    p->connecting = 1;
    p->connect_deadline_ms = p->now_ms() + CONNECT_TIMEOUT_MS;
    int rc = mosquitto_connect_async(p->mosq, p->host, p->port, KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS) connection_ended(p, rc);
}

void mqtt_port_poll(mqtt_port_t *p, unsigned wait_ms)
{
    if (p->connected && p->now_ms() - p->last_probe_ms >= STATUS_PROBE_MS) {
        p->last_probe_ms = p->now_ms();
        refresh_status(p, 0);
    }
    if (!p->connected && !p->connecting && !p->stopping && !p->refused) {
        if ((int32_t)(p->now_ms() - p->next_attempt_ms) >= 0) start_connect(p);
        if (!p->connecting) {
            usleep(wait_ms * 1000u);
            return;
        }
    }
    if (!p->connected && !p->connecting) {
        usleep(wait_ms * 1000u);
        return;
    }
    int rc = mosquitto_loop(p->mosq, (int)wait_ms, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
        connection_ended(p, rc);
    } else if (p->connecting && (int32_t)(p->now_ms() - p->connect_deadline_ms) >= 0) {
        mosquitto_disconnect(p->mosq); /* the next attempt closes what is left of this one */
        connection_ended(p, MOSQ_ERR_TIMEOUT);
    }
    sync_pull(p);
}

/* Run the library's loop until *flag == want, the connection ends or the deadline passes (the
 * graceful stop only). */
static void loop_until(mqtt_port_t *p, const int *flag, int want, uint32_t timeout_ms)
{
    uint32_t start = p->now_ms();
    while (*flag != want && p->connected && p->now_ms() - start < timeout_ms)
        if (mosquitto_loop(p->mosq, CLOSE_LOOP_MS, 1) != MOSQ_ERR_SUCCESS) break;
}

void mqtt_port_close(mqtt_port_t *p)
{
    p->stopping = 1;
    if (p->connected) {
        uint8_t msg[TM_MAX_MESSAGE];
        size_t len;
        offline_hello(p, msg, sizeof(msg), &len);
        if (len && mosquitto_publish(p->mosq, &p->offline_mid, p->t_status, (int)len, msg, QOS_RELIABLE, true) ==
                       MOSQ_ERR_SUCCESS)
            loop_until(p, &p->offline_acked, 1, OFFLINE_PUBLISH_TIMEOUT_MS);
        /* a clean disconnect fires no will; on_disconnect clears p->connected once the broker closed */
        if (p->connected && mosquitto_disconnect(p->mosq) == MOSQ_ERR_SUCCESS)
            loop_until(p, &p->connected, 0, OFFLINE_PUBLISH_TIMEOUT_MS);
        p->connected = 0;
    }
    if (p->mosq) mosquitto_destroy(p->mosq);
    p->mosq = NULL;
    if (p->lib_ready) mosquitto_lib_cleanup();
    p->lib_ready = 0;
}
