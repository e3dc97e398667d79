/* posix_openpt, grantpt, unlockpt, ptsname: XSI */
#define _XOPEN_SOURCE 700
#include "pty_port.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Nobody reading the pty for this long: the rest of the frame is dropped (as the Python virtual
 * device's WRITE_STALL_S), so a device without a host never blocks. */
#define WRITE_STALL_MS 200
/* Bytes read from the host at once. */
#define READ_SIZE 4096

int pty_port_open(pty_port_t *p, const char *link, char *err, size_t err_cap)
{
    memset(p, 0, sizeof(*p));
    p->master = p->slave = -1;
    p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (p->master < 0 || grantpt(p->master) || unlockpt(p->master)) {
        snprintf(err, err_cap, "cannot open a pty: %s", strerror(errno));
        pty_port_close(p);
        return -1;
    }
    const char *name = ptsname(p->master);
    p->slave = name ? open(name, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    struct termios t;
    if (p->slave < 0 || tcgetattr(p->slave, &t)) {
        snprintf(err, err_cap, "cannot open the pty's slave %s: %s", name ? name : "?", strerror(errno));
        pty_port_close(p);
        return -1;
    }
    cfmakeraw(&t); /* no echo: our own frames must never come back as commands */
    if (tcsetattr(p->slave, TCSANOW, &t) || fcntl(p->master, F_SETFL, fcntl(p->master, F_GETFL) | O_NONBLOCK)) {
        snprintf(err, err_cap, "cannot make the pty raw: %s", strerror(errno));
        pty_port_close(p);
        return -1;
    }
    unlink(link); /* a link left by an earlier run of this device */
    if (symlink(name, link)) {
        snprintf(err, err_cap, "cannot link %s to the pty %s: %s", link, name, strerror(errno));
        pty_port_close(p);
        return -1;
    }
    snprintf(p->link, sizeof(p->link), "%s", link);
    return 0;
}

void pty_port_write(void *ctx, const uint8_t *data, size_t len)
{
    pty_port_t *p = (pty_port_t *)ctx;
    while (len) {
        ssize_t n = write(p->master, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN) return;
        struct pollfd pfd = {p->master, POLLOUT, 0};
        if (poll(&pfd, 1, WRITE_STALL_MS) <= 0) return; /* nobody reads: drop the rest */
    }
}

void pty_port_poll(pty_port_t *p, tm_device_t *dev, unsigned wait_ms)
{
    struct pollfd pfd = {p->master, POLLIN, 0};
    if (poll(&pfd, 1, (int)wait_ms) <= 0 || !(pfd.revents & POLLIN)) return;
    uint8_t buf[READ_SIZE];
    ssize_t n;
    while ((n = read(p->master, buf, sizeof(buf))) > 0) tm_device_rx(dev, buf, (size_t)n);
}

void pty_port_close(pty_port_t *p)
{
    if (p->link[0]) unlink(p->link);
    if (p->slave >= 0) close(p->slave);
    if (p->master >= 0) close(p->master);
    p->link[0] = 0;
    p->slave = p->master = -1;
}
