"""Independent NumPy oracle for the official GR-1 loss terms (float64 throughout).

Notation: B batch, L window length, N patches per image, D = p*p*3 values per patch,
m[b, t] in {0, 1} the attention (validity) mask of the window, k = fwd_pred_next_n.

Video loss, computed separately for each camera (static: obs_preds / obs_targets,
hand: obs_hand_preds / obs_hand_targets).  The prediction made at step t is compared
with the target of step t + k; the pair is weighted by the validity of the *target*
step::

    w[b, t]    = m[b, t + k]                                   for t = 0 .. L-k-1
    loss_video = sum_{b,t} w[b,t] * sum_{n,d} (P[b,t,n,d] - T[b,t+k,n,d])^2
                 / (N * D * sum_{b,t} w[b,t])

i.e. the mean squared error over all valid frames x patches x values (per-frame mean
then mean over valid frames gives the same number).  Targets are used as given (the
model already returns them per-patch normalised when norm-pix is on).

Arm loss: Smooth-L1 with beta = 1 on the act_dim-1 arm dims, masked mean over valid
steps (action at step t is supervised by the target at step t, mask m[b, t])::

    d = pred - target;  s(d) = 0.5 d^2 if |d| < 1 else |d| - 0.5
    loss_arm = sum_{b,t} m[b,t] * sum_j s(d[b,t,j]) / (A * sum_{b,t} m[b,t]),  A = arm dims

Gripper loss: binary cross-entropy with logits x against y in {0, 1} (y = (a + 1) / 2
for a CALVIN gripper action a in {-1, +1}), masked mean over valid steps::

    bce(x, y) = max(x, 0) - x * y + log(1 + exp(-|x|))
    loss_gripper = sum_{b,t} m[b,t] * bce(x[b,t], y[b,t]) / sum_{b,t} m[b,t]

A term whose denominator is zero (no valid element) is returned as 0.0.  A term whose
prediction is None (target switched off) is returned as None.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np


def _np(x) -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def video_loss_numpy(preds, targets, mask, next_n: int = 3) -> Optional[float]:
    p, t, m = _np(preds), _np(targets), _np(mask)
    if p is None or t is None:
        return None
    b, l, n, d = p.shape
    if l <= next_n:
        return 0.0
    w = m[:, next_n:]  # (B, L-k) validity of the target frames
    sq = ((p[:, : l - next_n] - t[:, next_n:]) ** 2).sum(axis=(2, 3))  # (B, L-k)
    den = w.sum() * n * d
    return float((sq * w).sum() / den) if den > 0 else 0.0


def smooth_l1_numpy(pred, target, mask, beta: float = 1.0) -> Optional[float]:
    p, t, m = _np(pred), _np(target), _np(mask)
    if p is None:
        return None
    diff = np.abs(p - t)
    el = np.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)
    den = m.sum() * p.shape[-1]
    return float((el.sum(axis=-1) * m).sum() / den) if den > 0 else 0.0


def bce_with_logits_numpy(logits, target01, mask) -> Optional[float]:
    x, y, m = _np(logits), _np(target01), _np(mask)
    if x is None:
        return None
    x = x.reshape(m.shape)
    y = y.reshape(m.shape)
    el = np.maximum(x, 0.0) - x * y + np.log1p(np.exp(-np.abs(x)))
    den = m.sum()
    return float((el * m).sum() / den) if den > 0 else 0.0


def official_losses_numpy(outputs: Mapping[str, object], arm_targets, gripper_targets,
                          attention_mask, fwd_pred_next_n: int = 3) -> Dict[str, Optional[float]]:
    """Official GR-1 loss terms from a forward output dict (see module docstring).

    outputs: dict with obs_preds, obs_targets, obs_hand_preds, obs_hand_targets,
      arm_action_preds (B, L, 6), gripper_action_preds (B, L, 1) (torch or numpy, None
      allowed); arm_targets (B, L, 6); gripper_targets (B, L) or (B, L, 1) in {0, 1};
      attention_mask (B, L).
    Returns {'loss_video', 'loss_video_hand', 'loss_arm', 'loss_gripper'} (floats or None).
    No weighting between terms is applied (the paper sums them with unit weights;
    GR1-Training multiplies the arm term by 100).
    """
    return {
        "loss_video": video_loss_numpy(outputs.get("obs_preds"), outputs.get("obs_targets"),
                                       attention_mask, fwd_pred_next_n),
        "loss_video_hand": video_loss_numpy(outputs.get("obs_hand_preds"),
                                            outputs.get("obs_hand_targets"),
                                            attention_mask, fwd_pred_next_n),
        "loss_arm": smooth_l1_numpy(outputs.get("arm_action_preds"), arm_targets, attention_mask),
        "loss_gripper": bce_with_logits_numpy(outputs.get("gripper_action_preds"),
                                              gripper_targets, attention_mask),
    }
