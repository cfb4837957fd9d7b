"""Tile grid: full-size tiles, cores that partition the scene, exhaustive ownership, and the guarantee."""

import numpy as np
import pytest

from smallseg.errors import SmallsegError
from smallseg.tiling.grid import max_extent_from_centroid_px, overlap_for, tile_windows

COMBOS = [
    # (height, width, tile, overlap)
    (100, 100, 32, 8),
    (97, 131, 40, 12),  # not divisible by the stride: last tiles shifted back
    (203, 77, 48, 30),  # overlap > tile / 2: three tile rows reach some scene rows
    (20, 50, 32, 8),  # fewer rows than a tile: padded
    (64, 64, 64, 16),  # exactly one tile
    (65, 66, 64, 17),  # one pixel more than a tile, odd overlap
]


def _coverage(grid, which):
    count = np.zeros((grid.height, grid.width), np.int32)
    for t in grid:
        w = getattr(t, which)
        count[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    return count


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_tiles_full_size_cover_scene_and_overlap_enough(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    assert len(list(grid)) == grid.n_rows * grid.n_cols == len(grid)
    for t in grid:
        assert (t.window.height, t.window.width) == (tile, tile)
        assert t.window.row_off >= 0 and t.window.col_off >= 0
    for starts, length in ((grid.row_starts, h), (grid.col_starts, w)):
        assert starts[0] == 0
        assert all(b > a for a, b in zip(starts, starts[1:]))  # strictly increasing
        if length >= tile:
            assert starts[-1] + tile == length  # last tile shifted back to end at the edge
            assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))  # never less overlap
        else:
            assert starts == (0,)  # padded: a single tile running past the scene
    assert grid.padded == (h < tile, w < tile)
    assert (_coverage(grid, "window") >= 1).all()


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_cores_partition_the_scene_and_lie_in_their_tile(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    assert (_coverage(grid, "core") == 1).all()
    for t in grid:
        c, win = t.core, t.window
        assert win.row_off <= c.row_off and c.row_off + c.height <= win.row_off + win.height
        assert win.col_off <= c.col_off and c.col_off + c.width <= win.col_off + win.width


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_ownership_is_exhaustive_every_position_in_exactly_one_core(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    # Quarter-pixel steps hit the half-pixel boundaries exactly; go a few px past the scene too.
    ys = np.arange(-3.0, h + 3.0, 0.25)
    xs = np.arange(-3.0, w + 3.0, 0.25)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([yy.ravel(), xx.ravel()], axis=1)
    owners = np.zeros(len(pts), np.int32)
    for t in grid:
        owners += t.owns(pts - np.array(t.offset_yx, float))
    assert (owners == 1).all()


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_guarantee_object_near_owned_centroid_lies_in_the_tile(h, w, tile, overlap):
    # For every core pixel p the box p +- floor(overlap/2) (clipped to the scene) is inside the tile:
    # an object within floor(overlap/2) px of a centroid in p's pixel is whole in the owner tile.
    r = overlap // 2
    grid = tile_windows(h, w, tile, overlap)
    for t in grid:
        c, win = t.core, t.window
        assert max(c.row_off - r, 0) >= win.row_off
        assert min(c.row_off + c.height - 1 + r, h - 1) <= win.row_off + win.height - 1
        assert max(c.col_off - r, 0) >= win.col_off
        assert min(c.col_off + c.width - 1 + r, w - 1) <= win.col_off + win.width - 1


@pytest.mark.parametrize("h,w,tile,overlap", COMBOS)
def test_final_row_bands_partition_rows_and_no_later_tile_reaches_above(h, w, tile, overlap):
    grid = tile_windows(h, w, tile, overlap)
    bands = [grid.final_rows(r) for r in range(grid.n_rows)]
    assert bands[0][0] == 0 and bands[-1][1] == h
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    for r, (_, row1) in enumerate(bands):
        later_tops = [grid.row_starts[k] for k in range(r + 1, grid.n_rows)]
        assert all(top >= row1 for top in later_tops)
    assert grid.max_pending_rows() <= tile


def test_tile_rows_group_tiles_left_to_right():
    grid = tile_windows(97, 131, 40, 12)
    rows = grid.tile_rows()
    assert len(rows) == grid.n_rows
    for r, row in enumerate(rows):
        assert [t.row for t in row] == [r] * grid.n_cols
        assert [t.col for t in row] == list(range(grid.n_cols))
        win = grid.row_window(r)
        assert win.row_off == row[0].window.row_off and win.width >= 131


def test_interior_edges_exclude_the_scene_border():
    grid = tile_windows(100, 100, 40, 10)
    first, last = grid.tile(0, 0), grid.tile(grid.n_rows - 1, grid.n_cols - 1)
    assert first.interior_edges() == (False, True, False, True)
    assert last.interior_edges() == (True, False, True, False)
    padded = tile_windows(20, 20, 32, 8).tile(0, 0)
    assert padded.interior_edges() == (False, False, False, False)


def test_non_square_tiles_and_overlaps():
    grid = tile_windows(90, 200, (32, 64), (8, 16))
    assert (grid.tile_h, grid.tile_w, grid.overlap_h, grid.overlap_w) == (32, 64, 8, 16)
    assert (_coverage(grid, "core") == 1).all()


@pytest.mark.parametrize(
    "h,w,tile,overlap", [(100, 100, 32, 32), (100, 100, 32, -1), (0, 10, 32, 8), (10, 10, 0, 0)]
)
def test_bad_settings_raise_one_line_errors(h, w, tile, overlap):
    with pytest.raises(SmallsegError) as err:
        tile_windows(h, w, tile, overlap)
    assert "\n" not in str(err.value)


def test_overlap_for_gives_the_guarantee():
    for extent in [0, 0.4, 3, 3.5, 7.9, 16]:
        o = overlap_for(extent)
        assert o // 2 >= extent and o % 2 == 0
        assert o - 2 < 2 * extent or o == 0  # smallest even overlap that works
    with pytest.raises(SmallsegError):
        overlap_for(-1)


def test_max_extent_from_centroid_matches_hand_computed_shapes():
    labels = np.zeros((40, 40), np.int32)
    labels[2:7, 3:8] = 1  # 5x5 square: centre 2 px from its edge pixels
    labels[20, 10:21] = 2  # 11-px line: 5 px
    labels[30:33, 30] = 3
    labels[32, 31:37] = 3  # L: 9 px, centroid (31.67, 32.67) -> farthest col 36 is 3.33 px away
    assert max_extent_from_centroid_px(labels) == pytest.approx(5.0)
    labels[20, 10:21] = 0
    assert max_extent_from_centroid_px(labels) == pytest.approx(36 - (30 * 3 + 31 + 32 + 33 + 34 + 35 + 36) / 9)
    assert max_extent_from_centroid_px(np.zeros((5, 5), np.int32)) == 0.0
