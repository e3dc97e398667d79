/* Model store: transfers, bad input, and power-fail safety: an update, a confirm and a rollback are
 * each interrupted at EVERY flash operation (as MCUboot's simulator does); after each cut the
 * device reboots and must boot a valid model, old or new, never a corrupt one. */
#include <stdlib.h>
#include <string.h>
#include "flashsim.h"
#include "testutil.h"
#include "tm_crc32.h"
#include "tm_image.h"
#include "tm_sha256.h"
#include "tm_store.h"

#define PAGE 4096u
#define SLOT (64u * 1024u)
#define FLASH_SIZE (2u * SLOT + 2u * PAGE)

static uint8_t mem[FLASH_SIZE];
static uint8_t img_a[40000], img_b[40000], img_t[40000];
static long len_a, len_b, len_t;
static uint8_t sha_a[32], sha_b[32], sha_t[32];
static tm_store_t st;
static uint8_t arena[64 * 1024];
static tm_model_t model;

static long load(const char *name, uint8_t *buf)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", TM_DATA_DIR, name);
    return read_file(path, buf, 40000);
}

/* which image the store boots: 'A', 'B', 'T' (intact, does not load), '0' (none) or 'X' (corrupt) */
static char booted(void)
{
    uint32_t len;
    const uint8_t *p = tm_store_active(&st, &len);
    if (!p) return '0';
    uint8_t d[32];
    tm_sha256(p, len, d);
    if (memcmp(d, sha_a, 32) == 0) return 'A';
    if (memcmp(d, sha_b, 32) == 0) return 'B';
    if (memcmp(d, sha_t, 32) == 0) return 'T';
    return 'X';
}

static int boot(flashsim_t *f, int *reverted)
{
    f->cut_at = -1;
    f->dead = 0;
    tm_flash_t h = flashsim_hal(f);
    return tm_store_init(&st, &h, SLOT, img_a, (uint32_t)len_a, reverted);
}

/* Send chunks [from, to) of a transfer with id 7. */
static int send_chunks(const uint8_t *img, long len, uint16_t chunk, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        uint32_t off = i * chunk, l = (uint32_t)(len - off) < chunk ? (uint32_t)(len - off) : chunk;
        int rc = tm_store_chunk(&st, 7, i, tm_crc32(0, img + off, l), img + off, l, 0);
        if (rc) return rc;
    }
    return TM_OK;
}

static int push(const uint8_t *img, long len, const uint8_t *sha, uint16_t chunk, uint32_t version)
{
    int resumed;
    int rc = tm_store_begin(&st, 7, (uint32_t)len, chunk, 4096, sha, version, 0, &resumed);
    if (rc) return rc;
    uint32_t n = (uint32_t)((len + chunk - 1) / chunk);
    for (uint32_t i = n; i-- > 0;) { /* out of order on purpose */
        uint32_t off = i * chunk, l = (uint32_t)(len - off) < chunk ? (uint32_t)(len - off) : chunk;
        rc = tm_store_chunk(&st, 7, i, tm_crc32(0, img + off, l), img + off, l, 0);
        if (rc) return rc;
    }
    const uint8_t *p;
    return tm_store_verify(&st, 7, &p);
}

static void fresh(flashsim_t *f)
{
    memset(mem, 0xFF, sizeof(mem));
    f->mem = mem; f->size = FLASH_SIZE; f->page = PAGE; f->ops = 0; f->cut_at = -1; f->dead = 0;
}

static void test_basic(void)
{
    flashsim_t f;
    fresh(&f);
    int rev;
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(booted(), 'A'); /* factory installed on an empty store */
    CHECK_EQ(tm_store_rollback(&st), TM_E_NO_PREVIOUS);
    CHECK_EQ(tm_store_confirm(&st), TM_E_NOT_TRIAL);
    int resumed;
    CHECK_EQ(tm_store_begin(&st, 1, SLOT + 1, 1024, 4096, sha_b, 2, 0, &resumed), TM_E_TOO_LARGE);
    CHECK_EQ(tm_store_begin(&st, 1, 1000, 0, 4096, sha_b, 2, 0, &resumed), TM_E_BAD_ARGUMENT);
    CHECK_EQ(tm_store_begin(&st, 1, 1000, 4097, 4096, sha_b, 2, 0, &resumed), TM_E_BAD_ARGUMENT);
    CHECK_EQ(tm_store_begin(&st, 1, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed), TM_OK);
    CHECK_EQ(tm_store_begin(&st, 2, (uint32_t)len_a, 1024, 4096, sha_a, 2, 1000, &resumed), TM_E_BUSY);
    CHECK_EQ(tm_store_chunk(&st, 9, 0, 0, img_b, 1024, 0), TM_E_NO_TRANSFER);
    CHECK_EQ(tm_store_chunk(&st, 1, 0, 0, img_b, 1024, 0), TM_E_CHUNK_CRC);
    CHECK_EQ(tm_store_chunk(&st, 1, 0, tm_crc32(0, img_b, 1000), img_b, 1000, 0), TM_E_CHUNK_RANGE);
    CHECK_EQ(tm_store_chunk(&st, 1, 999, tm_crc32(0, img_b, 1024), img_b, 1024, 0), TM_E_CHUNK_RANGE);
    CHECK_EQ(tm_store_chunk(&st, 1, 0, tm_crc32(0, img_b, 1024), img_b, 1024, 0), TM_OK);
    CHECK_EQ(tm_store_chunk(&st, 1, 0, tm_crc32(0, img_b, 1024), img_b, 1024, 0), TM_OK); /* duplicate */
    const uint8_t *p;
    CHECK_EQ(tm_store_verify(&st, 1, &p), TM_E_INCOMPLETE);
    /* same SHA resumes and keeps chunk 0 */
    CHECK_EQ(tm_store_begin(&st, 3, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed), TM_OK);
    CHECK_EQ(resumed, 1);
    CHECK_EQ(st.received, 1);
    /* a stale transfer can be taken over */
    CHECK_EQ(tm_store_begin(&st, 4, (uint32_t)len_a, 1024, 4096, sha_b, 2, 31000, &resumed), TM_OK);
    CHECK_EQ(resumed, 0);
    CHECK_EQ(tm_store_abort(&st, 4), TM_OK);
    /* wrong SHA: the image arrives whole but is refused */
    static uint8_t wrong[32];
    memcpy(wrong, sha_b, 32);
    wrong[0] ^= 1;
    CHECK_EQ(push(img_b, len_b, wrong, 1000, 2), TM_E_HASH_MISMATCH);
    CHECK_EQ(tm_store_abort(&st, 7), TM_OK);
    CHECK_EQ(booted(), 'A');
    /* good update, trial, reboot before confirm -> reverted */
    CHECK_EQ(push(img_b, len_b, sha_b, 1000, 2), TM_OK);
    CHECK_EQ(tm_store_commit(&st, 1, 1, 60), TM_OK);
    CHECK_EQ(booted(), 'B');
    /* while B is on trial, A (the revert target) cannot be overwritten by a new transfer */
    CHECK_EQ(tm_store_begin(&st, 9, (uint32_t)len_a, 1024, 4096, sha_a, 3, 0, &resumed), TM_E_BUSY);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(rev, 1);
    CHECK_EQ(booted(), 'A');
    /* rollback toggles back to B (kept in the other slot), then to A */
    CHECK_EQ(tm_store_rollback(&st), TM_OK);
    CHECK_EQ(booted(), 'B');
    CHECK_EQ(tm_store_rollback(&st), TM_OK);
    CHECK_EQ(booted(), 'A');
    /* a stored model is activated on request */
    CHECK_EQ(tm_store_activate_inactive(&st, 0, 0), TM_OK);
    CHECK_EQ(booted(), 'B');
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(rev, 0);
    CHECK_EQ(booted(), 'B');
    /* a corrupted active slot is detected at boot: the other valid slot takes over */
    mem[SLOT * st.meta.active + 100] ^= 0x55;
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(booted(), 'A');
}

/* Power-cut scenarios. `run` is cut at its k-th flash operation; the store then reboots, and that
 * reboot (whose own writes finish an interrupted recovery: trial revert, fall-back, factory
 * install) is itself cut at each of its operations before a last clean reboot. Every boot must
 * come up on `before` or `after`, never on a corrupt image, and the active model must load. */
typedef void (*scenario_t)(void);
typedef struct {
    const char *name;
    scenario_t prepare, run;
    char before, after;
    int rerun; /* after the cut, the same operation runs again and ends on `after` */
} power_case_t;

static flashsim_t g_fs;
static int g_resumed_seen; /* boots that restored a transfer holding chunks */

static int image_loads(void *ctx, const uint8_t *img, uint32_t len)
{
    (void)ctx;
    return tm_model_load(&model, img, len, arena, sizeof(arena));
}

/* Mount as the device boots, with whatever cut is armed. */
static int mount(int *reverted)
{
    tm_flash_t h = flashsim_hal(&g_fs);
    return tm_store_mount(&st, &h, SLOT, img_a, (uint32_t)len_a, reverted, image_loads, NULL);
}

static void sc_update(void) { push(img_b, len_b, sha_b, 1024, 2); tm_store_commit(&st, 1, 0, 0); }
static void sc_trial_confirm(void) { push(img_b, len_b, sha_b, 4096, 2); tm_store_commit(&st, 1, 1, 0); tm_store_confirm(&st); }
static void sc_rollback(void) { tm_store_rollback(&st); }
static void sc_store_only(void) { push(img_b, len_b, sha_b, 1024, 2); tm_store_commit(&st, 0, 0, 0); }
static void sc_activate(void) { tm_store_activate_inactive(&st, 0, 0); }
static void sc_boot(void) { int rev; mount(&rev); }
static void prep_b_previous(void) { sc_update(); } /* A previous, B active */
static void prep_b_on_trial(void) { push(img_b, len_b, sha_b, 4096, 2); tm_store_commit(&st, 1, 1, 0); }
static void prep_t_active(void) { push(img_t, len_t, sha_t, 1024, 3); tm_store_commit(&st, 1, 0, 0); }
static void prep_t_both(void) { prep_t_active(); prep_t_active(); }
static void prep_empty(void) { memset(mem, 0xFF, sizeof(mem)); }
static void prep_half_sent(void)
{
    int resumed;
    tm_store_begin(&st, 7, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed);
    send_chunks(img_b, len_b, 1024, 0, (uint32_t)(len_b / 1024 / 2));
}
static void sc_rest_and_commit(void) { push(img_b, len_b, sha_b, 1024, 2); tm_store_commit(&st, 1, 0, 0); }
/* A pulled transfer: XFER_BEGIN journals its source (one more journal write), then the chunks. */
static const char kPullSource[] = "tinymlops/v1/plant-a/models/pump-1/2/chunk";
static void begin_pull(void)
{
    int resumed;
    tm_store_begin(&st, 7, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed);
    tm_store_set_source(&st, (const uint8_t *)kPullSource, (uint32_t)strlen(kPullSource));
}
static void sc_pull_update(void)
{
    begin_pull();
    send_chunks(img_b, len_b, 1024, 0, (uint32_t)((len_b + 1023) / 1024));
    const uint8_t *p;
    tm_store_verify(&st, 7, &p);
    tm_store_commit(&st, 1, 0, 0);
}
static void prep_half_pulled(void) { begin_pull(); send_chunks(img_b, len_b, 1024, 0, (uint32_t)(len_b / 1024 / 2)); }

/* A transfer the boot restored from the journal: every chunk it counts as held holds its data. */
static int resumed_chunks_hold_their_data(void)
{
    if (!st.xfer) return 1;
    const uint8_t *img = memcmp(st.sha, sha_b, 32) == 0 ? img_b : memcmp(st.sha, sha_t, 32) == 0 ? img_t : NULL;
    if (!img) return 0;
    const uint8_t *slot = mem + (size_t)st.target * SLOT;
    uint32_t held = 0;
    for (uint32_t i = 0; i < st.n_chunks; i++) {
        if (!(st.bitmap[i / 8] & (1u << (i % 8)))) continue;
        uint32_t off = i * st.chunk_size, l = st.image_size - off < st.chunk_size ? st.image_size - off : st.chunk_size;
        if (memcmp(slot + off, img + off, l) != 0) return 0;
        held++;
    }
    g_resumed_seen += held > 0;
    return held == st.received;
}

/* Boot clean, check the outcome; returns what booted. */
static char check_boot(const power_case_t *c, const char *when, long k, long j)
{
    int rev;
    g_fs.cut_at = -1;
    g_fs.dead = 0;
    CHECK_EQ(mount(&rev), TM_OK);
    char b = booted();
    if (b != c->before && b != c->after) {
        fprintf(stderr, "%s: cut at op %ld%s (recovery op %ld) booted '%c'\n", c->name, k, when, j, b);
        g_failures++;
    }
    uint32_t len;
    const uint8_t *p = tm_store_active(&st, &len);
    CHECK(p && tm_model_load(&model, p, len, arena, sizeof(arena)) == TM_OK); /* and it loads */
    CHECK(resumed_chunks_hold_their_data());
    return b;
}

static void power_cuts(const power_case_t *c)
{
    int rev, failures_before = g_failures;
    fresh(&g_fs);
    boot(&g_fs, &rev);
    if (c->prepare) c->prepare();
    static uint8_t snapshot[FLASH_SIZE], after_cut[FLASH_SIZE];
    memcpy(snapshot, mem, sizeof(mem));
    tm_store_t saved = st;
    g_fs.ops = 0;
    c->run();
    long total = g_fs.ops, recovery_cuts = 0;
    CHECK(total > 0);
    CHECK_EQ(booted(), c->after);
    int seen_before = 0, seen_after = 0;
    for (long k = 0; k <= total; k++) {
        memcpy(mem, snapshot, sizeof(mem));
        st = saved;
        st.flash = flashsim_hal(&g_fs);
        g_fs.ops = 0;
        g_fs.cut_at = k;
        g_fs.dead = 0;
        c->run(); /* dies at op k; the rest of its writes are lost */
        memcpy(after_cut, mem, sizeof(mem));
        /* a second cut at each flash operation of the recovery boot */
        g_fs.ops = 0;
        check_boot(c, "", k, -1);
        long recovery = g_fs.ops;
        for (long j = 0; j < recovery; j++, recovery_cuts++) {
            memcpy(mem, after_cut, sizeof(mem));
            g_fs.ops = 0;
            g_fs.cut_at = j;
            g_fs.dead = 0;
            mount(&rev);
            check_boot(c, " and in recovery", k, j);
        }
        memcpy(mem, after_cut, sizeof(mem));
        char b = check_boot(c, "", k, -1);
        seen_before += b == c->before;
        seen_after += b == c->after;
        /* the device keeps working after the cut: the same operation now succeeds */
        if (c->rerun) {
            c->run();
            CHECK_EQ(booted(), c->after);
        }
    }
    CHECK(seen_before > 0 && seen_after > 0);
    printf("%-22s %3ld flash operations, cut at each (+%4ld second cuts in recovery): booted old %3d times, "
           "new %3d times, %s\n", c->name, total, recovery_cuts, seen_before, seen_after,
           g_failures == failures_before ? "never corrupt, always loads" : "FAILED");
}

static const power_case_t kPowerCases[] = {
    {"update", NULL, sc_update, 'A', 'B', 1},
    {"trial+confirm", NULL, sc_trial_confirm, 'A', 'B', 1},
    {"rollback", prep_b_previous, sc_rollback, 'B', 'A', 0},
    {"store only", NULL, sc_store_only, 'A', 'A', 1},
    {"activate", sc_store_only, sc_activate, 'A', 'B', 0},
    /* boot-time writes */
    {"boot: trial revert", prep_b_on_trial, sc_boot, 'A', 'A', 1},
    {"boot: unloadable", prep_t_active, sc_boot, 'A', 'A', 1},
    {"boot: both unloadable", prep_t_both, sc_boot, 'A', 'A', 1},
    {"boot: factory install", prep_empty, sc_boot, 'A', 'A', 1},
    /* a transfer journaled half way: the rest of its chunks (their bits) and the commit */
    {"resumed update", prep_half_sent, sc_rest_and_commit, 'A', 'B', 1},
    /* the same for a pull, whose XFER_BEGIN also journals the chunks' source */
    {"pulled update", NULL, sc_pull_update, 'A', 'B', 1},
    {"resumed pull", prep_half_pulled, sc_rest_and_commit, 'A', 'B', 1},
};

/* A transfer survives a reboot: the resumed XFER_BEGIN reports the chunks held before, and only the
 * missing ones are sent. An abort or a commit ends it for good. */
static void test_transfer_survives_reboot(void)
{
    flashsim_t f;
    int rev, resumed;
    fresh(&f);
    boot(&f, &rev);
    uint32_t n = (uint32_t)((len_b + 1023) / 1024), half = n / 2;
    CHECK_EQ(tm_store_begin(&st, 7, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed), TM_OK);
    CHECK_EQ(send_chunks(img_b, len_b, 1024, 0, half), TM_OK);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.xfer, 1);
    CHECK_EQ(st.received, half);
    CHECK_EQ(st.n_chunks, n);
    /* another image is refused while the restored transfer counts as active, then takes over */
    CHECK_EQ(tm_store_begin(&st, 8, (uint32_t)len_a, 1024, 4096, sha_a, 1, 1000, &resumed), TM_E_BUSY);
    CHECK_EQ(tm_store_begin(&st, 9, (uint32_t)len_b, 1024, 4096, sha_b, 2, 1000, &resumed), TM_OK);
    CHECK_EQ(resumed, 1);
    CHECK_EQ(st.received, half);
    st.xfer_id = 7; /* send_chunks' id */
    long before = f.ops;
    CHECK_EQ(send_chunks(img_b, len_b, 1024, half, n), TM_OK);
    CHECK_EQ(f.ops - before, 2 * (long)(n - half)); /* data + bit: only the missing chunks are written */
    const uint8_t *p;
    CHECK_EQ(tm_store_verify(&st, 7, &p), TM_OK);
    CHECK_EQ(tm_store_commit(&st, 1, 0, 0), TM_OK);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.xfer, 0);
    CHECK_EQ(booted(), 'B');
    /* aborted: gone after a reboot */
    CHECK_EQ(tm_store_begin(&st, 7, (uint32_t)len_a, 1024, 4096, sha_a, 3, 0, &resumed), TM_OK);
    CHECK_EQ(send_chunks(img_a, len_a, 1024, 0, 2), TM_OK);
    CHECK_EQ(tm_store_abort(&st, 7), TM_OK);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.xfer, 0);
    CHECK_EQ(booted(), 'B');
}

/* A pull's source rides in the journal with its transfer (PROTOCOL.md 5.1): a reboot resumes the
 * fetching by itself. It survives later journal writes, a push resume of the same image drops it,
 * a new transfer starts pushed, and one too long to journal counts as pushed. */
static void test_pull_source_survives_reboot(void)
{
    static const char src[] = "tinymlops/v1/plant-a/models/00112233";
    static uint8_t too_long[TM_XFER_SOURCE_MAX + 1];
    flashsim_t f;
    int rev, resumed;
    uint32_t len;
    fresh(&f);
    boot(&f, &rev);
    uint32_t n = (uint32_t)((len_b + 1023) / 1024), half = n / 2;
    CHECK_EQ(tm_store_set_source(&st, (const uint8_t *)src, sizeof(src) - 1), TM_E_NO_TRANSFER);
    CHECK_EQ(tm_store_begin(&st, 7, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed), TM_OK);
    CHECK(tm_store_pull_source(&st, &len) == NULL); /* pushed until said otherwise */
    CHECK_EQ(tm_store_set_source(&st, (const uint8_t *)src, sizeof(src) - 1), TM_OK);
    long before = f.ops;
    CHECK_EQ(tm_store_set_source(&st, (const uint8_t *)src, sizeof(src) - 1), TM_OK);
    CHECK_EQ(f.ops, before); /* unchanged: no journal write */
    CHECK_EQ(send_chunks(img_b, len_b, 1024, 0, half), TM_OK);
    static const uint8_t key[TM_SIG_PUBLIC_LEN] = {7};
    CHECK_EQ(tm_store_trust_add(&st, key), TM_OK); /* a later journal write carries it over */
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.received, half);
    const uint8_t *p = tm_store_pull_source(&st, &len);
    CHECK(p != NULL && len == sizeof(src) - 1 && memcmp(p, src, len) == 0);
    /* the host pushes the rest instead: journaled as pushed */
    CHECK_EQ(tm_store_begin(&st, 9, (uint32_t)len_b, 1024, 4096, sha_b, 2, 0, &resumed), TM_OK);
    CHECK_EQ(resumed, 1);
    CHECK_EQ(tm_store_set_source(&st, NULL, 0), TM_OK);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.received, half);
    CHECK(tm_store_pull_source(&st, &len) == NULL);
    /* too long to journal: pushed as far as a reboot knows */
    memset(too_long, 'x', sizeof(too_long));
    CHECK_EQ(tm_store_set_source(&st, too_long, sizeof(too_long)), TM_OK);
    CHECK(tm_store_pull_source(&st, &len) == NULL);
    /* a new transfer (another image, once the old one is stale) starts pushed */
    CHECK_EQ(tm_store_set_source(&st, (const uint8_t *)src, sizeof(src) - 1), TM_OK);
    CHECK_EQ(tm_store_begin(&st, 10, (uint32_t)len_a, 1024, 4096, sha_a, 3, 60000, &resumed), TM_OK);
    CHECK_EQ(resumed, 0);
    CHECK(tm_store_pull_source(&st, &len) == NULL);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.xfer, 1);
    CHECK(tm_store_pull_source(&st, &len) == NULL);
}

/* The trust store's keys and revocations (PROTOCOL.md 6.2) ride in the journal: they survive a
 * reboot and every later state change, and a power cut at any flash operation of a TRUST_ADD, a
 * REVOKE or an update after them leaves the state before or after that step, never less. */
static const uint8_t kKey1[TM_SIG_PUBLIC_LEN] = {1}, kKey2[TM_SIG_PUBLIC_LEN] = {2};
static const uint8_t kRevoked[TM_REVOCATION_ID_LEN] = {0xAB};

static int trust_steps(void) /* returns how many of the steps below the state shows */
{
    int key1 = st.trust_keys >= 1 && memcmp(tm_store_trust_key(&st, 0), kKey1, TM_SIG_PUBLIC_LEN) == 0;
    int key2 = st.trust_keys == 2 && memcmp(tm_store_trust_key(&st, 1), kKey2, TM_SIG_PUBLIC_LEN) == 0;
    int revoked = tm_store_is_revoked(&st, kRevoked);
    if (st.trust_keys > 2 || st.trust_revoked > 1 || !key1) return -1;
    if (!key2) return revoked ? -1 : 1;
    return revoked ? 3 : 2;
}

static int trust_run(void)
{
    int rc = tm_store_trust_add(&st, kKey2);
    if (!rc) rc = tm_store_revoke(&st, kRevoked);
    if (!rc) rc = push(img_b, len_b, sha_b, 1024, 2);
    if (!rc) rc = tm_store_commit(&st, 1, 0, 0);
    return rc;
}

static void test_trust_survives_reboots_and_power_cuts(void)
{
    flashsim_t f;
    fresh(&f);
    int rev;
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.trust_keys + st.trust_revoked, 0);
    CHECK_EQ(tm_store_trust_add(&st, kKey1), TM_OK);
    CHECK_EQ(tm_store_trust_add(&st, kKey1), TM_OK); /* held once */
    CHECK_EQ(st.trust_keys, 1);
    static uint8_t snapshot[FLASH_SIZE];
    memcpy(snapshot, mem, sizeof(mem));
    tm_store_t saved = st;
    f.ops = 0;
    CHECK_EQ(trust_run(), TM_OK);
    long total = f.ops;
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(trust_steps(), 3);
    CHECK_EQ(booted(), 'B');
    int seen[4] = {0};
    for (long k = 0; k < total; k++) {
        memcpy(mem, snapshot, sizeof(mem));
        st = saved;
        st.flash = flashsim_hal(&f);
        f.ops = 0;
        f.cut_at = k;
        f.dead = 0;
        trust_run();
        CHECK_EQ(boot(&f, &rev), TM_OK);
        int steps = trust_steps();
        if (steps < 1) {
            fprintf(stderr, "trust: cut at op %ld left keys %u revoked %u\n", k, st.trust_keys, st.trust_revoked);
            g_failures++;
        } else {
            seen[steps]++;
        }
        char b = booted();
        CHECK(b == 'A' || b == 'B');
    }
    CHECK(seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    /* bounded: a full key store refuses; the oldest revocation goes first */
    fresh(&f);
    CHECK_EQ(boot(&f, &rev), TM_OK);
    uint8_t key[TM_SIG_PUBLIC_LEN] = {0}, id[TM_REVOCATION_ID_LEN] = {0};
    for (int i = 0; i < TM_MAX_TRUST_KEYS; i++) {
        key[0] = (uint8_t)(i + 1);
        CHECK_EQ(tm_store_trust_add(&st, key), TM_OK);
    }
    key[0] = 0xEE;
    CHECK_EQ(tm_store_trust_add(&st, key), TM_E_TOO_LARGE);
    for (int i = 0; i <= TM_MAX_REVOCATIONS; i++) {
        id[0] = (uint8_t)(i + 1);
        CHECK_EQ(tm_store_revoke(&st, id), TM_OK);
    }
    CHECK_EQ(boot(&f, &rev), TM_OK);
    CHECK_EQ(st.trust_keys, TM_MAX_TRUST_KEYS);
    CHECK_EQ(st.trust_revoked, TM_MAX_REVOCATIONS);
    id[0] = 1;
    CHECK(!tm_store_is_revoked(&st, id)); /* the oldest went */
    id[0] = (uint8_t)(TM_MAX_REVOCATIONS + 1);
    CHECK(tm_store_is_revoked(&st, id));
    printf("trust store: %ld flash operations (add, revoke, update), cut at each: before %d, key added %d, "
           "revoked %d, never lost\n", total, seen[1], seen[2], seen[3]);
}

int main(void)
{
    len_a = load("../../../resources/models/factory.tmlm", img_a);
    len_b = load("fw_test_v2.tmlm", img_b);
    CHECK(len_a > 0 && len_b > 0);
    if (len_a <= 0 || len_b <= 0) return TEST_DONE();
    tm_sha256(img_a, (size_t)len_a, sha_a);
    tm_sha256(img_b, (size_t)len_b, sha_b);
    len_t = load("tanh_v3.tmlm", img_t); /* intact, but does not load (TANH) */
    CHECK(len_t > 0);
    tm_sha256(img_t, (size_t)len_t, sha_t);
    test_basic();
    test_transfer_survives_reboot();
    test_pull_source_survives_reboot();
    test_trust_survives_reboots_and_power_cuts();
    for (size_t i = 0; i < sizeof(kPowerCases) / sizeof(kPowerCases[0]); i++) power_cuts(&kPowerCases[i]);
    CHECK(g_resumed_seen > 0); /* some cut left a transfer to resume, and its chunks were right */
    printf("boots that resumed a journaled transfer with chunks held: %d\n", g_resumed_seen);
    return TEST_DONE();
}
