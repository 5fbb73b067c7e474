"""How methods reach the attention: one wrapping processor per attention module, and a chain of methods.

Every attention module keeps its model's own processor, so projections, norms, rotary embeddings, text
handling, LoRA, offloading and diffusers' `_attention_backend` / `_parallel_config` stay exactly as the model
defines them. diffattn wraps it (`DiffAttnProcessor`) and, for the duration of that one call, routes the
processor's `scaled_dot_product_attention` call to the chain of installed methods (a `TorchFunctionMode`
scoped to the call; nothing global is patched). The call arrives as an `AttentionCall` with q/k/v in
`[batch, heads, tokens, head_dim]`, the layer, the run context and the token layout. Each method may change
the call (e.g. add a block plan), replace the result, or pass it on; at the end of the chain the call runs
dense through the very SDPA call the model made (bitwise the stock result) or sparse through
`diffattn.kernels.block_sparse_attention` when a plan was attached.

Under diffusers' Ulysses context parallelism, the intercepted call happens after the all-to-all, so methods
see the full sequence for a subset of heads, with the global grid from the root hook.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from diffusers.hooks._common import _ATTENTION_CLASSES
from torch.overrides import TorchFunctionMode

from diffattn.config import AttentionConfig, MethodConfig, Phase
from diffattn.context import LayerInfo, RunContext
from diffattn.errors import BackendUnavailableError, ConfigError
from diffattn.geometry import Grid
from diffattn.method import Method, Target
from diffattn.plan import BlockPlan
from diffattn.precision import lowest_precision, runnable_precision
from diffattn.stats import AttentionStats, Timer

__all__ = [
    "AttentionCall",
    "TokenLayout",
    "AttentionMethod",
    "AttentionInstaller",
    "DiffAttnProcessor",
    "find_attention_modules",
    "describe_layers",
    "token_layout",
    "account",
    "kernel_options",
    "merge_kernel_options",
    "chain_for",
]

Proceed = Callable[["AttentionCall"], torch.Tensor]


# ------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class TokenLayout:
    """Where the video tokens are in one attention call.

    Args:
        kind (`str`): `"self"` (video attends to video), `"cross"` (video queries, text/image keys), `"joint"`
            (one sequence of video and text tokens), `"temporal"` (tokens are frames) or `"other"`.
        video (`slice`, *optional*): the video token range in q (and in kv for self/joint calls).
        grid (`Grid`, *optional*): the grid of those video tokens (a UNet layer's own resolution).
        frames_in_batch (`bool`): frames are folded into the batch (UNet spatial attention).
    """

    kind: str
    video: slice | None = None
    grid: Grid | None = None
    frames_in_batch: bool = False

    @property
    def text(self) -> slice | None:
        """The text token range of a joint call."""
        if self.kind != "joint" or self.video is None:
            return None
        return slice(0, self.video.start) if self.video.start > 0 else slice(self.video.stop, None)


def token_layout(ctx: RunContext, layer: LayerInfo, q_len: int, kv_len: int, text_first: bool, frames_in_batch: bool) -> TokenLayout:
    """Classify one attention call from the run context and the sequence lengths it has."""
    grid = ctx.grid
    if grid is None:
        return TokenLayout("other")
    if layer.role == "temporal":
        return TokenLayout("temporal", slice(0, q_len), Grid(q_len, 1, 1)) if q_len == grid.frames else TokenLayout("other")
    if frames_in_batch:
        for level in range(6):
            level_grid = grid.downsampled(level)
            if level_grid.frame_tokens == q_len:
                kind = "self" if kv_len == q_len else "cross"
                return TokenLayout(kind, slice(0, q_len), level_grid, frames_in_batch=True)
        return TokenLayout("other")
    n = grid.tokens
    if q_len == n:
        return TokenLayout("self" if kv_len == n and layer.role != "cross" else "cross", slice(0, n), grid)
    if q_len == kv_len and q_len > n:
        video = slice(q_len - n, q_len) if text_first else slice(0, n)
        return TokenLayout("joint", video, grid)
    return TokenLayout("other")


# --------------------------------------------------------------------------------------------- call
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


@dataclass
class AttentionCall:
    """One scaled-dot-product attention call of a model, as methods see it (q/k/v `[B, H, tokens, head_dim]`)."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attn_mask: torch.Tensor | None
    dropout_p: float
    is_causal: bool
    scale: float | None
    enable_gqa: bool
    layer: LayerInfo
    context: RunContext
    layout: TokenLayout
    stats: AttentionStats
    index: int = 0
    """Position of this SDPA call within its processor call (e.g. Wan I2V: 0 = image keys, 1 = text keys)."""
    plan: BlockPlan | None = None
    """Set by a sparsity method: the call then runs through the block-sparse kernels."""
    kernel_options: dict[str, Any] = field(default_factory=dict)
    """Extra `block_sparse_attention` keywords (pv_threshold, skip_threshold, backend, precision); methods add theirs
    with `merge_kernel_options`."""
    on_kernel_result: list[Callable[[Any], None]] = field(default_factory=list)
    """Callbacks given the kernel's `SparseAttentionOutput` (e.g. LiteAttention's skip marks)."""
    dense_reasons: dict[str, str] = field(default_factory=dict)
    """Methods (by name) that left this call dense in an active step, with why (`""`: by design, e.g. a sparse
    method on cross-attention); shared by every `replace`d copy, read once the chain has run (`account`)."""

    def dense(self, query: torch.Tensor | None = None, key: torch.Tensor | None = None, value: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own SDPA call, optionally with replaced q/k/v (identical to the stock processor otherwise)."""
        return F.scaled_dot_product_attention(
            self.query if query is None else query,
            self.key if key is None else key,
            self.value if value is None else value,
            attn_mask=self.attn_mask,
            dropout_p=self.dropout_p,
            is_causal=self.is_causal,
            scale=self.scale,
            enable_gqa=self.enable_gqa,
        )

    def replace(self, **changes: Any) -> AttentionCall:
        return dataclasses.replace(self, **changes)

    def record(self, **fields: Any) -> None:
        """Add statistics for this call's (layer, step), e.g. `call.record(density=0.3, tiles=64, skipped_tiles=12)`."""
        self.stats.record(self.layer.name, self.context.step_index, **fields)


def kernel_options(config: Any) -> dict[str, Any]:
    """The `block_sparse_attention` keywords an attention config sets: its backend when one is named, its precision
    when it asks for 8 bits."""
    options: dict[str, Any] = {} if config.backend == "auto" else {"backend": config.backend}
    if config.precision != "bf16":
        options["precision"] = config.precision
    return options


def merge_kernel_options(current: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`current` updated with `extra`, except the precision, which is the lowest either asks for: methods composed in
    one chain run at the lowest precision any of them asks for, whatever their order."""
    merged = {**current, **extra}
    if "precision" in current and "precision" in extra:
        merged["precision"] = lowest_precision(current["precision"], extra["precision"])
    return merged


def execute(call: AttentionCall) -> torch.Tensor:
    """End of every chain: dense through the model's own call, or block-sparse when a plan is attached."""
    if call.plan is None:
        return call.dense()
    from diffattn.kernels import block_sparse_attention

    options = call.kernel_options
    if "precision" in options:
        options = {**options, "precision": runnable_precision(options["precision"], call.query.device)}

    if call.attn_mask is not None or call.is_causal or call.dropout_p:
        raise BackendUnavailableError(
            f"layer {call.layer.name}: a block plan cannot be combined with an attention mask, causal masking or "
            "dropout; the method must fold them into its plan or leave this call dense"
        )
    result = block_sparse_attention(call.query, call.key, call.value, call.plan, scale=call.scale, **options)
    if isinstance(result, torch.Tensor):
        return result
    _notify(call.on_kernel_result, result)
    return result.out


@torch.compiler.disable  # callbacks keep per-layer state (e.g. LiteAttention's marks): traced, each layer would recompile
def _notify(callbacks: list[Callable[[Any], None]], result: Any) -> None:
    for callback in callbacks:
        callback(result)


# ---------------------------------------------------------------------------------------- processor
class _RouteSDPA(TorchFunctionMode):
    """Sends `F.scaled_dot_product_attention` calls made inside the `with` block to `handler`."""

    def __init__(self, handler: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.handler = handler

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self.handler(*args, **kwargs)
        if func is torch.Tensor.unflatten:
            # same op; torch.compile cannot trace Tensor.unflatten's Python body (`super().unflatten`) under a mode
            return torch.unflatten(*args, **kwargs)
        return func(*args, **kwargs)


class DiffAttnProcessor:
    """Wraps a model's own attention processor and routes its SDPA call through the layer's method chain.

    `_attention_backend` and `_parallel_config` read and write through to the wrapped processor, so
    `set_attention_backend` and context parallelism configure the model's own processor as usual.
    """

    def __init__(self, inner: Any, layer: LayerInfo, chain: tuple[AttentionMethod, ...], target: Target) -> None:
        self.inner = inner
        self.layer = layer
        self.chain = chain
        self.context: RunContext = target.context
        self.stats: AttentionStats = target.stats
        self._text_first = target.family.text_first
        self._frames_in_batch = target.family.frames_in_batch

    @property
    def _attention_backend(self) -> Any:
        return getattr(self.inner, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value: Any) -> None:
        self.inner._attention_backend = value

    @property
    def _parallel_config(self) -> Any:
        return getattr(self.inner, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value: Any) -> None:
        self.inner._parallel_config = value

    def __call__(self, attn: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        _refuse_ring_attention(self._parallel_config, self.layer)
        self.context.layer = self.layer
        calls: list[int] = []
        with _RouteSDPA(functools.partial(self._route, calls)):
            output = self.inner(attn, *args, **kwargs)
        if not calls:
            raise BackendUnavailableError(
                f"attention in {self.layer.name} did not go through torch's scaled_dot_product_attention "
                f"(attention backend {self._attention_backend!r}), so diffattn could not act on it; "
                "call model.reset_attention_backend() or use the 'native' backend with diffattn"
            )
        return output

    def _route(self, calls: list[int], *args: Any, **kwargs: Any) -> torch.Tensor:
        values = dict(_SDPA_DEFAULTS)
        values.update(zip(_SDPA_PARAMS, args))
        values.update(kwargs)
        query, key = values["query"], values["key"]
        layout = token_layout(self.context, self.layer, query.shape[-2], key.shape[-2], self._text_first, self._frames_in_batch)
        call = AttentionCall(
            **values, layer=self.layer, context=self.context, layout=layout, stats=self.stats, index=len(calls)
        )
        calls.append(1)
        timer = _start_timer(query.device) if self.stats.enabled else None
        out = run_chain(self.chain, call)
        if timer is not None:
            _record_call(self.stats, self.layer.name, self.context, timer, self.chain, call.dense_reasons)
        return out


# Timing runs outside compiled graphs (CUDA events cannot be recorded from inside one): with stats on, torch.compile
# breaks the graph around each attention call; turn stats off for the fastest compiled runs.
@torch.compiler.disable
def _start_timer(device: torch.device) -> Timer:
    return Timer(device)


@torch.compiler.disable
def _record_call(stats: AttentionStats, layer: str, context: RunContext, timer: Timer, chain: tuple[AttentionMethod, ...],
                 reasons: Mapping[str, str]) -> None:
    stats.record(layer, context.step_index, timer=timer.stop(), count_call=True)
    account(chain, context, reasons, stats)


def _refuse_ring_attention(parallel_config: Any, layer: LayerInfo) -> None:
    """Ring attention hands each rank only a chunk of the keys, so grid-aware plans would be wrong: refuse it."""
    cp = getattr(parallel_config, "context_parallel_config", None)
    if cp is not None and (getattr(cp, "ring_degree", None) or 1) > 1:
        raise BackendUnavailableError(
            f"{layer.name}: diffattn methods do not support ring attention (ring_degree={cp.ring_degree}); "
            "use Ulysses context parallelism instead: ContextParallelConfig(ulysses_degree=N)"
        )


@functools.cache
def _wrapper_class(inner_cls: type) -> type:
    """A `DiffAttnProcessor` subclass whose `__call__` advertises `inner_cls.__call__`'s signature.

    `Attention.forward` filters `cross_attention_kwargs` by the processor's call signature, so the wrapper must
    expose the wrapped processor's parameters for those keywords (LoRA scale, IP-adapter inputs) to pass.
    """

    @functools.wraps(inner_cls.__call__)
    def __call__(self, attn, *args, **kwargs):
        return DiffAttnProcessor.__call__(self, attn, *args, **kwargs)

    return type(f"DiffAttn{inner_cls.__name__}", (DiffAttnProcessor,), {"__call__": __call__})


# ---------------------------------------------------------------------------------------- discovery
def find_attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every attention module of a denoiser (diffusers' own discovery: `Attention`, `MochiAttention`, mixins)."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _ATTENTION_CLASSES) and hasattr(module, "processor")
    ]


def _role(name: str, module: torch.nn.Module, joint: bool) -> str:
    parts = name.split(".")
    if "context_embedder" in parts or any(p.startswith("refiner") for p in parts):
        return "text"
    if "motion_modules" in parts or any("temporal" in p for p in parts):
        return "temporal"
    if getattr(module, "is_cross_attention", False) or parts[-1] in ("attn2", "audio_to_video_attn"):
        return "cross"
    if parts[-1].startswith("audio_") or parts[-1].endswith("_to_audio_attn"):  # LTX-2: queries are audio tokens
        return "audio"
    return "joint" if joint else "self"


def describe_layers(modules: list[tuple[str, torch.nn.Module]], joint: bool, prefix: str = "") -> list[LayerInfo]:
    """`LayerInfo` for each module; `block` counts the distinct parent blocks holding non-text attention.

    `prefix` names the denoiser in layer names (e.g. `"transformer_2."`); block indices restart per denoiser.
    """
    blocks: dict[str, int] = {}
    layers = []
    for index, (name, module) in enumerate(modules):
        role = _role(name, module, joint)
        block = None
        if role != "text":
            parent = name.rpartition(".")[0]
            block = blocks.setdefault(parent, len(blocks))
        layers.append(LayerInfo(name=prefix + name, index=index, block=block, role=role))
    return layers


_JOINT_FAMILIES = ("cogvideox", "hunyuanvideo", "hunyuanvideo15", "mochi")


def _set_processor(module: torch.nn.Module, processor: Any) -> None:
    if hasattr(module, "set_processor"):
        module.set_processor(processor)
    else:
        module.processor = processor


def _check_selectors(config: MethodConfig, joined: list[LayerInfo], layers: list[LayerInfo], model: torch.nn.Module) -> None:
    """Refuse layer selectors (`layers`, `dense_layers`) that leave a method no attention layer of the model."""
    if joined or not isinstance(config, AttentionConfig) or (config.layers is None and not config.dense_layers):
        return
    blocks = sorted({layer.block for layer in layers if layer.block is not None})
    span = f"its blocks are {blocks[0]}..{blocks[-1]}" if blocks else "it has no attention blocks"
    raise ConfigError(
        f"{config.name}: layers={config.layers}, dense_layers={config.dense_layers} select no attention layer of this "
        f"{type(model).__name__} ({span}), so {config.name} would never run; choose block indices in that range"
    )


def chain_for(methods: Sequence[AttentionMethod], layer: LayerInfo) -> tuple[AttentionMethod, ...]:
    """The methods of `layer` in the order given, except that `chain_first` methods come before all others and
    `chain_last` methods after all others."""
    return tuple(sorted((m for m in methods if m.applies_to(layer)), key=lambda m: (not m.chain_first, m.chain_last)))


class AttentionInstaller:
    """Installer of attention parts (`AttentionMethod`): wraps the processor of every attention module that some
    part applies to, chaining the parts in the order given; `remove` restores the processors exactly."""

    def __init__(self, target: Target, methods: list[AttentionMethod]) -> None:
        self.target = target
        self.methods = methods
        self._originals: list[tuple[torch.nn.Module, Any]] = []
        self._notified: list[AttentionMethod] = []

    def install(self) -> None:
        modules = find_attention_modules(self.target.model)
        joint = self.target.family.image or self.target.family.name in _JOINT_FAMILIES
        layers = describe_layers(modules, joint, self.target.prefix)
        chains = [chain_for(self.methods, layer) for layer in layers]
        joined = {id(m): [layer for layer, chain in zip(layers, chains) if m in chain] for m in self.methods}
        for method in self.methods:  # before anything is wrapped: a refused selector leaves the model untouched
            _check_selectors(method.config, joined[id(method)], layers, self.target.model)
        for (_, module), layer, chain in zip(modules, layers, chains):
            if not chain:
                continue
            inner = module.processor
            wrapper = _wrapper_class(type(inner))(inner, layer, chain, self.target)
            self._originals.append((module, inner))
            _set_processor(module, wrapper)
        for method in self.methods:
            method.on_install(joined[id(method)])
            self._notified.append(method)

    def remove(self) -> None:
        for method in reversed(self._notified):
            method.on_remove()
        self._notified.clear()
        for module, inner in reversed(self._originals):
            _set_processor(module, inner)
        self._originals.clear()


# ------------------------------------------------------------------------------------------ methods
class AttentionMethod(Method):
    """Base of attention parts (and of attention-only implementations): a link in each layer's chain.

    Subclasses override `attend` (and `applies_to` to choose layers). `attend` returns the attention output in
    the layout of `F.scaled_dot_product_attention` (`[B, H, q_tokens, head_dim]`); it calls `proceed(call)` to
    hand a (possibly changed) call to the rest of the chain.
    """

    installer = AttentionInstaller
    chain_first: ClassVar[bool] = False
    """Joins the start of each layer's chain whatever the order the methods were given in (a method that builds the
    view the others then refine, such as the image window, whose plan they intersect inside the window)."""
    chain_last: ClassVar[bool] = False
    """Joins the end of each layer's chain whatever the order the methods were given in (a method that only changes
    how the others' plan is computed, such as its precision, then sees the view any of them built)."""

    def applies_to(self, layer: LayerInfo) -> bool:
        """Whether this method joins the chain of `layer` (by default: the config's block selectors)."""
        if layer.role in ("text", "audio"):
            return False
        if isinstance(self.config, AttentionConfig):
            return self.config.runs_in_block(layer.block)
        return True

    def active(self, call: AttentionCall) -> bool:
        """Whether the method acts at this step (its config's dense steps say no)."""
        return call.context.phase(self.name) is Phase.ACTIVE

    def attend(self, call: AttentionCall, proceed: Proceed) -> torch.Tensor:
        return proceed(call)

    def on_install(self, layers: list[LayerInfo]) -> None:
        """Called once after the processors are in place, with the layers this method joined."""

    def on_remove(self) -> None:
        """Called when the handle is removed; drop caches."""


def _dense_steps_reason(config: MethodConfig) -> str:
    """The dense-step settings of `config`, as the reason a call stayed dense."""
    if isinstance(config, AttentionConfig):
        return f"dense steps: dense_steps={config.dense_steps}, dense_last_steps={config.dense_last_steps}"
    return "dense steps"


def account(chain: tuple[AttentionMethod, ...], context: RunContext, reasons: Mapping[str, str], stats: AttentionStats) -> None:
    """Count, per method of a chain that has run, whether it acted on the call or left it dense: in a dense step,
    or for the reason it noted in the call's `dense_reasons`."""
    for method in chain:
        if context.phase(method.name) is not Phase.ACTIVE:
            stats.record_activity(context.run_index, method.name, _dense_steps_reason(method.config), dense_step=True)
        else:
            stats.record_activity(context.run_index, method.name, reasons.get(method.name))


def run_chain(chain: tuple[AttentionMethod, ...], call: AttentionCall, position: int = 0) -> torch.Tensor:
    """Give `call` to `chain[position]`, whose `proceed` continues with the next method, then `execute`."""
    if position == len(chain):
        return execute(call)
    return chain[position].attend(call, functools.partial(run_chain, chain, position=position + 1))
