"""The per-entry outputs a record keeps beside each prediction (``save_probabilities``), and how
they are derived from a model's logits or softmax probabilities in NumPy.

Four float16 values per (model, epoch, example): the true-class probability, the largest
other-class probability, the error norm ||softmax - onehot||_2 and the logit margin (the true
logit minus the largest other): what ``agreebook.scores``' probability-based scores read
(cartography, the margin, EL2N, AUM).  ``member.entry_outputs`` computes the same from torch
logits during training (tested equal); ``Record.from_arrays`` calls these on a user's arrays.
"""
from __future__ import annotations

import numpy as np

# each output -> its arrays' names in record.npz ("<split>_<name>"); "probabilities" is the
# true-class probability, the name records have always used
OUTPUT_KEYS = {"probability": "probabilities", "other_probability": "other_probabilities",
               "error_norm": "error_norms", "logit_margin": "logit_margins"}


def outputs_from_logits(logits, labels):
    """Per-entry outputs the probability-based scores need, from logits (..., n_examples,
    n_classes) and labels (n_examples,): a dict of arrays (..., n_examples) with the true-class
    probability, the largest other-class probability, the error norm ||softmax - onehot||_2 and
    the logit margin (true logit minus the largest other).  Labels < 0 (out-of-sample inputs)
    give 0 for all four.

    Example:
        >>> out = outputs_from_logits(np.array([[2.0, 0.0, 0.0]]), np.array([0]))
        >>> round(float(out["probability"][0]), 3), round(float(out["logit_margin"][0]), 1)
        (0.787, 2.0)
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim < 2 or z.shape[-2] != y.shape[0]:
        raise ValueError(f"logits must be (..., n_examples, n_classes) with n_examples = {y.shape[0]}; got {z.shape}")
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return _outputs(z, p, y)


def outputs_from_probabilities(probabilities, labels):
    """As ``outputs_from_logits`` from softmax probabilities (..., n_examples, n_classes), each row
    within 1e-2 of summing to 1 (renormalised); the logit margin is then the log-probability
    margin, which equals the logit margin exactly."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim < 2 or p.shape[-2] != y.shape[0]:
        raise ValueError(f"probabilities must be (..., n_examples, n_classes) with n_examples = {y.shape[0]}; "
                         f"got {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(-1), 1, atol=1e-2):
        raise ValueError("probabilities must be non-negative and sum to 1 over the classes (softmax outputs)")
    p = p / p.sum(-1, keepdims=True)  # a low-precision softmax, off by up to 1e-2, renormalised
    with np.errstate(divide="ignore"):
        return _outputs(np.log(p), p, y)


def _outputs(z, p, y):
    k = z.shape[-1]
    if y.max(initial=-1) >= k:
        raise ValueError(f"labels reach {y.max()}, but the outputs have {k} classes")
    known = y >= 0
    idx = np.where(known, y, 0)
    onehot = np.eye(k, dtype=bool)[idx]  # (n_examples, k): broadcasts over leading axes
    at = np.broadcast_to(idx[:, None], z.shape[:-1] + (1,))
    true_p = np.take_along_axis(p, at, -1)[..., 0]
    other_p = np.where(onehot, -np.inf, p).max(-1)
    true_z = np.take_along_axis(z, at, -1)[..., 0]
    other_z = np.where(onehot, -np.inf, z).max(-1)
    err = np.sqrt(((p - onehot) ** 2).sum(-1))
    out = {"probability": true_p, "other_probability": other_p, "error_norm": err,
           "logit_margin": np.clip(true_z - other_z, -1e4, 1e4)}  # a probability of 0 gives -inf
    return {name: np.where(known, v, 0.0) for name, v in out.items()}
