"""Mutation testing over the modules where a silent bug changes a conclusion (`make mutation`).

Each target is a group of source files and the test files that cover them (`mutation_targets.toml`
beside this script). For each target, a scratch copy of the working tree gets a `[tool.mutmut]`
section naming those files and tests, `mutmut run` mutates them and runs the tests against every
mutant, and the counts come from `mutmut export-cicd-stats`. The scores and the surviving mutants'
names are written to `bench/results/mutation-<date>.json` and printed as a table.

    .venv/bin/python scripts/mutation.py                  # every target
    .venv/bin/python scripts/mutation.py --only stats     # one target (repeatable)
    .venv/bin/python scripts/mutation.py --list           # the targets and their files

Score = killed / (killed + survived + no tests + timeout): a mutant no test reaches counts as a
miss. Survivors that are equivalent or accepted are listed with the reason in docs/testing.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
TARGETS_FILE = Path(__file__).with_name("mutation_targets.toml")
RESULTS = REPO / "bench" / "results"
MUTMUT_SECTION = re.compile(r"^\[tool\.mutmut\]\n(?:(?!\[).*\n)*", re.MULTILINE)


def load_targets() -> dict[str, dict[str, list[str]]]:
    """name -> {"mutate": [source files], "tests": [pytest arguments]} from the targets file."""
    with TARGETS_FILE.open("rb") as fh:
        targets = tomllib.load(fh)["target"]
    for name, target in targets.items():
        missing = [p for p in target["mutate"] if not (REPO / p).is_file()]
        if missing:
            raise SystemExit(f"mutation: target {name!r} names missing files {missing} (fix: {TARGETS_FILE.name})")
    return targets


def copy_tree(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the working tree, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def configure(dest: Path, target: dict[str, list[str]]) -> None:
    """Point mutmut at the target's files and tests in the copy's pyproject.toml; everything beside
    src/ goes into mutmut's own copy too, since tests read docs/, examples/ and the README."""
    beside = sorted(p.name for p in dest.iterdir() if p.name not in ("src", "mutants"))
    section = ("[tool.mutmut]\n"
               f"only_mutate = {json.dumps(target['mutate'])}\n"
               f"also_copy = {json.dumps(beside)}\n"
               f"pytest_add_cli_args_test_selection = {json.dumps(target['tests'])}\n"
               'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n\n')
    pyproject = dest / "pyproject.toml"
    text = MUTMUT_SECTION.sub("", pyproject.read_text())
    pyproject.write_text(text.rstrip("\n") + "\n\n" + section)


def mutmut(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mutmut")
    # mutmut runs several pytest sessions in one process: the cache of tiny models must outlive each
    # session's temporary folder (tests/conftest.py only sets it when unset).
    # mutmut forks a child per mutant from the process that ran the tests: a child whose parent had an
    # OpenMP thread team (torch with 2+ threads, as on an idle machine) hangs at its first parallel operator.
    env = {**os.environ, "PYTHONPATH": str(dest / "src"), "PEFTBENCH_CACHE": str(dest / ".peftbench-cache"),
           "OMP_THREAD_LIMIT": "1"}
    return subprocess.run([str(exe), *args], cwd=dest, env=env, capture_output=True, text=True)


def diff(dest: Path, name: str) -> str:
    """The changed lines of one mutant, as `mutmut show` prints them."""
    shown = mutmut(dest, "show", name).stdout.splitlines()
    return "\n".join(line for line in shown if line.startswith(("-", "+")) and not line.startswith(("---", "+++")))


def run_target(name: str, target: dict[str, list[str]], children: int) -> dict[str, object]:
    """Mutate one target in a scratch copy; its counts, score and survivors."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as tmp:
        dest = Path(tmp)
        copy_tree(dest)
        configure(dest, target)
        ran = mutmut(dest, "run", "--max-children", str(children))
        if ran.returncode != 0:
            return {"error": (ran.stderr or ran.stdout)[-2000:], "mutate": target["mutate"]}
        mutmut(dest, "export-cicd-stats")
        stats = json.loads((dest / "mutants" / "mutmut-cicd-stats.json").read_text())
        listed = mutmut(dest, "results").stdout
        survivors = {name: diff(dest, name) for name in sorted(
            line.split(":")[0].strip() for line in listed.splitlines()
            if line.strip().endswith(("survived", "no tests", "timeout")))}
    missed = stats["survived"] + stats["no_tests"] + stats["timeout"]
    scored = stats["killed"] + missed
    return {"mutate": target["mutate"], "tests": target["tests"], **stats,
            "score": round(stats["killed"] / scored, 4) if scored else None,
            "survivors": survivors, "seconds": round(time.monotonic() - started, 1)}


def table(results: dict[str, dict[str, object]]) -> str:
    lines = [f"{'target':<22} {'killed':>6} {'missed':>6} {'score':>6} {'time':>7}"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:<22} error: {str(r['error']).strip().splitlines()[-1][:60]}")
            continue
        missed = int(r["survived"]) + int(r["no_tests"]) + int(r["timeout"])
        score = "-" if r["score"] is None else f"{100 * float(r['score']):.0f}%"
        lines.append(f"{name:<22} {r['killed']:>6} {missed:>6} {score:>6} {r['seconds']:>6.0f}s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run this target only (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    args = parser.parse_args()
    targets = load_targets()
    if args.list:
        for name, target in targets.items():
            print(f"{name}: {' '.join(target['mutate'])}  <-  {' '.join(target['tests'])}")
        return 0
    unknown = sorted(set(args.only or []) - set(targets))
    if unknown:
        raise SystemExit(f"mutation: unknown target(s) {unknown}; known: {', '.join(targets)}")
    chosen = {n: t for n, t in targets.items() if not args.only or n in args.only}
    results = {}
    for name, target in chosen.items():
        print(f"[mutation] {name}: {' '.join(target['mutate'])}", file=sys.stderr, flush=True)
        results[name] = run_target(name, target, args.children)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M")
    text = json.dumps({"cpu_count": os.cpu_count(), "targets": results}, indent=1) + "\n"
    # Runs of other targets may finish in the same minute: never overwrite one, name the targets instead.
    for out in (RESULTS / f"mutation-{stamp}.json", RESULTS / f"mutation-{stamp}-{'-'.join(results)}.json"):
        try:
            with out.open("x") as fh:
                fh.write(text)
            break
        except FileExistsError:
            continue
    else:
        out = RESULTS / f"mutation-{stamp}-{'-'.join(results)}-{os.getpid()}.json"
        out.write_text(text)
    print(table(results))
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
