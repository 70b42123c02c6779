"""Starting the studio server and a headless Chromium for it (the CLI entry, tests and benchmarks)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

__all__ = [
    "APP_DIR",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "MAX_UPLOAD_MB",
    "WEBSOCKET_MAX_MESSAGE_BYTES",
    "free_port",
    "serve_command",
]

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


MAX_UPLOAD_MB = 64  # an original EDM checkpoint is about 21 MB
# an upload travels base64-encoded in one WebSocket message (4/3 of the file, plus JSON): room for the largest
WEBSOCKET_MAX_MESSAGE_BYTES = 2 * MAX_UPLOAD_MB * 2**20


def serve_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """`panel serve elign_studio` on ``address:port`` with this interpreter, with WebSocket messages large enough
    for an upload of ``MAX_UPLOAD_MB`` (the server's default, 20 MB, closes the page on a 15 MB file)."""
    return [
        sys.executable, "-m", "panel", "serve", str(APP_DIR), "--port", str(port), "--address", address,
        "--websocket-max-message-size", str(WEBSOCKET_MAX_MESSAGE_BYTES),
    ]  # fmt: skip
