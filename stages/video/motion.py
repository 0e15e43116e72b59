"""Motion from pixels: dense optical flow between a clip's sampled frames, a global (camera) fit.

For each pair of adjacent sampled frames (source frames i < j, gap g = j - i):
  - frozen when their mean absolute luma difference is below `frozen_level` (grey levels): no flow;
  - otherwise DIS optical flow (OpenCV) on luma at `flow_short_side` pixels, rescaled to pixels of the
    sampled frames per source frame (divided by g), then a least-squares similarity fit over the inner
    80% of the frame (borders: content entering or leaving a pan has no true flow):
        u = tx + a·x − b·y,   v = ty + b·x + a·y      (x, y from the frame centre)
    tx, ty: translation; a: zoom rate; b: rotation rate, per source frame. Refit once without the points
    the first fit explains worst (a moving subject must not pull the camera's estimate).
  - a jump when the flow cannot explain the change: after warping by the flow, the mean absolute luma
    error is still above `jump_level` (a slide change, a missed cut, motion faster than the gap allows).

Per clip (K sampled frames, K − 1 pairs):
  motion_flow_px          mean flow magnitude, pixels of the sampled frames per source frame
  camera_pan_px, camera_tilt_px, camera_zoom, camera_rotation   mean fit parameters (px/frame, 1/frame, rad/frame)
  camera_motion           static | pan_left | pan_right | tilt_up | tilt_down | zoom_in | zoom_out | rotate |
                          shaky | complex — the camera's movement (content moving left = the camera pans right)
  camera_motion_confidence  how cleanly the fit supports that class, in [0, 1]
  motion_subject_share    share of the flow the camera fit does not explain (subjects moving), in [0, 1]
  motion_frozen_fraction  share of pairs with no change; motion_jump_fraction: share of jumps
  motion_frozen           frozen or slideshow: some pairs frozen and nearly all others jumps

Flow between sampled frames (not adjacent ones) is what makes this cheap: split already decoded them.
Its limit: motion of more than ~15% of the frame between two samples is seen as a jump, not as motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_CLASSES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "rotate",
                  "shaky", "complex")


@dataclass
class MotionSettings:
    flow_short_side: int = 128  # flow is computed at this short side (never upscaled)
    static_px: float = 0.1  # camera motion below this (px per source frame at the frames' size): static
    frozen_level: float = 0.5  # mean |Δluma| (0-255) below this: a frozen pair
    jump_level: float = 20.0  # mean |Δluma| left after warping by the flow above this: a jump
    dominant_share: float = 0.6  # the leading component's share of camera motion needed to name it
    consistent_share: float = 0.5  # |mean motion| / mean |motion| over pairs below this: shaky


@dataclass
class PairMotion:
    frozen: bool
    jump: bool = False
    flow: float = 0.0  # mean |flow|, px per source frame
    residual: float = 0.0  # mean |flow − fit|
    fit: float = 0.0  # mean |fit|
    params: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # tx, ty, a, b


def clip_motion(frames: np.ndarray, indices: list[int], settings: MotionSettings) -> dict[str, object]:
    """Motion columns of one clip from its (K, H, W, 3) uint8 RGB frames and their source frame numbers."""
    from stages.video.pixels import luma

    if len(frames) < 2:
        return {}
    y = luma(frames)  # (K, H, W) 0-255
    scale = min(1.0, settings.flow_short_side / min(y.shape[1:]))
    radius = float(np.mean(np.hypot(*_grid(y.shape[1:]))))  # mean distance from the centre (px)
    pairs = [pair_motion(y[k], y[k + 1], max(1, indices[k + 1] - indices[k]), scale, settings)
             for k in range(len(y) - 1)]
    return summarise(pairs, radius, settings)


def pair_motion(a: np.ndarray, b: np.ndarray, gap: int, scale: float, settings: MotionSettings) -> PairMotion:
    import cv2

    if float(np.mean(np.abs(a - b))) < settings.frozen_level:
        return PairMotion(frozen=True)
    h, w = a.shape
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small_a, small_b = (cv2.resize(x, size, interpolation=cv2.INTER_AREA).astype(np.uint8) for x in (a, b))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(small_a, small_b, None)  # (h', w', 2) in small pixels, a → b
    warped = cv2.remap(small_b.astype(np.float32), *_remap(flow), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    jump = float(np.mean(np.abs(_inner(warped) - _inner(small_a.astype(np.float32))))) > settings.jump_level
    flow = flow * (w / size[0]) / gap  # px of the sampled frames per source frame
    xs, ys = _grid(flow.shape[:2], w / size[0])
    u, v, xs, ys = (_inner(z)[::2, ::2].ravel() for z in (flow[..., 0], flow[..., 1], xs, ys))  # 1/4 suffices
    params, fitted = _similarity(u, v, xs, ys)
    error = np.hypot(u - fitted[0], v - fitted[1])
    keep = error <= np.quantile(error, 0.8)  # refit without the worst-explained fifth (moving subjects)
    params, _ = _similarity(u[keep], v[keep], xs[keep], ys[keep])
    fitted = _apply(params, xs, ys)
    return PairMotion(frozen=False, jump=jump, flow=float(np.mean(np.hypot(u, v))),
                      residual=float(np.mean(np.hypot(u - fitted[0], v - fitted[1]))),
                      fit=float(np.mean(np.hypot(*fitted))), params=tuple(float(p) for p in params))


def summarise(pairs: list[PairMotion], radius: float, settings: MotionSettings) -> dict[str, object]:
    n = len(pairs)
    frozen = sum(p.frozen for p in pairs) / n
    jumps = sum(p.jump for p in pairs) / n
    moving = [p for p in pairs if not p.frozen and not p.jump]  # a jump's flow is not motion
    flow = float(np.mean([p.flow for p in moving])) if moving else 0.0
    residual = float(np.mean([p.residual for p in moving])) if moving else 0.0
    params = np.mean([p.params for p in moving], axis=0) if moving else np.zeros(4)
    fit = float(np.mean([p.fit for p in moving])) if moving else 0.0
    tx, ty, zoom, rot = (float(x) for x in params)
    camera, confidence = classify(tx, ty, zoom, rot, fit, radius, settings)
    return {
        "motion_flow_px": flow,
        "camera_pan_px": tx, "camera_tilt_px": ty, "camera_zoom": zoom, "camera_rotation": rot,
        "camera_motion": camera, "camera_motion_confidence": confidence,
        "motion_subject_share": min(1.0, residual / flow) if flow > 1e-6 else 0.0,
        "motion_frozen_fraction": frozen, "motion_jump_fraction": jumps,
        "motion_frozen": bool(frozen == 1.0 or (frozen >= 0.25 and frozen + jumps >= 0.75)),
    }


def classify(tx: float, ty: float, zoom: float, rot: float, fit: float, radius: float,
             settings: MotionSettings) -> tuple[str, float]:
    """Camera class from the mean fit (px/frame at `radius` from the centre) and the mean |fit| per pair."""
    parts = {"translate": float(np.hypot(tx, ty)), "zoom": abs(zoom) * radius, "rotate": abs(rot) * radius}
    total = sum(parts.values())
    if fit < settings.static_px:
        return "static", float(1.0 - fit / settings.static_px)
    consistency = min(1.0, total / fit)  # pairs moving one way add up; a shake cancels out
    if consistency < settings.consistent_share:
        return "shaky", float(1.0 - consistency)
    leader = max(parts, key=parts.get)
    share = parts[leader] / total
    if share < settings.dominant_share:
        return "complex", float(1.0 - share)
    if leader == "translate":
        name = ("pan_left" if tx > 0 else "pan_right") if abs(tx) >= abs(ty) else ("tilt_up" if ty > 0 else "tilt_down")
    elif leader == "zoom":
        name = "zoom_in" if zoom > 0 else "zoom_out"
    else:
        name = "rotate"
    return name, float(share * consistency)


def _similarity(u, v, xs, ys):
    """Least-squares (tx, ty, a, b) of u = tx + a·x − b·y, v = ty + b·x + a·y; and the fitted (u, v)."""
    ones, zeros = np.ones_like(xs), np.zeros_like(xs)
    design = np.concatenate([np.stack([ones, zeros, xs, -ys], 1), np.stack([zeros, ones, ys, xs], 1)])
    params = np.linalg.lstsq(design, np.concatenate([u, v]), rcond=None)[0]
    return params, _apply(params, xs, ys)


def _apply(params, xs, ys):
    tx, ty, a, b = params
    return tx + a * xs - b * ys, ty + b * xs + a * ys


def _grid(shape, step: float = 1.0):
    """Pixel-centre coordinates from the frame centre, (H, W) each, in units of `step` source pixels."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return (xs - (w - 1) / 2) * step, (ys - (h - 1) / 2) * step


def _inner(z: np.ndarray) -> np.ndarray:
    h, w = z.shape[:2]
    return z[h // 10: h - h // 10, w // 10: w - w // 10]


def _remap(flow: np.ndarray):
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow[..., 0], ys + flow[..., 1]
