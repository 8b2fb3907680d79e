"""Three-stage training: backbone + decoder (MESS stage 1, auxiliary exits), exit heads
distilled on a frozen backbone (MESS stage 2), then a pausing-aware fine-tune of the decoder
(PAUMER) so it tolerates tokens that stopped at different depths.

Each stage runs for a wall-clock budget with a poly learning rate over that budget, so a run
finishes when planned on any machine; checkpoints let an interrupted run resume.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.augment import augment
from ..data.labels import LabelSpec
from ..model import ModelConfig, MultiExitSegmenter
from .evaluate_during_training import evaluate_exits
from .losses import class_weights, exit_distillation, seg_ce, token_distillation

STAGES = ('backbone', 'exits', 'pausing')


@dataclass
class TrainConfig:
    out_dir: str
    minutes: tuple[float, float, float] = (70.0, 8.0, 10.0)
    # optimiser steps per stage instead of minutes: the same run on any machine, busy or not
    steps: tuple[int, int, int] | None = None
    batch: int = 8
    lr: tuple[float, float, float] = (2e-3, 1e-3, 3e-4)
    weight_decay: float = 0.05
    warmup_steps: int = 150
    crop: tuple[int, int] = (256, 352)
    scale: tuple[float, float] = (0.75, 1.5)
    aux_weight: float = 0.4
    pause_range: tuple[float, float] = (0.9, 1.0)   # stage 3: per-image pause thresholds
    threads: int = 2
    device: str = 'auto'
    seed: int = 0
    synthetic_fraction: float = 0.0   # share of each batch drawn from the extra (synthetic) pool
    # stage 1 keeps the stem's batch-norm statistics (a fine-tune on mixed batches would move
    # them off the original data's)
    freeze_norm_stats: bool = False
    eval_every_min: float = 15.0
    checkpoint_every_min: float = 5.0
    model: dict = field(default_factory=dict)


def pick_device(name: str) -> torch.device:
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


class Trainer:
    def __init__(self, cfg: TrainConfig, spec: LabelSpec,
                 train_images: Sequence[np.ndarray], train_labels: Sequence[np.ndarray],
                 val: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
                 extra: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None) -> None:
        """``extra`` is a second pool of labelled frames (the synthetic street scenes) that
        makes up ``cfg.synthetic_fraction`` of each batch on average; the class weights come
        from the main training set alone, so mixing scenes in does not re-weight its loss."""
        self.cfg = cfg
        self.spec = spec
        self.images, self.labels = list(train_images), list(train_labels)
        self.extra_images, self.extra_labels = ((list(extra[0]), list(extra[1])) if extra
                                                else ([], []))
        if not 0.0 <= cfg.synthetic_fraction < 1.0:
            raise ValueError(f'synthetic fraction must be in [0, 1), got {cfg.synthetic_fraction}')
        if cfg.synthetic_fraction > 0 and not self.extra_images:
            raise ValueError('a synthetic fraction above 0 needs synthetic scenes to draw from')
        self.val = val
        self.device = pick_device(cfg.device)
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        mcfg = ModelConfig.from_dict({**cfg.model, 'num_classes': spec.num_classes})
        self.model = MultiExitSegmenter(mcfg).to(self.device)
        self.weight = class_weights(self.labels, spec.num_classes).to(self.device)
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path = self.out / 'checkpoint.pt'
        self.log_path = self.out / 'log.jsonl'
        self.stage = 0
        self.stage_elapsed = 0.0
        self.step = 0
        self.optimizer = self._make_optimizer()

    def reset_decoder(self) -> None:
        """Start the final decoder afresh (fine-tuning a trained bundle): a decoder fitted on the
        deep features, then on tokens paused by the confidence range of stage 3 only, keeps what
        depth adds instead of learning to decode block-2 features everywhere."""
        fresh = MultiExitSegmenter(self.model.cfg).to(self.device)
        self.model.decoder.load_state_dict(fresh.decoder.state_dict())
        self.optimizer = self._make_optimizer()

    # -- plumbing ------------------------------------------------------------------------------
    def _trainable(self) -> list[torch.nn.Parameter]:
        m = self.model
        if STAGES[self.stage] == 'backbone':
            mods = [m]
        elif STAGES[self.stage] == 'exits':
            mods = [m.exits]
        else:
            mods = [m.decoder]
        for p in m.parameters():
            p.requires_grad_(False)
        params = [p for mod in mods for p in mod.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self._trainable()
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        return torch.optim.AdamW([{'params': decay, 'weight_decay': self.cfg.weight_decay},
                                  {'params': no_decay, 'weight_decay': 0.0}],
                                 lr=self.cfg.lr[self.stage])

    def save_checkpoint(self) -> None:
        state = {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                 'stage': self.stage, 'stage_elapsed': self.stage_elapsed, 'step': self.step,
                 'rng': json.dumps(self.rng.bit_generator.state),
                 'config': json.dumps(asdict(self.cfg))}
        tmp = self.ckpt_path.with_suffix('.tmp')
        torch.save(state, tmp)
        tmp.replace(self.ckpt_path)

    def resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state['model'])
        self.stage, self.stage_elapsed, self.step = (
            state['stage'], state['stage_elapsed'], state['step'])
        self.rng.bit_generator.state = json.loads(state['rng'])
        if self.stage < len(STAGES):
            self.optimizer = self._make_optimizer()
            self.optimizer.load_state_dict(state['optimizer'])
        return True

    def log(self, **record) -> None:
        with self.log_path.open('a') as f:
            f.write(json.dumps(record) + '\n')

    def _sources(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The batch's (image, label) pairs before augmentation; each comes from the extra
        pool with probability ``synthetic_fraction`` (no extra draws when it is 0, so runs
        without scenes are unchanged)."""
        idx = self.rng.integers(0, len(self.images), self.cfg.batch)
        pairs = [(self.images[i], self.labels[i]) for i in idx]
        if self.cfg.synthetic_fraction > 0:
            pick = self.rng.random(self.cfg.batch) < self.cfg.synthetic_fraction
            alt = self.rng.integers(0, len(self.extra_images), self.cfg.batch)
            pairs = [(self.extra_images[j], self.extra_labels[j]) if p else pair
                     for pair, p, j in zip(pairs, pick, alt)]
        return pairs

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [augment(image, label, self.cfg.crop, self.cfg.scale, self.rng)
                 for image, label in self._sources()]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(self.device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs])).to(self.device)
        return self.model.prepare(x), y

    def lr_at(self, progress: float) -> float:
        base = self.cfg.lr[self.stage]
        warm = min(1.0, (self.step + 1) / self.cfg.warmup_steps) if self.stage == 0 else 1.0
        return base * warm * max(0.0, 1.0 - progress) ** 0.9

    # -- losses per stage ----------------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        m = self.model
        stage = STAGES[self.stage]
        if stage == 'backbone':
            m.train()
            if self.cfg.freeze_norm_stats:
                for mod in m.modules():
                    if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                        mod.eval()
            out = m.forward_train(x)
            aux = sum(seg_ce(e, _labels_at(y, e), self.weight) for e in out.exits)
            return seg_ce(out.final, y, self.weight) + self.cfg.aux_weight * aux / len(out.exits)
        if stage == 'exits':
            m.eval()
            out = m.forward_train(x)
            teacher = out.final.detach()
            grid = m.cfg.token_grid(*x.shape[-2:])
            return sum(exit_distillation(e, teacher, y, self.weight)
                       + token_distillation(t, teacher, grid)
                       for e, t in zip(out.exits, out.exit_tokens))
        m.eval()
        m.decoder.train()
        thr = torch.empty(x.shape[0], device=x.device).uniform_(*self.cfg.pause_range)
        thr[torch.rand(x.shape[0], device=x.device) < 0.2] = 1.01   # some frames unpaused
        out = m.forward_train(x, pause_thresholds=thr)
        return seg_ce(out.final, y, self.weight)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> MultiExitSegmenter:
        while self.stage < len(STAGES):
            self._run_stage()
            self.stage += 1
            self.stage_elapsed = 0.0
            self.step = 0
            if self.stage < len(STAGES):
                self.optimizer = self._make_optimizer()
            self.save_checkpoint()
        self.model.eval()
        return self.model

    def _run_stage(self) -> None:
        cfg = self.cfg
        budget = cfg.minutes[self.stage] * 60.0
        max_steps = cfg.steps[self.stage] if cfg.steps else None
        name = STAGES[self.stage]
        if max_steps is None:
            bar = tqdm(total=round(budget), desc=f'stage {self.stage + 1}/3 {name}', unit='s',
                       initial=round(self.stage_elapsed), dynamic_ncols=True)
        else:
            bar = tqdm(total=max_steps, desc=f'stage {self.stage + 1}/3 {name}', unit='step',
                       initial=self.step, dynamic_ncols=True)
        last_ckpt = last_eval = time.monotonic()
        t_prev = time.monotonic()
        smooth = None
        images = 0
        while (self.step < max_steps) if max_steps is not None else \
                (self.stage_elapsed < budget):
            lr = self.lr_at(self.step / max_steps if max_steps is not None
                            else self.stage_elapsed / budget)
            for group in self.optimizer.param_groups:
                group['lr'] = lr
            x, y = self.batch()
            loss = self.loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g['params']], 1.0)
            self.optimizer.step()
            self.step += 1
            images += x.shape[0]
            now = time.monotonic()
            dt = now - t_prev
            t_prev = now
            self.stage_elapsed += dt
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f'loss became {value} at stage {name} step {self.step}')
            smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
            bar.update((self.step if max_steps is not None else round(self.stage_elapsed))
                       - bar.n)
            bar.set_postfix(loss=f'{smooth:.3f}', img_s=f'{x.shape[0] / max(dt, 1e-6):.1f}',
                            lr=f'{lr:.1e}')
            if self.step % 20 == 0:
                self.log(stage=name, step=self.step, minutes=self.stage_elapsed / 60,
                         loss=smooth, lr=lr)
            if now - last_ckpt > cfg.checkpoint_every_min * 60:
                self.save_checkpoint()
                last_ckpt = now
            if self.val is not None and now - last_eval > cfg.eval_every_min * 60:
                self._evaluate()
                last_eval = t_prev = time.monotonic()
        bar.close()
        if self.val is not None:
            self._evaluate()

    def _evaluate(self) -> None:
        scores = evaluate_exits(self.model, self.val[0], self.val[1], self.spec.num_classes)
        self.model.train(STAGES[self.stage] == 'backbone')
        self.log(stage=STAGES[self.stage], step=self.step, minutes=self.stage_elapsed / 60,
                 val=scores)
        tqdm.write(f'[{STAGES[self.stage]} {self.stage_elapsed / 60:.1f} min] val mIoU '
                   + ', '.join(f'{k} {v * 100:.1f}' for k, v in scores.items()))


def _labels_at(y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    from .losses import downsample_labels
    return downsample_labels(y, tuple(logits.shape[-2:]))
