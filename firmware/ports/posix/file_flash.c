#include "file_flash.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes written per call while an erased file is filled with 0xFF. */
#define FILL_BLOCK 65536u

static int sync_range(tm_file_flash_t *f, uint32_t addr, uint32_t len)
{
    if (!f->durable) return 0; /* MAP_SHARED: already in the file's page cache */
    long pg = sysconf(_SC_PAGESIZE);
    uint32_t start = addr - addr % (uint32_t)pg;
    return msync(f->mem + start, (size_t)(addr + len - start), MS_SYNC);
}

/* The power-cut injector: operation number `ops` is the one that loses power. */
static int cut_now(tm_file_flash_t *f)
{
    return f->cut_at && f->ops == f->cut_at;
}

static void power_cut(tm_file_flash_t *f, uint32_t addr, uint32_t done)
{
    if (done) sync_range(f, addr, done);
    fprintf(stderr, "tinymlops-device: power cut injected at flash operation %u\n", f->ops);
    _exit(TM_FF_CUT_EXIT);
}

static int ff_erase(void *ctx, uint32_t addr)
{
    tm_file_flash_t *f = (tm_file_flash_t *)ctx;
    if (addr % f->page_size || addr >= f->size) return -1;
    f->ops++;
    if (cut_now(f)) {
        memset(f->mem + addr, 0xFF, f->page_size / 2u); /* an erase torn half-way */
        power_cut(f, addr, f->page_size / 2u);
    }
    memset(f->mem + addr, 0xFF, f->page_size);
    return sync_range(f, addr, f->page_size) ? -1 : 0;
}

static int ff_write(void *ctx, uint32_t addr, const void *data, uint32_t len)
{
    tm_file_flash_t *f = (tm_file_flash_t *)ctx;
    if (addr > f->size || len > f->size - addr) return -1;
    const uint8_t *p = (const uint8_t *)data;
    f->ops++;
    int cut = cut_now(f);
    uint32_t n = cut ? len / 2u : len; /* a torn write programs only its first half */
    for (uint32_t i = 0; i < n; i++) f->mem[addr + i] &= p[i]; /* NOR: programming clears bits only */
    if (cut) power_cut(f, addr, n);
    return len && sync_range(f, addr, len) ? -1 : 0;
}

int tm_ff_open(tm_file_flash_t *f, const char *path, uint32_t size, uint32_t page_size, char *err, size_t err_cap)
{
    memset(f, 0, sizeof(*f));
    f->fd = -1;
    f->size = size;
    f->page_size = page_size;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, err_cap, "cannot open flash file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, err_cap, "cannot stat flash file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        /* a new part comes erased */
        static uint8_t ones[FILL_BLOCK];
        memset(ones, 0xFF, sizeof(ones));
        for (uint32_t off = 0; off < size; off += FILL_BLOCK) {
            uint32_t n = size - off < FILL_BLOCK ? size - off : FILL_BLOCK;
            if (pwrite(fd, ones, n, off) != (ssize_t)n) {
                snprintf(err, err_cap, "cannot write flash file %s: %s", path, strerror(errno));
                close(fd);
                return -1;
            }
        }
        if (fsync(fd) != 0) {
            snprintf(err, err_cap, "cannot sync flash file %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    } else if ((uint64_t)st.st_size != size) {
        snprintf(err, err_cap, "flash file %s holds %lld bytes, this device's flash is %u (other slot size?): "
                 "refusing to reuse it", path, (long long)st.st_size, size);
        close(fd);
        errno = EINVAL;
        return -1;
    }
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem == MAP_FAILED) {
        snprintf(err, err_cap, "cannot map flash file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    f->fd = fd;
    f->mem = (uint8_t *)mem;
    return 0;
}

tm_flash_t tm_ff_flash(tm_file_flash_t *f)
{
    tm_flash_t fl = {f->size, f->page_size, f->mem, ff_erase, ff_write, f};
    return fl;
}

void tm_ff_close(tm_file_flash_t *f)
{
    if (f->mem) munmap(f->mem, f->size);
    if (f->fd >= 0) close(f->fd);
    f->mem = NULL;
    f->fd = -1;
}
