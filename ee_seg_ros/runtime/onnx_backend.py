"""The ONNX Runtime backend: the stage graphs of a bundle, orchestrated in numpy.

Needs neither PyTorch nor anything that imports it: the pausing loop is model.adaptive; the
position table, upsampling, class ids and confidence are in the exported graphs.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from ..bundle import ONNX_META, Bundle, BundleError
from ..model import ExitPolicy, ModelConfig
from ..model.adaptive import numpy_confidence, run_adaptive
from ..model.inputs import pixel_stats, prepare_frame
from .backend import BackendOutput


class OnnxStages:
    """The adaptive loop's stages (model.adaptive.Stages) on a bundle's stage sessions; the
    backend swaps ``sessions`` when the thread count changes."""

    def __init__(self, cfg: ModelConfig, sessions: dict) -> None:
        self.cfg = cfg
        self.sessions = sessions

    def run(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        session = self.sessions[name]
        return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})

    def embed(self, x: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        f4, f8, tokens = self.run('embed', x)
        p = self.cfg.patch
        return f4, f8, tokens, (x.shape[2] // p, x.shape[3] // p)

    def blocks(self, stage: int, tokens: np.ndarray) -> np.ndarray:
        return self.run(f'blocks_{stage}', np.ascontiguousarray(tokens))[0]

    def exit_tokens(self, stage: int, tokens: np.ndarray) -> np.ndarray:
        return self.run(f'exit_{stage}_tokens', np.ascontiguousarray(tokens))[0]

    def exit_dense(self, stage: int, token_logits: np.ndarray, grid: tuple[int, int],
                   f8: np.ndarray) -> np.ndarray:
        grid_logits = np.ascontiguousarray(token_logits.T.reshape(1, -1, *grid))
        return self.run(f'exit_{stage}_dense', grid_logits, f8)[0]

    def decode(self, tokens: np.ndarray, grid: tuple[int, int], f8: np.ndarray,
               f4: np.ndarray) -> np.ndarray:
        return self.run('decoder', np.ascontiguousarray(tokens), f8, f4)[0]

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def full(self, n: int, value: int) -> np.ndarray:
        return np.full(n, value, dtype=np.int64)

    def zeros(self, shape: tuple[int, int]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def copy(self, x: np.ndarray) -> np.ndarray:
        return x.copy()

    confidence = staticmethod(numpy_confidence)


class OnnxBackend:
    """Bundle stage graphs on ONNX Runtime, one session set per thread count."""

    name = 'onnxruntime'

    def __init__(self, bundle: Bundle, device: str = 'cpu', threads: int | None = None,
                 precision: str = 'fp32') -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BundleError('the onnxruntime backend needs onnxruntime: '
                              'pip install "ee_seg_ros[onnx]"') from None
        self.cfg = cfg = ModelConfig.from_dict(bundle.config)
        meta_file = bundle.path / ONNX_META
        if not meta_file.exists():
            raise BundleError(f'bundle {bundle.path} has no ONNX graphs; run '
                              f'ee-seg export-onnx --model {bundle.path}')
        meta = json.loads(meta_file.read_text())
        graphs = meta.get('precisions', {}).get(precision)
        if not graphs:
            raise BundleError(f'bundle {bundle.path} has no {precision} ONNX graphs; run '
                              f'ee-seg export-onnx --model {bundle.path} --precision {precision}')
        self._ort = ort
        self._graphs = graphs
        self._bundle_path = bundle.path
        self._providers = ['CPUExecutionProvider']
        if device.startswith('cuda') and 'CUDAExecutionProvider' in \
                ort.get_available_providers():
            self._providers.insert(0, 'CUDAExecutionProvider')
        self.threads = threads or 2
        self._by_threads = {self.threads: self._load_sessions(self.threads)}
        self.stages = OnnxStages(cfg, self._by_threads[self.threads])
        self._check_shapes()
        self._pixel_stats = pixel_stats(cfg)

    def _load_sessions(self, threads: int) -> dict:
        """One session per stage graph; intra-op threads are fixed per session in ONNX Runtime,
        so each thread count the controller asks for gets its own set (made once)."""
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_mem_pattern = False          # token counts change from frame to frame
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        sessions = {}
        for name, spec in self._graphs.items():
            file = self._bundle_path / spec['file']
            try:
                session = ort.InferenceSession(str(file), options, providers=self._providers)
            except Exception as err:  # onnxruntime raises its own exception types
                raise BundleError(f'cannot load ONNX graph {file}: {err}') from None
            names = [i.name for i in session.get_inputs()]
            if names != spec['inputs']:
                raise BundleError(f'ONNX graph {file} takes inputs {names}, the bundle '
                                  f'expects {spec["inputs"]}')
            sessions[name] = session
        return sessions

    def prepare_threads(self, threads: int) -> None:
        if threads not in self._by_threads:
            self._by_threads[threads] = self._load_sessions(threads)

    def set_threads(self, threads: int) -> None:
        self.prepare_threads(threads)
        self.stages.sessions = self._by_threads[threads]

    @property
    def sessions(self) -> dict:
        """The stage sessions the next frame runs on."""
        return self.stages.sessions

    def _check_shapes(self) -> None:
        cfg = self.cfg
        expected = {'embed': None, 'decoder': None, 'post_4': None, 'post_8': None}
        expected.update({f'blocks_{s}': None for s in range(cfg.num_exits + 1)})
        expected.update({f'exit_{s}_{k}': None for s in range(cfg.num_exits)
                         for k in ('tokens', 'dense')})
        missing = sorted(set(expected) - set(self.sessions))
        if missing:
            raise BundleError(f'ONNX graphs missing from the bundle: {missing} (graphs from an '
                              'older export? run ee-seg export-onnx on the bundle again)')
        for s in range(cfg.num_exits + 1):
            dim = self.sessions[f'blocks_{s}'].get_inputs()[0].shape[-1]
            if dim != cfg.embed_dim:
                raise BundleError(f'ONNX graph blocks_{s} works on width {dim}, the bundle '
                                  f'config says {cfg.embed_dim}')
        k = self.sessions['exit_0_tokens'].get_outputs()[0].shape[-1]
        if k != cfg.num_classes:
            raise BundleError(f'ONNX exit heads predict {k} classes, the bundle has '
                              f'{cfg.num_classes}')

    # -- one frame -----------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return prepare_frame(image, self.cfg, self._pixel_stats)

    def infer(self, image: np.ndarray, policy: ExitPolicy, thresholds: np.ndarray | None,
              guard: Callable[[int], bool] | None) -> BackendOutput:
        h, w = image.shape[:2]
        x = self.preprocess(image)
        out = run_adaptive(self.stages, self.cfg, x, policy, thresholds, guard)
        post = f'post_{x.shape[2] // out.logits.shape[2]}'
        labels, conf = self.stages.run(post, np.ascontiguousarray(out.logits))
        labels, conf = labels[0, :h, :w], conf[0, :h, :w]
        dtype = np.uint8 if self.cfg.num_classes <= 256 else np.uint16
        return BackendOutput(labels=labels.astype(dtype),
                             confidence=np.round(conf * 255.0).astype(np.uint8),
                             exit_ids=out.exit_ids, exit_taken=out.exit_taken,
                             stopped_fraction=out.stopped_fraction, macs=out.macs,
                             guard_stop=out.guard_stop)
