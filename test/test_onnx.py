"""ONNX Runtime deployment: stage graphs, parity with PyTorch, running without torch."""

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# a marker, not a module-level importorskip: launch_testing's pytest plugin (colcon test)
# turns a module-level skip into a skip of the whole session
pytestmark = pytest.mark.skipif(importlib.util.find_spec('onnxruntime') is None,
                                reason='onnxruntime is not installed')

from ee_seg_ros.bundle import BundleError, load_bundle, save_bundle, write_manifest  # noqa
from ee_seg_ros.data.labels import CAMVID  # noqa: E402
from ee_seg_ros.data.synthetic import SyntheticScenes  # noqa: E402
from ee_seg_ros.export_onnx import export_onnx  # noqa: E402
from ee_seg_ros.runtime import Segmenter  # noqa: E402

POLICIES = ['full', 'exit:0', 'full@cap=1', 'global:0.5', 'cbt:0.3,0.7', 'entropy:1.5',
            'cbt:0.3,0.7@ratio=0.2,out=head', 'adaptive']


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    import torch

    from conftest import TINY
    from ee_seg_ros.model import ModelConfig, MultiExitSegmenter
    torch.manual_seed(0)
    model = MultiExitSegmenter(ModelConfig(**TINY)).eval()
    with torch.no_grad():
        for head in model.exits:
            head.cls.weight.mul_(60.0)
    path = save_bundle(tmp_path_factory.mktemp('onnx') / 'bundle', model, CAMVID,
                       calibration={'margins': np.linspace(0.2, 0.9, 11).tolist()},
                       profile={'points': [], 'recommended': 'cbt:0.3,0.8'})
    export_onnx(path)
    return path


def test_export_records_graphs_opset_and_checksums(exported):
    b = load_bundle(exported)
    meta = json.loads((exported / 'onnx.json').read_text())
    graphs = meta['precisions']['fp32']
    assert meta['opset'] == 17
    assert set(graphs) == {'embed', 'decoder', 'blocks_0', 'blocks_1', 'blocks_2', 'blocks_3',
                           'exit_0_tokens', 'exit_0_dense', 'exit_1_tokens', 'exit_1_dense',
                           'exit_2_tokens', 'exit_2_dense', 'post_4', 'post_8'}
    assert graphs['blocks_1']['dynamic_axes']['tokens'] == {'0': 'n'}
    for g in graphs.values():
        assert g['file'] in b.manifest['files']
    assert 'onnx.json' in b.manifest['files']


def test_parity_with_pytorch_at_several_operating_points(exported):
    torch_seg = Segmenter(str(exported))
    ort_seg = Segmenter(str(exported), backend='onnxruntime')
    frames = SyntheticScenes(4, seed=7, size=(90, 125))
    paused = 0
    for policy in POLICIES:
        for image, _ in frames:
            a, b = torch_seg.segment(image, policy), ort_seg.segment(image, policy)
            assert a.exit_taken == b.exit_taken, policy
            assert (a.labels == b.labels).mean() >= 0.999, policy
            assert np.abs(a.confidence.astype(int) - b.confidence).max() <= 2
            np.testing.assert_array_equal(a.exit_map, b.exit_map)
            assert a.gmacs == b.gmacs
            paused += a.stopped_fraction[-1] > 0
    assert paused > 5        # pausing really happened in the compared runs


def test_sessions_for_a_loaded_cpu_are_made_ahead_and_used_only_when_asked(exported):
    from ee_seg_ros.control import ControllerSettings, Signals
    from ee_seg_ros.runtime import Frame, Pipeline
    seg = Segmenter(str(exported), threads=2, backend='onnxruntime')
    pipe = Pipeline(seg, ControllerSettings(latency_budget_ms=1000.0, cpu_high_threads=1))
    two = seg.backend.sessions
    assert set(seg.backend._by_threads) == {1, 2}        # made at start, not switched to
    pipe.update_settings(ControllerSettings(latency_budget_ms=1000.0, cpu_high_threads=3))
    assert set(seg.backend._by_threads) == {1, 2, 3} and seg.backend.sessions is two
    image = SyntheticScenes(1, seed=3, size=(64, 80))[0][0]
    assert pipe.step(Frame(image), Signals(cpu_load=1.0)).decision.threads == 3
    assert seg.backend.sessions is seg.backend._by_threads[3]
    pipe.step(Frame(image), Signals(cpu_load=0.0))
    assert seg.backend.sessions is two
    with pytest.raises(ValueError):
        pipe.update_settings(ControllerSettings(cpu_high_threads=-1))


def test_int8_graphs_run(exported):
    export_onnx(exported, precision='int8')
    seg = Segmenter(str(exported), backend='onnxruntime', precision='int8')
    ref = Segmenter(str(exported), backend='onnxruntime')
    image, _ = SyntheticScenes(1, seed=3, size=(90, 125))[0]
    a, b = seg.segment(image, 'full'), ref.segment(image, 'full')
    assert a.labels.shape == (90, 125) and (a.labels == b.labels).mean() > 0.5


def test_runs_where_pytorch_is_not_installed(exported, tmp_path):
    """A meta-path hook makes `import torch` fail, as on a machine without it."""
    script = textwrap.dedent(f'''
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == 'torch' or name.startswith('torch.'):
                    raise ModuleNotFoundError("No module named 'torch'", name='torch')
        sys.meta_path.insert(0, NoTorch())
        from ee_seg_ros.runtime import Segmenter
        from ee_seg_ros.data.synthetic import SyntheticScenes
        seg = Segmenter({str(exported)!r}, backend='onnxruntime')
        image, _ = SyntheticScenes(1, seed=1, size=(64, 96))[0]
        r = seg.segment(image, 'cbt:0.3,0.7')
        assert r.labels.shape == (64, 96)
        assert 'torch' not in sys.modules
        try:
            Segmenter({str(exported)!r}, backend='torch')
        except Exception as err:
            print('torch backend:', err)
        print('ok')
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'ok' in out.stdout and 'needs PyTorch' in out.stdout


@pytest.fixture
def copy(exported, tmp_path):
    dst = tmp_path / 'bundle'
    shutil.copytree(exported, dst)
    return dst


def test_missing_or_corrupt_graph_is_refused_at_load(copy):
    (copy / 'blocks_2.onnx').write_bytes(b'not a graph')
    with pytest.raises(BundleError, match='checksum mismatch.*blocks_2.onnx'):
        Segmenter(str(copy), backend='onnxruntime')
    write_manifest(copy)                     # checksums agree, content still broken
    with pytest.raises(BundleError, match='cannot load ONNX graph.*blocks_2.onnx'):
        Segmenter(str(copy), backend='onnxruntime')
    (copy / 'blocks_2.onnx').unlink()
    with pytest.raises(BundleError, match='missing bundle file.*blocks_2.onnx'):
        Segmenter(str(copy), backend='onnxruntime')


def test_graph_not_matching_the_bundle_is_refused(copy):
    shutil.copy(copy / 'exit_0_tokens.onnx', copy / 'decoder.onnx')
    write_manifest(copy)
    with pytest.raises(BundleError, match='decoder.onnx takes inputs'):
        Segmenter(str(copy), backend='onnxruntime')


def test_bundle_without_graphs_or_without_onnxruntime(tmp_path, tiny_model, exported):
    plain = save_bundle(tmp_path / 'plain', tiny_model, CAMVID)
    with pytest.raises(BundleError, match='no ONNX graphs.*export-onnx'):
        Segmenter(str(plain), backend='onnxruntime')
    script = textwrap.dedent(f'''
        import sys
        sys.modules['onnxruntime'] = None
        from ee_seg_ros.runtime import Segmenter
        try:
            Segmenter({str(exported)!r}, backend='onnxruntime')
        except Exception as err:
            print(type(err).__name__, err)
    ''')
    out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         timeout=60)
    assert 'BundleError' in out.stdout and 'needs onnxruntime' in out.stdout


def test_both_backends_run_the_shared_loop_with_the_same_stage_calls(exported):
    """Symmetry: each backend hands its stages to model.adaptive's loop, which decides alike."""
    class Recorder:
        def __init__(self, inner, log):
            self._inner, self._log = inner, log

        def __getattr__(self, name):
            attr = getattr(self._inner, name)
            if name not in ('embed', 'blocks', 'exit_tokens', 'exit_dense', 'decode'):
                return attr

            def call(*args):
                sizes = [len(a) for a in args if hasattr(a, 'shape') and len(a.shape) == 2]
                self._log.append((name, *(a for a in args if isinstance(a, int)), *sizes))
                return attr(*args)
            return call

    image, _ = SyntheticScenes(1, seed=5, size=(90, 125))[0]
    logs = []
    for backend in ('torch', 'onnxruntime'):
        seg = Segmenter(str(exported), backend=backend)
        logs.append([])
        seg.backend.stages = Recorder(seg.backend.stages, logs[-1])
        seg.segment(image, 'cbt:0.3,0.7')
        seg.segment(image, 'exit:1')
    assert logs[0] == logs[1]
    blocks = [entry for entry in logs[0] if entry[0] == 'blocks']
    assert blocks[1][2] < blocks[0][2]          # tokens stopped at exit 0 left the sequence
    assert ('exit_dense', 1, 48) in logs[0]                     # exit:1 published the head
