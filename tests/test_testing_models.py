"""Tests of diffattn.testing: tiny offline pipelines, their denoisers, tokenizers and the sample clip."""

# tests/conftest.py sets HF_HUB_OFFLINE and MKL's strict reproducibility (bitwise save -> load round trips).
import pytest
import torch
from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
from transformers import CLIPTokenizer

from diffattn.testing import (
    DENOISER_FAMILIES,
    FAMILIES,
    latent_scale,
    sample_clip,
    tiny_call_kwargs,
    tiny_denoiser,
    tiny_denoiser_inputs,
    tiny_pipeline,
    write_clip_tokenizer,
)
from diffattn.testing.dit import hunyuan_prompt_template  # noqa: E402
from diffattn.testing.text import WORDS, llama_tokenizer, t5_tokenizer  # noqa: E402

# Mochi's rotary code asks CPU autocast for float32, which torch declines with a harmless warning.
pytestmark = pytest.mark.filterwarnings("ignore:In CPU autocast:UserWarning")

VIDEO = ("wan", "cogvideox", "hunyuanvideo", "ltx", "mochi", "animatediff", "wan22", "wan-i2v", "wan-vace", "skyreels-v2", "hunyuanvideo15")

# Pipeline output of tiny_call_kwargs: frames [B, F, 3, H, W] for video, images [B, 3, H, W] otherwise.
OUTPUT_SHAPE = {
    "wan": (1, 9, 3, 32, 32),
    "cogvideox": (1, 9, 3, 32, 32),
    "hunyuanvideo": (1, 9, 3, 16, 16),
    "ltx": (1, 9, 3, 32, 32),
    "mochi": (1, 7, 3, 32, 32),
    "sd": (1, 3, 64, 64),
    "sd-controlnet": (1, 3, 64, 64),
    "animatediff": (1, 8, 3, 64, 64),
    "wan22": (1, 9, 3, 64, 64),
    "wan-i2v": (1, 9, 3, 32, 32),
    "wan-vace": (1, 9, 3, 32, 32),
    "skyreels-v2": (1, 9, 3, 32, 32),
    "hunyuanvideo15": (1, 9, 3, 32, 32),
    "flux": (1, 3, 64, 64),
    "sd3": (1, 3, 64, 64),
    "flux2": (1, 3, 64, 64),
    "qwenimage": (1, 3, 64, 64),
}
# Latent (frames, height, width) of tiny_call_kwargs and the denoiser's spatial patch.
LATENT = {
    "wan": ((3, 4, 4), 2),
    "cogvideox": ((3, 4, 4), 2),
    "hunyuanvideo": ((3, 2, 2), 1),
    "ltx": ((3, 8, 8), 1),
    "mochi": ((2, 4, 4), 2),
    "sd": ((1, 8, 8), 1),
    "sd-controlnet": ((1, 8, 8), 1),
    "animatediff": ((8, 8, 8), 1),
    "wan22": ((3, 4, 4), 2),
    "wan-i2v": ((3, 4, 4), 2),
    "wan-vace": ((3, 4, 4), 2),
    "skyreels-v2": ((3, 4, 4), 2),
    "hunyuanvideo15": ((3, 2, 2), 1),
    "ltx2": ((3, 8, 8), 1),
    "flux": ((1, 8, 8), 2),
    "sd3": ((1, 8, 8), 2),
    "flux2": ((1, 8, 8), 2),
    "qwenimage": ((1, 8, 8), 2),
}
IMAGE_TRANSFORMERS = ("flux", "flux2", "qwenimage", "sd3")  # one latent frame
# Denoisers whose output has fewer channels than their input (I2V: latents + frame mask + encoded image in).
OUT_CHANNELS = {"wan-i2v": 16, "hunyuanvideo15": 4}
# Odd latent sizes the denoisers must accept (patch-2 families need even height and width).
ODD_SIZE = {
    family: (1 if family in IMAGE_TRANSFORMERS else 3, *((6, 10) if LATENT[family][1] == 2 else (3, 5)))
    for family in DENOISER_FAMILIES
}



def _run(pipe, family: str, **overrides) -> torch.Tensor:
    """Run the pipeline with the tiny call kwargs and return its frames or images."""
    output = pipe(**tiny_call_kwargs(family, **overrides))
    return output.frames if family in VIDEO else output.images


def _denoiser_of(pipe) -> torch.nn.Module:
    return pipe.transformer if hasattr(pipe, "transformer") else pipe.unet


def _hidden(inputs: dict) -> torch.Tensor:
    """The latent tensor among a denoiser's forward kwargs."""
    return inputs["hidden_states"] if "hidden_states" in inputs else inputs["sample"]


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_runs_finite_deterministic(family):
    first = _run(tiny_pipeline(family), family)
    second = _run(tiny_pipeline(family), family)
    assert first.shape == OUTPUT_SHAPE[family]
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_feeds_denoiser_the_documented_latents(family):
    pipe = tiny_pipeline(family)
    seen = []
    hook = _denoiser_of(pipe).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0] if args else _hidden(kwargs)), with_kwargs=True
    )
    _run(pipe, family)
    hook.remove()
    expected = _hidden(tiny_denoiser_inputs(family))
    assert seen and all(latents.shape[1:] == expected.shape[1:] for latents in seen)
    (frames, height, width), patch = LATENT[family]
    if family in VIDEO:
        assert frames >= 2
    assert height // patch >= 2 and width // patch >= 2


def test_wan22_pipeline_passes_one_timestep_per_token_like_the_documented_inputs():
    """WanPipeline with expand_timesteps (Wan 2.2 TI2V-5B) calls the transformer with timesteps [B, tokens]."""
    pipe = tiny_pipeline("wan22")
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["timestep"]), with_kwargs=True)
    _run(pipe, "wan22")
    hook.remove()
    expected = tiny_denoiser_inputs("wan22")["timestep"]
    assert seen and all(t.shape == expected.shape == (1, 3 * 2 * 2) for t in seen)


@pytest.mark.parametrize("family", FAMILIES)
def test_latent_scale_matches_pipeline_geometry(family):
    (frames, height, width), _ = LATENT[family]
    kwargs = tiny_call_kwargs(family)
    temporal, spatial = latent_scale(family)
    assert kwargs["height"] == spatial * height and kwargs["width"] == spatial * width
    if family in VIDEO and temporal > 1:
        assert kwargs["num_frames"] == temporal * (frames - 1) + 1


@pytest.mark.parametrize("family", FAMILIES)
def test_call_kwargs_enable_cfg_and_take_overrides(family):
    kwargs = tiny_call_kwargs(family, num_inference_steps=3)
    assert kwargs["num_inference_steps"] == 3
    # QwenImage's CFG is true_cfg_scale and HunyuanVideo 1.5's is on the pipeline's guider; Flux 2 Klein has no
    # negative_prompt argument (its negative is "")
    guidance = kwargs.get("guidance_scale", kwargs.get("true_cfg_scale"))
    if guidance is None:
        guidance = tiny_pipeline(family).guider.guidance_scale
    negative = kwargs.get("negative_prompt") or kwargs.get("negative_prompt_embeds") is not None or family == "flux2"
    assert negative and guidance > 1
    assert kwargs["output_type"] == "pt"
    assert torch.equal(kwargs["generator"].get_state(), torch.Generator().manual_seed(0).get_state())


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip_is_bitwise(family, tmp_path):
    pipe = tiny_pipeline(family)
    expected = _run(pipe, family)
    pipe.save_pretrained(tmp_path)
    absent = {name: None for name, component in pipe.components.items() if component is None}  # not saved
    loaded = type(pipe).from_pretrained(tmp_path, **absent)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(_run(loaded, family), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_denoiser_equals_pipeline_denoiser(family):
    alone = tiny_denoiser(family).state_dict()
    inside = _denoiser_of(tiny_pipeline(family)).state_dict()
    assert alone.keys() == inside.keys()
    assert all(torch.equal(alone[name], inside[name]) for name in alone)


@pytest.mark.parametrize("family", DENOISER_FAMILIES)
def test_denoiser_forward_at_odd_latent_sizes(family):
    frames, height, width = ODD_SIZE[family]
    inputs = tiny_denoiser_inputs(family, batch=2, frames=frames, height=height, width=width)
    with torch.no_grad():
        output = tiny_denoiser(family)(**inputs, return_dict=False)[0]
    expected = list(_hidden(inputs).shape)
    expected[1] = OUT_CHANNELS.get(family, expected[1])
    assert list(output.shape) == expected
    assert torch.isfinite(output).all()


INVALID_SIZES = [
    ("wan", (3, 3, 5)), ("mochi", (2, 4, 3)), ("cogvideox", (0, 4, 4)), ("animatediff", (33, 4, 4)), ("flux", (2, 4, 4)),
    ("sd3", (1, 4, 5)),
]


@pytest.mark.parametrize(("family", "size"), INVALID_SIZES)
def test_denoiser_inputs_reject_invalid_sizes(family, size):
    frames, height, width = size
    with pytest.raises(ValueError, match=family):
        tiny_denoiser_inputs(family, frames=frames, height=height, width=width)


def test_denoiser_only_family_refuses_a_pipeline_clearly():
    assert set(FAMILIES) < set(DENOISER_FAMILIES) and "ltx2" not in FAMILIES
    with pytest.raises(ValueError, match="ltx2 is a denoiser only"):
        tiny_pipeline("ltx2")
    with pytest.raises(ValueError, match="ltx2 is a denoiser only"):
        tiny_call_kwargs("ltx2")


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        tiny_pipeline("imagen")


def test_building_leaves_global_rng_alone():
    state = torch.get_rng_state()
    tiny_denoiser("wan", seed=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_changes_weights():
    first, second = tiny_denoiser("ltx", seed=0), tiny_denoiser("ltx", seed=1)
    assert not torch.equal(first.proj_in.weight, second.proj_in.weight)


def test_dtype_argument_casts_models():
    pipe = tiny_pipeline("sd", dtype=torch.bfloat16)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert torch.isfinite(_run(pipe, "sd").float()).all()


def test_control_image_changes_controlnet_output():
    pipe = tiny_pipeline("sd-controlnet")
    flipped = tiny_call_kwargs("sd-controlnet")["image"].flip(-1)
    assert not torch.equal(_run(pipe, "sd-controlnet"), _run(pipe, "sd-controlnet", image=flipped))


def test_clip_tokenizer_round_trips_and_knows_words(tmp_path):
    tokenizer = write_clip_tokenizer(tmp_path)
    assert {"vocab.json", "merges.txt"} <= {path.name for path in tmp_path.iterdir()}
    sentence = "a painting of a squirrel eating a burger next to a zebra"
    ids = tokenizer(sentence).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence
    assert tokenizer.unk_token_id not in tokenizer("Zebras, 42 of them!").input_ids[1:-1]
    assert all(len(tokenizer(word, add_special_tokens=False).input_ids) == 1 for word in WORDS)
    assert len(tokenizer("zebra", add_special_tokens=False).input_ids) > 1  # unknown word: byte-level pieces
    assert CLIPTokenizer.from_pretrained(tmp_path)(sentence).input_ids == ids


def test_word_level_tokenizers_one_token_per_word():
    tokenizer = t5_tokenizer()
    ids = tokenizer("A cat walking, slowly").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "cat", "walking", ",", "slowly", "</s>"]


def test_hunyuan_template_crops_exactly_the_system_prompt():
    template = hunyuan_prompt_template()
    assert template["template"] == DEFAULT_PROMPT_TEMPLATE["template"]
    tokens = llama_tokenizer().tokenize(template["template"].format("dance monkey"), add_special_tokens=True)
    assert tokens[template["crop_start"] :] == ["dance", "monkey", "<|eot_id|>"]


def test_sample_clip_moves_smoothly():
    clip = sample_clip(6, 24, 40, seed=1)
    assert clip.shape == (6, 3, 24, 40) and clip.dtype == torch.float32
    assert clip.min() >= 0 and clip.max() <= 1
    steps = (clip[1:] - clip[:-1]).abs().flatten(1).mean(1)
    assert (steps > 0).all()
    assert steps.max() < 4 * steps.min()  # smooth: no frame jumps much more than another
    assert torch.equal(clip, sample_clip(6, 24, 40, seed=1))
    assert not torch.equal(clip, sample_clip(6, 24, 40, seed=2))
