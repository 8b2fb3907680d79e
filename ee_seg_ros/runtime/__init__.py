"""Running the network on frames: the Segmenter (one frame at one operating point) and the
Pipeline (controller + segmenter + statistics) shared by the node and replay."""

from .segmenter import SegmentationResult, Segmenter
from .pipeline import Frame, FrameCounts, Pipeline, StepResult, frame_values  # noqa: I100

__all__ = ['Frame', 'FrameCounts', 'Pipeline', 'SegmentationResult', 'Segmenter', 'StepResult',
           'frame_values']
