"""The C header `tinymlops model export --header` writes (app.ml.export.c_header) builds into a real
program: included from several C and C++ files, defined once, the bytes intact and 16-byte aligned."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from app.ml.export import HEADER_IMPLEMENTATION_MACRO, c_header
from app.protocol.image import sha256
from tests.firmware.conftest import ROOT

FACTORY = ROOT / "resources" / "models" / "factory.tmlm"
# Compiling and linking four tiny files takes well under a second; a loaded CI gets this long.
COMPILE_TIMEOUT_S = 120

MAIN_C = f"""#define {HEADER_IMPLEMENTATION_MACRO}
#include "factory_model.h"
#include <stdint.h>
#include <stdio.h>
unsigned long sum_in_c(void);
unsigned long sum_in_cpp(void);
int main(void)
{{
    printf("%u %u %d %lu %lu\\n", factory_model_len, (unsigned)FACTORY_MODEL_LEN,
           (int)((uintptr_t)factory_model % 16u), sum_in_c(), sum_in_cpp());
    fwrite(factory_model, 1, factory_model_len, stderr);
    return 0;
}}
"""
# Two more files include the header (no macro): with a definition in the header itself, linking
# them would fail with duplicate symbols.
OTHER_C = """#include "factory_model.h"
#include "factory_model.h"
unsigned long sum_in_c(void)
{
    unsigned long s = 0;
    for (unsigned i = 0; i < factory_model_len; i++) s += factory_model[i];
    return s;
}
"""
OTHER_CPP = """#include "factory_model.h"
extern "C" unsigned long sum_in_cpp(void)
{
    unsigned long s = 0;
    for (unsigned i = 0; i < FACTORY_MODEL_LEN; i++) s += factory_model[i];
    return s;
}
"""


def test_header_included_from_several_files_links_once(tmp_path):
    for tool in ("gcc", "g++"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install build-essential")
    image = FACTORY.read_bytes()
    (tmp_path / "factory_model.h").write_text(c_header(image, "factory_model", f"sha256 {sha256(image).hex()}"))
    (tmp_path / "main.c").write_text(MAIN_C)
    (tmp_path / "other.c").write_text(OTHER_C)
    (tmp_path / "other.cpp").write_text(OTHER_CPP)
    objects = []
    for src, compiler in (("main.c", "gcc"), ("other.c", "gcc"), ("other.cpp", "g++")):
        obj = tmp_path / (src + ".o")
        subprocess.run([compiler, "-Wall", "-Wextra", "-Werror", "-c", str(tmp_path / src), "-o", str(obj)],
                       check=True, timeout=COMPILE_TIMEOUT_S, cwd=tmp_path)
        objects.append(str(obj))
    exe = tmp_path / "prog"
    link = subprocess.run(["g++", *objects, "-o", str(exe)], capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    assert link.returncode == 0, link.stderr
    run = subprocess.run([str(exe)], capture_output=True, check=True, timeout=COMPILE_TIMEOUT_S)
    assert run.stderr == image  # the bytes, in order
    length, macro_len, misalign, sum_c, sum_cpp = (int(v) for v in run.stdout.split())
    assert length == macro_len == len(image)
    assert misalign == 0  # 16-byte aligned: the engine reads the flatbuffer in place
    assert sum_c == sum_cpp == sum(image)  # every includer sees the one definition
