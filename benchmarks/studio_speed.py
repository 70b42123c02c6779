"""Studio speed in Chromium: where the time between a click and pixels goes, before and after, in one run.

For each checkout (``--checkout DIR``, repeatable; default this tree) it serves that tree's studio with
`panel serve`, drives Debian's Chromium with Playwright, and measures:

- serve -> interactive (Sample button and viewer canvas present);
- Sample click -> first frame drawn, and of it the server's own sampling time (the "Sampled ... in X s" of
  the status: chain, force field on every frame, bonds); the difference is the app's overhead;
- Sample click -> forces on every frame (scored after the first frame is shown);
- table row click -> the viewer showing that molecule;
- playback: frames drawn per second after Play (the player's interval is 120 ms, so at most ~8.3/s).

Times are taken in the page (a MutationObserver on the viewer title, ``performance.now()``), so Playwright's
polling does not add to them. Checkouts alternate ``--repeats`` times; medians are printed and written to
benchmarks/RESULTS.md (benchmarks/harness.py).

    git worktree add /tmp/before HEAD~1
    python benchmarks/studio_speed.py --checkout /tmp/before --checkout . --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Stopwatch, medians, write_results

ROOT = Path(__file__).resolve().parents[1]

WATCH_TITLE = """() => {  // Bokeh draws every view in a shadow root: search through them
  const find = (root) => {
    const hit = root.querySelector('.elign-viewer');
    if (hit) return hit;
    for (const el of root.querySelectorAll('*')) {
      if (el.shadowRoot) { const h = find(el.shadowRoot); if (h) return h; }
    }
    return null;
  };
  window.__titles = [];
  const host = find(document);
  const title = host.previousElementSibling;
  new MutationObserver(() => window.__titles.push([performance.now(), title.textContent]))
    .observe(title, { childList: true, characterData: true, subtree: true });
  return performance.now();
}"""


def wait_title(page, since: float, pattern: str, timeout_s: float = 300) -> float:
    """performance.now() of the first viewer-title change after ``since`` whose text matches ``pattern``."""
    waiting = Stopwatch()
    while waiting.elapsed() < timeout_s:
        hit = page.evaluate(
            "([since, pat]) => { const r = new RegExp(pat);"
            " const h = window.__titles.find(([t, s]) => t > since && r.test(s)); return h ? h[0] : null; }",
            [since, pattern],
        )
        if hit is not None:
            return hit
        time.sleep(0.02)
    raise TimeoutError(pattern)


def interactive(page, port: int, since_serve: Stopwatch) -> dict[str, float]:
    """Serve -> the Sample button and the viewer's canvas on the page."""
    while True:
        try:
            page.goto(f"http://127.0.0.1:{port}/elign_studio", timeout=60_000)
            break
        except Exception:
            if since_serve.elapsed() > 120:
                raise
            time.sleep(0.1)
    page.get_by_role("button", name="Sample").wait_for(timeout=120_000)
    page.locator(".elign-viewer canvas").first.wait_for(timeout=60_000)
    return {"serve_to_interactive_s": since_serve.elapsed()}


def sample_click(page, args: argparse.Namespace) -> dict[str, float]:
    """Sample click -> the first frame drawn (of it the server's sampling), and -> forces on every frame."""
    for label, value in (("Sample steps", args.steps), ("Molecules", args.num)):
        box = page.get_by_label(label)
        box.fill(str(value))
        box.press("Enter")
    page.wait_for_timeout(500)
    since = page.evaluate(WATCH_TITLE)
    page.get_by_role("button", name="Sample").click()
    drawn = wait_title(page, since, "atoms,")
    out = {"click_to_first_frame_s": (drawn - since) / 1000}
    status = page.get_by_text(re.compile(r"Sampled \d+ molecule")).first
    status.wait_for(timeout=60_000)
    seconds = re.search(r" in ([0-9.]+) s", status.inner_text())
    out["sampling_s"] = float(seconds.group(1)) if seconds else float("nan")
    out["overhead_s"] = out["click_to_first_frame_s"] - out["sampling_s"]
    since_now = Stopwatch()  # the click counted as click_to_first_frame_s before now
    if page.get_by_text("scoring the other frames").count():  # forces on the other frames follow
        page.get_by_text("forces on every frame").first.wait_for(timeout=300_000)
    out["click_to_all_frames_scored_s"] = out["click_to_first_frame_s"] + since_now.elapsed()
    return out


def row_click(page, args: argparse.Namespace) -> dict[str, float]:
    """Table row click -> the viewer showing that molecule."""
    since = page.evaluate("() => performance.now()")
    page.locator(".tabulator-row").nth(args.num - 1).locator(".tabulator-cell").nth(3).click()
    shown = wait_title(page, since, f"#{args.num - 1} ", timeout_s=60)
    return {"row_click_to_viewer_s": (shown - since) / 1000}


def playback(page, args: argparse.Namespace) -> dict[str, float]:
    """Frames drawn per second after Play."""
    page.locator("button.first").first.click()
    page.wait_for_timeout(1500)
    since = page.evaluate("() => performance.now()")
    page.locator("button.play").first.click()
    page.wait_for_timeout(int(args.play_seconds * 1000))
    stamps = page.evaluate("(since) => window.__titles.filter(([t, s]) => t > since).map(([t]) => t)", since)
    page.locator("button.pause").first.click()
    return {"playback_frames_per_s": len(stamps) / args.play_seconds}


def measure(checkout: Path, args: argparse.Namespace, browser) -> dict[str, float]:
    from elign_studio.serving import free_port

    tmp = Path(tempfile.mkdtemp(prefix="studio-speed-"))
    env = dict(
        os.environ,
        ELIGN_STUDIO_DATA=str(tmp / "data"),
        ELIGN_STUDIO_FORCE_FIELD=args.force_field,
        PYTHONPATH=str(checkout),
    )
    port = free_port()
    cmd = [sys.executable, "-m", "panel", "serve", str(checkout / "elign_studio"), "--port", str(port)]
    cmd += ["--address", "127.0.0.1", "--num-procs", "1"]
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    since_serve = Stopwatch()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = interactive(page, port, since_serve)
        page.wait_for_timeout(3000)  # the session's warm-up (checkpoint and force field load) finishes
        out |= sample_click(page, args)
        page.wait_for_timeout(1500)
        out |= row_click(page, args)
        page.wait_for_timeout(1500)
        out |= playback(page, args)
    finally:
        page.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", action="append", type=Path, help="a tree whose studio to serve (repeatable)")
    p.add_argument("--force-field", default="aimnet2")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--num", type=int, default=4, help="molecules per Sample (the row click picks the last)")
    p.add_argument("--play-seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from elign.io.assets import shipped_backbone
    from elign_studio.serving import CHROMIUM, CHROMIUM_ARGS

    if not shipped_backbone().exists():
        sys.exit("the shipped backbone is missing (assets/backbone); the figures would not mean anything")
    checkouts = [c.resolve() for c in (args.checkout or [ROOT])]
    results: dict[Path, list[dict[str, float]]] = {c: [] for c in checkouts}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for r in range(args.repeats):
            for c in checkouts:
                m = measure(c, args, browser)
                results[c].append(m)
                print(f"repeat {r + 1} {c}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()), flush=True)
        browser.close()
    load = os.getloadavg()[0]
    lines = [
        f"{platform.node()}, {os.cpu_count()} cores, load average {load:.1f} at the end",
        f"shipped backbone, {args.num} molecules per Sample, {args.steps} steps, force field {args.force_field}, "
        f"medians of {args.repeats} (checkouts alternated)",
    ]
    for c in checkouts:
        med = medians(results[c])
        rev = subprocess.run(["git", "-C", str(c), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
        lines.append(
            f"`{rev.stdout.strip()[:70]}`: serve -> interactive {med['serve_to_interactive_s']:.1f} s; "
            f"Sample click -> first frame {med['click_to_first_frame_s']:.2f} s, of which sampling "
            f"{med['sampling_s']:.2f} s, overhead {med['overhead_s']:.2f} s; forces on every frame after "
            f"{med['click_to_all_frames_scored_s']:.1f} s; row click -> viewer "
            f"{med['row_click_to_viewer_s']:.2f} s; playback {med['playback_frames_per_s']:.1f} frames/s "
            f"(interval 120 ms)"
        )
    write_results("Studio speed (benchmarks/studio_speed.py)", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
