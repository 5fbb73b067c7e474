"""`diffattn edit {fatezero,realcraft,fresco}`: zero-shot video editing.

    diffattn edit fatezero --video clip.mp4 --source-prompt "a silver jeep driving" \\
        --target-prompt "a Porsche car driving" --blend-words silver,jeep --out edited.mp4

Without `--model` the built-in tiny Stable Diffusion (`tiny:sd`; `tiny:sd-controlnet` for FRESCO) runs; without
`--video` the generated sample clip is edited; so `diffattn edit fatezero` works on a laptop with no download.
`--config FILE.yaml` holds a whole edit in the spirit of the original projects' configs (see the examples in
`diffattn/configs/edit/`); flags given on the command line override it. Method settings are flags named
`--<method>-<field>` (e.g. `--fatezero-self-replace-steps 0.6`). `edit_video(EditSpec(...))` is the same run as a
function (`diffattn.pipelines.edit_job`, used by the demo and the app).

Sizes and steps are capped by default (the same caps as the app; `--no-limits` lifts them), and the settings and
output paths are checked before any video is read or model loaded.
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
    method_settings,
    output_file,
    video_output,
)

__all__ = ["add_parser", "run", "spec_from_args"]


def add_parser(subparsers: Any) -> None:
    from ..pipelines.edit_job import EDITORS
    from ..registry import get_method

    parser = subparsers.add_parser(
        "edit", help="zero-shot video editing (FateZero, RealCraft, FRESCO)", description=__doc__,
        usage=f"%(prog)s {{{','.join(EDITORS)}}} [--video PATH] [--<editor>-<field> VALUE ...] [options]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("editor", choices=tuple(EDITORS), help="the editing method")
    parser.add_argument("--model", default=None, help="tiny:sd / tiny:sd-controlnet (default) or a hub id / local path")
    parser.add_argument("--controlnet", default=None, help="FRESCO: a ControlNet to add to a model without one")
    parser.add_argument("--video", default=None, help="MP4/AVI/GIF/folder of frames (default: the built-in sample clip)")
    parser.add_argument("--source-prompt", default=None, help="describes the input video")
    parser.add_argument("--target-prompt", default=None, help="describes the edit")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--blend-words", default=None,
                        help="comma-separated source words of the edited object (FateZero blend_words, RealCraft object_words)")
    parser.add_argument("--frames", type=INTEGER, default=None, help="number of frames to edit")
    parser.add_argument("--max-frames", type=INTEGER, default=None, help="refuse videos with more frames (default 64)")
    parser.add_argument("--stride", type=INTEGER, default=None, help="take every n-th frame (default 1)")
    parser.add_argument("--start", type=INTEGER, default=None, help="first frame (default 0)")
    parser.add_argument("--height", type=INTEGER, default=None, help="resize to this height (multiple of 8)")
    parser.add_argument("--width", type=INTEGER, default=None, help="resize to this width (multiple of 8)")
    parser.add_argument("--steps", type=INTEGER, default=None, help="denoising (and inversion) steps")
    parser.add_argument("--guidance", type=NUMBER, default=None, help="classifier-free guidance scale")
    parser.add_argument("--seed", type=INTEGER, default=None)
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")
    parser.add_argument("--dtype", default=None, help="auto, float32, float16 or bfloat16")
    parser.add_argument("--fps", type=INTEGER, default=None, help="frames per second of the video (default 8)")
    add_limits_flag(parser)
    parser.add_argument("--config", default=None, help="edit config (YAML/JSON); flags given override its values")
    parser.add_argument("--save-config", default=None, help="write a config file that reproduces this edit")
    parser.add_argument("--metrics", action="store_true", help="also report warp error (source flow) and PSNR outside the mask")
    parser.add_argument("--out", default="diffattn_edit.mp4", help="output video, .mp4 (default: diffattn_edit.mp4)")
    add_method_flags(parser, [get_method(name) for name in EDITORS])
    parser.set_defaults(run=run)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The `EditSpec`: the config file (if any), then the flags given on the command line; within the caps
    unless `--no-limits`."""
    from ..pipelines.edit_job import SPEC_KEYS, EditSpec, load_edit_spec

    data = load_edit_spec(args.config).to_dict() if args.config else {}
    if data.get("editor", args.editor) != args.editor:
        raise ConfigError(f"{args.config} is a {data['editor']!r} config; run `diffattn edit {data['editor']} --config ...`")
    data["editor"] = args.editor
    settings = dict(data.pop(args.editor, None) or {})
    for key in SPEC_KEYS:
        value = getattr(args, key, None)
        if value is not None and key != "editor":
            data[key] = value
    for method, given in method_settings(args).items():
        if method != args.editor:
            raise ConfigError(f"{method_flag(method, next(iter(given)))} is a {method} setting; this edit runs {args.editor}")
        settings.update(given)
    if args.blend_words is not None:
        if args.editor == "fresco":
            raise ConfigError("fresco edits the whole video to the prompt; it has no blend words")
        settings["object_words" if args.editor == "realcraft" else "blend_words"] = args.blend_words
    data[args.editor] = settings
    spec = EditSpec.from_dict(data)
    check_limits(args, steps=spec.config().num_inference_steps, frames=spec.frames, height=spec.height, width=spec.width)
    return spec


def run(args: argparse.Namespace) -> int:
    from ..media.video import write_video
    from ..pipelines.edit_job import edit_metrics, edit_video, save_edit_spec

    spec = spec_from_args(args)
    out = video_output(args.out)
    config = output_file(args.save_config, "--save-config") if args.save_config else None
    result = edit_video(spec)
    out = write_video(out, result.frames, fps=spec.fps)
    frames = result.frames
    print(f"wrote {out} ({frames.shape[0]} frames, {frames.shape[-1]}x{frames.shape[-2]}) in {result.seconds:.1f} s "
          f"with {spec.editor} on {spec.model_spec}")
    print("info: " + json.dumps(result.info, default=str))
    if args.metrics:
        print("metrics: " + json.dumps(edit_metrics(result)))
    if config is not None:
        save_edit_spec(spec, config)
    return 0
