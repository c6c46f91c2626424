"""Model output functions f_M(z) (paper eq. 5 and App. B): one scalar per example.

  margin        correct-class margin  logit[y] - max_{j != y} logit[j]          logits [R, K], y [R]
  logit:<c>     a fixed class's logit (MIMIC-CXR setting)                       logits [R, K]
  token_margin  mean over positions of the next-token margin (language models)  logits [R, T, V],
                labels [R, T] token ids; position t is scored on labels[:, t+1]; labels < 0 are ignored
"""
from __future__ import annotations

from typing import Callable

import torch

from .errors import CoarError, ShapeError


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    correct = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.unsqueeze(-1), float("-inf"))
    return correct - others.amax(-1)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 2 or y.shape != logits.shape[:1]:
        raise ShapeError(f"margin needs logits [R, classes] and labels [R], got {tuple(logits.shape)} and {tuple(y.shape)}")
    return _margin(logits.float(), y.long())


def class_logit(cls: int) -> Callable:
    def f(logits: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if logits.dim() != 2 or not 0 <= cls < logits.shape[1]:
            raise ShapeError(f"logit:{cls} needs logits [R, classes>{cls}], got {tuple(logits.shape)}")
        return logits[:, cls].float()

    f.__name__ = f"logit:{cls}"
    return f


def token_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ShapeError(f"token_margin needs logits [R, T, V] and labels [R, T], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    nxt = labels[:, 1:].long()
    valid = nxt >= 0
    m = _margin(logits[:, :-1].float(), nxt.clamp_min(0))
    count = valid.sum(-1)
    if (count == 0).any():
        raise ShapeError("token_margin: a sequence has no scored positions (all labels < 0)")
    return (m * valid).sum(-1) / count


def get_output_fn(spec: str) -> Callable:
    """'margin' | 'token_margin' | 'answer_margin' | 'logit:<class index>'."""
    if spec == "margin":
        return margin
    if spec == "token_margin":
        return token_margin
    if spec == "answer_margin":  # BoolQ: correct vs other answer token after the prompt (coar.data.hf_text)
        from .data.hf_text import answer_margin

        return answer_margin
    if spec.startswith("logit:"):
        try:
            return class_logit(int(spec.split(":", 1)[1]))
        except ValueError:
            pass
    raise CoarError(f"unknown output function {spec!r}: use 'margin', 'token_margin', 'answer_margin' or 'logit:<class>'")
