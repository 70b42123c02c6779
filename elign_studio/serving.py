"""Starting the studio server and a headless Chromium for it (the CLI entry, tests and benchmarks)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

__all__ = ["APP_DIR", "CHROMIUM", "CHROMIUM_ARGS", "free_port", "serve_command"]

APP_DIR = Path(__file__).resolve().parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's Chromium; Playwright never downloads a browser here
CHROMIUM_ARGS = [  # headless, offline, WebGL through SwiftShader
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """`panel serve elign_studio` on ``address:port`` with this interpreter."""
    return [sys.executable, "-m", "panel", "serve", str(APP_DIR), "--port", str(port), "--address", address]
