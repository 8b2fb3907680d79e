"""Running the network on frames: the Segmenter (one frame at one operating point)."""

from .segmenter import SegmentationResult, Segmenter

__all__ = ['SegmentationResult', 'Segmenter']
