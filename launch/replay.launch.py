"""Replay a bag into the live node and record what it publishes (real ROS 2):

    ros2 launch ee_seg_ros replay.launch.py bag:=drive_bag record:=drive_out
    ee-seg score drive_out --labels drive_bag --out drive_score

The recorder starts with the node; the bag plays only once the node has said it is ready, so
no frame is lost to start-up. The node runs on the wall clock, as on a robot; with
`use_sim_time:=true` the player publishes /clock at `clock_hz` and the node follows the bag's
time (for a `rate` far from 1, where staleness should follow the bag). When the bag ends and
the node has had `drain_s` to finish its last frame, the launch shuts down and the recorder
closes its bag.
"""

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, ExecuteProcess,
                            IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler,
                            TimerAction)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from ee_seg_ros.ros.launch_args import drain_seconds, niced, play_command

READY = b'ee_segmenter ready'


def _play(context):
    """The player, and the shutdown once it has played the bag to the end."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    play = ExecuteProcess(cmd=play_command(arg('bag'), arg('rate'), arg('play_delay_s'),
                                           arg('use_sim_time'), arg('clock_hz'),
                                           arg('harness_nice')),
                          output='screen', name='bag_play')
    return [play, RegisterEventHandler(OnProcessExit(target_action=play, on_exit=[TimerAction(
        period=drain_seconds(arg('drain_s')),
        actions=[EmitEvent(event=Shutdown(reason='bag played to the end'))])]))]


def _record(context):
    """``ros2 bag record`` of the node's masks and statistics, and the bag's labels."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    return [ExecuteProcess(
        cmd=[*niced(arg('harness_nice')), 'ros2', 'bag', 'record', '-o', arg('record'),
             '--storage', arg('storage'), '--regex',
             '.*ee_segmenter/(mask|exit_stats)$|.*labels$'],
        # (no --disable-keyboard-controls: Humble's recorder lacks it)
        output='screen', name='bag_record')]


def _check_play(context):
    """A bad player argument ends the launch at once, not after the node's warm-up."""
    _play(context)
    return []


def generate_launch_description() -> LaunchDescription:
    arg = LaunchConfiguration
    started = []

    def play_when_ready(event):
        # the node logs this line once, after its publishers exist and the network is warm
        if READY in event.text and not started:
            started.append(True)
            return [OpaqueFunction(function=_play)]
        return None

    return LaunchDescription([
        DeclareLaunchArgument('bag', description='bag to play'),
        DeclareLaunchArgument('record', description='output bag folder for the recording'),
        DeclareLaunchArgument('storage', default_value='sqlite3',
                              description='storage of the recording: sqlite3 or mcap'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare('ee_seg_ros'), 'config', 'segmenter.yaml']),
            description='parameter file for the node'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw'),
        DeclareLaunchArgument('latency_budget_ms', default_value='',
                              description='when given, overrides params_file'),
        DeclareLaunchArgument('namespace', default_value=''),
        DeclareLaunchArgument('cpu_load_source', default_value='topic+local',
                              description="the node's cpu_load.source: by default the bag's "
                                          'recorded load or, when higher, what this machine '
                                          'really has taken (the player and the recorder '
                                          'among it), so the controller never plans blind'),
        DeclareLaunchArgument('rate', default_value='1.0', description='playback rate'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='true: the player publishes /clock and the node '
                                          "follows the bag's time; false: the wall clock, as "
                                          'on a robot (no /clock to wake the node)'),
        DeclareLaunchArgument('clock_hz', default_value='10',
                              description='with use_sim_time: how often the player publishes '
                                          "/clock; every message wakes the node's executor"),
        DeclareLaunchArgument('harness_nice', default_value='10',
                              description='how many nice steps below the node the player and '
                                          'the recorder run (0-19), so they take the cores '
                                          'the node leaves idle and not its own: on a robot '
                                          'they are not there'),
        DeclareLaunchArgument('play_delay_s', default_value='5.0',
                              description='wait between the player starting and its first '
                                          'message, so that the node and the recorder have '
                                          'matched its publishers (with unicast-only discovery '
                                          'this took over 2 s in about 1 run of 3)'),
        DeclareLaunchArgument('drain_s', default_value='3.0',
                              description='time after the bag ends before shutting down'),
        OpaqueFunction(function=_check_play),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution(
                [FindPackageShare('ee_seg_ros'), 'launch', 'segmenter.launch.py'])),
            launch_arguments={'params_file': arg('params_file'),
                              'image_topic': arg('image_topic'),
                              'latency_budget_ms': arg('latency_budget_ms'),
                              'cpu_load_source': arg('cpu_load_source'),
                              # reliable: with --wait-for-all-acked the player only exits once
                              # the node has every frame; `ee-seg score --labels BAG` counts
                              # any frame lost all the same
                              'reliable_input': 'true',
                              'namespace': arg('namespace'),
                              'use_sim_time': arg('use_sim_time')}.items()),
        OpaqueFunction(function=_record),
        RegisterEventHandler(OnProcessIO(on_stdout=play_when_ready,
                                         on_stderr=play_when_ready)),
    ])
