"""diffattn's methods with diffusers' caches (`model.enable_cache(...)`) on the tiny Wan denoiser.

Whichever is applied first, both act in the same run (the cache skips attention calls; the method's stats show it
acting on those that run) and the steps are counted as without the cache; `handle.remove()` and
`model.disable_cache()` each take off only their own part (bitwise checks); pairs that would fight are refused in
either order with `IncompatibleMethodsError` naming both.
"""

from __future__ import annotations

import pytest
import torch

import diffattn
from diffattn.errors import IncompatibleMethodsError

from .conftest import BATCHED, CACHES, METHODS, STEPS, denoise

CACHE_CLASSES = {name: type(make()).__name__ for name, make in CACHES.items()}
REFUSED = {(m, c) for m, config in METHODS.items() for c in CACHES if CACHE_CLASSES[c] in type(config()).incompatible_caches}
PAIRS = [(m, c) for m in METHODS for c in CACHES if (m, c) not in REFUSED]


def apply_both(model, method: str, cache: str, order: str):
    if order == "cache first":
        model.enable_cache(CACHES[cache]())
        return diffattn.apply(model, METHODS[method]())
    handle = diffattn.apply(model, METHODS[method]())
    model.enable_cache(CACHES[cache]())
    return handle


def acted(handle, method: str) -> bool:
    """The method's own evidence of acting: density below 1 (sparse methods), reused outputs (PAB) or calls set in
    8 bits (quantized)."""
    extra = {"pab": "reused", "quantized": "quantized_calls"}.get(method)
    if extra is not None:
        return any(r.get(extra) for steps in handle.stats.to_dict().values() for r in steps.values())
    summary = handle.stats.summary()
    return summary["mean_density"] is not None and summary["mean_density"] < 1.0


def test_pab_refuses_the_caches_that_replace_attention_outputs():
    assert {c for m, c in REFUSED if m == "pab"} == {"FasterCache", "TaylorSeer", "PyramidAttentionBroadcast"}
    assert not {c for m, c in REFUSED if m != "pab"}


@pytest.mark.parametrize("order", ["cache first", "method first"])
@pytest.mark.parametrize("method,cache", PAIRS)
def test_both_act_in_one_run(model, attention_calls, method, cache, order):
    batched = cache in BATCHED
    denoise(model, batched)
    stock_calls = len(attention_calls)
    attention_calls.clear()
    handle = apply_both(model, method, cache, order)
    try:
        denoise(model, batched)
        assert len(attention_calls) < stock_calls  # the cache skipped attention work ...
        assert acted(handle, method)  # ... and the method acted on what ran
        assert handle.context.step_index == STEPS - 1  # one step per timestep, skipped blocks or not
        assert handle.context.run_index == 0 and handle.context.cfg_branch == ("batched" if batched else "uncond")
    finally:
        handle.remove()
        model.disable_cache()


@pytest.mark.parametrize("method,cache", [(m, c) for m, c in PAIRS if m in ("sparge", "pab")])
def test_each_removal_restores_only_its_own_part(model, method, cache):
    batched = cache in BATCHED
    stock = denoise(model, batched)
    model.enable_cache(CACHES[cache]())
    cache_only = denoise(model, batched)
    model.disable_cache()
    with diffattn.apply(model, METHODS[method]()):
        method_only = denoise(model, batched)
    assert not torch.equal(cache_only, stock) and not torch.equal(method_only, stock)

    handle = apply_both(model, method, cache, "method first")
    both = denoise(model, batched)
    assert not torch.equal(both, cache_only) and not torch.equal(both, method_only)
    handle.remove()
    assert torch.equal(denoise(model, batched), cache_only)
    model.disable_cache()
    assert torch.equal(denoise(model, batched), stock)

    handle = apply_both(model, method, cache, "cache first")
    assert torch.equal(denoise(model, batched), both)
    model.disable_cache()
    assert torch.equal(denoise(model, batched), method_only)
    handle.remove()
    assert torch.equal(denoise(model, batched), stock)


@pytest.mark.parametrize("method,cache", sorted(REFUSED) + [("freeswim", cache) for cache in CACHES])
def test_refused_pairs_fail_in_either_order(model, method, cache):
    config = (
        diffattn.FreeSwimConfig(base_height=32, base_width=32, backend="reference") if method == "freeswim"
        else METHODS[method]()
    )
    model.enable_cache(CACHES[cache]())
    with pytest.raises(IncompatibleMethodsError, match=rf"'{method}' and diffusers' {CACHE_CLASSES[cache]}"):
        diffattn.apply(model, config)
    assert diffattn.api.handle_of(model) is None  # nothing installed
    model.disable_cache()

    with diffattn.apply(model, config):
        model.enable_cache(CACHES[cache]())
        with pytest.raises(IncompatibleMethodsError, match=rf"'{method}' and diffusers' {CACHE_CLASSES[cache]}"):
            denoise(model, cache in BATCHED)
        model.disable_cache()


def test_dense_equivalent_sparge_under_a_cache_equals_the_cache_alone(model):
    from .conftest import COMMON, relative_error

    model.enable_cache(CACHES["FirstBlockCache"]())
    cache_only = denoise(model)
    with diffattn.apply(model, diffattn.SpargeConfig(topk=1.0, **COMMON)) as handle:
        out = denoise(model)
        assert handle.stats.summary()["mean_density"] == 1.0
    model.disable_cache()
    assert relative_error(out, cache_only) < 2e-5


def test_refused_cache_names_are_diffusers_cache_configs():
    import diffusers.hooks

    from diffattn.registry import methods

    named = {name for cls in methods().values() for name in cls.incompatible_caches}
    assert named and all(hasattr(diffusers.hooks, name) for name in named)
