/* The device's MQTT transport (PROTOCOL.md 2.2) over libmosquitto (its manual loop API, one thread:
 * the device loop calls mqtt_port_poll, which runs mosquitto_loop for at most `wait_ms`; the
 * library's callbacks run inside it, on this thread).
 * It connects with the last will (HELLO, state OFFLINE, retained), publishes the retained HELLO on
 * every connect and on every change of state, routes the core's messages to their topics with the
 * table's QoS, reconnects with back-off, answers a command it has already handled (same bytes:
 * a host resending after a lost reply) from a cache instead of acting twice, and during a pull
 * transfer subscribes to the site's retained chunks, subscribing again when they stop coming. */
#ifndef TM_MQTT_PORT_H
#define TM_MQTT_PORT_H
#include <mosquitto.h>
#include <stddef.h>
#include <stdint.h>
#include "tm_device.h"

/* Longest pull source (a topic prefix: a str field of XFER_BEGIN) plus "/+". */
#define MQTT_PULL_TOPIC_MAX (255 + 3)
/* A pull that got no new chunk for this long subscribes again, which makes the broker deliver the
 * retained chunks again (one lost in flight, a host that re-published): as the Python device's
 * PULL_REFETCH_S, below the host's PULL_QUIET_S so the device asks before the host re-publishes. */
#define MQTT_PULL_REFETCH_MS 2000u

/* A broker identity for mqtts:// (all optional): CA that signed the broker's certificate, our client
 * certificate and key (PEM files) and a user name, whose password comes from MQTT_PASSWORD_ENV only. */
typedef struct {
    const char *ca, *cert, *key, *username;
} mqtt_identity_t;

/* The only source of the broker password: never a command line (it shows in process lists). */
#define MQTT_PASSWORD_ENV "TINYMLOPS_BROKER_PASSWORD"
/* Longest OpenSSL error text kept to explain a refused handshake. */
#define MQTT_TLS_ERROR_MAX 240

typedef struct {
    struct mosquitto *mosq;
    char address[256], client_id[96]; /* address: ssl://HOST:PORT or tcp://HOST:PORT, for messages */
    char host[256];
    int port;
    char t_status[160], t_reply[160], t_telemetry[160], t_stream[160], t_cmd[160];
    tm_device_t *dev;
    int lib_ready, connecting, connected, stopping;
    uint32_t next_attempt_ms, backoff_ms, last_status_ms, last_probe_ms;
    uint32_t connect_deadline_ms; /* a connect not answered by a CONNACK by then has failed */
    int cmd_mid;                  /* the SUBSCRIBE to .../cmd of this connection */
    int offline_mid, offline_acked; /* the graceful stop's OFFLINE status and its PUBACK */
    int in_command, probing;
    uint8_t probe[TM_MAX_MESSAGE];
    size_t probe_len;
    uint8_t status_key[64];
    size_t status_key_len;
    uint32_t (*now_ms)(void);
    /* pull transfer (PROTOCOL.md 5.2): the chunk filter `<source>/+` while the core pulls */
    char pull_filter[MQTT_PULL_TOPIC_MAX + 1];
    size_t pull_prefix_len; /* bytes of `<source>/` at the start of pull_filter */
    int pull_subscribed;
    uint32_t pull_received, pull_progress_ms; /* chunks held at the last progress, and when */
    /* TLS and login (mqtts://, --username): kept for every reconnect */
    int tls;
    mqtt_identity_t identity;
    const char *password;
    char tls_error[MQTT_TLS_ERROR_MAX]; /* OpenSSL's last complaint in the current connect attempt */
    unsigned tls_failures;              /* connect attempts in a row that failed in TLS */
    /* set when the broker refused us for good (certificate, login): the device stops with it */
    int refused;
    char refused_why[MQTT_TLS_ERROR_MAX + 512];
} mqtt_port_t;

/* Topics and the client (no connection yet). `broker` is mqtt://host[:port] or mqtts://host[:port]
 * (then `identity`'s files, checked readable here); 0 or an error text. `identity` may be NULL. */
int mqtt_port_init(mqtt_port_t *p, const char *broker, const mqtt_identity_t *identity, const char *site,
                   const char *device_id, uint32_t (*now_ms)(void), char *err, size_t err_cap);
/* The core's send_message HAL hook: ctx is the mqtt_port_t. */
void mqtt_port_send(void *ctx, uint8_t type, const uint8_t *msg, size_t len);
/* The core's pull_begin HAL hook (ctx is the mqtt_port_t): fetch `<source>/+` from now on. */
void mqtt_port_pull_begin(void *ctx, const uint8_t *source, size_t len);
/* (Re)connect when due (a broker that refuses our certificate or login for good sets p->refused), then wait up to wait_ms for one incoming command and hand it to the core. */
void mqtt_port_poll(mqtt_port_t *p, unsigned wait_ms);
/* Graceful stop: OFFLINE status published ourselves (a clean disconnect fires no will), disconnect. */
void mqtt_port_close(mqtt_port_t *p);

#endif
