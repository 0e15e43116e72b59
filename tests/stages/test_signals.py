"""Stage `signals` on synthetic clips whose truth is known: a pan of known px/frame, a tilt, a zoom into a
still picture, a static shot with a moving object, a frozen clip, a slideshow, black and blurred clips, and
text of known size burned in."""
import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.typed import ConfigError
from stages.signals import Signals

H, W = 180, 320  # split's sampled frames at decode_short_side 180 (the demo's)
INDICES = [0, 12, 24, 36, 48, 60]  # source frame numbers of the K = 6 sampled frames


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus fine grain: structure at every scale, as optical flow needs."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    return np.clip(coarse.astype(np.int16) + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)


SCENE = texture(H + 400, W + 800)


def window(dx: float = 0, dy: float = 0) -> list[np.ndarray]:
    """A camera moving over SCENE: content moves by (-dx, -dy) px per source frame."""
    return [SCENE[200 + round(dy * i): 200 + round(dy * i) + H, 400 + round(dx * i): 400 + round(dx * i) + W]
            for i in INDICES]


def zoom(rate: float) -> list[np.ndarray]:
    """A zoom into a still picture: scale (1 + rate) per source frame about the centre."""
    import cv2

    still = SCENE[200:200 + H, 400:400 + W]
    return [cv2.warpAffine(still, cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), 0, (1 + rate) ** i), (W, H),
                           borderMode=cv2.BORDER_REFLECT) for i in INDICES]


def moving_object() -> list[np.ndarray]:
    """A locked-off camera; a 50x50 patch crosses the frame at 2 px per source frame."""
    out, patch = [], texture(50, 50, seed=5)
    for i in INDICES:
        frame = SCENE[200:200 + H, 400:400 + W].copy()
        frame[60:110, 20 + 2 * i: 70 + 2 * i] = patch
        out.append(frame)
    return out


def batch(clips: list[list[np.ndarray]], rejected_at=()) -> pa.Table:
    stacked = [np.stack(c) for c in clips]
    return pa.table({
        "status": ["rejected" if i in rejected_at else "accepted" for i in range(len(clips))],
        "frames": [s.tobytes() for s in stacked],
        "frames_shape": [list(s.shape) for s in stacked],
        "sample_frame_indices": [INDICES[:len(s)] for s in stacked],
    })


@pytest.fixture(scope="module")
def motion_stage():
    stage = Signals(text=False)
    stage.setup()
    return stage


def rows(stage, clips, **kw) -> list[dict]:
    return stage(batch(clips, **kw)).to_pylist()


def test_camera_motion_classes_and_magnitudes(motion_stage):
    pan_right, pan_left, tilt_down, tilt_up, zoom_in, zoom_out = rows(motion_stage, [
        window(dx=1.5), window(dx=-2.0), window(dy=1.0), window(dy=-0.7), zoom(0.004), zoom(-0.004)])
    assert pan_right["camera_motion"] == "pan_right" and pan_left["camera_motion"] == "pan_left"
    assert pan_right["camera_pan_px"] == pytest.approx(-1.5, abs=0.08)  # content moves left 1.5 px/frame
    assert pan_left["camera_pan_px"] == pytest.approx(2.0, abs=0.1)
    assert pan_right["motion_flow_px"] == pytest.approx(1.5, abs=0.08)
    assert tilt_down["camera_motion"] == "tilt_down" and tilt_up["camera_motion"] == "tilt_up"
    assert tilt_down["camera_tilt_px"] == pytest.approx(-1.0, abs=0.06)
    assert abs(tilt_down["camera_pan_px"]) < 0.05
    assert zoom_in["camera_motion"] == "zoom_in" and zoom_out["camera_motion"] == "zoom_out"
    assert zoom_in["camera_zoom"] == pytest.approx(0.004, rel=0.15)
    for moving in (pan_right, pan_left, tilt_down, tilt_up, zoom_in, zoom_out):
        assert moving["camera_motion_confidence"] > 0.8
        assert moving["motion_subject_share"] < 0.1  # a picture moved by the camera: nothing moves in it
        assert not moving["motion_frozen"]


def test_a_static_shot_with_a_moving_subject_is_static_with_subject_motion(motion_stage):
    (clip,) = rows(motion_stage, [moving_object()])
    assert clip["camera_motion"] == "static"
    assert abs(clip["camera_pan_px"]) < 0.05
    assert clip["motion_subject_share"] > 0.8  # what moves is the subject, not the camera
    # The patch (50x50 of 320x180, 4.3% of the frame) moves 2 px/frame: about 0.09 px/frame on average.
    assert 0.03 < clip["motion_flow_px"] < 0.2
    assert not clip["motion_frozen"]


def test_frozen_and_slideshow_clips_are_flagged(motion_stage):
    still = SCENE[:H, :W]
    slides = [texture(H, W, seed=s) for s in (1, 2, 3)]
    frozen, slideshow, panning = rows(motion_stage, [[still] * 6, [slides[0]] * 2 + [slides[1]] * 2 + [slides[2]] * 2,
                                                     window(dx=1.0)])
    assert frozen["motion_frozen"] and frozen["motion_frozen_fraction"] == 1.0 and frozen["motion_flow_px"] == 0
    assert frozen["camera_motion"] == "static"
    assert slideshow["motion_frozen"]
    assert slideshow["motion_frozen_fraction"] == pytest.approx(0.6)  # 3 of 5 pairs: same slide
    assert slideshow["motion_jump_fraction"] == pytest.approx(0.4)  # 2 of 5: a slide change no flow explains
    assert not panning["motion_frozen"] and panning["motion_jump_fraction"] == 0


def test_pixel_statistics_of_black_grey_blurred_and_colourful_clips():
    import cv2

    stage = Signals(motion=False, text=False)
    stage.setup()
    sharp = window()
    black = [np.full((H, W, 3), 8, np.uint8)] * 6
    grey = [np.full((H, W, 3), 128, np.uint8)] * 6
    half_black = black[:3] + sharp[3:]  # a fade-out's tail: three of six frames black
    blurred = [cv2.GaussianBlur(f, (0, 0), 3) for f in sharp]
    red = [np.tile(np.array([200, 30, 30], np.uint8), (H, W, 1))] * 6
    out = rows(stage, [black, grey, half_black, sharp, blurred, red])
    assert set(out[0]) >= {"luma_mean", "black_fraction", "sharpness"} and "camera_motion" not in out[0]
    assert out[0]["black_fraction"] == 1.0 and out[0]["luma_mean"] == pytest.approx(8 / 255, abs=1e-3)
    assert out[1]["black_fraction"] == 0.0 and out[1]["luma_mean"] == pytest.approx(128 / 255, abs=1e-3)
    assert out[1]["luma_std"] == pytest.approx(0, abs=1e-6) and out[1]["colourfulness"] == pytest.approx(0, abs=1e-3)
    assert out[2]["black_fraction"] == 0.5
    assert out[4]["sharpness"] < out[3]["sharpness"] / 20  # a 3-px blur removes the fine detail
    assert out[5]["colourfulness"] == pytest.approx(0.3 * np.hypot(170, 85), rel=1e-3)  # M3 of a flat red: 0.3·|mean|


def test_rejected_rows_get_nulls_and_one_frame_clips_no_motion(motion_stage):
    still, one = rows(motion_stage, [window(), window()[:1]], rejected_at=(0,))
    assert still["luma_mean"] is None and still["camera_motion"] is None
    assert one["luma_mean"] is not None and one["camera_motion"] is None  # motion needs two frames


def test_burned_in_text_of_known_size_is_found():
    from PIL import Image, ImageDraw, ImageFont

    stage = Signals(pixels=False, motion=False)
    stage.setup()
    line = "A burned-in subtitle line"
    font = ImageFont.load_default(size=12)  # ~12 px letters on 180-px frames: a 720p subtitle at 48 px
    frames = []
    for i in INDICES:
        img = Image.fromarray(SCENE[:H, :W] // 3)  # darkened texture: text must stand out, as subtitles do
        ImageDraw.Draw(img).text((40, 150), line, fill=(255, 255, 255), font=font)
        frames.append(np.asarray(img))
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (W, H))).textbbox((40, 150), line, font=font)
    text, plain = rows(stage, [frames, [SCENE[:H, :W] // 3] * 6])
    line_area = (right - left) * 12 / (W * H)  # the line box: its width x the font size
    assert text["text_boxes"] == 1
    assert text["text_area"] == pytest.approx(line_area, rel=0.35)  # measured 1.19x: the detector pads boxes a little
    assert plain["text_boxes"] == 0 and plain["text_area"] == 0


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="stages.signals.pixels: every signal group is off"):
        load_config(None, ["stages.signals.pixels=false", "stages.signals.motion=false",
                           "stages.signals.text=false"])
    with pytest.raises(ConfigError, match="stages.signals.flow_short_side: must be >= 16"):
        load_config(None, ["stages.signals.flow_short_side=4"])


def test_a_keep_expression_on_a_signal_that_is_not_computed_fails_at_start():
    keep = "stages.filter.keep=black_fraction < 0.5 AND text_area < 0.02"
    with pytest.raises(ConfigError, match="stages.filter.keep: black_fraction is written by stage signals"):
        load_config(None, [keep])
    with pytest.raises(ConfigError, match=r"text_area is written by stage signals \(text: true\)"):
        load_config(None, [keep, "stages.signals.text=false"])
    with pytest.raises(ConfigError, match="nsfw_score is written by stage nsfw"):
        load_config(None, ["stages.filter.keep=nsfw_score < 0.5", "stages.signals.text=false"])
    assert load_config(None, [keep, "stages.signals.motion=false"]).stages["filter"].keep
    with pytest.raises(ConfigError, match="motion_frozen needs two sampled frames per clip"):
        load_config(None, ["stages.filter.keep=NOT motion_frozen", "stages.signals.text=false",
                           "stages.split.sample_frames=1"])


def test_a_large_uniform_disc_is_not_text():
    """PP-OCR's detector scores a plain disc as high as text (0.8-0.9); such squarish blobs are not counted."""
    from pipeline.kit.synth import scene_frames

    stage = Signals(pixels=False, motion=False)
    stage.setup()
    discs = [scene_frames(np.random.default_rng(seed), 1, W, H)[0] for seed in range(4)]
    (clip,) = rows(stage, [discs[:4] + discs[:2]])
    assert clip["text_boxes"] == 0 and clip["text_area"] == 0
