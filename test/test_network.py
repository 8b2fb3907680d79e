import numpy as np
import pytest
import torch

from ee_seg_ros.model import ExitPolicy, ModelConfig, MultiExitSegmenter
from ee_seg_ros.model.inputs import prepare_frame
from ee_seg_ros.model.network import token_confidence

from conftest import random_rgb


def _tokens_seen_by_blocks(model, run):
    seen = []
    hooks = [b.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
             for b in model.blocks]
    try:
        result = run()
    finally:
        for h in hooks:
            h.remove()
    return seen, result


def _median_exit0_confidence(model, frame):
    with torch.no_grad():
        out = model.forward_train(frame)
    conf, _, _ = token_confidence(out.exit_tokens[0][0])
    return float(conf.median())


def test_rules_off_equal_the_plain_full_depth_network(tiny_model, frame):
    with torch.no_grad():
        plain = tiny_model(frame)
    out = tiny_model.forward_adaptive(frame, ExitPolicy())
    assert out.exit_taken == tiny_model.cfg.num_exits
    assert torch.equal(out.logits, plain)
    assert out.macs == tiny_model.full_macs(96, 128)
    assert out.stopped_fraction == [0.0, 0.0, 0.0]


def test_stopped_tokens_leave_later_blocks_and_macs_drop(tiny_model, frame):
    thr = _median_exit0_confidence(tiny_model, frame)
    policy = ExitPolicy(rule='global', threshold=thr)
    th = torch.full((11,), thr)
    full_counts, full = _tokens_seen_by_blocks(
        tiny_model, lambda: tiny_model.forward_adaptive(frame, ExitPolicy()))
    counts, out = _tokens_seen_by_blocks(
        tiny_model, lambda: tiny_model.forward_adaptive(frame, policy, th))
    n = (96 // 16) * (128 // 16)
    assert full_counts == [n] * 4
    assert counts[0] == n                       # block 1 runs before the first exit
    assert counts[1] < n                        # about half stopped after exit 0
    assert counts == sorted(counts, reverse=True)
    assert 0.3 < out.stopped_fraction[0] < 0.7
    assert out.macs < full.macs
    stopped_at_0 = int((out.exit_ids == 0).sum())
    assert stopped_at_0 == n - counts[1]


def test_training_mask_matches_inference_removal(tiny_model, frame):
    """Hiding paused tokens from attention (training) equals removing them (inference)."""
    thr = _median_exit0_confidence(tiny_model, frame)
    policy = ExitPolicy(rule='global', threshold=thr)
    out = tiny_model.forward_adaptive(frame, policy, torch.full((11,), thr))
    with torch.no_grad():
        masked = tiny_model.forward_train(frame, pause_thresholds=torch.tensor([thr])).final
    torch.testing.assert_close(out.logits, masked, atol=1e-5, rtol=1e-4)


def test_frame_exit_skips_remaining_blocks(tiny_model, frame):
    thr = _median_exit0_confidence(tiny_model, frame)
    th = torch.full((11,), thr)
    policy = ExitPolicy(rule='global', threshold=thr, frame_ratio=0.2)
    counts, out = _tokens_seen_by_blocks(
        tiny_model, lambda: tiny_model.forward_adaptive(frame, policy, th))
    assert out.exit_taken == 0
    assert len(counts) == 1                     # blocks 2..4 never ran
    head = tiny_model.forward_adaptive(frame, ExitPolicy(rule='global', threshold=thr,
                                                         frame_ratio=0.2, exit_output='head'),
                                       th)
    assert head.exit_taken == 0
    assert head.macs < out.macs                 # the decoder was skipped too
    assert head.logits.shape[-2:] == (96 // 8, 128 // 8)


def test_cap_on_deepest_exit_and_exit_alone(tiny_model, frame):
    capped = tiny_model.forward_adaptive(frame, ExitPolicy.parse('full@cap=1'))
    assert capped.exit_taken == 1
    alone = tiny_model.forward_adaptive(frame, ExitPolicy.parse('exit:1'))
    assert alone.exit_taken == 1 and alone.macs < capped.macs
    with torch.no_grad():
        train_out = tiny_model.forward_train(frame)
    torch.testing.assert_close(alone.logits, train_out.exits[1], atol=1e-5, rtol=1e-4)


def test_deadline_guard_stops_the_frame(tiny_model, frame):
    asked = []

    def guard(exit_index: int) -> bool:
        asked.append(exit_index)
        return exit_index == 1

    out = tiny_model.forward_adaptive(frame, ExitPolicy(), guard=guard)
    assert asked == [0, 1]
    assert out.exit_taken == 1 and out.guard_stop


def test_entropy_rule_stops_low_entropy_tokens(tiny_model, frame):
    with torch.no_grad():
        out = tiny_model.forward_train(frame)
    _, _, ent = token_confidence(out.exit_tokens[0][0])
    h = float(ent.median())
    res = tiny_model.forward_adaptive(frame, ExitPolicy(rule='entropy', entropy=h))
    assert 0.3 < res.stopped_fraction[0] < 0.7


def test_bn_folding_keeps_outputs(tiny_config, frame):
    torch.manual_seed(0)
    model = MultiExitSegmenter(tiny_config)
    model.train()
    for _ in range(3):                          # give BatchNorm non-trivial statistics
        model.forward_train(torch.randn(2, 3, 96, 128))
    model.eval()
    with torch.no_grad():
        ref = model(frame)
        fused = model.fuse()(frame)
    torch.testing.assert_close(fused, ref, atol=1e-4, rtol=1e-4)


def test_odd_sizes_are_padded_and_batches_refused(tiny_model):
    out = tiny_model.forward_adaptive(torch.randn(1, 3, 90, 125), ExitPolicy())
    assert tuple(out.exit_ids.shape) == (6, 8)
    with pytest.raises(ValueError, match='batch 1'):
        tiny_model.forward_adaptive(torch.randn(2, 3, 96, 128), ExitPolicy())


def test_config_round_trips_and_reads_bundles_with_the_old_extra_field():
    cfg = ModelConfig(num_classes=11)
    assert 'extra' not in cfg.to_dict()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({**cfg.to_dict(), 'extra': {}}) == cfg
    with pytest.raises(ValueError, match='unknown model config keys'):
        ModelConfig.from_dict({**cfg.to_dict(), 'patch_size': 8})


def test_config_validation():
    with pytest.raises(ValueError, match='exit_after'):
        ModelConfig(num_classes=11, exit_after=(4, 2))
    with pytest.raises(ValueError, match='exits must sit'):
        ModelConfig(num_classes=11, depth=4, exit_after=(1, 4))


def test_one_input_preparation_for_numpy_and_torch(tiny_model):
    """The ONNX backend's numpy path and the network's own prepare feed identical numbers."""
    cfg = tiny_model.cfg
    image = random_rgb(90, 125, seed=3)
    x = prepare_frame(image, cfg)
    assert x.shape == (1, 3, 96, 128) and x.dtype == np.float32
    assert cfg.padded_size(90, 125) == (96, 128) and cfg.token_grid(90, 125) == (6, 8)
    assert not x[..., 90:, :].any() and not x[..., 125:].any()      # zero padding
    expected = (image[0, 0].astype(np.float64) - cfg.mean) / cfg.std
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-6)
    prepared = tiny_model.prepare(torch.from_numpy(image)[None])
    assert torch.equal(prepared, torch.from_numpy(x))
    batch = tiny_model.prepare(torch.from_numpy(np.stack([image, image[::-1]])))
    assert batch.shape == (2, 3, 96, 128) and torch.equal(batch[:1], prepared)
    assert tiny_model.pad(prepared) is prepared                      # prepared: left alone
    assert not [k for k in tiny_model.state_dict() if k.startswith('pixel_')]   # not weights


def test_plain_forward_runs_no_exit_head_and_equals_the_training_pass(tiny_model, frame):
    calls = []
    hooks = [h.register_forward_hook(lambda *a: calls.append(1)) for h in
             [head.cls for head in tiny_model.exits] + [head.refine for head in tiny_model.exits]]
    try:
        with torch.no_grad():
            plain = tiny_model(frame)
    finally:
        for h in hooks:
            h.remove()
    assert calls == []
    with torch.no_grad():
        assert torch.equal(plain, tiny_model.forward_train(frame).final)
