/* Serial transport: UART0 with the ESP-IDF driver; a task feeds received bytes to the core. */
#include "board.h"
#include "driver/uart.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

/* RX ring: two whole maximum frames, so a window of chunks in flight is never dropped. */
#define UART_RX_BUF (2 * TM_MAX_FRAME + 512)
#define UART_TX_BUF 8192

void hal_uart_write(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    uart_write_bytes(UART_NUM_0, (const char *)data, len);
}

static void rx_task(void *arg)
{
    tm_device_t *dev = (tm_device_t *)arg;
    static uint8_t buf[512];
    for (;;) {
        int n = uart_read_bytes(UART_NUM_0, buf, sizeof(buf), pdMS_TO_TICKS(20));
        if (n > 0) {
            board_dev_lock();
            tm_device_rx(dev, buf, (size_t)n);
            board_dev_unlock();
        }
    }
}

void hal_uart_start(tm_device_t *dev)
{
    const uart_config_t cfg = {.baud_rate = BOARD_UART_BAUD, .data_bits = UART_DATA_8_BITS,
                               .parity = UART_PARITY_DISABLE, .stop_bits = UART_STOP_BITS_1,
                               .flow_ctrl = UART_HW_FLOWCTRL_DISABLE, .source_clk = UART_SCLK_DEFAULT};
    ESP_ERROR_CHECK(uart_driver_install(UART_NUM_0, UART_RX_BUF, UART_TX_BUF, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(UART_NUM_0, &cfg));
    xTaskCreate(rx_task, "tm_uart_rx", 8192, dev, 5, NULL);
}
