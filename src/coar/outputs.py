"""Model output functions f_M(z) (paper eq. 5 and App. B): one scalar per example.

  margin        correct-class margin  logit[y] - max_{j != y} logit[j]          logits [R, K], y [R]
  logit:<c>     a fixed class's logit (MIMIC-CXR setting)                       logits [R, K]
  token_margin  mean over positions of the next-token margin (language models)  logits [R, T, V],
                labels [R, T] token ids; position t is scored on labels[:, t+1]; labels < 0 are ignored
  answer_margin two-answer zero-shot margin (Phi-2 on BoolQ)                    logits [R, T, V],
                targets [R, >=3]: correct and other answer token ids, last prompt position
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .errors import CoarError, ShapeError

if TYPE_CHECKING:  # torch is imported where a function needs it: checking an output's name (coar.settings, the
    import torch  # workflow's plan while Snakemake builds its DAG) then imports no torch


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


def answer_margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct-class margin of a two-answer zero-shot task: one value per row,

        logits[r, targets[r, 2], targets[r, 0]] - logits[r, targets[r, 2], targets[r, 1]]

    logits [R, T, V]; targets [R, >=3] as built by boolq_examples (0: correct answer token id, 1: other answer
    token id, 2: index of the last prompt token; the rest -1 and unused). With two classes the paper's
    correct-class margin (eq. 5; App. B.2 uses it for Phi-2 on BoolQ) is exactly this difference of logits;
    it also equals the difference of the two answers' log-probabilities that the harness compares.
    """
    if logits.dim() != 3 or targets.dim() != 2 or targets.shape[0] != logits.shape[0] or targets.shape[1] < 3:
        raise ShapeError(f"answer_margin needs logits [R, T, V] and targets [R, >=3], got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    import torch

    t = targets.long()
    pos, correct, other = t[:, 2], t[:, 0], t[:, 1]
    R, T, V = logits.shape
    if (pos < 0).any() or (pos >= T).any():
        raise ShapeError(f"answer_margin: a prompt position (targets[:, 2]) is outside [0, {T})")
    if (torch.minimum(correct, other) < 0).any() or (torch.maximum(correct, other) >= V).any():
        raise ShapeError(f"answer_margin: an answer token id (targets[:, 0:2]) is outside the vocabulary [0, {V})")
    rows = torch.arange(R, device=logits.device)
    last = logits[rows, pos].float()  # [R, V]
    return last[rows, correct] - last[rows, other]


def get_output_fn(spec: str) -> Callable:
    """'margin' | 'token_margin' | 'answer_margin' | 'logit:<class index>'."""
    if spec == "margin":
        return margin
    if spec == "token_margin":
        return token_margin
    if spec == "answer_margin":
        return answer_margin
    if spec.startswith("logit:"):
        try:
            return class_logit(int(spec.split(":", 1)[1]))
        except ValueError:
            pass
    raise CoarError(f"unknown output function {spec!r}: use 'margin', 'token_margin', 'answer_margin' or 'logit:<class>'")
