"""The house's limits (docs/layout.md): no file over 500 lines, no function over 60, in the two packages; no command
module over 60 lines of logic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _house_check():
    spec = importlib.util.spec_from_file_location("house_check", ROOT / "scripts" / "house_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_file_or_function_is_over_its_limit() -> None:
    assert _house_check().breaches() == []


def test_the_check_finds_a_long_function_and_a_long_file(tmp_path) -> None:
    check = _house_check()
    package = tmp_path / "elign"
    package.mkdir()
    (tmp_path / "elign_studio").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (package / "long.py").write_text(f"def long():\n{body}\n" + "\n" * 440)
    found = check.breaches(tmp_path)
    assert any("long: 62 lines" in line for line in found)
    assert any(line.startswith("elign/long.py: 502 lines") for line in found)


def test_the_check_counts_a_commands_logic_but_not_its_flags(tmp_path) -> None:
    check = _house_check()
    cli = tmp_path / "elign" / "cli"
    cli.mkdir(parents=True)
    (tmp_path / "elign_studio").mkdir()
    flags = "\n".join(f"    p.add_argument('--f{i}')" for i in range(50))
    work = "\n".join(f"    y{i} = {i}" for i in range(30))
    (cli / "fine.py").write_text(f"def add_parser(p):\n{flags}\n\n\ndef cmd(args):\n{work}\n")
    (cli / "busy.py").write_text(f"def cmd(args):\n{work}\n\n\ndef more(args):\n{work}\n")
    assert check.command_logic_lines((cli / "fine.py").read_text()) == 31
    assert check.breaches(tmp_path) == ["elign/cli/busy.py: 62 lines of logic (at most 60)"]
