"""Run shell commands under a pseudo-terminal and timestamp every line of their output.

Progress bars redraw their line with a carriage return; each redraw counts as a line here, so the
log shows what a person at the terminal sees and when. The largest gap between two lines (the
longest silence) is printed at the end and written into the log.

    python scripts/timestamp_lines.py --log bench/results/session.log -- 'peftbench run ...' 'peftbench report runs/'

Each command runs through `bash -c` in the current folder, one after the other; a failing command
stops the session.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from datetime import datetime, timezone

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def machine() -> str:
    """CPU model and core count, for the log's header."""
    model, flags = platform.processor() or "unknown CPU", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in present)
                    break
    except OSError:
        pass
    return (f"{model} ({flags or 'flags unknown'}), {os.cpu_count()} logical CPUs available, "
            f"{platform.system()} {platform.release()}")


def run_command(command: str, t0: float, emit: callable) -> int:
    """Run one command on a pseudo-terminal; call emit(seconds since t0, line) for each line it shows."""
    leader, follower = pty.openpty()
    columns = int(os.environ.get("COLUMNS", "100"))
    # A fresh pseudo-terminal is 0 columns wide, and progress bars draw nothing on it: give it a size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.Popen(["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env=env, close_fds=True)
    os.close(follower)
    pending = ""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536).decode("utf-8", "replace")
        except OSError:  # the follower closed: the command ended
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(r"\r\n|\n|\r", pending)
        now = time.monotonic() - t0
        for line in lines:
            text = ANSI.sub("", line).rstrip()
            if text:
                emit(now, text)
    if ANSI.sub("", pending).strip():
        emit(time.monotonic() - t0, ANSI.sub("", pending).rstrip())
    os.close(leader)
    return proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="Write the timestamped session here.")
    parser.add_argument("commands", nargs="+", help="Shell commands, run in order.")
    args = parser.parse_args()

    out: list[str] = [f"# machine: {machine()}",
                      f"# date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
                      f"# load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
                      "# columns: seconds since the session started | output line (progress-bar redraws count as lines)"]
    last = [0.0]
    gaps: list[tuple[float, float, str]] = []

    def emit(t: float, line: str) -> None:
        gaps.append((t - last[0], t, line))
        last[0] = t
        out.append(f"{t:8.2f} | {line}")
        print(out[-1], flush=True)

    t0 = time.monotonic()
    rc = 0
    for command in args.commands:
        emit(time.monotonic() - t0, f"$ {command}")
        rc = run_command(command, t0, emit)
        if rc:
            emit(time.monotonic() - t0, f"(exit status {rc})")
            break
    total = time.monotonic() - t0
    gap, at, line = max(gaps) if gaps else (0.0, 0.0, "")
    out.append(f"# total: {total:.1f} s; largest gap between lines: {gap:.1f} s, ending at {at:.1f} s with: {line}")
    with open(args.log, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out) + "\n")
    print(out[-1])
    return rc


if __name__ == "__main__":
    sys.exit(main())
