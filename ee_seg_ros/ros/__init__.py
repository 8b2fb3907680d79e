"""The ROS 2 edge: the only part of ee_seg_ros that imports rclpy (in node.py and main.py)."""
