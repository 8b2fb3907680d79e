"""Running the network on frames: the Segmenter (one frame at one operating point), the
Pipeline (controller + segmenter + statistics) shared by the node and replay, the camera
scheduler that lets several cameras share them, the frame intake and the per-frame record."""

from .segmenter import SegmentationResult, Segmenter
from .pipeline import Frame, FrameCounts, Pipeline, StepResult  # noqa: I100
from .record import Counts, FrameRecord

__all__ = ['Counts', 'Frame', 'FrameCounts', 'FrameRecord', 'Pipeline', 'SegmentationResult',
           'Segmenter', 'StepResult']
