/* Plain-assert test helpers: CHECK keeps going and counts, the runner's exit code reports. */
#ifndef TESTUTIL_H
#define TESTUTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

extern int g_failures;
#define CHECK(cond) do { if (!(cond)) { g_failures++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); if (_a != _b) { g_failures++; \
    fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, __LINE__, #a, _a, #b, _b); } } while (0)
#define TEST_DONE() (g_failures ? (fprintf(stderr, "%d check(s) failed\n", g_failures), 1) : (printf("ok\n"), 0))

/* Read a whole file into a static-lifetime buffer owned by the caller (returns length, -1 on error). */
long read_file(const char *path, uint8_t *buf, size_t cap);

#endif
