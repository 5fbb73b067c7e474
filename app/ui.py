"""The app's layout: four tabs (Generate, Edit video, High resolution, Kernels) wired to their handlers.

When the app starts on the trained `tiny:shapes-wan` (the default once its weights are installed,
`diffattn.defaults.default_model`), the tabs start on shapes-world prompts, the Edit tab on `tiny:shapes-sd` (if
installed) with a rendered shapes-world clip, and the Generate tab shows a clip the model generated at start-up.

Every event has an `api_name`: the jobs (`/generate`, `/edit`, `/high_resolution`, `/kernels`) are public so
`gradio_client` can drive them, and share one concurrency group so one runs at a time on the device; events that
only update the page (showing a method's settings) are private. Each tab's Stop button cancels its job, which
stops at its next denoising step or timed call (`app.jobs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import torch

from diffattn.defaults import (
    EDIT_EXAMPLE,
    TRAINED_IMAGE_MODEL,
    TRAINED_VIDEO_MODEL,
    VIDEO_EXAMPLE,
    default_model,
    installed,
)
from diffattn.generation import GenerationSpec
from diffattn.kernels.bench import device_label
from diffattn.registry import get_method, methods
from diffattn.shapes.models import MODELS as SHAPES_MODELS
from diffattn.testing import PROMPT_FAMILIES

from . import catalog
from .handlers import (
    AppContext,
    edit_handler,
    generate_handler,
    generation_outputs,
    high_resolution_handler,
    kernels_handler,
)
from .limits import AppLimits
from .runs import PipelineCache, RunFolders, run_generation
from .settings import method_chooser, method_panel

__all__ = ["build_demo", "startup_example"]

DEVICE_JOBS = "device"
"""Concurrency group of every job that uses the model device: one at a time."""

SAMPLE_PROMPTS = ("a red sun moving over colorful waves", "a blue moon moving over colorful waves")
"""Source and target prompts for the built-in sample clip."""

_TINY_NOTE = ("Built-in `tiny:` models need no download. `tiny:shapes-wan` and `tiny:shapes-sd` (when their weights "
              "are installed) are trained on a synthetic shapes world: coloured squares, circles and triangles moving "
              "on a coloured background, asked for with its few words (\"a red circle moving left on a blue "
              "background\"). The other `tiny:` models have random weights: their videos are coloured noise that "
              "shows the pipeline and the methods run, not image quality.")


def _built_in_models() -> tuple[str, ...]:
    """The tiny families offered for generation: the random ones and the trained shapes models that are installed."""
    return PROMPT_FAMILIES + tuple(name for name in SHAPES_MODELS if installed(f"tiny:{name}"))


def startup_example(ctx: AppContext, model: str, folder: Path) -> tuple[Any, ...] | None:
    """If `model` is the trained `tiny:shapes-wan` and installed: generate `VIDEO_EXAMPLE` once with the Generate
    tab's defaults (its default methods, the model's 20 steps at 9 x 32 x 32, seed 0), in `folder`, which the run
    history does not prune, and return what the Generate tab shows of it, captioned; otherwise None (the tab starts
    empty, as for the random models). On one CPU thread it takes about a second (threads only add contention at
    this size)."""
    from diffattn.cli.demos import single_thread

    if model != TRAINED_VIDEO_MODEL or not installed(model):
        return None
    observe = [get_method("observe")()] if "observe" in methods() else []
    spec = GenerationSpec(model=model, prompt=VIDEO_EXAMPLE.prompt, methods=observe)
    with single_thread():
        run = run_generation(spec, ctx.pipes, RunFolders(folder), kind="startup")
    caption = (f"**Start-up example:** `{model}`, trained on the shapes world, generated *{VIDEO_EXAMPLE.prompt}* "
               "when the app started; press Generate for a new run.")
    return generation_outputs(run, caption)


def _model_box(default: str, tiny: tuple[str, ...]) -> gr.Dropdown:
    return gr.Dropdown(
        choices=[f"tiny:{family}" for family in tiny], value=default, allow_custom_value=True, label="Model",
        info="tiny:<family> (built in), a hub id, or a local diffusers folder inside the allowed model folders "
             "(safetensors only, no remote code)",
    )


def _buttons(label: str) -> tuple[gr.Button, gr.Button]:
    """The tab's run button and its Stop button (wired by `_stoppable` once the job event exists)."""
    with gr.Row():
        return gr.Button(label, variant="primary", scale=3), gr.Button("Stop", variant="stop", scale=1)


def _stoppable(stop: gr.Button, job: gr.events.Dependency) -> None:
    """Stop cancels the job: a queued one leaves the queue, a running one stops at its next checkpoint."""
    stop.click(None, cancels=[job])


def _results(tab: str, initial: tuple[Any, ...] | None = None) -> tuple[gr.Video, gr.Markdown, gr.File, gr.Plot, gr.Plot]:
    """Output column of a generation tab: video, summary, config download, then the stats figures; `initial` is
    what `generation_outputs` returns for a run to show from the start."""
    video_value, density_value, timing_value, summary_value, config_value = initial or (None,) * 5
    video = gr.Video(value=video_value, label="Result", autoplay=True, loop=True, height=360, interactive=False,
                     elem_id=f"{tab}-result")
    summary = gr.Markdown(value=summary_value or "", elem_id=f"{tab}-summary")
    config = gr.File(value=config_value, label="Config that reproduces this run (diffattn generate --config FILE)",
                     interactive=False)
    density = gr.Plot(value=density_value, label="Attention density per layer and step", show_label=False)
    timing = gr.Plot(value=timing_value, label="Attention time", show_label=False)
    return video, summary, config, density, timing


def _generate_tab(ctx: AppContext, model: str, example: tuple[Any, ...] | None) -> None:
    attention, noise = catalog.generation_methods()
    with gr.Row():
        with gr.Column(scale=5):
            model_box = _model_box(model, _built_in_models())
            default_prompt = VIDEO_EXAMPLE.prompt if model == TRAINED_VIDEO_MODEL else "a red fox running through fresh snow"
            prompt = gr.Textbox(label="Prompt", value=default_prompt, lines=2)
            negative = gr.Textbox(label="Negative prompt", placeholder="empty: the model's default")
            attention_chooser = method_chooser(
                attention, kind="checkboxes", label="Attention methods", selected=tuple({"observe"} & set(attention)),
                info="sparse or observed attention; each chosen method's settings appear below")
            attention_panel = method_panel(attention, attention_chooser, limits=ctx.limits)
            noise_chooser = method_chooser(noise, kind="checkboxes", label="Noise initialisation",
                                           info="better or longer initial noise (optional)")
            noise_panel = method_panel(noise, noise_chooser, limits=ctx.limits)
            with gr.Accordion("Sampling", open=False):
                with gr.Row():
                    frames = gr.Textbox(label="frames", placeholder="model default")
                    height = gr.Textbox(label="height", placeholder="model default")
                    width = gr.Textbox(label="width", placeholder="model default")
                with gr.Row():
                    steps = gr.Textbox(label="steps", placeholder="model default (2 for random tiny, 20 for shapes)",
                                       min_width=100)
                    guidance = gr.Textbox(label="guidance", placeholder="model default", min_width=100)
                    seed = gr.Number(label="seed", value=0, precision=0, min_width=80)
                    fps = gr.Number(label="fps", value=8, precision=0, min_width=80)
            button, stop = _buttons("Generate")
        with gr.Column(scale=6):
            video, summary, config, density, timing = _results("generate", example)
    job = button.click(
        generate_handler(ctx, attention_panel, noise_panel),
        inputs=[model_box, prompt, negative, attention_chooser, noise_chooser, frames, height, width,
                steps, guidance, seed, fps],
        inputs_kwargs={**attention_panel.inputs_kwargs(), **noise_panel.inputs_kwargs()},
        outputs=[video, density, timing, summary, config], api_name="generate", concurrency_id=DEVICE_JOBS,
    )
    _stoppable(stop, job)


def _editor_models(shapes: bool) -> dict[str, str]:
    """The built-in model of each editor: its config's first tiny model, or with `shapes` the trained
    `tiny:shapes-sd` in place of the random `tiny:sd` (FRESCO keeps `tiny:sd-controlnet`: it needs a ControlNet)."""
    return {editor: TRAINED_IMAGE_MODEL if shapes and tiny == "tiny:sd" else tiny
            for editor, tiny in catalog.EDITOR_TINY_MODELS.items()}


def _tiny_model_for(editor: str, model: str, tiny_models: dict[str, str] = catalog.EDITOR_TINY_MODELS) -> str:
    """Switching editors switches between built-in models (FRESCO needs the ControlNet one); real models stay."""
    return tiny_models.get(editor, model) if model.startswith("tiny:") else model


def _sample_clip(folder: Path, shapes: bool) -> Path:
    """The Edit tab's example clip as an MP4: with `shapes` the rendered source scene of `EDIT_EXAMPLE`, else the
    built-in synthetic clip (a disc crossing stripes); 8 frames of 64 x 64."""
    from diffattn.media.video import write_video
    from diffattn.testing import sample_clip

    if shapes:
        return write_video(folder / "shapes_clip.mp4", EDIT_EXAMPLE.source_clip(8, 64, 64).frames, fps=8)
    return write_video(folder / "sample_clip.mp4", sample_clip(8, 64, 64), fps=8)


def _edit_tab(ctx: AppContext, model: str, examples: Path) -> None:
    editors = catalog.editor_configs()
    shapes = model == TRAINED_VIDEO_MODEL and installed(TRAINED_IMAGE_MODEL)
    tiny_models = _editor_models(shapes)
    prompts = (EDIT_EXAMPLE.prompt, EDIT_EXAMPLE.target_prompt) if shapes else SAMPLE_PROMPTS
    gr.Markdown("Zero-shot video editing: the video is inverted with the source prompt, then regenerated with the "
                "target prompt while attention from the source keeps structure and motion. Stable Diffusion 1.x/2.x "
                "models (FRESCO with a ControlNet: `tiny:sd-controlnet`).")
    with gr.Row():
        with gr.Column(scale=5):
            video = gr.Video(label="Input video", sources=["upload"], format=None, height=240, elem_id="edit-input")
            editor = method_chooser(editors, kind="radio", label="Editor", labels=catalog.EDITORS,
                                    selected=tuple(editors)[:1])
            families = ("sd", "sd-controlnet", *(("shapes-sd",) if shapes else ()))
            model_box = _model_box(_tiny_model_for(next(iter(editors), ""), model, tiny_models), families)
            source_prompt = gr.Textbox(label="Source prompt (describes the video)", value=prompts[0])
            target_prompt = gr.Textbox(label="Target prompt (the edit)", value=prompts[1])
            gr.Examples([[str(_sample_clip(examples, shapes)), *prompts]], inputs=[video, source_prompt, target_prompt],
                        label="Built-in " + ("shapes-world clip" if shapes else "sample clip") + " (click to load it)")
            with gr.Row():
                frames = gr.Number(label="frames", value=8, precision=0, elem_id="edit-frames")
                height = gr.Textbox(label="height", placeholder="keep (multiple of 8)")
                width = gr.Textbox(label="width", placeholder="keep (multiple of 8)")
            with gr.Row():
                seed = gr.Number(label="seed", value=0, precision=0)
                fps = gr.Number(label="fps", value=8, precision=0)
            button, stop = _buttons("Edit video")
            panel = method_panel(editors, editor, limits=ctx.limits)
        with gr.Column(scale=6):
            result = gr.Video(label="Edited video", autoplay=True, loop=True, height=360, interactive=False,
                              elem_id="edit-result")
            summary = gr.Markdown()
            config = gr.File(label="Config that reproduces this edit (diffattn edit EDITOR --config FILE)",
                             interactive=False)
    editor.change(lambda name, current: _tiny_model_for(name, current, tiny_models), inputs=[editor, model_box],
                  outputs=model_box, api_name="editor_model", api_visibility="private", queue=False)
    job = button.click(
        edit_handler(ctx, panel),
        inputs=[video, editor, model_box, source_prompt, target_prompt, frames, height, width, seed, fps],
        inputs_kwargs=panel.inputs_kwargs(),
        outputs=[result, summary, config], api_name="edit", concurrency_id=DEVICE_JOBS,
    )
    _stoppable(stop, job)


def _high_resolution_tab(ctx: AppContext, model: str) -> None:
    gr.Markdown("FreeSwim: generate at the model's native size, upscale, then refine at the target size with inward "
                "sliding-window attention and a full-attention branch whose cross-attention keeps the layout coherent. "
                "Wan text-to-video models only.")
    registry = {name: cls for name, cls in methods().items() if name == catalog.HIGH_RESOLUTION}
    tiny = model.startswith("tiny:")
    shapes = model == TRAINED_VIDEO_MODEL  # trained at 32 x 32: twice that in both directions
    with gr.Row():
        with gr.Column(scale=5):
            model_box = _model_box(model if shapes else "tiny:wan" if tiny else model,
                                   ("wan", *(("shapes-wan",) if shapes else ())))
            prompt = gr.Textbox(label="Prompt", value=VIDEO_EXAMPLE.prompt if shapes else "an old man's face, close-up",
                                lines=2)
            with gr.Row():
                height = gr.Number(label="target height", value=64 if tiny else 1088, precision=0)
                width = gr.Number(label="target width", value=(64 if shapes else 96) if tiny else 1920, precision=0)
                frames = gr.Textbox(label="frames", placeholder="model default")
            with gr.Row():
                steps = gr.Number(label="steps", value=(20 if shapes else 6) if tiny else 50, precision=0)
                seed = gr.Number(label="seed", value=0, precision=0)
                fps = gr.Number(label="fps", value=8, precision=0)
            button, stop = _buttons("Generate at high resolution")
            # the tiny Wan's "native" size, and the size shapes-wan was trained at
            tiny_base = {catalog.HIGH_RESOLUTION: {"base_height": 32, "base_width": 32}}
            panel = method_panel(registry, initial=tiny_base if tiny else None, limits=ctx.limits)
        with gr.Column(scale=6):
            video, summary, config, density, timing = _results("high-resolution")
    job = button.click(
        high_resolution_handler(ctx, panel),
        inputs=[model_box, prompt, height, width, frames, steps, seed, fps], inputs_kwargs=panel.inputs_kwargs(),
        outputs=[video, density, timing, summary, config], api_name="high_resolution", concurrency_id=DEVICE_JOBS,
    )
    _stoppable(stop, job)


def _kernels_tab(ctx: AppContext) -> None:
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    gr.Markdown(f"Time of one attention call against the fraction of kv blocks kept, on **{device_label(device)}**: "
                "diffattn's block-sparse kernel (Triton on CUDA, the PyTorch reference on a CPU), FlexAttention on the "
                "same block plan, and dense SDPA. Random inputs and random plans; medians after a warm-up."
                + ("" if on_gpu else " On a CPU keep the sizes small: the reference backend is slow there."))
    with gr.Row():
        with gr.Column(scale=4):
            tokens = gr.Number(label="tokens", value=32768 if on_gpu else 1024, precision=0)
            heads = gr.Number(label="heads", value=12 if on_gpu else 2, precision=0)
            head_dim = gr.Dropdown(label="head dim", choices=[16, 32, 64, 128], value=128 if on_gpu else 64)
            block = gr.Dropdown(label="block size", choices=[16, 32, 64, 128], value=128 if on_gpu else 64)
            densities = gr.Textbox(label="densities", value="0.1, 0.25, 0.5, 1.0",
                                   info="kept kv-block fractions, comma-separated")
            repeats = gr.Number(label="repeats", value=10 if on_gpu else 3, precision=0)
            button, stop = _buttons("Run kernel benchmark")
        with gr.Column(scale=6):
            plot = gr.Plot(label="Time against density", show_label=False)
            table = gr.Markdown()
    job = button.click(kernels_handler(ctx), inputs=[tokens, heads, head_dim, block, densities, repeats],
                       outputs=[plot, table], api_name="kernels", concurrency_id=DEVICE_JOBS)
    _stoppable(stop, job)


def build_demo(model: str | None = None, limits: AppLimits | None = None,
               work_dir: Path | str | None = None) -> gr.Blocks:
    """The diffattn app as a `gr.Blocks` (not launched); `model` is the Generate tab's starting model
    (`diffattn.defaults.default_model()` when None). Starting on the trained `tiny:shapes-wan`, it first generates
    the start-up example (`startup_example`, about a second on a CPU)."""
    import tempfile

    model = model or default_model()
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="diffattn-app-"))
    ctx = AppContext(limits=limits or AppLimits(), pipes=PipelineCache(), folders=RunFolders(root / "runs"))
    example = startup_example(ctx, model, root / "examples")
    with gr.Blocks(title="diffattn", analytics_enabled=False) as demo:
        gr.Markdown("# diffattn\nTraining-free attention extensions for diffusers: sparse attention, noise "
                    f"initialisation, zero-shot video editing and high resolution. {_TINY_NOTE}")
        with gr.Tabs():
            with gr.Tab("Generate"):
                _generate_tab(ctx, model, example)
            with gr.Tab("Edit video"):
                _edit_tab(ctx, model, root / "examples")
            with gr.Tab("High resolution"):
                _high_resolution_tab(ctx, model)
            with gr.Tab("Kernels"):
                _kernels_tab(ctx)
    return demo
