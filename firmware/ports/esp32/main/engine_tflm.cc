// The core's engine interface (tm_engine.h) implemented over TensorFlow Lite Micro from
// espressif/esp-tflite-micro (ESP-NN optimised kernels). Same contract as tm_engine.c: the model is
// read in place, unsupported ops are refused before allocation, the arena is the caller's.
// Build flag TM_ENGINE_EXTERNAL is not needed: tm_engine_t's tensors[] carry the input/output views.
//
// The ops this engine runs are the ones register_ops() adds to the resolver, and nothing else: an
// op the resolver lacks is UNSUPPORTED_OP at load. That set is profile esp32-wroom-32's op set,
// TFLM_OPS in app/domain/profiles.py (tests/firmware/test_op_sets.py compares the two).
#include <algorithm>
#include <new>
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" {
#include "tm_engine.h"
}

namespace {
// Number of ops register_ops() adds (the resolver's capacity; an Add* beyond it fails).
constexpr unsigned kOpCount = 18;
using Resolver = tflite::MicroMutableOpResolver<kOpCount>;
// One interpreter per engine instance (the device keeps two: active and candidate).
alignas(16) uint8_t g_storage[2][sizeof(tflite::MicroInterpreter)];
tflite::MicroInterpreter *g_interp[2];
tm_engine_t *g_owner[2];
Resolver g_resolver;
bool g_resolver_ready;

bool register_ops(Resolver &r) {
  const TfLiteStatus added[] = {
      r.AddFullyConnected(), r.AddQuantize(),   r.AddDequantize(),        r.AddReshape(),
      r.AddRelu(),           r.AddLogistic(),   r.AddTanh(),              r.AddAdd(),
      r.AddMul(),            r.AddSub(),        r.AddConv2D(),            r.AddDepthwiseConv2D(),
      r.AddAveragePool2D(),  r.AddMaxPool2D(),  r.AddSoftmax(),           r.AddMean(),
      r.AddConcatenation(),  r.AddPad(),
  };
  static_assert(sizeof(added) / sizeof(added[0]) == kOpCount, "kOpCount is the number of Add* calls");
  for (TfLiteStatus s : added)
    if (s != kTfLiteOk) return false;
  return true;
}

int slot_for(tm_engine_t *e) {
  for (int i = 0; i < 2; i++)
    if (g_owner[i] == e) return i;
  for (int i = 0; i < 2; i++)
    if (!g_owner[i]) { g_owner[i] = e; return i; }
  return -1;
}

void view(tm_tensor_t *t, TfLiteTensor *src) {
  t->data = src->data.int8;
  t->bytes = src->bytes;
  t->elems = src->bytes;
  t->type = 9;  // INT8
  t->scale = src->params.scale;
  t->zero_point = src->params.zero_point;
  t->n_scales = 1;
  t->rank = (uint8_t)src->dims->size;
  for (int i = 0; i < src->dims->size && i < 4; i++) t->dims[i] = (uint16_t)src->dims->data[i];
}
}  // namespace

extern "C" int tm_engine_load(tm_engine_t *e, const uint8_t *model, size_t len, uint8_t *arena, size_t arena_size) {
  int s = slot_for(e);
  if (s < 0) return TM_E_INTERNAL;
  if (g_interp[s]) { g_interp[s]->~MicroInterpreter(); g_interp[s] = nullptr; }
  e->arena = arena;
  e->arena_size = arena_size;
  flatbuffers::Verifier verifier(model, len);
  if (!tflite::VerifyModelBuffer(verifier)) return TM_E_LOAD_FAILED;  // truncated or corrupt
  const tflite::Model *m = tflite::GetModel(model);
  if (!m->subgraphs() || m->subgraphs()->size() != 1 || !m->operator_codes()) return TM_E_LOAD_FAILED;
  if (!g_resolver_ready) {
    if (!register_ops(g_resolver)) return TM_E_INTERNAL;
    g_resolver_ready = true;
  }
  // Refuse before allocating: an op the resolver does not hold is UNSUPPORTED_OP, not a failed
  // AllocateTensors (which would read as ARENA_TOO_SMALL below).
  for (const auto *oc : *m->operator_codes()) {
    int code = std::max<int>(oc->deprecated_builtin_code(), oc->builtin_code());
    if (code == tflite::BuiltinOperator_CUSTOM || !g_resolver.FindOp(static_cast<tflite::BuiltinOperator>(code))) {
      e->unsupported_op = (uint16_t)code;
      return TM_E_UNSUPPORTED_OP;
    }
  }
  g_interp[s] = new (g_storage[s]) tflite::MicroInterpreter(m, g_resolver, arena, arena_size);
  if (g_interp[s]->AllocateTensors() != kTfLiteOk) {
    e->arena_used = arena_size + 1;
    return TM_E_ARENA_TOO_SMALL;  // the model verified and its ops are supported: what is left is RAM
  }
  e->arena_used = g_interp[s]->arena_used_bytes();
  TfLiteTensor *in = g_interp[s]->input(0), *out = g_interp[s]->output(0);
  if (in->type != kTfLiteInt8 || out->type != kTfLiteInt8) return TM_E_UNSUPPORTED_OP;
  e->n_tensors = 2;
  e->input = 0;
  e->output = 1;
  view(&e->tensors[0], in);
  view(&e->tensors[1], out);
  return TM_OK;
}

extern "C" int tm_engine_invoke(tm_engine_t *e) {
  int s = slot_for(e);
  return s >= 0 && g_interp[s] && g_interp[s]->Invoke() == kTfLiteOk ? TM_OK : TM_E_INTERNAL;
}

extern "C" tm_tensor_t *tm_engine_input(tm_engine_t *e) { return &e->tensors[e->input]; }
extern "C" tm_tensor_t *tm_engine_output(tm_engine_t *e) { return &e->tensors[e->output]; }
