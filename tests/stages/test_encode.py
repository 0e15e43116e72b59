"""encode with tiny diffusers VAEs (AutoencoderKL per frame, AutoencoderKLWan causal) and a tiny T5."""
import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.kit.tiny import text, vae
from stages.models.vae import VideoVAE
from stages.encode import Encode
from stages.probe import Probe
from stages.split import Split


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {**vae.build(folder / "vae"), **text.build(folder / "text")}


@pytest.fixture(scope="module")
def clips(corpus):
    table = Probe()(pa.table({"source_uri": [corpus["three_scenes.mp4"][0], corpus["short_scene.mp4"][0]]}))
    return Split(min_clip_s=0.5)(table)


def encoder(tiny, kind, **settings) -> Encode:
    settings.setdefault("frame_counts", [9, 17] if kind == "vae_wan" else [8, 16])
    stage = Encode(vae=tiny[kind], vae_kind="auto", vae_subfolder=None, resolutions=[64],
                   text_encoder=tiny["text_t5"], text_max_tokens=32, **settings)
    stage.setup()
    return stage


@pytest.mark.parametrize("kind, strides", [("vae_kl", (4, 1)), ("vae_wan", (4, 2))])
def test_latent_shapes_per_bucket(tiny, clips, kind, strides):
    stage = encoder(tiny, kind)
    assert (stage.model.spatial_stride, stage.model.temporal_stride) == strides
    out = stage(clips).to_pylist()
    encoded = [r for r in out if r["latent"] is not None]
    assert len(encoded) == sum(r["status"] == "accepted" for r in out) > 0
    for row in encoded:
        frames, height, width = map(int, row["bucket"].split("x"))
        assert (row["enc_num_frames"], row["enc_height"], row["enc_width"]) == (frames, height, width)
        latent_t = frames if kind == "vae_kl" else 1 + (frames - 1) // strides[1]
        assert row["latent_shape"] == [4, latent_t, height // strides[0], width // strides[0]]
        assert len(row["latent"]) == np.prod(row["latent_shape"]) * np.dtype(np.float16).itemsize
        assert row["vae_id"] == tiny[kind] and row["latent_meta"]


@pytest.mark.parametrize("kind", ["vae_kl", "vae_wan"])
def test_decode_of_encode_has_the_input_shape(tiny, kind):
    model = VideoVAE.load(tiny[kind])
    frames = 9 if kind == "vae_wan" else 4
    pixels = torch.rand(2, 3, frames, 32, 48) * 2 - 1
    mean, logvar = model.encode(pixels)
    assert mean.shape == logvar.shape
    assert model.decode(mean).shape == pixels.shape


def test_normalisation_uses_the_models_factors(tiny):
    model = VideoVAE.load(tiny["vae_wan"])
    pixels = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    mean, _ = model.encode(pixels)
    raw = model.model.encode(pixels).latent_dist.mean
    mean_c, std_c = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1, 1) for v in (model.mean, model.std))
    expected = (raw - mean_c) / std_c
    assert torch.allclose(mean, expected, atol=1e-5)
    kl = VideoVAE.load(tiny["vae_kl"])
    assert (kl.scale, kl.shift) == (0.5, 0.1)


def test_deterministic_bytes(tiny, clips):
    a = encoder(tiny, "vae_wan")(clips).column("latent").to_pylist()
    b = encoder(tiny, "vae_wan")(clips).column("latent").to_pylist()
    assert a == b and any(a)


def test_captions_get_unpadded_text_embeddings(tiny, clips):
    captions = ["a red car on a street at night", "dog", *["a cat"] * (clips.num_rows - 2)]
    batch = clips.append_column("caption_long", pa.array(captions)).append_column(
        "caption_short", pa.array(["car"] * clips.num_rows))
    rows = encoder(tiny, "vae_kl")(batch).to_pylist()
    first = next(r for r in rows if r["latent"] is not None)
    index = rows.index(first)
    words = len(captions[index].split()) + 1  # + </s>
    assert first["text_long_shape"] == [words, 32] and first["text_short_shape"] == [2, 32]
    assert len(first["text_long"]) == words * 32 * 2 and first["text_dtype"] == "float16"


def test_too_short_for_every_bucket_is_rejected_with_reason(tiny, clips):
    rows = encoder(tiny, "vae_wan", frame_counts=[65])(clips).to_pylist()  # 8 s at 8 fps: longer than all clips
    accepted_before = [r["status"] for r in clips.to_pylist()].count("accepted")
    assert [r["reason"] for r in rows].count("too_short_for_bucket") == accepted_before
    assert all(r["latent"] is None for r in rows)


def test_frame_counts_must_fit_the_causal_vae(tiny):
    with pytest.raises(ValueError, match="^frame_counts"):
        encoder(tiny, "vae_wan", frame_counts=[16])


# --- issue 15: one read per source per batch, prefetching that changes nothing but timing ---

@pytest.fixture(scope="module")
def stamped_source(tmp_path_factory):
    from pipeline.kit.synth import write_stamped_video

    path, _, _ = write_stamped_video(tmp_path_factory.mktemp("reads"), "h264_mp4_open_gop", [30, 130, 30])
    return str(path)


def reads_encoder(vae_path: str, **settings):
    stage = Encode(vae=vae_path, vae_kind="auto", vae_subfolder=None, text_encoder=None, resolutions=[32],
                   frame_counts=[4], clips_per_batch=2, **settings)
    stage.setup()
    return stage


def test_encode_opens_a_source_once_and_prefetching_gives_the_same_latents(stamped_source, tiny):
    from stages.video.buckets import centre_crop, frame_indices, resize_for
    from stages.video.decode import OPENS, ahead, anchor_of, read_frames

    clips = Split(min_clip_s=0.5, max_clip_s=2.0)(Probe()(pa.table({"source_uri": [stamped_source]})))
    accepted = [c for c in clips.to_pylist() if c["status"] == "accepted"]
    assert len(accepted) >= 4  # several clips of one source, in more than one VAE group
    results, frames = {}, {}
    for prefetch in (False, True):
        stage = reads_encoder(tiny["vae_kl"], prefetch=prefetch)
        before = OPENS[stamped_source]
        rows = stage(clips).to_pylist()
        assert OPENS[stamped_source] - before == 1
        assert [r["status"] for r in rows] == [c["status"] for c in clips.to_pylist()]
        results[prefetch] = [(r["latent"], r["latent_shape"]) for r in rows if r["status"] == "accepted"]
        buckets = {i: stage.bucket_of(r) for i, r in enumerate(clips.to_pylist()) if r["status"] == "accepted"}
        groups = stage.decoded_groups(clips.to_pylist(), buckets, [None] * len(clips), [None] * len(clips))
        frames[prefetch] = {i: p for _, members, pixels in (ahead(groups, 1) if prefetch else groups)
                            for i, p in zip(members, pixels)}
    assert results[True] == results[False] and all(latent for latent, _ in results[True])
    assert frames[True].keys() == frames[False].keys() == buckets.keys()
    rows = clips.to_pylist()
    for i, pixels in frames[True].items():
        assert np.array_equal(pixels, frames[False][i])
        # the one-pass read gives the pixels an independent read of the clip gives
        bucket = buckets[i]
        width, height = resize_for(rows[i]["width"], rows[i]["height"], bucket)
        indices = frame_indices(rows[i]["start_frame"], rows[i]["end_frame"], rows[i]["fps"], bucket.frames, 8.0)
        alone = read_frames(stamped_source, indices, width, height, 1, rows[i]["video"]["stream_index"], anchor_of(rows[i]))
        assert np.array_equal(pixels, centre_crop(alone, bucket))
