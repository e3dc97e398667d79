/* Protocol v1 constants (PROTOCOL.md) and the core's fixed capacities. No heap anywhere: every
 * buffer is sized here. */
#ifndef TM_CONFIG_H
#define TM_CONFIG_H

#define TM_PROTOCOL_VERSION 1
#define TM_HEADER_SIZE 6
#define TM_MAX_PAYLOAD 4200
#define TM_MAX_MESSAGE (TM_HEADER_SIZE + TM_MAX_PAYLOAD)
#define TM_MAX_CHUNK 4096
#define TM_MAX_FRAME 4256
#define TM_HELLO_INTERVAL_S 10
#define TM_STREAM_LEASE_MAX_S 60
#define TM_XFER_STALE_S 30
#define TM_DEFAULT_TRIAL_TIMEOUT_S 300

/* Most chunks one transfer may have: bounds the RAM bitmap (1 KB) and keeps XFER_STATUS < MAX_PAYLOAD. */
#define TM_MAX_XFER_CHUNKS 8192
/* Largest BENCHMARK count the device times individually (4 bytes of RAM each). */
#define TM_MAX_BENCH 1000
/* Model graph limits: the project's autoencoders and MLPerf AD use < 40 tensors and 12 ops. */
#define TM_MAX_TENSORS 96
#define TM_MAX_OPS 48
/* Largest input a model image may declare. */
#define TM_MAX_FEATURES 640 /* MLPerf Tiny AD takes 640 inputs; spec-1 telemetry uses 36 */

/* Message types (PROTOCOL.md 3). */
enum {
    TM_HELLO = 0x01, TM_TELEMETRY = 0x02, TM_STREAM = 0x03, TM_ACK = 0x04, TM_ERROR = 0x05,
    TM_LATENCY = 0x06, TM_XFER_STATUS = 0x07, TM_EVENT = 0x08,
    TM_GET_INFO = 0x20, TM_STREAM_START = 0x21, TM_STREAM_STOP = 0x22, TM_XFER_BEGIN = 0x23,
    TM_XFER_CHUNK = 0x24, TM_XFER_QUERY = 0x25, TM_XFER_COMMIT = 0x26, TM_XFER_ABORT = 0x27,
    TM_CONFIRM = 0x28, TM_ROLLBACK = 0x29, TM_BENCHMARK = 0x2A, TM_REBOOT = 0x2B,
    TM_SET_FAULT = 0x2C, TM_ACTIVATE = 0x2D, TM_XFER_SIGN = 0x2E, TM_TRUST_ADD = 0x2F, TM_REVOKE = 0x30
};

/* Error codes and their texts (PROTOCOL.md 9), generated from its table. */
#include "tm_errors.h"

enum { TM_EV_BOOTED = 100, TM_EV_TRIAL_REVERTED = 101, TM_EV_FAULT_CHANGED = 102, TM_EV_MODEL_ACTIVATED = 103 };
enum { TM_STATE_OFFLINE = 0, TM_STATE_ONLINE = 1, TM_STATE_STREAMING = 2, TM_STATE_UPDATING = 3 };
enum { TM_CAP_STREAM = 1, TM_CAP_PUSH = 2, TM_CAP_PULL = 4, TM_CAP_TRIAL = 8, TM_CAP_BENCHMARK = 16, TM_CAP_FAULT_SIM = 32,
       TM_CAP_SIGNED = 64, TM_CAP_TRUST_ADMIN = 128 };
enum { TM_TLM_ALARM = 1, TM_TLM_TRIAL = 2, TM_TLM_NO_MODEL = 4 };
enum { TM_LAT_EMULATED = 1, TM_LAT_TRIAL = 2 };
/* XFER_COMMIT mode (PROTOCOL.md 3): keep the image in the inactive slot, activate it, or activate
 * it on trial (reverted unless confirmed). */
enum { TM_COMMIT_STORE = 0, TM_COMMIT_ACTIVATE = 1, TM_COMMIT_TRIAL = 2 };
/* XFER_BEGIN flags (PROTOCOL.md 5.1): PULL fetches chunks from the broker (not over serial). */
enum { TM_XFER_FLAG_PULL = 1 };

#endif
