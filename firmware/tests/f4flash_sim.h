/* Host model of the STM32F4 flash interface (RM0390 3.5-3.6) for the port's driver test
 * (firmware/ports/stm32f4/f4_flash.c): KEYR unlock sequence (a wrong key locks until reset), CR
 * writable only when unlocked, SER/SNB + STRT erases a whole sector to 0xFF, PG programming with
 * PSIZE checks (alignment, parallelism) clears bits only, and every operation keeps BSY set for a
 * number of SR reads; an operation started while BSY is set, or a write without PG or while locked,
 * fails with PGSERR and changes nothing. Sector map of the F446: 4x16 KB, 1x64 KB, 3x128 KB. */
#ifndef F4FLASH_SIM_H
#define F4FLASH_SIM_H
#include <stdint.h>

#define SIM_FLASH_BASE 0x08000000u
#define SIM_FLASH_SIZE (512u * 1024u)

typedef struct {
    uint8_t mem[SIM_FLASH_SIZE];
    uint32_t acr, sr, cr;
    int key_state;     /* 0: nothing, 1: KEY1 seen, -1: wrong key (locked until reset) */
    int busy_left;     /* SR reads before BSY clears */
    int busy_reads;    /* BSY lasts this many SR reads after each operation */
    int stuck_busy;    /* BSY never clears */
    int erases[8];     /* sector erases done */
    int programs_x32, programs_x8;
    uint32_t fail_with; /* SR error bits the next operations end with (a fault the model cannot cause) */
    int violations;    /* CR or array written while BSY: the driver must never do it */
    uint32_t clock_ms, clock_polls; /* the fake millisecond clock (f4sim_now_ms) */
} f4sim_t;

extern f4sim_t g_f4sim;
void f4sim_reset(int busy_reads);
uint32_t f4sim_now_ms(void);

#endif
