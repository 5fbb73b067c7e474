"""`diffattn generate`: sample a video (or image) with attention methods and noise initialisation applied.

Method settings come from flags built from each config's fields: `--<method>-<field> VALUE`, e.g.
`--method radial --radial-dense-steps 12`. `--config FILE` replays a run saved with `--save-config`; flags given
on the command line override the file's values (`--method` / `--noise` replace its list of methods, and a
method's setting flags override that method's settings from the file).

Sizes are capped by default (the same caps as the app; `--no-limits` lifts them), and the settings and output
paths are checked before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from .options import (
    INTEGER,
    NUMBER,
    add_limits_flag,
    add_method_flags,
    check_limits,
    method_flag,
    method_names,
    method_settings,
    output_file,
    video_output,
)

__all__ = ["add_parser", "run", "configs_from_args", "spec_from_args"]

SPEC_FLAGS = ("model", "prompt", "negative_prompt", "frames", "height", "width", "steps", "guidance", "seed", "device",
              "dtype", "cpu_offload", "fps", "ulysses")
"""`GenerationSpec` fields that are flags of the same name; unset (`None`) when not given."""


def configs_from_args(args: argparse.Namespace, names: list[str], base: dict[str, dict[str, Any]]) -> list[Any]:
    """Configs of the named methods: settings from `base` (a config file's, by method), overridden by flags."""
    from ..registry import get_method

    settings = method_settings(args)
    chosen = [get_method(n) for n in names]
    stray = sorted(set(settings) - {c.name for c in chosen})
    if stray:
        flags = ", ".join(method_flag(m, f) for m in stray for f in settings[m])
        raise ConfigError(f"{flags} given, but {', '.join(stray)} is not among the chosen methods ({', '.join(names) or 'none'})")
    return [cls.from_dict({**base.get(cls.name, {}), **settings.get(cls.name, {})}) for cls in chosen]


def add_parser(subparsers: Any) -> None:
    from ..generation import GenerationSpec
    from ..registry import methods

    default = GenerationSpec()
    parser = subparsers.add_parser(
        "generate", help="generate a video or image with methods applied", description=__doc__,
        usage="%(prog)s [--model MODEL] [--method NAMES] [--noise NAMES] [--<method>-<field> VALUE ...] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", help=f"tiny:<family> (built-in, no download) or a hub id / local path (default: {default.model})")
    parser.add_argument("--prompt", help=f"default: {default.prompt!r}")
    parser.add_argument("--negative-prompt")
    parser.add_argument("--method", action="append", help="attention method(s), comma-separated (see `diffattn info`)")
    parser.add_argument("--noise", action="append", help="noise initialisation method(s), comma-separated")
    parser.add_argument("--frames", type=INTEGER, help="frames of the video (default: the model's)")
    parser.add_argument("--height", type=INTEGER, help="pixels, a multiple of 8 or of what the model needs (default: the model's)")
    parser.add_argument("--width", type=INTEGER, help="pixels, like --height (default: the model's)")
    parser.add_argument("--steps", type=INTEGER, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=NUMBER, help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--seed", type=INTEGER, help=f"default: {default.seed}")
    parser.add_argument("--device", help=f"auto (CUDA when available), cpu, cuda or cuda:N (default: {default.device})")
    parser.add_argument("--dtype", help=f"auto, float32, float16 or bfloat16 (default: {default.dtype})")
    parser.add_argument("--cpu-offload", action="store_true", default=None, help="model CPU offload (CUDA)")
    parser.add_argument("--fps", type=INTEGER, help=f"frames per second of the video (default: {default.fps})")
    parser.add_argument("--ulysses", type=INTEGER,
                        help="Ulysses context-parallel degree; launch with torchrun --nproc_per_node N -m diffattn generate ...")
    add_limits_flag(parser)
    parser.add_argument("--out", default="diffattn_out.mp4", help="output video, .mp4 (default: diffattn_out.mp4)")
    parser.add_argument("--stats", default=None, help="write per-layer/step stats as JSON here")
    parser.add_argument("--config", default=None, help="replay a run saved with --save-config; flags given override its values")
    parser.add_argument("--save-config", default=None, help="write a config file that reproduces this run (YAML by suffix, else JSON)")
    add_method_flags(parser, methods().values())
    parser.set_defaults(run=run)


def spec_from_args(args: argparse.Namespace):
    """The `GenerationSpec`: the config file (if any), then the flags given on the command line; within the caps
    unless `--no-limits`."""
    from ..generation import GenerationSpec, load_spec

    data = load_spec(args.config).to_dict() if args.config else {}
    saved = {m["method"]: m for m in data.pop("methods", [])}
    data.update({key: getattr(args, key) for key in SPEC_FLAGS if getattr(args, key) is not None})
    names = method_names(args.method, "--method") + method_names(args.noise, "--noise")
    if args.method is None and args.noise is None:
        names = list(saved)
    spec = GenerationSpec(methods=configs_from_args(args, names, saved), **data)
    check_limits(args, steps=spec.steps, frames=spec.frames, height=spec.height, width=spec.width)
    return spec


def run(args: argparse.Namespace) -> int:
    from ..generation import generate, save_spec
    from ..media.video import write_video
    from ..parallel import is_main_process

    spec = spec_from_args(args)
    out = video_output(args.out)
    stats = output_file(args.stats, "--stats") if args.stats else None
    config = output_file(args.save_config, "--save-config") if args.save_config else None
    result = generate(spec)
    if not is_main_process():
        return 0
    out = write_video(out, result.frames, fps=spec.fps)
    print(f"wrote {out} ({result.frames.shape[0]} frames, {result.frames.shape[-1]}x{result.frames.shape[-2]}) in {result.seconds:.1f} s")
    if result.stats_summary:
        print("stats: " + json.dumps(result.stats_summary))
    if stats is not None:
        stats.parent.mkdir(parents=True, exist_ok=True)
        stats.write_text(json.dumps({"summary": result.stats_summary, "layers": result.stats}, indent=2))
    if config is not None:
        save_spec(spec, config)
    return 0
