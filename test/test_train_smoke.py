"""A tiny network learns synthetic street scenes well above chance in well under a minute."""

import numpy as np

from ee_seg_ros.bundle import save_bundle
from ee_seg_ros.data.synthetic import SyntheticScenes
from ee_seg_ros.evaluate import sweep
from ee_seg_ros.runtime import Segmenter
from ee_seg_ros.train.trainer import Trainer, TrainConfig

from conftest import TINY


def test_tiny_model_learns_synthetic_scenes(tmp_path):
    size = (96, 128)
    train = SyntheticScenes(64, seed=1, size=size)
    images, labels = train.load_all()
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), minutes=(24 / 60, 5 / 60, 4 / 60),
                      batch=8, lr=(3e-3, 2e-3, 5e-4), warmup_steps=10, crop=(96, 128),
                      scale=(0.8, 1.25), eval_every_min=99, model=dict(TINY))
    trainer = Trainer(cfg, train.spec, images, labels)
    model = trainer.run()
    bundle = save_bundle(tmp_path / 'bundle', model, train.spec)

    segmenter = Segmenter(str(bundle))
    held_out = SyntheticScenes(12, seed=99, size=size)
    stats = sweep(segmenter, held_out, ['full', 'exit:0'], warmup=0, progress=False)
    full = stats['full'].summary(train.spec.class_names, 3)
    # chance: ~9% pixel accuracy and ~5% mIoU for 11 classes
    assert full['pixel_accuracy'] > 60.0
    assert full['miou'] > 20.0
    assert stats['exit:0'].confusion.pixel_accuracy() > 0.4

    # the finished run resumes as finished: nothing trains again
    again = Trainer(cfg, train.spec, images, labels)
    assert again.resume() and again.stage == 3
    log_lines = (tmp_path / 'run' / 'log.jsonl').read_text().splitlines()
    assert len(log_lines) > 0
    assert np.isfinite(trainer.weight.numpy()).all()


def test_reset_decoder_refits_only_the_decoder(tmp_path, tiny_model):
    import torch
    train = SyntheticScenes(4, seed=1, size=(64, 64))
    images, labels = train.load_all()
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), model=dict(TINY))
    trainer = Trainer(cfg, train.spec, images, labels)
    trainer.model.load_state_dict(tiny_model.state_dict())
    trainer.reset_decoder()
    before, after = tiny_model.state_dict(), trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith('decoder.') for k in changed)
