/* NOR flash simulator for host tests: erase sets a page to 0xFF, write clears bits (AND), and a
 * power cut can be armed at the k-th operation: that operation is half done, later ones are lost. */
#ifndef FLASHSIM_H
#define FLASHSIM_H
#include <stdint.h>
#include <string.h>
#include "tm_store.h"

typedef struct {
    uint8_t *mem;
    uint32_t size, page;
    long ops, cut_at; /* cut_at < 0: no cut */
    int dead;
} flashsim_t;

static int fs_alive(flashsim_t *f)
{
    if (f->dead) return 0;
    if (f->cut_at >= 0 && f->ops == f->cut_at) { f->dead = 1; f->ops++; return -1; } /* half done */
    f->ops++;
    return 1;
}

static int fs_erase(void *ctx, uint32_t addr)
{
    flashsim_t *f = (flashsim_t *)ctx;
    if (addr % f->page || addr >= f->size) return -1;
    int a = fs_alive(f);
    if (a == 0) return 0;
    memset(f->mem + addr, 0xFF, a < 0 ? f->page / 2 : f->page);
    return 0;
}

static int fs_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    flashsim_t *f = (flashsim_t *)ctx;
    if (addr + len > f->size) return -1;
    int a = fs_alive(f);
    if (a == 0) return 0;
    const uint8_t *p = (const uint8_t *)data;
    uint32_t n = a < 0 ? len / 2 : len;
    for (uint32_t i = 0; i < n; i++) f->mem[addr + i] &= p[i];
    return 0;
}

static inline tm_flash_t flashsim_hal(flashsim_t *f)
{
    tm_flash_t h = {f->size, f->page, f->mem, fs_erase, fs_write, f};
    return h;
}

#endif
