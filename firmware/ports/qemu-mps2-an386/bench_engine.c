/* The engine on the emulated Cortex-M4, against TFLM: runs every model of
 * firmware/tests/data/models.txt the C engine supports (linked in by gen_engine_models.py) on its
 * recorded inputs, compares each output with TFLM's, times the invokes with SysTick, and prints
 * one line per model on UART0:
 *   "engine-bench model=NAME kernel=K cases=N mismatches=M macs=X load=RC ns=T"
 * (T: emulated ns for the N invokes; with QEMU's -icount shift=3 one instruction is 8 ns), then
 * "engine-bench done models=K". Built by `make bench-engine` with the kernel the target selects
 * (the DSP one on this Cortex-M4), or `make bench-engine ENGINE=portable` with the portable C
 * reference; run by tests/firmware/test_qemu_engine.py and benchmarks/firmware_footprint.py. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tm_config.h"
#include "tm_engine.h"
#include "tm_image.h"
#include "tm_kernels.h"

#define REG(a) (*(volatile uint32_t *)(a))
#define UART_DATA REG(0x40004000u)
#define UART_STATE REG(0x40004004u)
#define UART_CTRL REG(0x40004008u)
#define UART_BAUDDIV REG(0x40004010u)
#define SYST_CSR REG(0xE000E010u)
#define SYST_RVR REG(0xE000E014u)
#define SYST_CVR REG(0xE000E018u)
/* SysTick at the 25 MHz processor clock, interrupting every 1 ms; one tick is 40 ns. */
#define TICKS_PER_MS 25000u
#define NS_PER_TICK 40u

typedef struct {
    const char *name;
    const uint8_t *model; /* a .tflite flatbuffer, or a TMLM image holding one */
    uint32_t model_len;
    uint32_t is_image;
    const uint8_t *io; /* "TIO1", cases, n_in, n_out, then per case in[n_in] and TFLM's out[n_out] */
    uint32_t io_len;
} engine_model_t;
extern const engine_model_t engine_models[];
extern const uint32_t engine_models_count;

static volatile uint32_t ms_ticks;
void SysTick_Handler(void) { ms_ticks++; }
void Uart0Rx_Handler(void) {}

static uint8_t arena[256 * 1024] __attribute__((aligned(16)));
static tm_engine_t eng;

static void put(const char *s)
{
    for (; *s; s++) {
        while (UART_STATE & 1u) {
        }
        UART_DATA = (uint8_t)*s;
    }
}

/* SysTick ticks since start: the ms count and the down-counter read consistently */
static uint64_t now_ticks(void)
{
    uint32_t ms, cvr;
    do {
        ms = ms_ticks;
        cvr = SYST_CVR;
    } while (ms != ms_ticks);
    return (uint64_t)ms * TICKS_PER_MS + (TICKS_PER_MS - 1u - cvr);
}

static uint32_t u32(const uint8_t *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

static void run_model(const engine_model_t *m)
{
    const uint8_t *fb = m->model;
    size_t len = m->model_len;
    uint32_t cases = 0, mismatches = 0;
    unsigned long macs = 0;
    uint64_t ticks = 0;
    int rc = TM_E_LOAD_FAILED;
    tm_image_t img;
    if (m->is_image) {
        if (tm_image_parse(m->model, m->model_len, &img) == TM_OK) {
            fb = img.tflite;
            len = img.tflite_len;
        } else {
            fb = NULL;
        }
    }
    if (fb && m->io_len >= 16 && memcmp(m->io, "TIO1", 4) == 0)
        rc = tm_engine_load(&eng, fb, len, arena, sizeof arena);
    if (rc == TM_OK) {
        for (uint16_t i = 0; i < eng.n_ops; i++) macs += (unsigned long)eng.ops[i].units * eng.ops[i].depth;
        tm_tensor_t *in = tm_engine_input(&eng), *out = tm_engine_output(&eng);
        uint32_t n = u32(m->io + 4), n_in = u32(m->io + 8), n_out = u32(m->io + 12);
        if (n_in != in->elems || n_out != out->elems || 16u + (uint64_t)n * (n_in + n_out) > m->io_len) {
            rc = TM_E_INTERNAL;
            n = 0;
        }
        const uint8_t *p = m->io + 16;
        for (; cases < n; cases++, p += n_in + n_out) {
            memcpy(in->data, p, n_in);
            uint64_t t0 = now_ticks();
            int irc = tm_engine_invoke(&eng);
            ticks += now_ticks() - t0;
            if (irc != TM_OK) rc = irc;
            for (uint32_t k = 0; k < n_out; k++) mismatches += (uint8_t)out->data[k] != p[n_in + k];
        }
    }
    char line[160];
    snprintf(line, sizeof line, "engine-bench model=%s kernel=%s cases=%lu mismatches=%lu macs=%lu load=%d ns=%lu\n",
             m->name, tm_fc_kernel_name(), (unsigned long)cases, (unsigned long)mismatches, macs, rc,
             (unsigned long)(ticks * NS_PER_TICK));
    put(line);
}

int main(void)
{
    UART_BAUDDIV = 16u;
    UART_CTRL = 1u;
    SYST_RVR = TICKS_PER_MS - 1u;
    SYST_CVR = 0;
    SYST_CSR = 7u;
    for (uint32_t i = 0; i < engine_models_count; i++) run_model(&engine_models[i]);
    char line[48];
    snprintf(line, sizeof line, "engine-bench done models=%lu\n", (unsigned long)engine_models_count);
    put(line);
    for (;;) {
    }
}
