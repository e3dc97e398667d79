"""The protocol's error codes have one source, PROTOCOL.md section 9: the Python and C tables are
generated from it (scripts/gen_error_codes.py) and must say the same."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from app.protocol.codes import ERROR_TEXT, ErrorCode

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_error_codes", ROOT / "scripts" / "gen_error_codes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_error_codes", module)
    spec.loader.exec_module(module)
    return module


gen = _generator()


def test_generated_python_and_c_match_protocol_md() -> None:
    markdown = gen.PROTOCOL_MD.read_text(encoding="utf-8")
    assert gen.stale(markdown) == [], "run: python scripts/gen_error_codes.py"


def test_the_running_python_table_is_protocol_md_table() -> None:
    rows = gen.parse_table(gen.PROTOCOL_MD.read_text(encoding="utf-8"))
    assert [(c.value, c.name) for c in ErrorCode if c] == [(r.code, r.name) for r in rows]
    assert {c.name: t for c, t in ERROR_TEXT.items()} == {r.name: r.text for r in rows}


def test_the_c_core_uses_the_generated_table() -> None:
    """The C enum and the device's text list come from tm_errors.h, not a copy of their own."""
    core = ROOT / "firmware" / "core"
    assert '#include "tm_errors.h"' in (core / "tm_config.h").read_text(encoding="utf-8")
    device = (core / "tm_device.c").read_text(encoding="utf-8")
    assert "kErrorText[] = TM_ERROR_TEXTS;" in device
    others = [p.name for p in core.glob("*.[ch]") if p.name != "tm_errors.h"
              and re.search(r"TM_E_[A-Z_]+\s*=\s*\d", p.read_text(encoding="utf-8"))]
    assert others == [], f"error codes defined outside tm_errors.h: {others}"


def test_a_changed_text_marks_both_files_stale() -> None:
    markdown = gen.PROTOCOL_MD.read_text(encoding="utf-8")
    edited = markdown.replace("| 5 | BUSY | another transfer is in progress on this device |",
                              "| 5 | BUSY | the device is busy with another transfer |")
    assert edited != markdown
    assert gen.stale(edited) == [gen.PYTHON_OUT, gen.C_OUT]


@pytest.mark.parametrize(("row", "why"), [
    ("| 24 | LATE | skips a code |", "code 24 where 23 was due"),
    ("| 23 | BUSY | twice |", "name BUSY used twice"),
    ('| 23 | QUOTED | says "hi" |', "plain ASCII without quotes"),
    ("| 23 | bad name | lower case |", "not a '| code | NAME | text |' row"),
])
def test_a_bad_table_row_is_named(row: str, why: str) -> None:
    markdown = gen.PROTOCOL_MD.read_text(encoding="utf-8")
    last = "| 22 | REVOKED | model version revoked by the operator |"
    with pytest.raises(gen.TableError, match=re.escape(why)):
        gen.parse_table(markdown.replace(last, last + "\n" + row))


def test_check_mode_reports_and_writes_nothing(capsys) -> None:
    assert gen.main(["--check"]) == 0
    assert capsys.readouterr().err == ""
