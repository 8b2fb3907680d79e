"""Start the ee_segmenter node: ros2 launch ee_seg_ros segmenter.launch.py [arg:=value ...]."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    params_file = LaunchConfiguration('params_file')
    image_topic = LaunchConfiguration('image_topic')
    return LaunchDescription([
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('ee_seg_ros'), 'config', 'segmenter.yaml']),
            description='Parameter file for the node.'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node and its topics.'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Camera topic (image/compressed is derived from it).'),
        DeclareLaunchArgument('latency_budget_ms', default_value='100.0',
                              description='Per-frame latency budget in milliseconds.'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use /clock (bag replay with --clock).'),
        Node(
            package='ee_seg_ros',
            executable='segmenter',
            name='ee_segmenter',
            namespace=LaunchConfiguration('namespace'),
            output='screen',
            emulate_tty=True,
            parameters=[
                params_file,
                {
                    # a launch argument arrives as YAML text: `30` would become an integer
                    'latency_budget_ms': ParameterValue(
                        LaunchConfiguration('latency_budget_ms'), value_type=float),
                    'use_sim_time': ParameterValue(
                        LaunchConfiguration('use_sim_time'), value_type=bool),
                },
            ],
            remappings=[
                ('image', image_topic),
                ('image/compressed', [image_topic, '/compressed']),
            ],
        ),
    ])
