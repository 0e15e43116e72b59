"""Near-duplicate rule and its LSH method, against the brute-force greedy reference."""
import numpy as np

from pipeline.catalog.dedup import brute_force, near_duplicates


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def planted(n=600, copies=150, dim=64, noise=0.01, seed=0):
    """n random directions in a narrow cone (like CLIP's), plus `copies` noisy copies, shuffled."""
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n, dim)) * 0.3 + rng.standard_normal(dim))  # pairwise cos ~0.9
    picks = rng.choice(n, copies, replace=False)
    near = unit(base[picks] + noise * rng.standard_normal((copies, dim)))
    data = np.concatenate([base, near])
    order = rng.permutation(len(data))
    return data[order].astype(np.float16), order


def test_lsh_finds_what_brute_force_finds_and_nothing_else():
    data, order = planted()
    found = near_duplicates(data, max_distance=0.01, exact_below=0)  # force LSH at this size
    reference = brute_force(data, max_distance=0.01)
    assert (reference >= 0).sum() == 150  # every planted copy (distance ~0.005) and nothing else
    assert np.array_equal(found, reference)
    sims = unit(data.astype(np.float32)) @ unit(data.astype(np.float32)).T
    for row, of in enumerate(found):
        if of >= 0:
            assert of < row and found[of] == -1 and 1 - sims[row, of] <= 0.01  # an earlier, kept clip


def test_greedy_compares_only_with_kept_clips():
    """A ~ B and B ~ C but not A ~ C: B is a duplicate of A, so C (only near B) is kept."""
    angles = np.array([0.0, 0.17, 0.34])  # radians: 1 - cos = 0.0144 (A-B, B-C), 0.0572 (A-C)
    data = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], axis=1)
    assert list(near_duplicates(data, max_distance=0.02)) == [-1, 0, -1]
    assert list(near_duplicates(data[::-1], max_distance=0.02)) == [-1, 0, -1]  # order decides who stays


def test_the_most_similar_kept_clip_is_named():
    angles = np.array([0.0, 0.3, 0.2])  # 1 - cos: 0.045 (1st-2nd), 0.020 (1st-3rd), 0.005 (2nd-3rd)
    data = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], axis=1)
    assert list(near_duplicates(data, max_distance=0.03)) == [-1, -1, 1]


def test_threshold_is_inclusive_and_exact_copies_always_match():
    rng = np.random.default_rng(1)
    data = unit(rng.standard_normal((50, 16))).astype(np.float16)
    data = np.concatenate([data, data[:10]])  # exact copies at the end
    assert list(near_duplicates(data, max_distance=0.0)[50:]) == list(range(10))
    assert (near_duplicates(data, max_distance=0.0)[:50] == -1).all()


def test_recall_near_the_threshold_is_measured_against_brute_force():
    """CLIP-like spread (unrelated clips ~0.7 apart); copies at ~0.045, just inside the 0.05 threshold."""
    rng = np.random.default_rng(2)
    base = unit(rng.standard_normal((3000, 256)) * 0.1 + rng.standard_normal(256) / 16)
    picks = rng.choice(3000, 500, replace=False)
    data = np.concatenate([base, unit(base[picks] + 0.02 * rng.standard_normal((500, 256)))])
    data = data[rng.permutation(len(data))].astype(np.float16)
    reference = brute_force(data, max_distance=0.05)
    found = near_duplicates(data, max_distance=0.05, bands=32, exact_below=0)
    unit_data = unit(data.astype(np.float32))
    for row in np.flatnonzero(found >= 0):  # every rejection is exact: within the distance of a kept clip
        assert found[found[row]] == -1 and 1 - unit_data[row] @ unit_data[found[row]] <= 0.05 + 1e-6
    assert (reference >= 0).sum() > 300
    recall = ((found >= 0) & (reference >= 0)).sum() / (reference >= 0).sum()
    assert recall >= 0.95, recall
