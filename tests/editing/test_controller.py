"""The editing controller on the tiny SD UNet: equivalences with stock attention and the store round trip."""

import pytest
import torch

import diffattn
from diffattn.configs import FateZeroConfig
from diffattn.errors import ConfigError
from diffattn.pipelines.inversion import as_ddim, encode_prompts
from diffattn.processors.editing import (
    SELF,
    AttentionStore,
    BatchLayout,
    CapturedSource,
    CrossAttentionEditor,
    EditMode,
    FrameKV,
    LayerPolicy,
    OcclusionKV,
    StoredSource,
    Trajectories,
    estimate_store_bytes,
    occlusion_keep_mask,
)

PROMPT = "a red sun moving over colorful waves"
OTHER = "a green tree standing in the snow"
KV_POLICIES = [("mid",), ("first",), ("last",), ("all",), (-1,), (-1, "first"), ("first", -2, -1, 0, 1, 2)]


@pytest.fixture(scope="module")
def unet(sd_pipe):
    return sd_pipe.unet


@pytest.fixture(scope="module")
def embeds(sd_pipe):
    return encode_prompts(sd_pipe.tokenizer, sd_pipe.text_encoder, [PROMPT, OTHER], torch.device("cpu"))


@pytest.fixture
def controlled(unet):
    handle = diffattn.apply(unet, FateZeroConfig())
    yield handle, handle.methods[0].controller
    handle.remove()


def _latents(frames: int, identical: bool = False, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if identical:
        return torch.randn(1, 4, 8, 8, generator=generator).repeat(frames, 1, 1, 1)
    return torch.randn(frames, 4, 8, 8, generator=generator)


def _forward(unet, latents, embed, timestep=500):
    with torch.no_grad():
        return unet(latents, timestep, encoder_hidden_states=embed.expand(latents.shape[0], -1, -1)).sample


def _policies(controller, kv=SELF, edit=False):
    """The same policy in every layer (all levels): `kv` for self-attention."""
    return [LayerPolicy(slot, kv=kv if slot.role == "self" else SELF, edit=edit) for slot in controller.slots.values()]


def test_controller_off_and_plain_identity_equal_stock(unet, embeds):
    latents = _latents(3)
    stock = _forward(unet, latents, embeds[:1])
    with diffattn.apply(unet, FateZeroConfig()) as handle:
        controller = handle.methods[0].controller
        assert torch.equal(_forward(unet, latents, embeds[:1]), stock)  # OFF
        controller.set_policies(_policies(controller))
        controller.mode, controller.layout = EditMode.PLAIN, BatchLayout(("cond",), 3)
        assert torch.equal(_forward(unet, latents, embeds[:1]), stock)  # PLAIN, every layer's own frame
    assert torch.equal(_forward(unet, latents, embeds[:1]), stock)  # removed


@pytest.mark.parametrize("refs", KV_POLICIES)
def test_kv_policies_equal_self_attention_for_one_or_identical_frames(unet, embeds, controlled, refs):
    _, controller = controlled
    controller.set_policies(_policies(controller, kv=FrameKV(refs)))
    controller.mode = EditMode.PLAIN
    for latents in (_latents(1), _latents(3, identical=True)):
        controller.mode, controller.layout = EditMode.OFF, None
        stock = _forward(unet, latents, embeds[:1])
        controller.mode, controller.layout = EditMode.PLAIN, BatchLayout(("cond",), latents.shape[0])
        assert torch.allclose(_forward(unet, latents, embeds[:1]), stock, atol=1e-5)
    different = _latents(3)
    controller.mode, controller.layout = EditMode.OFF, None
    stock = _forward(unet, different, embeds[:1])
    controller.mode, controller.layout = EditMode.PLAIN, BatchLayout(("cond",), 3)
    assert not torch.allclose(_forward(unet, different, embeds[:1]), stock, atol=1e-4)  # the policy does act


def test_occlusion_kv_and_trajectories_equal_plain_attention_for_identical_frames(unet, embeds, controlled):
    """Identical frames have zero flow and no occlusion: keys are frame 0's, trajectories stand still."""
    _, controller = controlled
    policies = []
    for slot in controller.slots.values():
        size = (8 // 2**slot.level,) * 2
        keep = occlusion_keep_mask(torch.zeros(2, 64, 64), size)
        still = Trajectories(torch.arange(size[0] * size[1]).repeat(3, 1), torch.zeros(3, size[0] * size[1], dtype=torch.long))
        policies.append(LayerPolicy(slot, kv=OcclusionKV(keep), trajectories=still) if slot.role == "self" else LayerPolicy(slot))
    controller.set_policies(policies)
    controller.trajectory_min_timestep = 0
    latents = _latents(3, identical=True)
    stock = _forward(unet, latents, embeds[:1])
    controller.mode, controller.layout = EditMode.PLAIN, BatchLayout(("cond",), 3)
    assert torch.allclose(_forward(unet, latents, embeds[:1]), stock, atol=1e-5)
    assert not torch.allclose(_forward(unet, _latents(3), embeds[:1]), _forward_off(unet, _latents(3), embeds[:1], controller), atol=1e-4)


def _forward_off(unet, latents, embed, controller):
    mode, layout = controller.mode, controller.layout
    controller.mode, controller.layout = EditMode.OFF, None
    try:
        return _forward(unet, latents, embed)
    finally:
        controller.mode, controller.layout = mode, layout


def _sample(unet, controller, context, scheduler, latents, embed, mode, layout, *, store=None, source=None):
    """A 2-step DDIM run in `mode`; STORE writes each step, EDIT reads `source(timestep)` each step."""
    context.start_run(len(scheduler.timesteps))
    controller.layout = layout
    for timestep in scheduler.timesteps:
        if source is not None:
            controller.source = source(int(timestep))
        controller.mode = mode
        if store is not None:
            with store.step(int(timestep)):
                noise = _forward(unet, latents, embed, timestep)
        else:
            noise = _forward(unet, latents, embed, timestep)
        latents = scheduler.step(noise, timestep, latents).prev_sample
    return latents


def _edit_all(controller, tokenizer, prompt_source, prompt_target):
    controller.cross_editor = CrossAttentionEditor.from_prompts(
        tokenizer, prompt_source, prompt_target, length=77, num_steps=2, mode="refine", replace_steps=1.0)
    controller.self_edit_steps = 2


def test_store_then_replace_all_reproduces_the_stored_run(sd_pipe, unet, embeds, controlled):
    handle, controller = controlled
    controller.set_policies(_policies(controller, kv=FrameKV(("mid",)), edit=True))
    scheduler = as_ddim(sd_pipe.scheduler)
    scheduler.set_timesteps(2)
    latents = _latents(2)
    layout = BatchLayout(("source",), 2)
    with AttentionStore(2**30, dtype=torch.float32) as store, AttentionStore(2**30, dtype=torch.float32) as other:
        controller.store = store
        stored_run = _sample(unet, controller, handle.context, scheduler, latents, embeds[:1], EditMode.STORE, layout, store=store)
        controller.store = other
        _sample(unet, controller, handle.context, scheduler, _latents(2, seed=1), embeds[1:], EditMode.STORE, layout, store=other)
        _edit_all(controller, sd_pipe.tokenizer, PROMPT, PROMPT)
        cond = BatchLayout(("cond",), 2)
        replayed = _sample(unet, controller, handle.context, scheduler, latents, embeds[:1], EditMode.EDIT, cond,
                           source=lambda t: StoredSource(store.load(t)))
        assert (replayed - stored_run).abs().max() <= 1e-6
        foreign = _sample(unet, controller, handle.context, scheduler, latents, embeds[:1], EditMode.EDIT, cond,
                          source=lambda t: StoredSource(other.load(t)))
        assert (foreign - stored_run).abs().max() > 1e-3  # the edit really reads the store


def test_online_capture_equals_the_stored_source(sd_pipe, unet, embeds, controlled):
    handle, controller = controlled
    controller.set_policies(_policies(controller, kv=FrameKV((-1, "first")), edit=True))
    _edit_all(controller, sd_pipe.tokenizer, PROMPT, PROMPT)
    source_latents, edit_latents = _latents(3), _latents(3, seed=2)
    handle.context.start_run(1)
    with AttentionStore(2**30, dtype=torch.float32) as store:
        controller.mode, controller.layout, controller.store = EditMode.STORE, BatchLayout(("source",), 3), store
        with store.step(500):
            _forward(unet, source_latents, embeds[:1])
        controller.mode, controller.capture = EditMode.CAPTURE, CapturedSource(3)
        _forward(unet, source_latents, embeds[:1])
        captured = controller.capture
        outputs = []
        for source in (StoredSource(store.load(500)), captured):
            controller.mode, controller.layout, controller.source = EditMode.EDIT, BatchLayout(("uncond", "cond"), 3), source
            batch_embeds = torch.cat([embeds[1:].expand(3, -1, -1), embeds[:1].expand(3, -1, -1)])
            outputs.append(_forward(unet, torch.cat([edit_latents] * 2), batch_embeds))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)


def test_store_size_equals_the_estimate_and_stays_within_the_ram_budget(unet, embeds, controlled):
    handle, controller = controlled
    controller.set_policies(_policies(controller, kv=FrameKV(("mid",)), edit=True))
    shapes = controller.store_shapes(3, (8, 8), 77)
    estimate = estimate_store_bytes(shapes, 2, torch.float16)
    latents = _latents(3)
    handle.context.start_run(2)
    controller.layout = BatchLayout(("source",), 3)
    with AttentionStore(2**30) as unlimited, AttentionStore(estimate // 3) as budgeted:
        for store in (unlimited, budgeted):
            controller.mode, controller.store = EditMode.STORE, store
            for timestep in (700, 300):
                with store.step(timestep):
                    _forward(unet, latents, embeds[:1], timestep)
        assert unlimited.total_bytes == budgeted.total_bytes == estimate
        assert budgeted.peak_ram_bytes <= estimate // 3 and budgeted.disk_bytes >= estimate - estimate // 3
        assert unlimited.disk_bytes == 0
        for timestep in (700, 300):
            ram, spilled = unlimited.load(timestep), budgeted.load(timestep)
            assert ram.keys() == spilled.keys() and all(torch.equal(ram[k], spilled[k]) for k in ram)


def test_applying_an_editor_to_a_plain_pipeline_points_to_its_pipeline(sd_pipe):
    with pytest.raises(ConfigError, match="FateZeroPipeline.from_pipe"):
        diffattn.apply(sd_pipe, FateZeroConfig())
    assert diffattn.handle_of(sd_pipe) is None  # nothing left installed
