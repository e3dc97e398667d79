/* MQTT transport (PROTOCOL.md 2.2) with esp-mqtt: bare messages, one topic per message kind,
 * HELLO retained on .../status with an OFFLINE HELLO as last will. With the broker identity of
 * menuconfig (CONFIG_TINYMLOPS_MQTT_TLS) it speaks mqtts:// with the embedded CA, client certificate
 * and key, as the operator and the POSIX port do; a user name and password are optional. Pull transfers (fleet rollout
 * from retained chunk topics) are not implemented on this port: caps never advertise PULL_XFER. */
#include <stdio.h>
#include <string.h>
#include "board.h"
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/message_buffer.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "sdkconfig.h"

#if CONFIG_TINYMLOPS_MQTT_TLS
/* The broker identity's PEM files, embedded as NUL-terminated text by main/CMakeLists.txt. */
extern const char tm_broker_ca_start[] asm("_binary_tm_broker_ca_pem_start");
extern const char tm_broker_cert_start[] asm("_binary_tm_broker_cert_pem_start");
extern const char tm_broker_key_start[] asm("_binary_tm_broker_key_pem_start");
#endif

/* Locking. esp-mqtt calls on_event from its own task while holding the client's API lock, and
 * esp_mqtt_client_publish takes that lock. So:
 *  - a command runs inline in on_event under the device lock, and its replies are published
 *    directly (same task: the client lock is recursive and already held);
 *  - what the main loop sends under the device lock (telemetry, stream, periodic HELLO, events)
 *    must not wait for the client lock (the MQTT task may hold it while it waits for the device
 *    lock: deadlock), so it is copied into `outbox` without blocking and published by
 *    publisher_task, which holds no device lock. */
/* Room for a few seconds of main-loop output with streaming on (per second: telemetry ~200 B,
 * 4 STREAM of 1.5 KB, at times a HELLO or EVENT): a publisher stalled by a slow link drops
 * messages (logged) rather than blocking the device. */
#define OUTBOX_BYTES (24 * 1024)
#define PUBLISHER_STACK 4096
#define PUBLISHER_PRIO 5

static const char *TAG = "tm_mqtt";
static esp_mqtt_client_handle_t client;
static tm_device_t *s_dev;
static char topic_base[160];
static MessageBufferHandle_t outbox;
static int in_handler; /* read and written only under the device lock */
static uint32_t dropped;

static void topic(char *out, size_t cap, const char *leaf) { snprintf(out, cap, "%s/%s", topic_base, leaf); }

static void publish(uint8_t type, const uint8_t *msg, size_t len)
{
    char t[200];
    int qos = 1, retain = 0;
    if (type == TM_TELEMETRY) { topic(t, sizeof(t), "telemetry"); qos = 0; }
    else if (type == TM_STREAM) { topic(t, sizeof(t), "stream"); qos = 0; }
    else if (type == TM_HELLO) {
        /* a HELLO is both the reply and the retained presence */
        topic(t, sizeof(t), "status");
        esp_mqtt_client_publish(client, t, (const char *)msg, (int)len, 1, 1);
        topic(t, sizeof(t), "reply");
    } else topic(t, sizeof(t), "reply");
    esp_mqtt_client_publish(client, t, (const char *)msg, (int)len, qos, retain);
}

static void publisher_task(void *arg)
{
    (void)arg;
    static uint8_t buf[1 + TM_MAX_MESSAGE];
    for (;;) {
        size_t n = xMessageBufferReceive(outbox, buf, sizeof(buf), portMAX_DELAY);
        if (n > 1) publish(buf[0], buf + 1, n - 1);
    }
}

/* The core's send_message; always called under the device lock (inside a tm_device_* call). */
void hal_mqtt_send(void *ctx, uint8_t type, const uint8_t *msg, size_t len)
{
    (void)ctx;
    if (in_handler) {
        publish(type, msg, len);
        return;
    }
    /* one writer at a time (the device lock), as a FreeRTOS message buffer requires */
    static uint8_t staged[1 + TM_MAX_MESSAGE];
    if (len > TM_MAX_MESSAGE) return;
    staged[0] = type;
    memcpy(staged + 1, msg, len);
    if (xMessageBufferSend(outbox, staged, len + 1, 0) != len + 1) {
        dropped++;
        if ((dropped & (dropped - 1)) == 0) /* log at 1, 2, 4, 8... drops */
            ESP_LOGW(TAG, "outbox full: %lu messages dropped", (unsigned long)dropped);
    }
}

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg; (void)base;
    esp_mqtt_event_handle_t ev = (esp_mqtt_event_handle_t)data;
    char t[200];
    if (id == MQTT_EVENT_ERROR && ev->error_handle) {
        /* esp-mqtt retries by itself; the log says why, so a refused certificate is not a silent loop */
        const esp_mqtt_error_codes_t *e = ev->error_handle;
        if (e->error_type == MQTT_ERROR_TYPE_TCP_TRANSPORT)
            ESP_LOGE(TAG, "broker connection failed: esp-tls 0x%x, TLS stack 0x%x, socket errno %d "
                     "(a TLS failure with the broker up: check the CA and this node's certificate)",
                     e->esp_tls_last_esp_err, e->esp_tls_stack_err, e->esp_transport_sock_errno);
        else if (e->error_type == MQTT_ERROR_TYPE_CONNECTION_REFUSED)
            ESP_LOGE(TAG, "broker refused the connection (CONNACK %d: login or certificate not accepted)",
                     (int)e->connect_return_code);
    } else if (id == MQTT_EVENT_CONNECTED) {
        topic(t, sizeof(t), "cmd");
        esp_mqtt_client_subscribe(client, t, 1);
    } else if (id == MQTT_EVENT_DATA && ev->current_data_offset == 0 && ev->data_len == ev->total_data_len) {
        board_dev_lock(); /* commands fit one event */
        in_handler = 1;
        tm_device_message(s_dev, (const uint8_t *)ev->data, (size_t)ev->data_len);
        in_handler = 0;
        board_dev_unlock();
    }
}

int hal_mqtt_start(tm_device_t *dev, const char *broker_uri, const char *site, const char *device_id)
{
    s_dev = dev;
    snprintf(topic_base, sizeof(topic_base), "tinymlops/v1/%s/%s", site, device_id);
    static char will_topic[200];
    topic(will_topic, sizeof(will_topic), "status");
    /* last will: a minimal HELLO with state OFFLINE (encoded by the core's codec) */
    static uint8_t will[128];
    tm_msg_t m;
    memset(&m, 0, sizeof(m));
    m.type = TM_HELLO;
    m.u.hello.proto_min = m.u.hello.proto_max = TM_PROTOCOL_VERSION;
    m.u.hello.state = TM_STATE_OFFLINE;
    m.u.hello.device_id = tm_str(device_id);
    size_t will_len = tm_encode(&m, will, sizeof(will));
    const esp_mqtt_client_config_t cfg = {
        .broker.address.uri = broker_uri,
        .credentials.client_id = device_id,
        .session.last_will = {.topic = will_topic, .msg = (const char *)will, .msg_len = (int)will_len,
                              .qos = 1, .retain = 1},
        .buffer.size = TM_MAX_MESSAGE + 256,
#if CONFIG_TINYMLOPS_MQTT_TLS
        /* the broker must present a certificate from this CA (and its name must match the URI's host) */
        .broker.verification.certificate = tm_broker_ca_start,
        .credentials.authentication.certificate = tm_broker_cert_start,
        .credentials.authentication.key = tm_broker_key_start,
#endif
    };
    esp_mqtt_client_config_t conf = cfg;
#ifdef CONFIG_TINYMLOPS_MQTT_USERNAME /* defined when MQTT is the link (Kconfig.projbuild) */
    if (CONFIG_TINYMLOPS_MQTT_USERNAME[0]) {
        conf.credentials.username = CONFIG_TINYMLOPS_MQTT_USERNAME;
#ifdef CONFIG_TINYMLOPS_MQTT_PASSWORD
        conf.credentials.authentication.password = CONFIG_TINYMLOPS_MQTT_PASSWORD;
#endif
    }
#endif
#if CONFIG_TINYMLOPS_MQTT_TLS
    if (strncmp(broker_uri, "mqtts://", 8) != 0) {
        ESP_LOGE(TAG, "broker identity configured but the broker URI %s is not mqtts://", broker_uri);
        return -1;
    }
#endif
    client = esp_mqtt_client_init(&conf);
    outbox = xMessageBufferCreate(OUTBOX_BYTES);
    if (!client || !outbox ||
        xTaskCreate(publisher_task, "tm_mqtt_pub", PUBLISHER_STACK, NULL, PUBLISHER_PRIO, NULL) != pdPASS)
        return -1;
    esp_mqtt_client_register_event(client, ESP_EVENT_ANY_ID, on_event, NULL);
    return esp_mqtt_client_start(client) == ESP_OK ? 0 : -1;
}
