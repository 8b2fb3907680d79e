"""Exit policies: the inference-time knobs of one trained network, and the CBT threshold formula.

A policy is plain data so the controller, the CLI and the calibration sweep can name, compare
and store operating points; ``ExitPolicy.parse`` and ``ExitPolicy.spec`` round-trip a string form
(``cbt:0.7,0.99@ratio=0.8,cap=2,out=head``) used on the command line and in the bundle profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

RULES = ('none', 'global', 'cbt', 'entropy')
OUTPUTS = ('decoder', 'head')


@dataclass(frozen=True)
class ExitPolicy:
    """How far one frame runs.

    rule: per-token stop rule applied at every early exit ('none' keeps all tokens).
    threshold: the global confidence threshold (rule 'global').
    alpha, beta: CBT's per-class threshold range (rule 'cbt'); alpha == beta is 'global'.
    entropy: stop a token whose exit entropy (nats) is below this (rule 'entropy', PAUMER).
    frame_ratio: the whole frame leaves at the first exit where this fraction of tokens has
        stopped (MESS); 1.0 leaves only when every token has stopped.
    max_exit: the deepest early exit allowed; the frame leaves there at the latest. None lets
        it run to the final decoder.
    exit_output: when the frame leaves early, 'decoder' runs the final decoder on the tokens as
        they are; 'head' publishes that exit head's own prediction and skips the decoder.
    """

    rule: str = 'none'
    threshold: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    entropy: float = 0.0
    frame_ratio: float = 1.0
    max_exit: int | None = None
    exit_output: str = 'decoder'

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f'unknown stop rule {self.rule!r}; expected one of {RULES}')
        if self.exit_output not in OUTPUTS:
            raise ValueError(f'unknown exit output {self.exit_output!r}; expected {OUTPUTS}')
        for name in ('threshold', 'alpha', 'beta'):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {value}')
        if self.alpha > self.beta:
            raise ValueError(f'CBT needs alpha <= beta, got {self.alpha} > {self.beta}')
        if self.entropy < 0 or not math.isfinite(self.entropy):
            raise ValueError(f'entropy threshold must be finite and >= 0, got {self.entropy}')
        if not 0.0 <= self.frame_ratio <= 1.0:
            raise ValueError(f'frame_ratio must be in [0, 1], got {self.frame_ratio}')
        if self.max_exit is not None and self.max_exit < 0:
            raise ValueError(f'max_exit must be >= 0, got {self.max_exit}')

    @property
    def stops_tokens(self) -> bool:
        return self.rule != 'none'

    def class_thresholds(self, margins: np.ndarray | None, num_classes: int) -> np.ndarray:
        """Per-class confidence thresholds for 'global' and 'cbt' (CBT needs class margins)."""
        if self.rule == 'global':
            return np.full(num_classes, self.threshold, dtype=np.float32)
        if self.rule == 'cbt':
            if margins is None:
                raise ValueError('the CBT rule needs class margins from calibration')
            return cbt_thresholds(margins, self.alpha, self.beta)
        raise ValueError(f'rule {self.rule!r} has no class thresholds')

    def spec(self) -> str:
        """The string form parsed by ``parse``."""
        if self.rule == 'global':
            head = f'global:{self.threshold:g}'
        elif self.rule == 'cbt':
            head = f'cbt:{self.alpha:g},{self.beta:g}'
        elif self.rule == 'entropy':
            head = f'entropy:{self.entropy:g}'
        elif (self.max_exit is not None and self.exit_output == 'head'
              and self.frame_ratio == 1.0):
            return f'exit:{self.max_exit}'
        else:
            head = 'full'
        mods = []
        if self.frame_ratio != 1.0:
            mods.append(f'ratio={self.frame_ratio:g}')
        if self.max_exit is not None:
            mods.append(f'cap={self.max_exit}')
        if self.exit_output != 'decoder':
            mods.append(f'out={self.exit_output}')
        return head + ('@' + ','.join(mods) if mods else '')

    @classmethod
    def parse(cls, text: str) -> 'ExitPolicy':
        """Parse 'full', 'exit:N', 'global:T', 'cbt:ALPHA,BETA', 'entropy:H', each optionally
        followed by '@ratio=R,cap=N,out=head|decoder'. ('adaptive' is resolved by the bundle.)
        """
        text = text.strip()
        head, _, mods = text.partition('@')
        kind, _, arg = head.partition(':')
        try:
            if kind == 'full' and not arg:
                policy = cls()
            elif kind == 'exit':
                policy = cls(max_exit=int(arg), exit_output='head')
            elif kind == 'global':
                policy = cls(rule='global', threshold=float(arg))
            elif kind == 'cbt':
                alpha, beta = (float(v) for v in arg.split(','))
                policy = cls(rule='cbt', alpha=alpha, beta=beta)
            elif kind == 'entropy':
                policy = cls(rule='entropy', entropy=float(arg))
            else:
                raise ValueError('unknown kind')
            for item in filter(None, mods.split(',')):
                key, _, value = item.partition('=')
                if key == 'ratio':
                    policy = replace(policy, frame_ratio=float(value))
                elif key == 'cap':
                    policy = replace(policy, max_exit=int(value))
                elif key == 'out':
                    policy = replace(policy, exit_output=value)
                else:
                    raise ValueError(f'unknown modifier {key!r}')
        except ValueError as err:
            raise ValueError(
                f'cannot parse policy {text!r} ({err}); expected full, exit:N, global:T, '
                'cbt:ALPHA,BETA, entropy:H or adaptive, optionally @ratio=R,cap=N,out=head'
            ) from None
        return policy


def class_margins(mean_probs: np.ndarray) -> np.ndarray:
    """CBT steps 2-3: average the per-exit class prototypes, then top-1 minus top-2 margin.

    mean_probs[n, k] is the mean softmax vector at exit n over training pixels of class k.
    """
    prototypes = np.asarray(mean_probs, dtype=np.float64).mean(axis=0)
    top = np.sort(prototypes, axis=1)
    return (top[:, -1] - top[:, -2]).astype(np.float32)


def cbt_thresholds(margins: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """CBT step 4: the easiest class (largest margin) gets alpha, the hardest gets beta."""
    s = np.asarray(margins, dtype=np.float64)
    span = s.max() - s.min()
    if span <= 0:
        return np.full(s.shape, alpha, dtype=np.float32)
    return ((1.0 - (s - s.min()) / span) * (beta - alpha) + alpha).astype(np.float32)
