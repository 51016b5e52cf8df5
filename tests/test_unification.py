"""Micro-structured weight unification: exact state choice, both layouts, idempotence, errors."""

import itertools

import numpy as np
import pytest

from tfpconv.sparsity import patterns, unification
from tfpconv.sparsity.unification import FREE, PRUNED, UNIFIED

FRACTION_PAIRS = [
    (0.0, 0.0),
    (1.0, 0.0),
    (0.0, 1.0),
    (0.5, 0.5),
    (0.7, 0.3),
    (0.3, 0.7),
    (0.1, 0.9),
    (1 / 3, 2 / 3),
    (0.25, 0.25),
    (0.5, 0.2),
    (0.05, 0.1),
    (0.6, 0.0),
    (0.0, 0.35),
]


def random_dense(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def expected_counts(num_blocks, unify, prune):
    """The documented rule: pruned = round(prune n), not free = round((unify + prune) n)."""
    num_prune = min(num_blocks, int(np.floor(prune * num_blocks + 0.5)))
    num_selected = min(num_blocks, int(np.floor(min(1.0, unify + prune) * num_blocks + 0.5)))
    return num_selected - num_prune, num_prune


def total_error(unify_error, prune_error, states):
    return float(unify_error[states == UNIFIED].sum() + prune_error[states == PRUNED].sum())


def brute_force_minima(unify_error, prune_error):
    """Every assignment of the 3 states: the least total per (num_unify, num_prune)."""
    n = unify_error.size
    assignments = np.array(list(itertools.product((FREE, UNIFIED, PRUNED), repeat=n)))
    totals = (
        np.where(assignments == UNIFIED, unify_error, 0.0)
        + np.where(assignments == PRUNED, prune_error, 0.0)
    ).sum(axis=1)
    num_u = (assignments == UNIFIED).sum(axis=1)
    num_p = (assignments == PRUNED).sum(axis=1)
    return {
        (u, p): totals[(num_u == u) & (num_p == p)].min()
        for u in range(n + 1)
        for p in range(n + 1 - u)
    }


def dp_minimum(unify_error, prune_error, num_unify, num_prune):
    """Exact optimum by dynamic programming over (unified so far, pruned so far)."""
    best = np.full((num_unify + 1, num_prune + 1), np.inf)
    best[0, 0] = 0.0
    for u, p in zip(unify_error, prune_error, strict=True):
        new = best.copy()
        new[1:, :] = np.minimum(new[1:, :], best[:-1, :] + u)
        new[:, 1:] = np.minimum(new[:, 1:], best[:, :-1] + p)
        best = new
    return best[num_unify, num_prune]


def greedy_total(unify_error, prune_error, num_unify, num_prune):
    """Prune the smallest prune errors first, then unify the smallest unify errors of the rest."""
    pruned = np.argsort(prune_error, kind="stable")[:num_prune]
    rest = np.setdiff1d(np.arange(unify_error.size), pruned)
    unified = rest[np.argsort(unify_error[rest], kind="stable")[:num_unify]]
    return float(prune_error[pruned].sum() + unify_error[unified].sum())


def dense_blocks_of(kernel, block_size):
    """Per (output, block): the weights of the block, as a dict of 1-D arrays."""
    matrix = kernel.reshape(kernel.shape[-2:])
    in_features, out_features = matrix.shape
    blocks = {}
    for o in range(out_features):
        for b, start in enumerate(range(0, in_features, block_size)):
            blocks[o, b] = matrix[start : start + block_size, o]
    return blocks


def assert_unified(unified, weights):
    """One magnitude (bitwise), the mean |w| (float32: exactly; float64: to the last bit or two,
    which depends on the order of the sum), and the weights' own signs with sign(0) = +1."""
    magnitude = np.abs(unified)
    assert (magnitude == magnitude[0]).all()
    mean = np.mean(np.abs(weights.astype(np.float64)))
    if weights.dtype == np.float32:
        assert magnitude[0] == np.float32(mean)
    else:
        assert abs(magnitude[0] - mean) <= 2 * np.spacing(mean)
    assert (np.sign(unified) == np.where(weights < 0, -1, 1)).all()


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------------------------
# Counts and checks


def test_count_rounds_half_up_and_caps():
    assert unification.count(10, 0.25) == 3  # 2.5 -> 3
    assert unification.count(10, 0.24) == 2
    assert unification.count(7, 1.0) == 7
    assert unification.count(0, 0.5) == 0
    assert unification.count(3, 0.0) == 0


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 7, 10, 64, 999])
def test_counts_follow_the_rule_and_never_exceed_the_blocks(num_blocks):
    for unify, prune in FRACTION_PAIRS:
        num_unify, num_prune = unification.counts(num_blocks, unify, prune)
        assert (num_unify, num_prune) == expected_counts(num_blocks, unify, prune)
        assert num_unify >= 0 and num_unify + num_prune <= num_blocks
        if abs(unify + prune - 1.0) < 1e-12:
            assert num_unify + num_prune == num_blocks
        assert abs(num_unify - unification.count(num_blocks, unify)) <= 1


@pytest.mark.parametrize(
    ("shape", "block_size"), [((20, 7), 8), ((16, 5), 4), ((1, 1, 13, 6), 3), ((9, 4), 1)]
)
def test_project_dense_has_exact_state_counts(shape, block_size):
    kernel = random_dense(shape, seed=1)
    num_blocks = shape[-1] * -(-shape[-2] // block_size)
    for unify, prune in FRACTION_PAIRS:
        projected, states = unification.project_dense(kernel, unify, prune, block_size)
        assert states.dtype == np.uint8
        assert states.shape == (shape[-1], -(-shape[-2] // block_size))
        num_unify, num_prune = expected_counts(num_blocks, unify, prune)
        assert np.count_nonzero(states == UNIFIED) == num_unify
        assert np.count_nonzero(states == PRUNED) == num_prune
        assert np.count_nonzero(states == FREE) == num_blocks - num_unify - num_prune
        assert projected.shape == kernel.shape and projected.dtype == kernel.dtype


@pytest.mark.parametrize(
    ("unify", "prune"),
    [(-0.1, 0.0), (0.0, 1.5), (0.6, 0.5), (1.0, 0.1), ("half", 0.0), (np.nan, 0)],
)
def test_bad_fractions_raise(unify, prune):
    with pytest.raises(ValueError, match="unify|prune"):
        unification.check_fractions(unify, prune)
    with pytest.raises(ValueError, match="unify|prune"):
        unification.project_dense(random_dense((8, 2)), unify, prune)
    with pytest.raises(ValueError, match="unify|prune"):
        kernel = random_dense((3, 3, 2, 2))
        unification.project_pattern(kernel, np.ones_like(kernel, dtype=bool), unify, prune)


def test_sum_just_above_one_by_rounding_is_accepted():
    unification.check_fractions(0.7, 0.3 + 1e-15)
    assert unification.counts(10, 0.7, 0.3 + 1e-15) == (7, 3)


@pytest.mark.parametrize("block_size", [0, -3, 2.0, True, "8", None])
def test_bad_block_size_raises(block_size):
    with pytest.raises(ValueError, match="block_size"):
        unification.check_block_size(block_size)
    with pytest.raises(ValueError, match="block_size"):
        unification.project_dense(random_dense((8, 2)), 0.5, 0.0, block_size)


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="num_blocks"):
        unification.count(-1, 0.5)
    with pytest.raises(ValueError, match="fraction"):
        unification.count(4, 1.5)
    with pytest.raises(ValueError, match="fraction"):
        unification.count(4, -0.5)


def test_choose_states_rejects_bad_input():
    errors = np.arange(4.0)
    with pytest.raises(ValueError, match="same length"):
        unification.choose_states(errors, errors[:3], 1, 1)
    with pytest.raises(ValueError, match="1-D"):
        unification.choose_states(errors.reshape(2, 2), errors.reshape(2, 2), 1, 1)
    with pytest.raises(ValueError, match="at most the number of blocks"):
        unification.choose_states(errors, errors, 3, 2)
    with pytest.raises(ValueError, match="num_unify"):
        unification.choose_states(errors, errors, -1, 0)
    with pytest.raises(ValueError, match="num_prune"):
        unification.choose_states(errors, errors, 0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        unification.choose_states(np.array([0.0, np.nan]), np.zeros(2), 1, 0)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match=r"\(in, out\)"):
        unification.project_dense(random_dense((3, 3, 4, 4)), 0.5, 0.0)
    with pytest.raises(ValueError, match=r"\(in, out\)"):
        unification.project_dense(random_dense((8,)), 0.5, 0.0)
    with pytest.raises(ValueError, match=r"\(in, out\)"):
        unification.read_dense_states(random_dense((2, 8, 4)))
    kernel = random_dense((16, 3))
    with pytest.raises(ValueError, match="shape"):
        unification.apply_dense(kernel, np.zeros((2, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="FREE"):
        unification.apply_dense(kernel, np.full((3, 2), 3, np.uint8), 8)
    with pytest.raises(ValueError, match="integers"):
        unification.apply_dense(kernel, np.zeros((3, 2)), 8)
    conv = random_dense((3, 3, 2, 4))
    keep = np.ones(conv.shape, dtype=bool)
    with pytest.raises(ValueError, match="3x3"):
        unification.project_pattern(random_dense((5, 5, 2, 4)), keep, 0.5)
    with pytest.raises(ValueError, match="keep"):
        unification.project_pattern(conv, keep[..., :2], 0.5)
    with pytest.raises(ValueError, match="shape"):
        unification.apply_pattern(conv, keep, np.zeros((4, 2), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        unification.stored_values(np.zeros((2, 3), np.uint8), np.ones((3, 2), np.int64))


# ----------------------------------------------------------------------------------------------
# choose_states is the exact optimum


def _check_against_brute_force(unify_error, prune_error):
    minima = brute_force_minima(unify_error, prune_error)
    for (num_unify, num_prune), minimum in minima.items():
        states = unification.choose_states(unify_error, prune_error, num_unify, num_prune)
        assert np.count_nonzero(states == UNIFIED) == num_unify
        assert np.count_nonzero(states == PRUNED) == num_prune
        assert total_error(unify_error, prune_error, states) == pytest.approx(
            minimum, rel=1e-12, abs=1e-12
        ), (unify_error, prune_error, num_unify, num_prune)


@pytest.mark.parametrize("chunk", [None, 1, 2])
@pytest.mark.parametrize("n", range(1, 9))
def test_choose_states_matches_brute_force(n, chunk, monkeypatch):
    if chunk is not None:  # several heap chunks, even on these small arrays
        monkeypatch.setattr(unification, "_CHUNK", chunk)
    rng = np.random.default_rng(n)
    for _ in range(6):
        # errors of real blocks: 0 <= unify error <= prune error
        prune_error = rng.exponential(size=n)
        _check_against_brute_force(prune_error * rng.uniform(size=n), prune_error)
        # many ties
        unify_error = rng.integers(0, 3, size=n).astype(float)
        _check_against_brute_force(unify_error, unify_error + rng.integers(0, 3, size=n))
        # any finite values, also negative and unify > prune
        _check_against_brute_force(rng.normal(size=n), rng.normal(size=n))


def test_choose_states_with_all_errors_equal_takes_the_earliest_blocks():
    errors = np.ones(6)
    states = unification.choose_states(errors, errors, 2, 0)
    assert states.tolist() == [UNIFIED, UNIFIED, FREE, FREE, FREE, FREE]
    states = unification.choose_states(errors, errors * 2, 0, 3)
    assert states.tolist() == [PRUNED, PRUNED, PRUNED, FREE, FREE, FREE]
    first = unification.choose_states(errors, errors * 2, 2, 3)
    assert np.array_equal(first, unification.choose_states(errors, errors * 2, 2, 3))
    assert total_error(errors, errors * 2, first) == 2 * 1 + 3 * 2


@pytest.mark.parametrize("n", [50, 3000])
def test_choose_states_matches_dynamic_programming_on_larger_arrays(n):
    rng = np.random.default_rng(n)
    for num_unify, num_prune in [(5, 7), (n // 40, n // 50), (1, n // 60), (n // 60, 1)]:
        prune_error = rng.integers(0, 20, size=n).astype(float)  # ties
        unify_error = prune_error * rng.integers(0, 4, size=n) / 4
        states = unification.choose_states(unify_error, prune_error, num_unify, num_prune)
        assert np.count_nonzero(states == UNIFIED) == num_unify
        assert np.count_nonzero(states == PRUNED) == num_prune
        expected = dp_minimum(unify_error, prune_error, num_unify, num_prune)
        assert total_error(unify_error, prune_error, states) == pytest.approx(expected, abs=1e-9)


def test_choose_states_without_the_candidate_cut_on_many_blocks(monkeypatch):
    """More than half the blocks selected (no cut), many heap chunks: against the DP."""
    monkeypatch.setattr(unification, "_CHUNK", 16)
    rng = np.random.default_rng(7)
    n = 400
    prune_error = rng.exponential(size=n)
    unify_error = prune_error * rng.uniform(size=n) ** 3
    for num_unify, num_prune in [(150, 60), (60, 150), (200, 200), (399, 1), (1, 399)]:
        states = unification.choose_states(unify_error, prune_error, num_unify, num_prune)
        expected = dp_minimum(unify_error, prune_error, num_unify, num_prune)
        assert total_error(unify_error, prune_error, states) == pytest.approx(expected, rel=1e-12)


def test_greedy_is_not_optimal_but_choose_states_is():
    # Block 0: [1, 1] (unify error 0, prune error 2); block 1: [1.5, 0] (1.125, 2.25).
    unify_error = np.array([0.0, 1.125])
    prune_error = np.array([2.0, 2.25])
    greedy = greedy_total(unify_error, prune_error, 1, 1)
    states = unification.choose_states(unify_error, prune_error, 1, 1)
    assert states.tolist() == [UNIFIED, PRUNED]
    assert total_error(unify_error, prune_error, states) == 2.25
    assert greedy == 3.125 > 2.25
    # The same blocks as a Dense kernel with block size 2.
    kernel = np.array([[1.0], [1.0], [1.5], [0.0]], dtype=np.float32)
    projected, states = unification.project_dense(kernel, 0.5, 0.5, block_size=2)
    assert states.tolist() == [[UNIFIED, PRUNED]]
    assert projected.ravel().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_greedy_is_suboptimal_on_random_blocks_and_choose_states_never_is():
    rng = np.random.default_rng(3)
    worse = 0
    for _ in range(200):
        prune_error = rng.exponential(size=8)
        unify_error = prune_error * rng.uniform(size=8)
        states = unification.choose_states(unify_error, prune_error, 3, 3)
        ours = total_error(unify_error, prune_error, states)
        greedy = greedy_total(unify_error, prune_error, 3, 3)
        assert ours <= greedy + 1e-12
        worse += greedy > ours + 1e-9
    assert worse > 0


# ----------------------------------------------------------------------------------------------
# Dense layout


def test_block_errors_dense_match_the_formulas_with_a_partial_last_block():
    kernel = random_dense((10, 3), seed=2, dtype=np.float64)
    unify_error, prune_error = unification.block_errors_dense(kernel, 4)
    assert unify_error.shape == prune_error.shape == (3, 3)
    assert unify_error.dtype == prune_error.dtype == np.float64
    for (o, b), w in dense_blocks_of(kernel, 4).items():
        assert len(w) == (2 if b == 2 else 4)
        magnitude = np.abs(w)
        assert prune_error[o, b] == pytest.approx(np.sum(w**2), rel=1e-12)
        expected = np.sum(w**2) - np.sum(magnitude) ** 2 / len(w)
        assert unify_error[o, b] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert unify_error[o, b] == pytest.approx(np.sum((magnitude - magnitude.mean()) ** 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("in_features", "block_size"), [(20, 8), (16, 4), (10, 4), (7, 7)])
def test_project_dense_unifies_prunes_and_keeps_blocks(in_features, block_size, dtype):
    kernel = random_dense((in_features, 6), seed=in_features, dtype=dtype)
    kernel[0, 0] = 0.0  # a zero weight, wherever its block goes
    kernel[1, 1] = -0.0
    projected, states = unification.project_dense(kernel, 0.4, 0.3, block_size)
    assert projected.dtype == dtype
    original = dense_blocks_of(kernel, block_size)
    result = dense_blocks_of(projected, block_size)
    seen = set()
    for key, w in original.items():
        p = result[key]
        state = states[key]
        seen.add(int(state))
        if state == FREE:
            assert same_bits(p, w)
        elif state == PRUNED:
            assert not p.any() and not np.signbit(p).any()  # +0 exactly
        else:
            assert_unified(p, w)
    assert seen == {FREE, UNIFIED, PRUNED}


def test_unified_block_with_zeros_and_negative_zero():
    kernel = np.array([[0.0], [-2.0], [3.0], [-0.0], [5.0]], dtype=np.float32)
    projected, states = unification.project_dense(kernel, 1.0, 0.0, block_size=4)
    assert states.tolist() == [[UNIFIED, UNIFIED]]
    # mean |w| of [0, -2, 3, -0] is 1.25; the 1-weight last block is itself
    assert projected.ravel().tolist() == [1.25, -1.25, 1.25, 1.25, 5.0]
    assert not np.signbit(projected[3, 0])


def test_project_dense_total_error_is_the_brute_force_minimum():
    kernel = random_dense((6, 2), seed=5, dtype=np.float64)  # 3 blocks of 2 per output
    unify_error, prune_error = unification.block_errors_dense(kernel, 2)
    minima = brute_force_minima(unify_error.ravel(), prune_error.ravel())
    for unify, prune in FRACTION_PAIRS:
        projected, states = unification.project_dense(kernel, unify, prune, 2)
        num_unify, num_prune = expected_counts(6, unify, prune)
        error = np.sum((projected - kernel) ** 2)
        assert error == pytest.approx(minima[num_unify, num_prune], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "block_size"), [((20, 7), 8), ((16, 5), 4), ((1, 1, 14, 6), 3), ((64, 9), 8)]
)
def test_dense_projection_is_idempotent_and_states_read_back(shape, block_size, dtype):
    kernel = random_dense(shape, seed=11, dtype=dtype)
    for unify, prune in FRACTION_PAIRS:
        projected, states = unification.project_dense(kernel, unify, prune, block_size)
        again, states_again = unification.project_dense(projected, unify, prune, block_size)
        assert np.array_equal(states_again, states)
        assert same_bits(again, projected)
        # random free blocks almost surely do not share one magnitude
        assert np.array_equal(unification.read_dense_states(projected, block_size), states)
        assert same_bits(unification.apply_dense(projected, states, block_size), projected)
        assert same_bits(unification.apply_dense(kernel, states, block_size), projected)


def test_apply_dense_follows_weights_that_moved():
    kernel = random_dense((8, 3), seed=4)
    states = np.array([[UNIFIED], [PRUNED], [FREE]], dtype=np.uint8)
    moved = kernel * 1.5 + 0.1
    applied = unification.apply_dense(moved, states, block_size=8)
    assert np.allclose(np.abs(applied[:, 0]), np.mean(np.abs(moved[:, 0])), rtol=1e-6)
    assert (np.sign(applied[:, 0]) == np.where(moved[:, 0] < 0, -1, 1)).all()
    assert not applied[:, 1].any()
    assert same_bits(applied[:, 2].copy(), moved[:, 2].copy())
    # A unified block that went all zero stays zero and reads back as pruned.
    moved[:, 0] = 0.0
    applied = unification.apply_dense(moved, states, block_size=8)
    assert not applied[:, 0].any()
    assert unification.read_dense_states(applied, 8)[0, 0] == PRUNED


def test_read_dense_states_rules():
    kernel = np.array(
        [
            [0.0, 0.5, 0.5, 1.0, 2.0],
            [0.0, -0.5, 0.25, 1.0, 0.0],
            [0.0, 0.5, 0.5, 0.0, 0.0],
        ],
        dtype=np.float32,
    )  # (in=3, out=5); block size 2: blocks [0:2] and the 1-weight [2:3]
    states = unification.read_dense_states(kernel, 2)
    assert states.tolist() == [
        [PRUNED, PRUNED],
        [UNIFIED, UNIFIED],
        [FREE, UNIFIED],
        [UNIFIED, PRUNED],
        [FREE, PRUNED],
    ]
    # Equal up to the last bit is not unified.
    almost = np.array([[1.0], [np.nextafter(np.float32(1.0), np.float32(2.0))]], np.float32)
    assert unification.read_dense_states(almost, 2).tolist() == [[FREE]]


def test_block_lengths_and_stored_values_dense():
    lengths = unification.block_lengths_dense(10, 3, 4)
    assert lengths.tolist() == [[4, 4, 2]] * 3
    assert unification.block_lengths_dense(8, 2, 8).tolist() == [[8], [8]]
    assert unification.num_blocks_dense(10, 4) == 3
    states = np.array(
        [[FREE, UNIFIED, PRUNED], [UNIFIED, UNIFIED, FREE], [PRUNED, PRUNED, PRUNED]], np.uint8
    )
    assert unification.stored_values(states, lengths) == (4 + 1) + (1 + 1 + 2) + 0
    all_free = np.zeros((3, 3), np.uint8)
    assert unification.stored_values(all_free, lengths) == 30
    kernel = random_dense((10, 3), seed=9)
    _, states = unification.project_dense(kernel, 0.5, 0.25, 4)
    free_weights = int(lengths[states == FREE].sum())
    assert unification.stored_values(states, lengths) == free_weights + (states == UNIFIED).sum()


def test_one_by_one_conv_kernel_keeps_its_shape():
    kernel = random_dense((1, 1, 24, 5), seed=6)
    projected, states = unification.project_dense(kernel, 0.5, 0.25, 8)
    assert projected.shape == (1, 1, 24, 5) and states.shape == (5, 3)
    flat, flat_states = unification.project_dense(kernel.reshape(24, 5), 0.5, 0.25, 8)
    assert np.array_equal(flat_states, states)
    assert same_bits(flat, projected.reshape(24, 5))


def test_states_are_output_major():
    kernel = np.zeros((4, 2), np.float32)
    kernel[:, 1] = [1.0, -1.0, 3.0, -3.0]  # output 1: two unified-looking blocks
    kernel[:, 0] = [0.5, 0.0, 0.0, 0.0]
    states = unification.read_dense_states(kernel, 2)
    assert states.tolist() == [[FREE, PRUNED], [UNIFIED, UNIFIED]]


# ----------------------------------------------------------------------------------------------
# Pattern layout


def pattern_pruned(shape=(3, 3, 8, 12), seed=0, connectivity=0.3, dtype=np.float32):
    kernel = random_dense(shape, seed=seed, dtype=dtype)
    library = patterns.select_library([kernel], num_patterns=4)
    projected, codes = patterns.project(kernel, library, connectivity)
    keep = patterns.projection_mask(codes, library)
    return kernel, projected, codes, keep


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_project_pattern_on_a_pattern_projection(dtype):
    kernel, projected, codes, keep = pattern_pruned(dtype=dtype)
    eligible = codes >= 0
    for unify, prune in FRACTION_PAIRS:
        result, states = unification.project_pattern(projected, keep, unify, prune)
        assert result.dtype == dtype and result.shape == kernel.shape
        assert states.shape == codes.shape and states.dtype == np.uint8
        assert (states[~eligible] == PRUNED).all()
        num_unify, num_prune = expected_counts(int(eligible.sum()), unify, prune)
        assert np.count_nonzero(states[eligible] == UNIFIED) == num_unify
        assert np.count_nonzero(states[eligible] == PRUNED) == num_prune
        assert not result[~keep].any()
        for i, o in itertools.product(*map(range, codes.shape)):
            taps, kept = result[:, :, i, o], keep[:, :, i, o]
            before = projected[:, :, i, o]
            if states[i, o] == FREE:
                assert same_bits(taps.copy(), before.copy())
            elif states[i, o] == PRUNED:
                assert not taps.any() and not np.signbit(taps).any()
            else:
                assert kept.sum() == patterns.WEIGHTS_PER_PATTERN
                assert_unified(taps[kept], before[kept])


def test_project_pattern_is_idempotent_and_states_read_back():
    _, projected, codes, keep = pattern_pruned(seed=3)
    for unify, prune in FRACTION_PAIRS:
        result, states = unification.project_pattern(projected, keep, unify, prune)
        again, states_again = unification.project_pattern(result, keep, unify, prune)
        assert np.array_equal(states_again, states)
        assert same_bits(again, result)
        assert np.array_equal(unification.read_pattern_states(result, keep), states)
        assert np.array_equal(unification.read_pattern_states(result), states)
        assert same_bits(unification.apply_pattern(result, keep, states), result)
        assert same_bits(unification.apply_pattern(projected, keep, states), result)


def test_project_pattern_zeroes_taps_outside_keep_and_is_optimal():
    kernel, projected, codes, keep = pattern_pruned(shape=(3, 3, 2, 3), seed=8, connectivity=0.0)
    # The raw kernel has non-zeros outside the patterns: they go, and the choice is the same.
    raw, raw_states = unification.project_pattern(kernel, keep, 0.5, 1 / 6)
    result, states = unification.project_pattern(projected, keep, 0.5, 1 / 6)
    assert same_bits(raw, result) and np.array_equal(raw_states, states)
    assert not raw[~keep].any()
    # Brute force over the 6 kernels: the total squared error is the least with 3 unified and 1
    # pruned.
    kept = np.where(keep, projected, 0).astype(np.float64)
    prune_error = (kept**2).sum(axis=(0, 1)).ravel()
    magnitude = np.abs(kept).sum(axis=(0, 1)).ravel()
    unify_error = prune_error - magnitude**2 / keep.sum(axis=(0, 1)).ravel()
    best = brute_force_minima(unify_error, prune_error)[3, 1]
    assert np.sum((result.astype(np.float64) - projected) ** 2) == pytest.approx(best, rel=1e-5)


def test_read_pattern_states_with_and_without_keep():
    kernel = np.zeros((3, 3, 1, 4), np.float32)
    keep = np.zeros(kernel.shape, dtype=bool)
    keep[1, 1, 0, :] = True  # a one-tap "pattern" for every kernel ...
    keep[0, 0, 0, 1:] = True  # ... and a second tap for kernels 1..3
    kernel[1, 1, 0, 0] = 2.0  # kernel 0: one tap, non-zero
    kernel[1, 1, 0, 1], kernel[0, 0, 0, 1] = 2.0, -2.0  # kernel 1: unified
    kernel[1, 1, 0, 2] = 2.0  # kernel 2: one of its two kept taps is zero
    states_with_keep = unification.read_pattern_states(kernel, keep)
    assert states_with_keep.tolist() == [[UNIFIED, UNIFIED, FREE, PRUNED]]
    # Without keep a lone non-zero tap is free (unifying a wider pattern would spread it).
    assert unification.read_pattern_states(kernel).tolist() == [[FREE, UNIFIED, FREE, PRUNED]]
    projected, states = unification.project_pattern(kernel, keep, 1.0)
    assert states.tolist() == [[UNIFIED, UNIFIED, UNIFIED, UNIFIED]]
    assert projected[:, :, 0, 2][keep[:, :, 0, 2]].tolist() == [1.0, 1.0]
    # Kernel 3 is all zero: unified, it stays zero, which reads back as pruned.
    assert not projected[:, :, 0, 3].any()
    read = unification.read_pattern_states(projected, keep)
    assert read.tolist() == [[UNIFIED, UNIFIED, UNIFIED, PRUNED]]


def test_removed_kernels_do_not_count_and_stored_values_pattern():
    _, projected, codes, keep = pattern_pruned(connectivity=0.5, seed=4)
    lengths = unification.block_lengths_pattern(keep)
    assert np.array_equal(lengths, np.where(codes >= 0, 4, 0))
    eligible = int((codes >= 0).sum())
    assert eligible == codes.size - patterns.num_to_prune(codes.size, 0.5)
    result, states = unification.project_pattern(projected, keep, 0.5, 0.25)
    num_unify, num_prune = expected_counts(eligible, 0.5, 0.25)
    assert np.count_nonzero(states == PRUNED) == num_prune + codes.size - eligible
    free = np.count_nonzero(states == FREE)
    assert free == eligible - num_unify - num_prune
    assert unification.stored_values(states, lengths) == 4 * free + num_unify
    assert unification.stored_values(states, lengths) == np.count_nonzero(
        result[:, :, states == FREE]
    ) + np.count_nonzero(states == UNIFIED)


def test_apply_pattern_follows_weights_that_moved():
    _, projected, codes, keep = pattern_pruned(seed=5)
    result, states = unification.project_pattern(projected, keep, 0.5, 0.2)
    moved = projected * 0.5 + 0.01  # also leaks into taps outside the patterns
    applied = unification.apply_pattern(moved, keep, states)
    assert not applied[~keep].any()
    assert np.array_equal(unification.read_pattern_states(applied, keep), states)
    free = states == FREE
    assert same_bits(applied[:, :, free][keep[:, :, free]], moved[:, :, free][keep[:, :, free]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_magnitude_blocks_have_exactly_zero_unify_error(dtype):
    magnitudes = np.random.default_rng(12).uniform(0.01, 10.0, size=200)
    signs = np.array([1, -1, 1, 1, -1, 1, -1])
    kernel = (signs[:, np.newaxis] * magnitudes).astype(dtype)  # (in=7, out=200), one block each
    unify_error, prune_error = unification.block_errors_dense(kernel, 7)
    assert (unify_error == 0).all()
    assert (prune_error > 0).all()
    projected, states = unification.project_dense(kernel, 1.0, 0.0, 7)
    assert same_bits(projected, kernel)
