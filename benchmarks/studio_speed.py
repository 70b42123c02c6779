"""Studio speed on CPU: `panel serve elign_studio` -> interactive page, and Sample click -> first trajectory.

Starts the server, drives Debian's Chromium with Playwright, and appends a line to benchmarks/RESULTS.md.
Uses the shipped backbone when it exists (else a tiny stand-in, said so in the results), 100 steps,
one molecule, and the force field named by --force-field (default aimnet2, the offline default).

    python benchmarks/studio_speed.py [--force-field aimnet2] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--force-field", default="aimnet2")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from elign.assets import shipped_backbone
    from elign_studio.serving import CHROMIUM, CHROMIUM_ARGS, free_port, serve_command

    tmp = Path(tempfile.mkdtemp(prefix="studio-speed-"))
    env = dict(
        os.environ,
        ELIGN_STUDIO_DATA=str(tmp / "data"),
        ELIGN_STUDIO_FORCE_FIELD=args.force_field,
        PYTHONPATH=str(ROOT),
    )
    model = "shipped backbone"
    if not shipped_backbone().exists():
        from elign.checkpoints import save_checkpoint
        from elign.testing import tiny_model

        m, c = tiny_model(timesteps=max(args.steps, 50))
        save_checkpoint(tmp / "assets" / "backbone" / "model.safetensors", m, c)
        env["ELIGN_ASSETS"] = str(tmp / "assets")
        model = "TINY STAND-IN (shipped backbone missing)"
    port = free_port()
    url = f"http://127.0.0.1:{port}/elign_studio"
    from playwright.sync_api import Error, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            serve_command(port),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    page.goto(url, timeout=60_000)
                    break
                except Error:
                    if time.perf_counter() - t0 > 120:
                        raise
                    time.sleep(0.1)
            page.get_by_role("button", name="Sample").wait_for(timeout=120_000)
            page.locator(".elign-viewer canvas").first.wait_for(timeout=60_000)
            t_ready = time.perf_counter() - t0
            steps = page.get_by_label("Sample steps")
            steps.fill(str(args.steps))
            steps.press("Enter")
            page.wait_for_timeout(300)
            t1 = time.perf_counter()
            page.get_by_role("button", name="Sample").click()
            page.get_by_text("Sampled 1 molecule").wait_for(timeout=300_000)
            page.get_by_text("atoms,").first.wait_for(timeout=30_000)
            t_traj = time.perf_counter() - t1
            status = page.get_by_text("Sampled 1 molecule").first.inner_text()
        finally:
            proc.terminate()
            proc.wait(10)
            browser.close()
    line = (
        f"| studio_speed | {time.strftime('%Y-%m-%d')} | {platform.node()} CPU ({os.cpu_count()} cores) | "
        f"{model}, {args.steps} steps, 1 molecule, force field {args.force_field} | serve -> interactive "
        f"{t_ready:.1f} s (target < 10) | Sample click -> trajectory drawn {t_traj:.1f} s (target < 30) |"
    )
    print(line)
    print("app status:", status.strip())
    if not args.no_write:
        with (ROOT / "benchmarks" / "RESULTS.md").open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
