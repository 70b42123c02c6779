"""The ``elign`` command line: data, pretrain, sample, align, score, evaluate, mlff, studio.

One module per command, each with ``add_parser(sub)`` (its subcommand and flags) and its ``cmd_*`` function;
building the parser imports no RDKit and no force field (the commands import their work when they run).
"""

from __future__ import annotations

import argparse
import sys

from elign.cli import align, data, evaluate, mlff, pretrain, sample, score, studio
from elign.cli.common import check_outputs

__all__ = ["build_parser", "main"]

COMMANDS = (data, pretrain, sample, align, score, evaluate, mlff, studio)  # the order of ``elign --help``


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="elign", description="Align 3D molecular diffusion models with force fields.")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure is one line on stderr (``ELIGN_TRACEBACK=1`` shows the traceback)."""
    import os

    from elign.runtime import tune_malloc

    args = build_parser().parse_args(argv)
    tune_malloc()
    try:
        check_outputs(args)
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("ELIGN_TRACEBACK"):
            raise
        expected = (ValueError, OSError, FloatingPointError)  # bad input, files, a diverged run
        kind = "" if isinstance(e, expected) else f"{type(e).__name__}: "
        print(f"error: {kind}{e}", file=sys.stderr)
        return 2 if isinstance(e, expected) else 1
