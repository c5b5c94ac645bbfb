"""Take a picture of the report board's first screen for a folder of runs (the README's picture).

The report is built from the folder's records as `peftbench report` builds it; headless Chromium opens
it and saves the first screen once the page has loaded and the board has drawn. The picture in
docs/img/report-board.png comes from the demo's own records:

    .venv/bin/peftbench demo
    .venv/bin/python scripts/board_screenshot.py demo_runs docs/img/report-board.png

tests/test_report_board.py checks the board itself in a browser; this script only takes the picture.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def chromium() -> str:
    found = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
    if not found:
        raise SystemExit("board_screenshot: no chromium found (fix: apt-get install chromium)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of run records (e.g. demo_runs)")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--size", default="1400,900", help="window width,height in pixels (default 1400,900)")
    args = parser.parse_args()

    from peftbench.records.io import load_records
    from peftbench.reports.build import build_report

    records = load_records(args.runs)
    if not records:
        raise SystemExit(f"board_screenshot: no run records under {args.runs} (fix: run `peftbench demo` first)")
    with tempfile.TemporaryDirectory(prefix="board-shot-") as tmp:
        page = build_report(records, Path(tmp) / "report")
        # The virtual-time budget lets the board's scripts run and Plotly draw before the picture.
        subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--window-size={args.size}",
                        "--virtual-time-budget=10000", f"--screenshot={args.out.resolve()}", page.as_uri()],
                       check=True, capture_output=True)
    print(f"written: {args.out} ({len(records)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
