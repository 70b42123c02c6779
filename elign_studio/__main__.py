"""``python -m elign_studio [--port P] [--address A]``: serve the studio (localhost unless told otherwise)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m elign_studio", description=__doc__)
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    p.add_argument("--show", action="store_true", help="open a browser")
    args = p.parse_args(argv)
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(Path(__file__).resolve().parent),
        "--port",
        str(args.port),
        "--address",
        args.address,
    ]
    if args.show:
        cmd.append("--show")
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
