"""The one terrain code: conventions on planes whose derivatives are known."""

from __future__ import annotations

import numpy as np
import pytest

from landslide_lit.data.terrain import terrain_features


def plane(east: float, north: float, shape=(8, 9), pixel=(10.0, 10.0)) -> np.ndarray:
    """Elevation rising ``east`` m/m eastwards and ``north`` m/m northwards (rows go south)."""
    rows, cols = np.indices(shape)
    return 100.0 + east * cols * pixel[0] - north * rows * pixel[1]


@pytest.mark.parametrize(
    ("east", "north", "aspect"),
    [(0.0, 0.1, 180.0), (0.1, 0.0, 270.0), (0.0, -0.1, 0.0), (-0.1, 0.0, 90.0)],
)
def test_aspect_is_the_downslope_azimuth_clockwise_from_north(east, north, aspect):
    features = terrain_features(plane(east, north), 10.0, 10.0)
    np.testing.assert_allclose(features["dem_aspect"], aspect, atol=1e-4)
    np.testing.assert_allclose(features["dem_slope_radians"], np.arctan(0.1), rtol=1e-6)
    # inside: a plane has no curvature (on the edges the repeated edge pixel bends it)
    np.testing.assert_allclose(features["dem_curvature"][1:-1, 1:-1], 0.0, atol=1e-9)


def test_flat_ground_has_aspect_zero_and_a_hilltop_positive_curvature():
    flat = terrain_features(np.full((5, 5), 3.0), 10.0, 10.0)
    assert (flat["dem_aspect"] == 0).all() and (flat["dem_slope_radians"] == 0).all()
    rows, cols = np.indices((9, 9)) * 10.0
    hill = 100.0 - ((rows - 40) ** 2 + (cols - 40) ** 2) / 100.0  # Laplacian -0.04 per m
    centre = terrain_features(hill, 10.0, 10.0)["dem_curvature"][4, 4]
    assert centre == pytest.approx(4.0)  # -100 x Laplacian


def test_rectangular_pixels_scale_each_axis_by_its_own_size():
    dem = plane(0.1, 0.05, pixel=(10.0, 30.0))
    features = terrain_features(dem, 10.0, 30.0)
    np.testing.assert_allclose(features["dem_slope_radians"], np.arctan(np.hypot(0.1, 0.05)))
    rows, cols = np.indices((9, 9))
    bowl = (cols * 10.0) ** 2 + (rows * 30.0) ** 2  # Laplacian 4 per m
    curvature = terrain_features(bowl, 10.0, 30.0)["dem_curvature"][4, 4]
    assert curvature == pytest.approx(-400.0)
