/* Tiny-MLOps node on ESP32 (FreeRTOS): the portable core's device logic over the UART or MQTT,
 * the ADXL345 as vibration source, the "models" partition as model flash. NOT BUILT here. */
#include <string.h>
#include "board.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "sdkconfig.h"

extern const uint8_t factory_tmlm_start[] asm("_binary_factory_tmlm_start");
extern const uint8_t factory_tmlm_end[] asm("_binary_factory_tmlm_end");

/* Build-time settings (menuconfig would be the next step): MQTT when a broker URI is given. */
#ifndef TM_MQTT_BROKER
#define TM_MQTT_BROKER ""
#endif
#define DEVICE_ID "esp32-node"
#define LOCATION "plant-a/line-1/pump-1"
/* Main loop period: polls telemetry/lease/trial timers; the UART and MQTT tasks feed commands. */
#define POLL_MS 10

static tm_device_t dev;
static uint8_t arena0[BOARD_ARENA_SIZE] __attribute__((aligned(16)));
static uint8_t arena1[BOARD_ARENA_SIZE] __attribute__((aligned(16)));
static const esp_partition_t *part;
static const void *part_map;
static esp_partition_mmap_handle_t map_handle;

static int flash_erase(void *ctx, uint32_t addr) { (void)ctx; return esp_partition_erase_range(part, addr, 4096) == ESP_OK ? 0 : -1; }
static int flash_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    (void)ctx;
    return esp_partition_write(part, addr, data, len) == ESP_OK ? 0 : -1;
}
static uint32_t now_us(void *ctx) { (void)ctx; return (uint32_t)esp_timer_get_time(); }
static uint32_t now_ms(void *ctx) { (void)ctx; return (uint32_t)(esp_timer_get_time() / 1000); }
static void read_window(void *ctx, float *s, int n) { (void)ctx; adxl345_read_window(s, n); }
static void reboot(void *ctx) { (void)ctx; esp_restart(); }

void app_main(void)
{
    part = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, 0x40, "models");
    ESP_ERROR_CHECK(part ? ESP_OK : ESP_ERR_NOT_FOUND);
    /* memory-mapped reads: the store and the engine parse images in place */
    ESP_ERROR_CHECK(esp_partition_mmap(part, 0, part->size, ESP_PARTITION_MMAP_DATA, &part_map, &map_handle));
    ESP_ERROR_CHECK(adxl345_init() == 0 ? ESP_OK : ESP_FAIL);
    int mqtt = strlen(TM_MQTT_BROKER) > 0;
    static tm_hal_t hal = {hal_uart_write, now_us, now_ms, read_window, NULL, reboot, NULL,
                           DEVICE_ID, LOCATION, "esp32-wroom-32", "tinymlops-fw 0.1.0", 0, NULL};
    if (mqtt) hal.send_message = hal_mqtt_send;
    /* NB: mmapped flash does not see writes until re-mapped on some chips; the ESP32 cache is
     * flushed by esp_partition_write, which is what tm_store relies on here. */
    static tm_flash_t flash;
    flash.size = part->size;
    flash.page_size = 4096;
    flash.base = part_map;
    flash.erase = flash_erase;
    flash.write = flash_write;
    tm_device_init(&dev, &hal, &flash, BOARD_SLOT_SIZE, factory_tmlm_start,
                   (uint32_t)(factory_tmlm_end - factory_tmlm_start), arena0, arena1, BOARD_ARENA_SIZE);
    if (mqtt) hal_mqtt_start(&dev, TM_MQTT_BROKER, "plant-a", DEVICE_ID);
    else hal_uart_start(&dev);
    for (;;) {
        tm_device_poll(&dev); /* reads a window (blocks ~0.32 s on the sensor) once per second */
        vTaskDelay(pdMS_TO_TICKS(POLL_MS));
    }
}
