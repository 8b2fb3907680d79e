"""Rosbag replay evaluation: recorded drives through the node's exact Pipeline, without ROS."""
