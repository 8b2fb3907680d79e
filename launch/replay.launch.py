"""Replay a bag into the live node and record what it publishes (real ROS 2):

    ros2 launch ee_seg_ros replay.launch.py bag:=drive_bag record:=drive_out
    ee-seg score drive_out --labels drive_bag --out drive_score

The bag plays with --clock and the node uses sim time, so stamps and staleness follow the bag.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    bag = LaunchConfiguration('bag')
    record = LaunchConfiguration('record')
    namespace = LaunchConfiguration('namespace')
    return LaunchDescription([
        DeclareLaunchArgument('bag', description='bag to play'),
        DeclareLaunchArgument('record', description='output bag folder for the recording'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw'),
        DeclareLaunchArgument('latency_budget_ms', default_value='100.0'),
        DeclareLaunchArgument('namespace', default_value=''),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback rate'),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution(
                [FindPackageShare('ee_seg_ros'), 'launch', 'segmenter.launch.py'])),
            launch_arguments={'image_topic': LaunchConfiguration('image_topic'),
                              'latency_budget_ms': LaunchConfiguration('latency_budget_ms'),
                              'namespace': namespace, 'use_sim_time': 'true'}.items()),
        ExecuteProcess(cmd=['ros2', 'bag', 'record', '-o', record, '--regex',
                            '.*ee_segmenter/(mask|exit_stats)$|.*labels$'],
                       output='screen'),
        ExecuteProcess(cmd=['ros2', 'bag', 'play', bag, '--clock', '--rate',
                            LaunchConfiguration('rate')],
                       output='screen'),
    ])
