"""Start the ee_segmenter node: ros2 launch ee_seg_ros segmenter.launch.py [arg:=value ...].

`latency_budget_ms`, `use_sim_time`, `cpu_load_source`, `reliable_input` and `cameras`
(``cameras:="['front','rear']"``) override the params file only when given; with cameras,
remap each ``N/image`` as usual (``image_topic`` is for the one-camera node). A params file
that does not exist, a bad argument, or a node that exits with an error (a bad parameter or a
bundle that does not load) ends the launch with a non-zero exit code.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from ee_seg_ros.ros.launch_args import LaunchArgumentError, exit_problem, node_parameters


def _on_exit(event, context):
    problem = exit_problem(event.action.name, event.returncode,
                           getattr(context, 'is_shutdown', False))
    if problem:
        # launch turns an exception in an event handler into exit code 1 (a Shutdown event
        # alone would exit 0)
        raise LaunchArgumentError(problem)


def _start(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    image_topic = LaunchConfiguration('image_topic')
    node = Node(
        package='ee_seg_ros',
        executable='segmenter',
        name='ee_segmenter',
        namespace=LaunchConfiguration('namespace'),
        output='screen',
        emulate_tty=True,
        parameters=node_parameters(arg('params_file'), arg('latency_budget_ms'),
                                   arg('use_sim_time'), arg('cameras'),
                                   arg('cpu_load_source'), arg('reliable_input')),
        remappings=[
            ('image', image_topic),
            ('image/compressed', [image_topic, '/compressed']),
        ],
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_exit))]


def generate_launch_description() -> LaunchDescription:
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
        DeclareLaunchArgument('latency_budget_ms', default_value='',
                              description='Per-frame latency budget in milliseconds; when '
                                          'given, overrides params_file.'),
        DeclareLaunchArgument('cameras', default_value='',
                              description="Camera names, e.g. \"['front','rear']\": topics "
                                          'N/image in, ~/N/mask ... out; when given, '
                                          'overrides params_file (default: one camera on '
                                          'image_topic).'),
        DeclareLaunchArgument('cpu_load_source', default_value='',
                              description='topic, diagnostics, local, topic+local, '
                                          'diagnostics+local or none; when given, overrides '
                                          'params_file.'),
        DeclareLaunchArgument('reliable_input', default_value='',
                              description='true: a reliable camera subscription (no frame '
                                          'lost on the way; for bag replay), false: best '
                                          'effort (a live camera); when given, overrides '
                                          'params_file.'),
        DeclareLaunchArgument('use_sim_time', default_value='',
                              description='Use /clock (bag replay with --clock); when given, '
                                          'overrides params_file.'),
        OpaqueFunction(function=_start),
    ])
