"""`diffattn app`: serve the Gradio demo (Generate, Edit video, High resolution, Kernels).

By default it listens on 127.0.0.1 only, starts with a built-in model (no download): the trained shapes-world Wan
`tiny:shapes-wan` when its weights are installed, showing a clip it generated at start-up, else the random tiny Wan
(`diffattn.defaults.default_model`). It loads local models only from folders given with `--model-dir`, and runs
one job at a time on the device, each for at most `--max-job-seconds`. A busy or invalid port, a limit that is
not positive or a model the app may not load is refused before the server starts.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("app", help="launch the Gradio demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", default=None,
                        help="starting model: tiny:<family>, a hub id or a local folder (default: tiny:shapes-wan when its "
                             "trained weights are installed, else tiny:wan)")
    parser.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                        help="folder local models may be loaded from (repeatable); none by default")
    parser.add_argument("--no-hub", action="store_true", help="refuse hub ids (only tiny and local models)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted video upload")
    parser.add_argument("--max-video-seconds", type=float, default=20.0, help="longest accepted input video")
    parser.add_argument("--max-job-seconds", type=float, default=600.0,
                        help="time one job may run before it is stopped (model loading included)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait for the device")
    parser.add_argument("--work-dir", default=None, help="folder for run outputs (default: a new temporary folder)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..app import AppLimits, launch
    from ..app.limits import check_model
    from ..defaults import default_model

    limits = AppLimits(model_dirs=tuple(args.model_dir), allow_hub=not args.no_hub, max_upload_mb=args.max_upload_mb,
                       max_video_seconds=args.max_video_seconds, max_job_seconds=args.max_job_seconds)
    model = check_model(args.model or default_model(), limits)
    launch(model, host=args.host, port=args.port, limits=limits, work_dir=args.work_dir, max_queue=args.max_queue)
    return 0
