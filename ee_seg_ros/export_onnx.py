"""Export a bundle's network as ONNX stage graphs, for the ONNX Runtime backend.

Patch pausing changes the number of tokens between stages, so the network is exported in
pieces: the stem with the position table, each group of blocks between exits (with a dynamic
token axis), each exit head, the final decoder and the post-processing. The adaptive loop
(model.adaptive) runs between them in numpy.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .bundle import ONNX_META, load_bundle, write_manifest

OPSET = 17


class _Embed(nn.Module):
    """Stem, position table resized to the token grid and added, tokens flattened: in the graph
    rather than in numpy between sessions, where they cost more than they do here."""

    def __init__(self, model) -> None:
        super().__init__()
        self.stem = model.stem
        self.pos_embed = model.pos_embed

    def forward(self, x):
        f4, f8, g = self.stem(x)
        pos = F.interpolate(self.pos_embed, size=(g.shape[2], g.shape[3]), mode='bilinear',
                            align_corners=False)
        return f4, f8, (g + pos).flatten(2)[0].transpose(0, 1)


class _Blocks(nn.Module):
    def __init__(self, blocks) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, tokens):
        x = tokens[None]
        for block in self.blocks:
            x = block(x)
        return x[0]


class _ExitTokens(nn.Module):
    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def forward(self, tokens):
        return self.head.token_logits(tokens)


class _ExitDense(nn.Module):
    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def forward(self, token_logits_grid, f8):
        return self.head.dense_logits(token_logits_grid, f8)


class _Decoder(nn.Module):
    def __init__(self, decoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens, f8, f4):
        grid = (f8.shape[2] // 2, f8.shape[3] // 2)
        return self.decoder(tokens[None], grid, f8, f4)


class _Postprocess(nn.Module):
    """Upsample logits to the padded input, then class ids and winning probability: done in
    the graph because in numpy it cost more than the decoder itself."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, logits):
        up = F.interpolate(logits, scale_factor=float(self.scale), mode='bilinear',
                           align_corners=False)
        top, labels = up.max(dim=1)
        conf = torch.exp(up - top[:, None]).sum(dim=1).reciprocal()
        return labels, conf


def graph_specs(model, size: tuple[int, int] = (96, 128)) -> dict[str, tuple]:
    """name -> (module, example inputs, input names, output names, dynamic axes)."""
    cfg = model.cfg
    h, w = size
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        f4, f8, g = model.stem(x)
    n = g.shape[2] * g.shape[3]
    tok = torch.zeros(n, cfg.embed_dim)
    hw = {2: 'h', 3: 'w'}
    specs = {'embed': (_Embed(model), (x,), ['image'], ['f4', 'f8', 'tokens'],
                       {'image': hw, 'f4': {2: 'h4', 3: 'w4'}, 'f8': {2: 'h8', 3: 'w8'},
                        'tokens': {0: 'n'}})}
    for s, r in enumerate(model.stages()):
        specs[f'blocks_{s}'] = (_Blocks([model.blocks[i] for i in r]), (tok,), ['tokens'],
                                ['out'], {'tokens': {0: 'n'}, 'out': {0: 'n'}})
    for s, head in enumerate(model.exits):
        specs[f'exit_{s}_tokens'] = (_ExitTokens(head), (tok,), ['tokens'], ['logits'],
                                     {'tokens': {0: 'n'}, 'logits': {0: 'n'}})
        grid_logits = torch.zeros(1, cfg.num_classes, g.shape[2], g.shape[3])
        specs[f'exit_{s}_dense'] = (_ExitDense(head), (grid_logits, f8),
                                    ['token_logits_grid', 'f8'], ['logits'],
                                    {'token_logits_grid': {2: 'gh', 3: 'gw'},
                                     'f8': {2: 'h8', 3: 'w8'}, 'logits': {2: 'h8', 3: 'w8'}})
    specs['decoder'] = (_Decoder(model.decoder), (tok, f8, f4), ['tokens', 'f8', 'f4'],
                        ['logits'], {'tokens': {0: 'n'}, 'f8': {2: 'h8', 3: 'w8'},
                                     'f4': {2: 'h4', 3: 'w4'}, 'logits': {2: 'h4', 3: 'w4'}})
    for scale in (4, 8):
        k = cfg.num_classes
        example = torch.zeros(1, k, h // scale, w // scale)
        specs[f'post_{scale}'] = (_Postprocess(scale), (example,), ['logits'],
                                  ['labels', 'confidence'],
                                  {'logits': {2: 'lh', 3: 'lw'}, 'labels': {1: 'h', 2: 'w'},
                                   'confidence': {1: 'h', 2: 'w'}})
    return specs


def export_onnx(bundle_path: str | Path, precision: str = 'fp32', opset: int = OPSET) -> dict:
    """Write the stage graphs into the bundle and record them (opset, shapes, checksums)."""
    if precision not in ('fp32', 'int8'):
        raise ValueError(f'precision must be fp32 or int8, got {precision!r}')
    path = Path(bundle_path)
    meta_path = path / ONNX_META
    if precision == 'int8' and not (meta_path.exists() and 'fp32' in json.loads(
            meta_path.read_text()).get('precisions', {})):
        export_onnx(path, 'fp32', opset)   # int8 graphs are quantised from the fp32 ones
    bundle = load_bundle(path)
    model = bundle.load_model(fuse=True)
    suffix = '' if precision == 'fp32' else '.int8'
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {'precisions': {}}
    graphs = {}
    for name, (module, inputs, in_names, out_names, axes) in graph_specs(model).items():
        file = path / f'{name}{suffix}.onnx'
        if precision == 'int8':
            _quantize(path / f'{name}.onnx', file)
        else:
            # the TorchScript exporter handles dynamic token axes in well under a second per
            # graph (the dynamo one takes seconds); it warns that it is deprecated
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter('ignore')
                torch.onnx.export(module.eval(), inputs, str(file), input_names=in_names,
                                  output_names=out_names, dynamic_axes=axes,
                                  opset_version=opset, dynamo=False)
        graphs[name] = {'file': file.name, 'inputs': in_names, 'outputs': out_names,
                        'dynamic_axes': {k: {str(a): d for a, d in v.items()}
                                         for k, v in axes.items()}}
    meta['opset'] = opset
    meta['precisions'][precision] = graphs
    meta['embed_dim'] = model.cfg.embed_dim
    meta['num_classes'] = model.cfg.num_classes
    meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + '\n')
    write_manifest(path)
    return meta


def _quantize(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the matrix multiplications (weights int8, activations
    quantised on the fly): the usual choice for transformer blocks on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     op_types_to_quantize=['MatMul', 'Gemm'])
