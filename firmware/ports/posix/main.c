/* Tiny-MLOps device for Linux (POSIX port): the portable C core (firmware/core) as a process that
 * speaks MQTT to a real broker (mqtt_port.c) or the serial framing on a pty (pty_port.c), keeps its model slots and journal in a file with NOR
 * flash rules (file_flash.c) and scores the deterministic vibration simulator (tm_vibration). A
 * REBOOT command boots the core again from the flash file, as the MCU does from its flash. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "file_flash.h"
#include "mqtt_port.h"
#include "pty_port.h"
#include "tm_device.h"
#include "tm_vibration.h"

#define FIRMWARE "tinymlops-fw 0.1.0 (posix)"
/* Flash erase page: the journal needs TM_JOURNAL_PAGE_MIN; 4 KB is a common NOR sector. */
#define FLASH_PAGE 4096u
/* Default slot and arena: the stm32l4r5 profile (PROTOCOL.md 7), the C engine's reference board. */
#define DEFAULT_PROFILE "stm32l4r5"
#define DEFAULT_SLOT (512u * 1024u)
#define DEFAULT_ARENA (128u * 1024u)
/* Largest slot and arena accepted on the command line (the largest profile's, with margin). */
#define MAX_SLOT (16u * 1024u * 1024u)
#define MAX_ARENA (16u * 1024u * 1024u)
/* Nominal shaft speed of the simulated machine, Hz (as the virtual fleet's default). */
#define DEFAULT_SHAFT_HZ 24.7f
/* The loop waits at most this long for a command before it polls the core (telemetry at 1 Hz,
 * stream windows every 80 ms, trial deadlines): short enough for all of them. */
#define LOOP_WAIT_MS 20u
/* Exit status when the broker refuses the device for good (its certificate, its login): a
 * supervisor should not restart it unchanged. 2 is bad usage, 75 a simulated power cut. */
#define EXIT_REFUSED 3
/* Ids and sites become topic elements (PROTOCOL.md 2.2). */
#define MAX_ID 64

static volatile sig_atomic_t stop_requested;
static int reboot_requested;
static struct timespec boot_time;
static tm_vib_t vib;
static tm_device_t dev;
static mqtt_port_t port;
static pty_port_t pty;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t elapsed_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)(t.tv_sec - boot_time.tv_sec) * 1000000u + (uint64_t)((t.tv_nsec - boot_time.tv_nsec) / 1000);
}

static uint32_t port_now_ms(void) { return (uint32_t)(elapsed_us() / 1000u); }
/* The core's clock starts at each (re)boot, as the MCU's; the transport's runs on. */
static uint64_t core_boot_us;
static uint32_t hal_now_ms(void *ctx) { (void)ctx; return (uint32_t)((elapsed_us() - core_boot_us) / 1000u); }
static uint32_t hal_now_us(void *ctx) { (void)ctx; return (uint32_t)(elapsed_us() - core_boot_us); }
static void hal_read_window(void *ctx, float *s, int n) { (void)ctx; tm_vib_generate(&vib, s, n); }
static void hal_set_fault(void *ctx, uint8_t mask, float sev) { (void)ctx; tm_vib_set_fault(&vib, mask, sev); }
/* Called inside the core's command handling: the reboot happens once the reply is out. */
static void hal_reboot(void *ctx) { (void)ctx; reboot_requested = 1; }

static int valid_id(const char *s, size_t n)
{
    if (n == 0 || n > MAX_ID) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

static int parse_hex_key(const char *hex, uint8_t out[TM_SIG_PUBLIC_LEN])
{
    if (strlen(hex) != 2u * TM_SIG_PUBLIC_LEN) return -1;
    for (int i = 0; i < TM_SIG_PUBLIC_LEN; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static uint8_t *read_file(const char *path, uint32_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && n <= (long)MAX_SLOT && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n)) &&
            fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = (uint32_t)n;
    }
    fclose(f);
    return buf;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tinymlops-device --id ID --location SITE/LINE/MACHINE (--broker mqtt[s]://HOST[:PORT] | --pty LINK)\n"
            "                        [--ca CA.crt] [--cert DEVICE.crt --key DEVICE.key] [--username NAME]\n"
            "                        --flash FILE --factory IMAGE.tmlm [--profile KEY] [--slot-size BYTES]\n"
            "                        [--arena BYTES] [--seed N] [--shaft-hz HZ] [--trust PUBKEY_HEX]...\n"
            "                        [--power-cut-at N] [--durable] [--exit-with-parent]\n"
            "A Tiny-MLOps device (the firmware's C core) on MQTT (PROTOCOL.md 2.2) or on a pty whose slave\n"
            "--pty LINK points at (serial framing, PROTOCOL.md 2.1). --durable syncs every\n"
            "flash operation to the disk (survives a host crash; slower). SIGTERM stops it\n"
            "gracefully (OFFLINE status); SIGKILL makes the broker announce it through its last will.\n"
            "mqtts:// verifies the broker against --ca (else the system's CAs) and logs in with the client\n"
            "certificate; the password of --username comes from $" MQTT_PASSWORD_ENV " only. Exit status 3:\n"
            "the broker refused the device's certificate or login.\n");
}

static int fail(const char *what)
{
    fprintf(stderr, "tinymlops-device: %s\n", what);
    return 2;
}

int main(int argc, char **argv)
{
    const char *id = NULL, *location = NULL, *broker = NULL, *flash_path = NULL, *factory_path = NULL;
    const char *pty_link = NULL;
    mqtt_identity_t identity = {NULL, NULL, NULL, NULL};
    const char *profile = DEFAULT_PROFILE;
    unsigned long slot_size = DEFAULT_SLOT, arena_size = DEFAULT_ARENA, seed = 1, cut_at = 0;
    float shaft_hz = DEFAULT_SHAFT_HZ;
    static uint8_t keys[TM_MAX_TRUST_KEYS][TM_SIG_PUBLIC_LEN];
    int n_keys = 0, durable = 0, exit_with_parent = 0;
    static const struct option opts[] = {
        {"id", required_argument, 0, 'i'}, {"location", required_argument, 0, 'l'},
        {"broker", required_argument, 0, 'b'}, {"flash", required_argument, 0, 'f'},
        {"factory", required_argument, 0, 'F'}, {"profile", required_argument, 0, 'p'},
        {"slot-size", required_argument, 0, 's'}, {"arena", required_argument, 0, 'a'},
        {"seed", required_argument, 0, 'S'}, {"shaft-hz", required_argument, 0, 'z'},
        {"trust", required_argument, 0, 't'}, {"power-cut-at", required_argument, 0, 'c'},
        {"durable", no_argument, 0, 'd'}, {"pty", required_argument, 0, 'P'},
        {"exit-with-parent", no_argument, 0, 'x'}, {"ca", required_argument, 0, 'A'},
        {"cert", required_argument, 0, 'C'}, {"key", required_argument, 0, 'K'},
        {"username", required_argument, 0, 'u'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    char *end;
    pty.master = pty.slave = -1; /* nothing open: closing it is a no-op */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i': id = optarg; break;
        case 'l': location = optarg; break;
        case 'b': broker = optarg; break;
        case 'f': flash_path = optarg; break;
        case 'F': factory_path = optarg; break;
        case 'p': profile = optarg; break;
        case 's': slot_size = strtoul(optarg, &end, 10); if (*end) return fail("--slot-size: not a number"); break;
        case 'a': arena_size = strtoul(optarg, &end, 10); if (*end) return fail("--arena: not a number"); break;
        case 'S': seed = strtoul(optarg, &end, 10); if (*end) return fail("--seed: not a number"); break;
        case 'c': cut_at = strtoul(optarg, &end, 10); if (*end) return fail("--power-cut-at: not a number"); break;
        case 'z': shaft_hz = strtof(optarg, &end); if (*end || !(shaft_hz > 0.0f)) return fail("--shaft-hz: not a positive number"); break;
        case 't':
            if (n_keys >= TM_MAX_TRUST_KEYS) return fail("--trust: at most 4 keys (PROTOCOL.md 6.2)");
            if (parse_hex_key(optarg, keys[n_keys++])) return fail("--trust: expected a 64-digit hex Ed25519 public key");
            break;
        case 'd': durable = 1; break;
        case 'P': pty_link = optarg; break;
        case 'x': exit_with_parent = 1; break;
        case 'A': identity.ca = optarg; break;
        case 'C': identity.cert = optarg; break;
        case 'K': identity.key = optarg; break;
        case 'u': identity.username = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!id || !location || !(broker || pty_link) || !flash_path || !factory_path) {
        usage(stderr);
        return 2;
    }
    if (broker && pty_link) return fail("--broker or --pty, not both (one transport per device process)");
    if (!broker && (identity.ca || identity.cert || identity.key || identity.username))
        return fail("--ca, --cert, --key and --username need --broker");
    const char *slash = strchr(location, '/');
    size_t site_len = slash ? (size_t)(slash - location) : strlen(location);
    if (!valid_id(id, strlen(id))) return fail("--id: expected [A-Za-z0-9_.-]{1,64}");
    if (!valid_id(location, site_len)) return fail("--location: its site (before the first '/') must match [A-Za-z0-9_.-]{1,64}");
    if (slot_size == 0 || slot_size % FLASH_PAGE || slot_size > MAX_SLOT)
        return fail("--slot-size: a multiple of 4096 up to 16 MB");
    if (arena_size < 1024u || arena_size > MAX_ARENA) return fail("--arena: 1 KB .. 16 MB");
    char site[MAX_ID + 1];
    memcpy(site, location, site_len);
    site[site_len] = 0;

    uint32_t factory_len = 0;
    errno = 0;
    uint8_t *factory = read_file(factory_path, &factory_len);
    if (!factory) {
        fprintf(stderr, "tinymlops-device: cannot read the factory image %s: %s\n", factory_path,
                errno ? strerror(errno) : "empty or too large");
        return 2;
    }
    char err[512];
    static tm_file_flash_t ff;
    uint32_t flash_size = 2u * (uint32_t)slot_size + 2u * FLASH_PAGE;
    if (tm_ff_open(&ff, flash_path, flash_size, FLASH_PAGE, err, sizeof(err))) {
        free(factory);
        return fail(err);
    }
    ff.cut_at = (uint32_t)cut_at;
    ff.durable = durable;
    size_t arena_alloc = (arena_size + 15u) / 16u * 16u;
    void *arena0 = NULL, *arena1 = NULL;
    if (posix_memalign(&arena0, 16, arena_alloc) || posix_memalign(&arena1, 16, arena_alloc)) {
        snprintf(err, sizeof(err), "out of memory for the tensor arenas");
        goto fail_cleanup;
    }

    clock_gettime(CLOCK_MONOTONIC, &boot_time);
    srand((unsigned)getpid());
    if (broker && mqtt_port_init(&port, broker, &identity, site, id, port_now_ms, err, sizeof(err))) goto fail_cleanup;
    if (pty_link && pty_port_open(&pty, pty_link, err, sizeof(err))) goto fail_cleanup;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* a launcher that dies (a crashed simulator, a killed test run) takes its devices with it */
    if (exit_with_parent && (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() == 1)) stop_requested = 1;

    tm_vib_init(&vib, (uint32_t)seed, shaft_hz, TM_SAMPLE_RATE);
    tm_hal_t hal = {NULL, hal_now_us, hal_now_ms, hal_read_window, hal_set_fault, hal_reboot, &port,
                    id, location, profile, FIRMWARE, 0, mqtt_port_send};
    if (pty_link) { /* serial: framed bytes to the pty instead of bare messages to the broker */
        hal.write = pty_port_write;
        hal.ctx = &pty;
        hal.send_message = NULL;
    }
    tm_flash_t flash = tm_ff_flash(&ff);
    port.dev = &dev;
    /* the boot's BOOTED event and HELLO go nowhere yet: the connect publishes the status */
    tm_device_init(&dev, &hal, &flash, (uint32_t)slot_size, factory, factory_len, arena0, arena1, arena_size);
    tm_device_set_trust(&dev, (const uint8_t(*)[TM_SIG_PUBLIC_LEN])keys, n_keys);
    if (broker) tm_device_set_pull(&dev, mqtt_port_pull_begin, &port); /* a pty has no broker to pull from */
    int status = 0;
    while (!stop_requested) {
        if (port.refused) { /* retrying with the same certificate or password cannot help */
            fprintf(stderr, "tinymlops-device: %s\n", port.refused_why);
            status = EXIT_REFUSED;
            break;
        }
        if (pty_link)
            pty_port_poll(&pty, &dev, LOOP_WAIT_MS);
        else
            mqtt_port_poll(&port, LOOP_WAIT_MS);
        if (reboot_requested) {
            reboot_requested = 0;
            fprintf(stderr, "tinymlops-device: rebooting\n");
            core_boot_us = elapsed_us();
            tm_device_init(&dev, &hal, &flash, (uint32_t)slot_size, factory, factory_len, arena0, arena1, arena_size);
            tm_device_set_trust(&dev, (const uint8_t(*)[TM_SIG_PUBLIC_LEN])keys, n_keys);
            if (broker) tm_device_set_pull(&dev, mqtt_port_pull_begin, &port);
        }
        tm_device_poll(&dev);
    }
    mqtt_port_close(&port);
    pty_port_close(&pty);
    tm_ff_close(&ff);
    free(arena0);
    free(arena1);
    free(factory);
    return status;

fail_cleanup:
    mqtt_port_close(&port);
    pty_port_close(&pty);
    tm_ff_close(&ff);
    free(arena0);
    free(arena1);
    free(factory);
    return fail(err);
}
