"""A tiny network learns synthetic street scenes well above chance in a few hundred steps."""

import numpy as np
import pytest
import torch

from ee_seg_ros.bundle import save_bundle
from ee_seg_ros.cli import main
from ee_seg_ros.data.synthetic import SyntheticScenes, write_camvid_layout
from ee_seg_ros.evaluate import sweep
from ee_seg_ros.runtime import Segmenter
from ee_seg_ros.train.trainer import Trainer, TrainConfig

from conftest import TINY


def test_tiny_model_learns_synthetic_scenes(tmp_path):
    size = (96, 128)
    train = SyntheticScenes(64, seed=1, size=size)
    images, labels = train.load_all()
    # a step budget, not minutes: the test must learn as much on a busy machine as on an idle
    # one (24 s of stage 1 was about 330 steps here when idle, and 40 under load)
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), steps=(300, 60, 40),
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


def _pools():
    real = SyntheticScenes(6, seed=3, size=(64, 64)).load_all()
    extra = SyntheticScenes(5, seed=4, size=(64, 64)).load_all()
    return real, extra


def test_synthetic_scenes_make_up_their_share_of_each_batch(tmp_path):
    (images, labels), extra = _pools()
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), model=dict(TINY), synthetic_fraction=0.3)
    trainer = Trainer(cfg, SyntheticScenes.spec, images, labels, extra=extra)
    extra_ids = {id(a) for a in extra[1]}
    drawn = [id(label) in extra_ids for _ in range(200) for _, label in trainer._sources()]
    assert len(drawn) == 200 * cfg.batch
    assert 0.25 < sum(drawn) / len(drawn) < 0.35
    # the class weights stay those of the main training set
    plain = Trainer(TrainConfig(out_dir=str(tmp_path / 'plain'), model=dict(TINY)),
                    SyntheticScenes.spec, images, labels)
    assert torch.equal(trainer.weight, plain.weight)


def test_no_synthetic_share_leaves_the_batches_unchanged(tmp_path):
    (images, labels), extra = _pools()

    def make(name, **kw):
        return Trainer(TrainConfig(out_dir=str(tmp_path / name), model=dict(TINY)),
                       SyntheticScenes.spec, images, labels, **kw)
    with_pool, without = make('a', extra=extra), make('b')
    for _ in range(5):
        xa, ya = with_pool.batch()
        xb, yb = without.batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match='needs synthetic scenes'):
        Trainer(TrainConfig(out_dir=str(tmp_path / 'c'), model=dict(TINY),
                            synthetic_fraction=0.5), SyntheticScenes.spec, images, labels)


def test_train_command_mixes_scenes_at_the_datasets_size(tmp_path, tiny_model, capsys):
    root = tmp_path / 'data'
    write_camvid_layout(root, 'train', 3, seed=1, size=(48, 80))
    bundle = save_bundle(tmp_path / 'init', tiny_model, SyntheticScenes.spec)
    run = tmp_path / 'run'
    assert main(['train', '--root', str(root), '--out', str(run), '--val-split', '',
                 '--minutes', '0.02,0.01,0.01', '--batch', '2', '--init-from', str(bundle),
                 '--synthetic', '3', '--synthetic-seed', '7']) == 0
    out = capsys.readouterr().out
    assert 'mixing 3 synthetic scenes (80x48, seed 7) into 50% of each batch' in out
    assert (run / 'bundle' / 'model.safetensors').exists()
    for bad, message in ((['--synthetic-fraction', '0.5'], 'needs --synthetic N'),
                         (['--synthetic', '-2'], 'number of scenes'),
                         (['--synthetic', '3', '--synthetic-fraction', '1.5'], 'between 0 and 1')):
        assert main(['train', '--root', str(root), '--out', str(tmp_path / 'bad'),
                     '--val-split', '', '--init-from', str(bundle), *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize('freeze', [False, True])
def test_frozen_norm_statistics_stay_put_in_stage_one(tmp_path, tiny_model, freeze):
    """--freeze-norm-stats: a fine-tune's stage 1 trains every weight but leaves the stem's
    batch-norm running statistics at the bundle's (without it they move to the new batches)."""
    train = SyntheticScenes(8, seed=1, size=(64, 64))
    images, labels = train.load_all()
    cfg = TrainConfig(out_dir=str(tmp_path / 'run'), steps=(3, 0, 0), batch=2, crop=(64, 64),
                      scale=(1.0, 1.0), eval_every_min=99, model=dict(TINY),
                      freeze_norm_stats=freeze)
    trainer = Trainer(cfg, train.spec, images, labels)
    trainer.model.load_state_dict(tiny_model.state_dict())
    trainer.run()
    before, after = tiny_model.state_dict(), trainer.model.state_dict()
    stats = [k for k in before if k.endswith(('running_mean', 'running_var'))]
    assert stats
    moved = [k for k in stats if not torch.equal(before[k], after[k])]
    assert (moved == []) == freeze
    weights = [k for k in before if k.endswith('.weight') and 'bn' not in k]
    assert any(not torch.equal(before[k], after[k]) for k in weights)
