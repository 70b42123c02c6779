"""``python -m elign_studio [--port P] [--address A]``: serve the studio (localhost unless told otherwise).

The process becomes the server (``exec``): a signal sent to it reaches ``panel serve`` itself, none is left behind."""

from __future__ import annotations

import argparse
import os

from elign_studio.serving import serve_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m elign_studio", description=__doc__)
    p.add_argument("--port", type=int, default=5006)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    p.add_argument("--show", action="store_true", help="open a browser")
    args = p.parse_args(argv)
    cmd = serve_command(args.port, args.address)
    if args.show:
        cmd.append("--show")
    os.execv(cmd[0], cmd)  # returns only by raising OSError
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
