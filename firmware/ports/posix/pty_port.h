/* The device's serial transport on a pseudo-terminal (PROTOCOL.md 2.1): the core's framed bytes
 * go to the pty, bytes from it go to the core's deframer. The slave side is made raw (no echo, no
 * line discipline: a byte pipe like a UART) and published under a stable path (a symlink), which
 * the host opens like any serial port. */
#ifndef TM_PTY_PORT_H
#define TM_PTY_PORT_H
#include <stddef.h>
#include <stdint.h>
#include "tm_device.h"

typedef struct {
    int master, slave;
    char link[512];
} pty_port_t;

/* Open a pty and point `link` at its slave; 0, or -1 with a message in err. */
int pty_port_open(pty_port_t *p, const char *link, char *err, size_t err_cap);
/* The core's write HAL hook (ctx is the pty_port_t): a frame nobody reads is dropped, as on a UART
 * with no listener. */
void pty_port_write(void *ctx, const uint8_t *data, size_t len);
/* Wait up to wait_ms for bytes from the host and feed them to the core. */
void pty_port_poll(pty_port_t *p, tm_device_t *dev, unsigned wait_ms);
void pty_port_close(pty_port_t *p);

#endif
