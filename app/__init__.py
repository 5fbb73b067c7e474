"""diffattn's Gradio app (`diffattn app`): every method in one UI, each event driveable with `gradio_client`."""

from .limits import AppLimits
from .server import launch
from .ui import build_demo

__all__ = ["AppLimits", "build_demo", "launch"]
