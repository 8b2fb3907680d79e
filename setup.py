"""ament_python package that is also a plain pip-installable Python package."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'ee_seg_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    package_data={package_name: ['models/default/*']},
    include_package_data=True,
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'setuptools',
        'numpy',
        'opencv-python-headless',
        'safetensors',
        'rosbags>=0.10',
        'tqdm',
        'matplotlib',
        'psutil',
    ],
    extras_require={
        # training, calibration and the torch backend (install a build for your machine first)
        'torch': ['torch>=2.1'],
        # pyyaml: the launch and parameter files' tests; ruff and mypy: test/test_lint.py
        'test': ['pytest', 'torch>=2.1', 'onnx', 'onnxruntime', 'pyyaml', 'ruff', 'mypy'],
        # ONNX Runtime deployment; PyTorch is then needed only to export
        'onnx': ['onnxruntime'],
        # fleet replay on Ray (`ee-seg replay --ray`): a local Ray or a cluster
        'fleet': ['ray>=2.9'],
        # ROS 2 Jazzy's rclpy, messages and Fast DDS from PyPI: a real rclpy without a ROS
        # install (for tests, CI and pip-only users)
        'ros-wheels': [
            'ros-jazzy-rclpy',
            'ros-jazzy-rmw-fastrtps-cpp',
            'ros-jazzy-sensor-msgs',
            'ros-jazzy-std-msgs',
            'ros-jazzy-diagnostic-msgs',
            'ros-jazzy-rcl-interfaces',
        ],
    },
    tests_require=['pytest'],
    zip_safe=False,
    maintainer='ee_seg_ros maintainers',
    maintainer_email='maintainers@ee-seg-ros.invalid',
    description='Adaptive multi-exit semantic segmentation for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'ee-seg = ee_seg_ros.cli:main',
            'segmenter = ee_seg_ros.ros.main:main',
        ],
    },
)
