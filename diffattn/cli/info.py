"""`diffattn info`: versions, device, which attention backends really work here, what each precision runs as,
methods, model families."""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

__all__ = ["add_parser", "run", "collect"]

def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("info", help="show versions, device, working backends and methods")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(run=run)


def _device() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(), "count": torch.cuda.device_count()}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def _backends() -> dict[str, Any]:
    from ..kernels_status import backend_status

    return backend_status()


def collect() -> dict[str, Any]:
    """Everything `info` prints, as plain data."""
    from .. import __version__
    from ..environment import dependency_versions
    from ..geometry import supported_families
    from ..kernels_status import precision_status
    from ..registry import methods

    return {
        "diffattn": __version__,
        "python": platform.python_version(),
        "packages": dependency_versions(),
        "device": _device(),
        "backends": _backends(),
        "precisions": precision_status(),
        "methods": {name: cls.description for name, cls in methods().items()},
        "families": {name: list(classes) for name, classes in supported_families().items()},
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"diffattn {info['diffattn']} (Python {info['python']})")
    print("packages:  " + ", ".join(f"{k} {v or '-'}" for k, v in info["packages"].items()))
    device = info["device"]
    print(f"device:    {device['type']} ({device['name']})")
    print("backends:")
    for name, state in info["backends"].items():
        print(f"  {name:<10} {state}")
    print("precisions:")
    for name, state in info["precisions"].items():
        print(f"  {name:<10} {state}")
    print("methods:")
    for name, description in info["methods"].items():
        print(f"  {name:<12} {description}")
    print("model families:")
    for name, classes in info["families"].items():
        print(f"  {name:<13} {', '.join(classes)}")
    return 0
