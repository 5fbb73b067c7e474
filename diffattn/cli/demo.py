"""`diffattn demo --out DIR`: run every demo entry on the built-in tiny models; write videos and a report.

This is the main job on the embedded default: no download, a CPU is enough. The entries on the trained shapes-world
models (`shapes-*`) come first when their weights are installed; without them they are skipped, and the report
says how to train them. `report.md` and `report.json` in DIR say what each entry measured; the exit status is
non-zero if any entry failed (a skipped entry did not fail).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .options import output_folder

__all__ = ["add_parser", "run", "run_demo", "select_entries"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the built-in tiny demos; write videos and a report")
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--only", action="append", help="run only entries matching this name or glob, e.g. 'observe-*' (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the entries and exit")
    parser.set_defaults(run=run)


def select_entries(only: list[str] | None = None) -> list[Any]:
    """The demo entries matching any of the `only` patterns (all without); a pattern matching none is an error."""
    from .demos import load_entries

    entries = list(load_entries().values())
    if not only:
        return entries
    unmatched = [o for o in only if not any(fnmatch.fnmatchcase(e.name, o) for e in entries)]
    if unmatched:
        raise ConfigError(f"--only {', '.join(map(repr, unmatched))} matches no demo entry; `diffattn demo --list` lists them")
    return [e for e in entries if any(fnmatch.fnmatchcase(e.name, o) for o in only)]


def run_demo(out_dir: Path, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the selected entries; each entry's report, or its error, keyed by name."""
    from tqdm.auto import tqdm

    entries = select_entries(only)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports: dict[str, dict[str, Any]] = {}
    for entry in tqdm(entries, desc="demo", unit="entry"):
        start = time.perf_counter()
        try:
            missing = entry.missing()
            report = {"ok": False, "skipped": missing} if missing else entry.run(out_dir)
        except Exception as exc:  # one failing entry must not hide the others' results
            report = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        report["seconds"] = round(time.perf_counter() - start, 2)
        report["description"] = entry.description
        reports[entry.name] = report
    _write_report(out_dir, reports)
    return reports


def _write_report(out_dir: Path, reports: dict[str, dict[str, Any]]) -> None:
    (out_dir / "report.json").write_text(json.dumps(reports, indent=2, default=str))
    lines = ["# diffattn demo report", "", "| entry | ok | seconds | details |", "|---|---|---|---|"]
    for name, report in reports.items():
        details = ", ".join(
            f"{k}={v}" for k, v in report.items() if k not in ("ok", "seconds", "description", "traceback")
        )
        status = "yes" if report.get("ok") else "skipped" if "skipped" in report else "NO"
        lines.append(f"| {name} | {status} | {report['seconds']} | {details} |")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.list:
        from .demos import load_entries

        for entry in load_entries().values():
            missing = " (skipped here: weights not installed)" if entry.missing() else ""
            print(f"{entry.name:<28} {entry.description}{missing}")
        return 0
    out_dir = output_folder(args.out, "--out")
    reports = run_demo(out_dir, args.only)
    skipped = [name for name, report in reports.items() if "skipped" in report]
    failed = [name for name, report in reports.items() if not report.get("ok") and name not in skipped]
    ok = len(reports) - len(failed) - len(skipped)
    print(f"{ok}/{len(reports)} demo entries ok, {len(skipped)} skipped; report: {out_dir / 'report.md'}")
    for name in skipped:
        print(f"  skipped {name}: {reports[name]['skipped']}")
    for name in failed:
        print(f"  FAILED {name}: {reports[name].get('error', 'check failed')}")
    return 1 if failed else 0
