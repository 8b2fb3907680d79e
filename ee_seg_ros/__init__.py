"""ee_seg_ros: an adaptive multi-exit segmentation network and its ROS 2 edge."""

__version__ = '0.1.0'
