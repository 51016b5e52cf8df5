"""Splitting a model-wide connectivity target over layers (NumPy only)."""

import numpy as np
import pytest

from tfpconv.sparsity.allocation import layer_fractions

VGG = [(64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]


def removed_share(shapes, fractions):
    sizes = np.array([i * o for i, o in shapes], dtype=np.float64)
    return float((np.array(fractions) * sizes).sum() / sizes.sum())


@pytest.mark.parametrize("connectivity", [0.0, 0.3, 0.72, 0.95])
def test_uniform_removes_the_target_from_every_layer(connectivity):
    assert layer_fractions(VGG, connectivity) == [connectivity] * len(VGG)


@pytest.mark.parametrize("connectivity", [0.3, 0.5, 0.72, 0.9])
def test_erdos_renyi_removes_the_target_share_of_all_kernels(connectivity):
    fractions = layer_fractions(VGG, connectivity, "erdos_renyi")
    assert removed_share(VGG, fractions) == pytest.approx(connectivity)
    assert all(0.0 <= f < 1.0 for f in fractions)
    # Wider layers lose more: the fractions rise along this VGG's growing layers.
    assert fractions == sorted(fractions) and fractions[0] < connectivity < fractions[-1]


def test_erdos_renyi_densities_follow_the_fan_in_plus_fan_out_rule():
    fractions = layer_fractions(VGG, 0.72, "erdos_renyi")
    density = 1.0 - np.array(fractions)
    scores = np.array([(i + o) / (i * o) for i, o in VGG])
    np.testing.assert_allclose(density / scores, density[0] / scores[0])


def test_a_layer_that_would_exceed_full_density_keeps_everything_and_the_rest_make_up():
    shapes = [(3, 8), (64, 256), (256, 256)]
    fractions = layer_fractions(shapes, 0.5, "erdos_renyi")
    assert fractions[0] == 0.0
    assert removed_share(shapes, fractions) == pytest.approx(0.5)
    density = 1.0 - np.array(fractions[1:])
    scores = np.array([(i + o) / (i * o) for i, o in shapes[1:]])
    np.testing.assert_allclose(density / scores, density[0] / scores[0])


def test_equal_layers_get_equal_fractions_and_no_layers_is_fine():
    assert layer_fractions([(32, 32)] * 3, 0.6, "erdos_renyi") == pytest.approx([0.6] * 3)
    assert layer_fractions([], 0.6, "erdos_renyi") == []


def test_bad_allocation_and_connectivity_are_rejected():
    with pytest.raises(ValueError, match="unknown connectivity_allocation 'random'.*uniform"):
        layer_fractions(VGG, 0.5, "random")
    with pytest.raises(ValueError, match="connectivity"):
        layer_fractions(VGG, 1.0, "erdos_renyi")
