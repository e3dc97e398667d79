/* Tiny-MLOps node on ESP32 (FreeRTOS): the portable core's device logic over the UART or MQTT,
 * the ADXL345 as vibration source, the "models" partition as model flash. NOT BUILT here. */
#include <string.h>
#include "board.h"
#include "esp_partition.h"
#include "esp_system.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "sdkconfig.h"

extern const uint8_t factory_tmlm_start[] asm("_binary_factory_tmlm_start");
extern const uint8_t factory_tmlm_end[] asm("_binary_factory_tmlm_end");

/* The transport and, for MQTT, Wi-Fi and broker come from menuconfig (Kconfig.projbuild). */
#define DEVICE_ID "esp32-node"
#define SITE "plant-a"
#define LOCATION "plant-a/line-1/pump-1"

static tm_device_t dev;
static uint8_t arena0[BOARD_ARENA_SIZE] __attribute__((aligned(16)));
static uint8_t arena1[BOARD_ARENA_SIZE] __attribute__((aligned(16)));
static const esp_partition_t *part;
static const void *part_map;
static esp_partition_mmap_handle_t map_handle;
static SemaphoreHandle_t dev_lock;
/* The newest sensor window, read by the main loop outside the device lock (a window takes ~0.32 s
 * on the ADXL345; holding the lock that long would stall the UART task until its RX ring, two
 * frames, overflows) and handed to the core by read_window below. */
static float sensor_window[TM_WINDOW * TM_AXES];

void board_dev_lock(void) { xSemaphoreTake(dev_lock, portMAX_DELAY); }
void board_dev_unlock(void) { xSemaphoreGive(dev_lock); }

static int flash_erase(void *ctx, uint32_t addr) { (void)ctx; return esp_partition_erase_range(part, addr, 4096) == ESP_OK ? 0 : -1; }
static int flash_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    (void)ctx;
    return esp_partition_write(part, addr, data, len) == ESP_OK ? 0 : -1;
}
static uint32_t now_us(void *ctx) { (void)ctx; return (uint32_t)esp_timer_get_time(); }
static uint32_t now_ms(void *ctx) { (void)ctx; return (uint32_t)(esp_timer_get_time() / 1000); }
static void read_window(void *ctx, float *s, int n)
{
    (void)ctx;
    memcpy(s, sensor_window, sizeof(float) * TM_AXES * (size_t)(n < TM_WINDOW ? n : TM_WINDOW));
}
static void reboot(void *ctx) { (void)ctx; esp_restart(); }

void app_main(void)
{
    part = esp_partition_find_first(ESP_PARTITION_TYPE_DATA, 0x40, "models");
    ESP_ERROR_CHECK(part ? ESP_OK : ESP_ERR_NOT_FOUND);
    /* memory-mapped reads: the store and the engine parse images in place */
    ESP_ERROR_CHECK(esp_partition_mmap(part, 0, part->size, ESP_PARTITION_MMAP_DATA, &part_map, &map_handle));
    ESP_ERROR_CHECK(adxl345_init() == 0 ? ESP_OK : ESP_FAIL);
    adxl345_read_window(sensor_window, TM_WINDOW); /* the first telemetry has a real window */
    dev_lock = xSemaphoreCreateMutex();
    ESP_ERROR_CHECK(dev_lock ? ESP_OK : ESP_ERR_NO_MEM);
    static tm_hal_t hal = {hal_uart_write, now_us, now_ms, read_window, NULL, reboot, NULL,
                           DEVICE_ID, LOCATION, "esp32-wroom-32", "tinymlops-fw 0.1.0", 0, NULL};
    /* NB: mmapped flash does not see writes until re-mapped on some chips; the ESP32 cache is
     * flushed by esp_partition_write, which is what tm_store relies on here. */
    static tm_flash_t flash;
    flash.size = part->size;
    flash.page_size = 4096;
    flash.base = part_map;
    flash.erase = flash_erase;
    flash.write = flash_write;
#if CONFIG_TINYMLOPS_TRANSPORT_MQTT
    wifi_sta_connect(CONFIG_TINYMLOPS_WIFI_SSID, CONFIG_TINYMLOPS_WIFI_PASSWORD); /* blocks until an IP */
    hal.send_message = hal_mqtt_send;
#endif
    /* The transport starts under the lock, so its first command waits for tm_device_init; the
     * BOOTED event and HELLO of tm_device_init then find the transport ready. */
    board_dev_lock();
#if CONFIG_TINYMLOPS_TRANSPORT_MQTT
    ESP_ERROR_CHECK(hal_mqtt_start(&dev, CONFIG_TINYMLOPS_MQTT_BROKER_URI, SITE, DEVICE_ID) == 0 ? ESP_OK : ESP_FAIL);
#else
    hal_uart_start(&dev);
#endif
    tm_device_init(&dev, &hal, &flash, BOARD_SLOT_SIZE, factory_tmlm_start,
                   (uint32_t)(factory_tmlm_end - factory_tmlm_start), arena0, arena1, BOARD_ARENA_SIZE);
    board_dev_unlock();
    for (;;) {
        /* Telemetry/lease/trial timers run at the window rate (~3 per second); the UART and MQTT
         * tasks feed commands meanwhile. */
        adxl345_read_window(sensor_window, TM_WINDOW);
        board_dev_lock();
        tm_device_poll(&dev); /* telemetry (1 Hz) scores the newest window */
        board_dev_unlock();
    }
}
