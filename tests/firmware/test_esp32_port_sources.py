"""The ESP32 port cannot be compiled here (no ESP-IDF toolchain in this project's registries:
firmware/ports/esp32/README.md), so what can drift unseen is checked from the sources: it links
every core file the other ports link (less the ones it replaces), it implements the whole engine
interface the core calls, every core function it calls still exists, and its board header compiles
against the core headers with the host compiler. A core change that would break the ESP32 build
(a new core file, a renamed function) fails here."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.firmware.conftest import ROOT

FIRMWARE = ROOT / "firmware"
CORE = FIRMWARE / "core"
PORT = FIRMWARE / "ports" / "esp32" / "main"
# Core files the ESP32 port leaves out, each for a reason its CMakeLists.txt gives: the core's own
# engine and kernels (engine_tflm.cc implements tm_engine.h over TFLM instead) and the QEMU port's
# simulated vibration source (the ADXL345 is real).
REPLACED = {"tm_engine.c", "tm_kernels_fc.c", "tm_vibration.c"}
# How long the host compiler may take to check one header (it takes well under a second).
COMPILE_TIMEOUT_S = 60


def esp32_core_sources() -> set[str]:
    text = (PORT / "CMakeLists.txt").read_text()
    return set(re.findall(r"\$\{CORE\}/(\w+\.c)\b", text))


def host_core_sources() -> set[str]:
    block = re.search(r"set\(CORE_SOURCES\s(.*?)\)", (FIRMWARE / "CMakeLists.txt").read_text(), re.S)
    assert block, "firmware/CMakeLists.txt no longer sets CORE_SOURCES"
    return set(re.findall(r"core/(\w+\.c)\b", block.group(1)))


# A function definition at the start of a line, not static (a port cannot call those):
# `size_t tm_encode(const tm_msg_t *m, ...)\n{` or `... ) {`, parameters over several lines included.
DEFINITION = re.compile(r"^(?!static\b)[A-Za-z_][\w \t*]*?\b(tm_\w+)\s*\([^;{)]*\)\s*\{", re.M)
# A definition the port gives with C linkage: `extern "C" int tm_engine_load(...) {`.
EXTERN_C_DEFINITION = re.compile(r'extern "C"[^(;{]*?\b(tm_\w+)\s*\([^;{)]*\)\s*\{')


def linked_definitions() -> set[str]:
    """Functions defined in the core files the port links, and in the port itself."""
    names: set[str] = set()
    for name in esp32_core_sources():
        names |= set(DEFINITION.findall((CORE / name).read_text()))
    for source in PORT.glob("*.c"):
        names |= set(DEFINITION.findall(source.read_text()))
    return names | set(EXTERN_C_DEFINITION.findall((PORT / "engine_tflm.cc").read_text()))


def test_the_port_links_every_core_file_but_the_ones_it_replaces():
    on_disk = {p.name for p in CORE.glob("*.c")}
    assert host_core_sources() == on_disk  # the host build (ctest, fuzzing) compiles all of them
    assert esp32_core_sources() == on_disk - REPLACED


def test_the_port_implements_the_engine_interface_the_core_calls():
    engine_calls = set()
    for source in set(CORE.glob("*.c")) - {CORE / name for name in REPLACED}:
        engine_calls |= set(re.findall(r"\b(tm_engine_\w+)\s*\(", source.read_text()))
    assert engine_calls  # the core does call its engine
    implemented = set(EXTERN_C_DEFINITION.findall((PORT / "engine_tflm.cc").read_text()))
    assert engine_calls <= implemented, engine_calls - implemented


def test_every_core_function_the_port_calls_is_defined_in_what_it_links():
    """A core function renamed, removed or moved into a file the port leaves out fails here, as it
    would fail the real link."""
    defined = linked_definitions()
    called: set[str] = set()
    for source in [*PORT.glob("*.c"), PORT / "engine_tflm.cc"]:
        called |= set(re.findall(r"\b(tm_\w+)\s*\(", source.read_text()))
    assert called, "the port calls no core function?"
    assert called <= defined, called - defined


def test_the_board_header_compiles_against_the_core_headers(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no host C compiler (scripts/bootstrap.sh installs clang; the host firmware build needs one)")
    unit = tmp_path / "board_check.c"
    unit.write_text('#include "board.h"\n')
    done = subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-fsyntax-only", f"-I{PORT}", f"-I{CORE}", str(unit)],
                          capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
