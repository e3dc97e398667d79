/* Wi-Fi station bring-up for the MQTT transport (ESP-IDF v5 APIs): NVS (the Wi-Fi driver keeps its
 * calibration there), the TCP/IP stack, the default event loop, a station netif; join the configured
 * network, reconnect whenever it drops, and block until the first IP address. NOT BUILT here. */
#include <string.h>
#include "board.h"
#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "nvs_flash.h"

#define GOT_IP_BIT BIT0

static const char *TAG = "tm_wifi";
static EventGroupHandle_t wifi_events;

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        /* no retry limit: a sensing node has nothing better to do than rejoin; esp-mqtt reconnects
         * to the broker by itself once the network is back */
        xEventGroupClearBits(wifi_events, GOT_IP_BIT);
        const wifi_event_sta_disconnected_t *ev = (const wifi_event_sta_disconnected_t *)data;
        ESP_LOGW(TAG, "disconnected (reason %d), reconnecting", ev ? ev->reason : -1);
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        const ip_event_got_ip_t *ev = (const ip_event_got_ip_t *)data;
        ESP_LOGI(TAG, "got ip " IPSTR, IP2STR(&ev->ip_info.ip));
        xEventGroupSetBits(wifi_events, GOT_IP_BIT);
    }
}

void wifi_sta_connect(const char *ssid, const char *password)
{
    esp_err_t rc = nvs_flash_init();
    if (rc == ESP_ERR_NVS_NO_FREE_PAGES || rc == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase()); /* partition full or from another IDF version */
        rc = nvs_flash_init();
    }
    ESP_ERROR_CHECK(rc);
    wifi_events = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_event, NULL, NULL));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_event, NULL, NULL));
    wifi_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    /* fixed-size fields that need not be NUL-terminated when full (32 and 64 bytes) */
    memcpy(cfg.sta.ssid, ssid, strnlen(ssid, sizeof(cfg.sta.ssid)));
    memcpy(cfg.sta.password, password, strnlen(password, sizeof(cfg.sta.password)));
    cfg.sta.threshold.authmode = WIFI_AUTH_WPA2_PSK; /* refuse open and WEP/WPA networks */
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &cfg));
    ESP_ERROR_CHECK(esp_wifi_start()); /* WIFI_EVENT_STA_START -> esp_wifi_connect() */
    ESP_LOGI(TAG, "joining \"%s\"", ssid);
    xEventGroupWaitBits(wifi_events, GOT_IP_BIT, pdFALSE, pdTRUE, portMAX_DELAY);
}
