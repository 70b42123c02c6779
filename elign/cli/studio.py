"""``elign studio``: serve the studio app (localhost unless told otherwise), from a checkout or an installed
package alike. The process becomes ``python -m elign_studio`` (``exec``: a signal sent to it reaches the server); the
library never imports the app."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("studio", help="serve the studio in the browser (panel serve of the installed app)")
    s.add_argument("--port", type=int, default=5006)
    s.add_argument("--address", default="127.0.0.1", help="interface to listen on (default: localhost only)")
    s.add_argument("--show", action="store_true", help="open a browser")
    s.set_defaults(func=cmd_studio)


def cmd_studio(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("elign_studio") is None or importlib.util.find_spec("panel") is None:
        raise ValueError("the studio is not installed: pip install 'elign[studio]'")
    cmd = [sys.executable, "-m", "elign_studio", "--port", str(args.port), "--address", args.address]
    cmd += ["--show"] if args.show else []
    os.execv(cmd[0], cmd)  # returns only by raising OSError
    return 1
