"""Quality of every method on the trained shapes-world models, against dense/stock sampling, scored with the world's
ground truth (`diffattn.shapes.quality`; the models: `docs/shapes-models.md`).

Groups (`--groups`, default all): `sparse` (Sparge, Radial, PSA, LiteAttention, PAB, 8-bit attention on shapes-wan:
PSNR/SSIM vs dense, density, tiles skipped per step, scorer accuracy), `freeswim` (2x the trained resolution: objects
per frame with and without FreeSwim), `editing` (FateZero, RealCraft, FRESCO: colour changed, mask and background
kept), `initno` (two-object prompts: both objects drawn, with and without InitNO), `noise` (FreeInit, FreeNoise:
temporal consistency with and without).

    python benchmarks/quality.py                       # CPU scale (what the tests check), minutes
    python benchmarks/quality.py --scale gpu --device cuda   # more captions and steps; H200, minutes
    python benchmarks/quality.py --weights DIR         # training outputs in DIR/shapes-wan, DIR/shapes-sd

Writes `$OUT/quality_<scale>.json` (else `benchmarks/results/`) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from diffattn.environment import environment
from diffattn.shapes.quality import GROUPS, QualityRow, QualitySettings, run_groups


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def table(rows: list[QualityRow]) -> str:
    """One Markdown line per row: group, method, setting, baseline, metrics, verdict and note."""
    lines = ["| group | method | setting | baseline | metrics | matches or beats baseline | note |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        metrics = ", ".join(f"{name} {_number(value)}" for name, value in row.metrics.items())
        verdict = {True: "yes", False: "**no**", None: "-"}[row.verdict]
        cells = (row.group, row.method, row.setting, row.baseline, metrics, f"{verdict} ({row.criterion})", row.note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--scale", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--samples", type=int, default=None, help="captions per comparison (default: 4 cpu, 32 gpu)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: 10 cpu, 20 gpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="folder with shapes-wan/ and shapes-sd/ training outputs")
    parser.add_argument("--out", default=None, help="JSON path (default: $OUT/quality_<scale>.json or benchmarks/results/)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)  # the tiny models are per-op overhead: one thread is faster and steadier than several
    settings = QualitySettings(scale=args.scale, samples=args.samples, steps=args.steps, seed=args.seed,
                               device=args.device, weights=args.weights)
    report: dict[str, object] = {"benchmark": "quality", **environment(torch.device(args.device)), "settings": vars(args)}
    rows: list[QualityRow] = []
    for group in args.groups:
        start = time.perf_counter()
        group_rows = run_groups([group], settings)
        report[f"{group}_seconds"] = round(time.perf_counter() - start, 1)
        rows += group_rows
        print(table(group_rows), flush=True)
    report["rows"] = [row.to_dict() for row in rows]
    out = Path(args.out or Path(os.environ.get("OUT", Path(__file__).parent / "results")) / f"quality_{args.scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\n{table(rows)}\n\nwrote {out}")


if __name__ == "__main__":
    main()
