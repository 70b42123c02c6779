"""The house's limits, checked: no file over 500 lines and no function over 60 lines in elign/ and elign_studio/;
no command module (elign/cli/) with more than 60 lines of logic (its functions but ``add_parser``, which only
declares flags).

python scripts/house_check.py     # prints every breach; exit status 1 when there is one
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("elign", "elign_studio")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_COMMAND_LOGIC_LINES = 60
FLAG_DECLARATIONS = "add_parser"  # a command module's function that only declares its subcommand and flags


def command_logic_lines(source: str) -> int:
    """Lines of a command module's top-level functions, ``add_parser`` aside."""
    return sum(
        node.end_lineno - node.lineno + 1
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name != FLAG_DECLARATIONS
    )


def breaches(root: Path = ROOT) -> list[str]:
    """One line per file or function over its limit, longest first."""
    found: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            source = path.read_text()
            where = path.relative_to(root)
            n = len(source.splitlines())
            if n > MAX_FILE_LINES:
                found.append((n, f"{where}: {n} lines (at most {MAX_FILE_LINES})"))
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        found.append((length, f"{where}:{node.lineno} {node.name}: {length} lines (at most 60)"))
    for path in sorted((root / "elign" / "cli").glob("*.py")):
        logic = command_logic_lines(path.read_text())
        if logic > MAX_COMMAND_LOGIC_LINES:
            where = path.relative_to(root)
            found.append((logic, f"{where}: {logic} lines of logic (at most {MAX_COMMAND_LOGIC_LINES})"))
    return [text for _, text in sorted(found, reverse=True)]


def main() -> int:
    lines = breaches()
    fine = f"no file over {MAX_FILE_LINES} lines, no function over {MAX_FUNCTION_LINES}, no command module over "
    print("\n".join(lines) if lines else fine + f"{MAX_COMMAND_LOGIC_LINES} lines of logic")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
