"""The multi-exit segmentation network, its configuration and its exit policies."""

from .config import ModelConfig
from .network import AdaptiveOutput, MultiExitSegmenter, TrainOutput
from .policy import ExitPolicy, cbt_thresholds, class_margins

__all__ = ['AdaptiveOutput', 'ExitPolicy', 'ModelConfig', 'MultiExitSegmenter', 'TrainOutput',
           'cbt_thresholds', 'class_margins']
