"""`diffattn generate`: sample a video (or image) with attention methods and noise initialisation applied.

Method settings come from flags built from each config's fields: `--<method>-<field> VALUE`, e.g.
`--method radial --radial-dense-steps 12`. `--config FILE` replays a run saved with `--save-config`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import field_parser
from ..errors import ConfigError

__all__ = ["add_parser", "run", "configs_from_args"]

_PREFIX = "method__"


def _flag(method: str, field: str) -> str:
    return f"--{method}-{field.replace('_', '-')}"


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One `--<method>-<field>` flag per field of every registered method (values parsed by field type)."""
    from ..registry import methods

    for name, cls in methods().items():
        group = parser.add_argument_group(f"{name} settings", cls.description)
        for field, tp in cls.field_types().items():
            group.add_argument(
                _flag(name, field), dest=f"{_PREFIX}{name}__{field}", type=field_parser(tp),
                default=argparse.SUPPRESS, metavar=field.upper(),
            )


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def configs_from_args(args: argparse.Namespace, names: list[str]) -> list[Any]:
    """Configs of the named methods with the settings given by their flags."""
    from ..registry import get_method

    settings: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith(_PREFIX):
            method, field = key[len(_PREFIX):].split("__", 1)
            settings.setdefault(method, {})[field] = value
    chosen = [get_method(n) for n in names]
    stray = sorted(set(settings) - {c.name for c in chosen})
    if stray:
        flags = ", ".join(_flag(m, f) for m in stray for f in settings[m])
        raise ConfigError(f"{flags} given, but {', '.join(stray)} is not among the chosen methods ({', '.join(names) or 'none'})")
    return [cls.from_dict(settings.get(cls.name, {})) for cls in chosen]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("generate", help="generate a video or image with methods applied",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:wan", help="tiny:<family> (built-in, no download) or a hub id / local path")
    parser.add_argument("--prompt", default="a red fox running through fresh snow")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--method", action="append", help="attention method(s), comma-separated (see `diffattn info`)")
    parser.add_argument("--noise", action="append", help="noise initialisation method(s), comma-separated")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    parser.add_argument("--cpu-offload", action="store_true", help="model CPU offload (CUDA)")
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--ulysses", type=int, default=1,
                        help="Ulysses context-parallel degree; launch with torchrun --nproc_per_node N -m diffattn generate ...")
    parser.add_argument("--out", default="diffattn_out.mp4", help="output video (.mp4)")
    parser.add_argument("--stats", default=None, help="write per-layer/step stats as JSON here")
    parser.add_argument("--config", default=None, help="replay a run saved with --save-config (flags above are ignored)")
    parser.add_argument("--save-config", default=None, help="write a config file that reproduces this run")
    add_method_flags(parser)
    parser.set_defaults(run=run)


def spec_from_args(args: argparse.Namespace):
    from ..generation import GenerationSpec, load_spec

    if args.config:
        return load_spec(args.config)
    names = _names(args.method) + _names(args.noise)
    return GenerationSpec(
        model=args.model, methods=configs_from_args(args, names), prompt=args.prompt,
        negative_prompt=args.negative_prompt, frames=args.frames, height=args.height, width=args.width,
        steps=args.steps, guidance=args.guidance, seed=args.seed, device=args.device, dtype=args.dtype,
        cpu_offload=args.cpu_offload, fps=args.fps, ulysses=args.ulysses,
    )


def run(args: argparse.Namespace) -> int:
    from ..generation import generate, save_spec
    from ..parallel import is_main_process
    from ..video import write_video

    spec = spec_from_args(args)
    result = generate(spec)
    if not is_main_process():
        return 0
    out = write_video(args.out, result.frames, fps=spec.fps)
    print(f"wrote {out} ({result.frames.shape[0]} frames, {result.frames.shape[-1]}x{result.frames.shape[-2]}) in {result.seconds:.1f} s")
    if result.stats_summary:
        print("stats: " + json.dumps(result.stats_summary))
    if args.stats:
        Path(args.stats).write_text(json.dumps({"summary": result.stats_summary, "layers": result.stats}, indent=2))
    if args.save_config:
        save_spec(spec, args.save_config)
    return 0
