"""Runs in each gloo rank of `test_ulysses.py`: the tiny Wan transformer under Ulysses, every method in turn."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

TIMESTEPS = (900.0, 700.0, 500.0)
LATENT = dict(frames=3, height=16, width=16)  # 3 x 8 x 8 tokens: large enough for sparse plans to skip blocks


def run_methods(configs: list, model_factory, inputs: dict) -> dict[str, list[torch.Tensor]]:
    """Outputs of a few denoising calls (decreasing timesteps) with each config applied, in this process."""
    import diffattn

    outputs = {}
    for config in configs:
        model = model_factory()
        with diffattn.apply(model, config), torch.no_grad():
            outputs[config.name] = [
                model(**{**inputs, "timestep": torch.tensor([t])}, return_dict=False)[0] for t in TIMESTEPS
            ]
    return outputs


def worker(rank: int, world: int, port: int, configs: list, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRITON_INTERPRET", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from diffusers import ContextParallelConfig

        from diffattn.testing import tiny_denoiser, tiny_denoiser_inputs

        # diffusers maps ranks onto accelerators; gloo ranks on one CPU host each get "one".
        torch.accelerator.device_count = lambda: world

        def parallel_model():
            model = tiny_denoiser("wan")
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
            return model

        outputs = run_methods(configs, parallel_model, tiny_denoiser_inputs("wan", **LATENT))
        # numpy arrays travel by value; tensors would be shared through file descriptors of an exiting process
        queue.put((rank, {name: [o.numpy() for o in outs] for name, outs in outputs.items()}))
    except Exception as exc:  # report to the parent instead of hanging it
        import traceback

        queue.put((rank, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        dist.destroy_process_group()
