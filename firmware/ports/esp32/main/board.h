/* ESP32 sensing node: pins, transports and the shared HAL pieces of the port. */
#ifndef BOARD_H
#define BOARD_H
#include <stddef.h>
#include <stdint.h>
#include "tm_device.h"

/* ADXL345 on I2C0 (SDA GPIO21, SCL GPIO22), 400 kHz, 3200 Hz output data rate, +-16 g. */
#define BOARD_I2C_SDA 21
#define BOARD_I2C_SCL 22
#define BOARD_I2C_HZ 400000
/* The operator's serial link: UART0 (the USB bridge of the DevKit), 921600 baud. */
#define BOARD_UART_BAUD 921600
/* Profile esp32-wroom-32 (PROTOCOL.md 7): 1 MB slots, 96 KB arena per model instance. */
#define BOARD_SLOT_SIZE (1024u * 1024u)
#define BOARD_ARENA_SIZE (96u * 1024u)

/* tm_device_t is not thread-safe: every call into it (tm_device_rx from the UART task,
 * tm_device_message from the MQTT task, tm_device_poll from the main loop) holds this lock
 * (app_main.c). esp-mqtt's task holds its client lock while it waits for this one, so no other
 * task may wait for the client lock (esp_mqtt_client_publish) while holding this one: see
 * hal_mqtt.c. */
void board_dev_lock(void);
void board_dev_unlock(void);

int adxl345_init(void);
/* Block until `frames` new samples (x y z interleaved, g) are in `out`. */
void adxl345_read_window(float *out, int frames);

void hal_uart_start(tm_device_t *dev);
void hal_uart_write(void *ctx, const uint8_t *data, size_t len);
/* Wi-Fi station (wifi_sta.c): NVS, netif, event loop, join; blocks until the first IP address. */
void wifi_sta_connect(const char *ssid, const char *password);
/* esp-mqtt: connect, subscribe to .../cmd, publish by message type (PROTOCOL.md 2.2). Needs the
 * network up (wifi_sta_connect). */
int hal_mqtt_start(tm_device_t *dev, const char *broker_uri, const char *site, const char *device_id);
void hal_mqtt_send(void *ctx, uint8_t type, const uint8_t *msg, size_t len);

#endif
