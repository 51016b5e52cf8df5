"""Properties of the NumPy pruning math: candidates, library, projections, ADMM, schedules."""

import itertools

import numpy as np
import pytest

from tfpconv.sparsity import admm, patterns, schedules


def random_kernel(shape=(3, 3, 6, 10), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _masks(positions):
    """Candidate masks by their position in ``CANDIDATE_MASKS``."""
    return [int(patterns.CANDIDATE_MASKS[p]) for p in positions]


def _taps(position):
    return patterns.mask_taps(int(patterns.CANDIDATE_MASKS[position]))


def nonzeros_per_kernel(kernel):
    return np.count_nonzero(kernel, axis=(0, 1))


def test_there_are_56_candidates_each_with_four_taps_and_the_centre():
    masks = patterns.CANDIDATE_MASKS
    assert masks.shape == (56,)
    taps = np.stack([patterns.mask_taps(int(m)) for m in masks])
    assert (taps.sum(axis=1) == 4).all()
    assert taps[:, patterns.CENTRE].all()
    assert len(set(masks.tolist())) == 56


def test_mask_taps_round_trip_and_format():
    for mask in patterns.CANDIDATE_MASKS.tolist():
        taps = patterns.mask_taps(mask)
        assert taps.sum() == 4 and taps[patterns.CENTRE]
        assert patterns.mask_from_taps(taps) == mask
        assert patterns.mask_from_taps(taps.reshape(3, 3)) == mask
    assert patterns.format_mask(0b000111010) == ".x./xxx/..."
    with pytest.raises(ValueError):
        patterns.mask_taps(1 << 9)


def test_library_takes_the_most_frequent_top4_masks():
    rng = np.random.default_rng(1)
    # 30 kernels dominated by candidate 5, 20 by candidate 17, 10 by candidate 40.
    chosen = [5] * 30 + [17] * 20 + [40] * 10
    kernel = np.zeros((3, 3, 1, len(chosen)), np.float32)
    for o, c in enumerate(chosen):
        taps = np.where(_taps(c), 5.0, 0.1) * rng.uniform(0.9, 1.1, 9)
        kernel[:, :, 0, o] = taps.reshape(3, 3)
    library = patterns.select_library([kernel], num_patterns=3)
    assert library.tolist() == _masks([5, 17, 40])
    # A larger K still returns K distinct candidates, the voted ones first.
    library8 = patterns.select_library([kernel], num_patterns=8)
    assert len(set(library8.tolist())) == 8 and library8[:3].tolist() == _masks([5, 17, 40])


def test_an_already_projected_model_selects_the_library_it_was_projected_with():
    # With 72% of the kernels removed, all-zero kernels must not vote (they would all vote for
    # candidate 0 and push a library pattern out).
    kernels = [random_kernel(shape=(3, 3, 16, 32), seed=seed) for seed in range(3)]
    library = patterns.select_library(kernels, 8)
    projected = [patterns.project(kernel, library, 0.72)[0] for kernel in kernels]
    again = patterns.select_library(projected, 8)
    assert sorted(again.tolist()) == sorted(library.tolist())
    for kernel in projected:
        np.testing.assert_array_equal(patterns.project(kernel, again, 0.72)[0], kernel)


def test_a_library_from_all_zero_kernels_is_the_first_candidates():
    library = patterns.select_library([np.zeros((3, 3, 4, 4), np.float32)], 5)
    assert library.tolist() == _masks([0, 1, 2, 3, 4])


def test_top4_forces_the_centre_in():
    kernel = np.ones((3, 3, 1, 1), np.float32) * 10
    kernel[1, 1] = 0.0  # the centre is the weakest tap, yet it stays
    assert patterns.mask_taps(int(patterns.top4_masks(kernel)[0, 0]))[patterns.CENTRE]


def test_pattern_projection_keeps_exactly_four_weights_with_the_centre():
    kernel = random_kernel()
    library = patterns.select_library([kernel], 8)
    projected, choice = patterns.project_patterns(kernel, library)
    assert (nonzeros_per_kernel(projected) == 4).all()
    assert (projected[1, 1] != 0).all()
    masks = np.stack([patterns.mask_taps(int(m)) for m in library])
    taps = np.moveaxis(projected.reshape(9, 6, 10), 0, -1)
    assert ((taps != 0) == masks[choice]).all()


def test_pattern_projection_picks_the_best_norm_pattern():
    kernel = random_kernel(seed=2)
    library = patterns.select_library([kernel], 5)
    projected, _ = patterns.project_patterns(kernel, library)
    for i, o in itertools.product(range(6), range(10)):
        flat = kernel[:, :, i, o].ravel().astype(np.float64)
        best = max(float((flat[patterns.mask_taps(int(m))] ** 2).sum()) for m in library)
        assert float((projected[:, :, i, o].astype(np.float64) ** 2).sum()) == pytest.approx(best)


@pytest.mark.parametrize("connectivity", [0.0, 0.1, 0.5, 0.72, 0.95])
def test_connectivity_removes_an_exact_count_of_the_weakest_kernels(connectivity):
    kernel = random_kernel(shape=(3, 3, 7, 9), seed=3)
    library = patterns.select_library([kernel], 8)
    projected, codes = patterns.project(kernel, library, connectivity)
    expected = int(np.floor(connectivity * 63 + 0.5))
    assert (codes == patterns.PRUNED).sum() == expected
    assert (nonzeros_per_kernel(projected) == 0).sum() == expected
    assert (nonzeros_per_kernel(projected)[codes != patterns.PRUNED] == 4).all()
    # every removed kernel is at most as strong (after patterns) as every kept one
    after_patterns, _ = patterns.project_patterns(kernel, library)
    norms = patterns.kernel_norms(after_patterns)
    if 0 < expected < 63:
        assert norms[codes == patterns.PRUNED].max() <= norms[codes != patterns.PRUNED].min()


@pytest.mark.parametrize("connectivity", [0.1, 0.5, 0.72, 0.9])
def test_among_equal_norms_the_earlier_kernels_go_first(connectivity):
    # kernels of four distinct strengths, each strength many times: every cut falls inside a tie
    rng = np.random.default_rng(8)
    scale = rng.integers(1, 5, size=(7, 9)).astype(np.float32)
    kernel = np.ones((3, 3, 7, 9), np.float32) * scale
    keep = patterns.connectivity_mask(kernel, connectivity)
    order = np.argsort(patterns.kernel_norms(kernel).ravel(), kind="stable")
    expected = np.ones(63, dtype=bool)
    expected[order[: patterns.num_to_prune(63, connectivity)]] = False
    np.testing.assert_array_equal(keep.ravel(), expected)


def test_a_kernel_with_nan_weights_is_removed_last():
    kernel = random_kernel(shape=(3, 3, 4, 5), seed=9)
    kernel[0, 0, 1, 2] = np.nan
    keep = patterns.connectivity_mask(kernel, 0.95)  # 19 of 20 kernels go: the NaN one stays
    assert (~keep).sum() == 19 and keep[1, 2]


@pytest.mark.parametrize("filter_group", [1, 4])
def test_projection_is_patterns_then_connectivity_by_the_post_pattern_norm(filter_group):
    kernel = random_kernel(shape=(3, 3, 12, 16), seed=10)
    library = patterns.select_library([kernel], 8)
    projected, codes = patterns.project(kernel, library, 0.72, filter_group)
    after_patterns, choice = patterns.project_patterns(kernel, library, filter_group)
    keep = patterns.connectivity_mask(after_patterns, 0.72, filter_group)
    np.testing.assert_array_equal(projected, after_patterns * keep)
    np.testing.assert_array_equal(codes, np.where(keep, choice, patterns.PRUNED))


def test_projection_is_idempotent():
    kernel = random_kernel(seed=4)
    library = patterns.select_library([kernel], 8)
    once, codes = patterns.project(kernel, library, 0.6)
    twice, codes2 = patterns.project(once, library, 0.6)
    np.testing.assert_array_equal(once, twice)
    np.testing.assert_array_equal(codes, codes2)


@pytest.mark.parametrize("filter_group", [2, 3, 4])
def test_filter_groups_share_patterns_and_connectivity(filter_group):
    kernel = random_kernel(shape=(3, 3, 5, 10), seed=6)  # 10 filters: the last group is shorter
    library = patterns.select_library([kernel], 4)
    projected, codes = patterns.project(kernel, library, 0.5, filter_group)
    groups = [range(g, min(g + filter_group, 10)) for g in range(0, 10, filter_group)]
    for group in groups:
        for o in group:
            np.testing.assert_array_equal(codes[:, o], codes[:, group[0]])
    # half of the (input channel, group) pairs are removed, the weakest by summed norm
    assert (codes[:, [g[0] for g in groups]] == patterns.PRUNED).sum() == int(
        np.floor(0.5 * 5 * len(groups) + 0.5)
    )
    # each group's pattern keeps the largest summed squared norm of its kernels
    sq = kernel.astype(np.float64) ** 2
    for i, group in itertools.product(range(5), groups):
        code = codes[i, group[0]]
        if code == patterns.PRUNED:
            continue
        kept = [
            sq[:, :, i, list(group)].reshape(9, -1)[patterns.mask_taps(int(m))].sum()
            for m in library
        ]
        assert kept[code] == pytest.approx(max(kept))
        for o in group:
            assert np.count_nonzero(projected[:, :, i, o]) == 4
    twice, codes2 = patterns.project(projected, library, 0.5, filter_group)
    np.testing.assert_array_equal(projected, twice)
    np.testing.assert_array_equal(codes, codes2)


def test_filter_group_one_is_the_plain_projection():
    kernel = random_kernel(seed=7)
    library = patterns.select_library([kernel], 8)
    plain = patterns.project(kernel, library, 0.6)
    grouped = patterns.project(kernel, library, 0.6, 1)
    for a, b in zip(plain, grouped, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_filter_groups_are_rejected(bad):
    kernel = random_kernel()
    with pytest.raises(ValueError, match="filter_group"):
        patterns.project(kernel, patterns.select_library([kernel], 8), 0.5, bad)


def test_projection_mask_matches_the_projection():
    kernel = random_kernel(seed=5)
    library = patterns.select_library([kernel], 4)
    projected, codes = patterns.project(kernel, library, 0.3)
    mask = patterns.projection_mask(codes, library)
    np.testing.assert_array_equal(mask, projected != 0)


def test_classify_reads_patterns_off_the_zero_structure():
    kernel = random_kernel(seed=6)
    library = patterns.select_library([kernel], 8)
    projected, codes = patterns.project(kernel, library, 0.5)
    classified = patterns.classify_kernels(projected)
    np.testing.assert_array_equal(classified == patterns.PRUNED, codes == patterns.PRUNED)
    kept = codes != patterns.PRUNED
    np.testing.assert_array_equal(classified[kept], library[codes[kept]])
    assert (patterns.classify_kernels(kernel) == patterns.NOT_A_PATTERN).all()


def test_classify_resolves_partial_kernels_to_the_layer_s_popular_pattern():
    kernel = np.zeros((3, 3, 1, 3), np.float32)
    full = _taps(10).reshape(3, 3)
    kernel[:, :, 0, 0] = full
    kernel[:, :, 0, 1] = full
    kernel[1, 1, 0, 2] = 1.0  # only the centre: fits every candidate
    assert patterns.classify_kernels(kernel)[0].tolist() == _masks([10, 10, 10])


@pytest.mark.parametrize("bad", [0, 57, -1, 2.5, True, "8"])
def test_num_patterns_out_of_range_is_rejected(bad):
    with pytest.raises(ValueError, match="num_patterns"):
        patterns.check_num_patterns(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "a lot", None])
def test_connectivity_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="connectivity"):
        patterns.check_connectivity(bad)


def test_bad_libraries_and_kernels_are_rejected():
    with pytest.raises(ValueError, match="not a 3x3 pattern"):
        patterns.check_library([0b000111010, 0b000001111])  # no centre
    with pytest.raises(ValueError, match="not a 3x3 pattern"):
        patterns.check_library([0b000111010, 1 << 9])
    with pytest.raises(ValueError, match="repeated"):
        patterns.check_library([0b000111010, 0b000111010])
    with pytest.raises(ValueError, match="9-bit"):
        patterns.check_library([0.5])
    with pytest.raises(ValueError, match="3x3 HWIO"):
        patterns.project(np.zeros((5, 5, 1, 1)), [0b000111010])


def test_library_by_use_ranks_masks_by_use():
    a, b = _masks([3, 9])
    classes = np.array([[a, b, b], [patterns.PRUNED, b, a], [b, patterns.PRUNED, a]])
    library, codes = patterns.library_by_use(classes)
    assert library.tolist() == [b, a]  # b used 4 times, a 3 times
    assert codes.tolist() == [[1, 0, 0], [-1, 0, 1], [0, -1, 1]]
    with pytest.raises(ValueError, match="NOT_A_PATTERN"):
        patterns.library_by_use(np.array([[patterns.NOT_A_PATTERN]]))


def test_admm_rounds_drive_the_gap_to_zero():
    rng = np.random.default_rng(7)
    optimum = rng.normal(size=(3, 3, 4, 5))
    library = patterns.select_library([optimum], 4)
    project = lambda w: patterns.project(w, library, 0.5)[0]  # noqa: E731
    weights = optimum.copy()
    state = admm.ADMMState.start(weights, project)
    gaps = []
    for _ in range(30):
        # W-step of f(W) = ||W - optimum||^2 / 2 plus the penalty, solved exactly (rho = 1)
        weights = (optimum + state.target()) / 2.0
        state.update(weights, project)
        gaps.append(state.gap(weights))
    assert gaps[-1] < 1e-6 < gaps[0]
    np.testing.assert_allclose(state.z, project(state.z))


def test_a_growing_rho_keeps_the_unscaled_dual():
    rng = np.random.default_rng(3)
    state = admm.ADMMState(z=rng.normal(size=(3, 3, 2, 2)), u=rng.normal(size=(3, 3, 2, 2)))
    rho, dual = 2.0, 2.0 * state.u
    state.rescale_penalty(4.0)  # rho 2 -> 8
    np.testing.assert_allclose(8.0 * state.u, dual)
    # The pull target Z - U moves towards Z: the larger rho pulls harder, not further.
    assert np.linalg.norm(state.target() - state.z) < np.linalg.norm(dual / rho)


def test_a_fading_dual_forgets_what_the_projections_removed():
    rng = np.random.default_rng(4)
    library = patterns.select_library([rng.normal(size=(3, 3, 4, 4))], 4)
    project = lambda w: patterns.project(w, library, 0.5)[0]  # noqa: E731
    weights, u = rng.normal(size=(3, 3, 4, 4)), rng.normal(size=(3, 3, 4, 4))
    plain = admm.ADMMState(z=np.zeros_like(u), u=u.copy())
    plain.update(weights, project)
    faded = admm.ADMMState(z=np.zeros_like(u), u=u.copy())
    faded.update(weights, project, dual_decay=0.5)
    np.testing.assert_allclose(faded.z, plain.z)  # Z still sees the whole dual
    np.testing.assert_allclose(faded.u, 0.5 * plain.u)
    # dual_decay 0: Z is the projection of W alone from the next round on (magnitude projection)
    forgetful = admm.ADMMState(z=np.zeros_like(u), u=u.copy())
    forgetful.update(weights, project, dual_decay=0.0)
    assert not forgetful.u.any()
    forgetful.update(weights, project, dual_decay=0.0)
    np.testing.assert_allclose(forgetful.z, project(weights))
    with pytest.raises(ValueError, match=r"dual_decay must be in \[0, 1\], got 1.1"):
        forgetful.update(weights, project, dual_decay=1.1)


def test_penalty_step_is_the_exact_proximal_step():
    w, t = np.array([1.0, -2.0]), np.array([0.0, 0.0])
    np.testing.assert_allclose(admm.penalty_step(w, t, 1.0), [0.5, -1.0])
    np.testing.assert_allclose(admm.penalty_step(w, t, 1e9), [0.0, 0.0], atol=1e-8)


def test_schedules():
    from tfpconv.keras.schedules import ConnectivitySchedule

    assert ConnectivitySchedule(0.5)(123) == 0.5
    ramp = schedules.cubic_ramp(0.8, 10, 110)
    assert ramp(0) == 0 and ramp(110) == pytest.approx(0.8) and ramp(500) == pytest.approx(0.8)
    assert 0 < ramp(30) < ramp(60) < 0.8
    assert ConnectivitySchedule(lambda step: step / 100)(50) == 0.5
    with pytest.raises(ValueError, match="at step 200"):
        ConnectivitySchedule(lambda step: step / 100)(200)
