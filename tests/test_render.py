"""Overlays as radiologists read them: patient's right on the image's left, orientation letters, thin volumes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import GEOMETRIES

from segkit.render import MARKER, display_views, label_color, render_overlay, render_view

# Where a RAS+ world direction lands in each view: (view, RAS axis, sign) -> image side
SIDES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}


def blob_volume(affine: np.ndarray, shape=(24, 20, 16)) -> tuple[np.ndarray, np.ndarray, str]:
    """A bright blob (and its mask) on the patient's right, anterior and superior, whatever the affine."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = (affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T  # RAS mm
    centre = world.mean(0)
    extent = world.max(0) - world.min(0)
    # +x is the patient's right in RAS; the blob sits in the right, anterior, superior octant
    near = np.linalg.norm((world - (centre + extent / 4)) / extent, axis=1) < 0.15
    image = np.where(near, 1000.0, 0.0).reshape(shape).astype(np.float32)
    image += np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    return image, near.reshape(shape).astype(np.uint8), "R"


def half(values: np.ndarray, axis: int) -> tuple[float, float]:
    n = values.shape[axis]
    first, second = np.split(values, [n // 2], axis=axis)
    return float(first.sum()), float(second.sum())


# a sheared grid is drawn slice by slice as stored (as viewers do): its voxel halves are not the world's halves
@pytest.mark.parametrize("name", [g for g in GEOMETRIES if g != "sheared"])
def test_views_put_the_patients_right_on_the_image_left_and_anterior_superior_up(name):
    image, mask, _ = blob_volume(GEOMETRIES[name])
    views = {v.plane: v for v in display_views(image, mask, GEOMETRIES[name])}
    assert set(views) == {"axial", "coronal", "sagittal"}
    for plane, view in views.items():
        assert view.markers == SIDES[plane]
        left, right = half(view.image, axis=1)
        top, bottom = half(view.image, axis=0)
        assert top > 10 * bottom, (plane, name)  # anterior (axial) or superior (coronal, sagittal) is up
        assert left > 10 * right, (plane, name)  # R (axial, coronal) or A (sagittal) is on the image's left
        assert np.array_equal(view.mask > 0, view.image > 500)  # the mask moves with its image


def test_rendered_axial_panel_shows_the_right_sided_blob_on_its_left_half():
    affine = GEOMETRIES["LPS"]  # stored left-to-right: the picture must flip it
    image, mask, _ = blob_volume(affine)
    axial = next(v for v in display_views(image, mask, affine) if v.plane == "axial")
    rgb = render_view(axial, (0.0, 1000.0), [label_color(0), label_color(1)])
    h, w, _ = rgb.shape
    panel = rgb[h // 10 : -h // 10, w // 10 : -w // 10].astype(float).mean(-1)  # margins hold the letters
    left, right = half(panel > 128, axis=1)  # the blob, white under its mask's tint, on a black background
    assert left > 100 and right == 0, (left, right)
    letters = np.all(rgb == MARKER, axis=-1)  # R on the left edge, L on the right, A on top, P at the bottom
    assert letters[:, : w // 10].any() and letters[:, -w // 10 :].any()
    assert letters[: h // 10].any() and letters[-h // 10 :].any()
    assert not letters[h // 10 : -h // 10, w // 10 : -w // 10].any()


def test_overlay_outlines_each_label_in_its_colour_over_a_tinted_fill():
    image = np.zeros((40, 40, 20), np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[10:30, 10:30, 5:15] = 1
    axial = next(v for v in display_views(image, mask, np.eye(4)) if v.plane == "axial")
    rgb = render_view(axial, (0.0, 1.0), [label_color(0), label_color(1)], fill=0.5, size=40)
    edge = np.all(rgb == label_color(1), axis=-1)
    assert edge.sum() == 4 * 20 - 4  # a one-pixel outline round the 20x20 square
    inside = rgb[15:25, 15:25]
    assert np.allclose(inside, np.asarray(label_color(1)) * 0.5, atol=1)  # half the colour over black
    assert not rgb[:6, :6].any()  # outside the mask the (black) image is untouched


@pytest.mark.parametrize(
    "shape, affine, planes",
    [
        ((484, 300, 1), np.diag([0.7, 0.7, 4.0, 1.0]), ["axial"]),  # one axial slice
        ((40, 30, 2), np.diag([1.0, 1.0, 5.0, 1.0]), ["axial", "coronal", "sagittal"]),  # two slices
        ((1, 30, 40), np.diag([3.0, 1.0, 1.0, 1.0]), ["sagittal"]),  # one sagittal slice
        ((1, 1, 1), np.eye(4), ["axial"]),
    ],
    ids=["one-axial-slice", "two-slices", "one-sagittal-slice", "one-voxel"],
)
def test_thin_volumes_draw_their_real_views(shape, affine, planes):
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(0, max(1, s // 2)) for s in shape)] = 1
    views = display_views(image, mask, affine)
    assert [v.plane for v in views] == planes
    picture = render_overlay(image, mask, affine, ("background", "organ"), "thin")
    assert picture.width > 100 and picture.height > 100
