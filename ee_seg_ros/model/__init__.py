"""The multi-exit segmentation network, its configuration and its exit policies.

Configuration, policies, MAC counts, input preparation and the adaptive loop import without
PyTorch (the ONNX Runtime backend runs without it); the PyTorch network is imported on first
use.
"""

from .adaptive import AdaptiveOutput
from .config import ModelConfig
from .policy import ExitPolicy, cbt_thresholds, class_margins

__all__ = ['AdaptiveOutput', 'ExitPolicy', 'ModelConfig', 'MultiExitSegmenter', 'TrainOutput',
           'cbt_thresholds', 'class_margins']


def __getattr__(name: str):
    if name in ('MultiExitSegmenter', 'TrainOutput'):
        from . import network
        return getattr(network, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
