"""Synthetic aerial / satellite scenes with exact small-object ground truth (cars and small buildings).

A scene is planned once, as vectors, from its seed: a road grid at a random angle, city blocks with a land
use each (residential rows of houses, parking lots, commercial lots, parks, fields, farms), cars parked in
lots and along kerbs or driving in lanes, trees, unlabelled clutter (sheds, pools), a sun position for
shadows, haze and sensor noise levels. Pixels are then rendered from that plan window by window; every
random texture is a pure function of the pixel's global position (:mod:`smallseg.data.noise`), so a scene
written in windows is identical to the same scene rendered in one piece, and memory is bounded by the
window size, not the scene size.

Ground truth:

- ``instances``: (H, W) uint32, 0 = background, object ``k`` has id ``k`` (unique in the scene).
- ``classes``: (H, W) uint8, 0 = background, 1 = car, 2 = building.
- A pixel belongs to an object when its centre lies inside the object's footprint (a rotated rectangle);
  objects never overlap (they may touch: row houses, tight parking), ties on a shared edge go to the
  object listed first.
- The object table gives each footprint (centre, length, width, angle in map units) and its analytic area,
  plus the rendered pixel count ``area_px`` and ``area_m2 = area_px * pixel_size_m**2``.

Image: (bands, H, W), bands R, G, B (and NIR when ``bands=4``); uint8 is a display-like stretch of
reflectance (gamma 1/1.6, reflectance 0.5 -> 255), uint16 is linear 12-bit (reflectance 0.6 -> 4095).
With ``nodata_collar=True`` the valid footprint is a rotated quadrilateral, pixels outside it are the
nodata value 0 (valid pixels are never 0) and carry no objects.

Modules: this one holds the settings, the scene value and the public API (make, write, save); planning the
scene as vectors from the seed is :mod:`smallseg.data.remote_sensing_plan`, rendering windows of pixels from
the plan :mod:`smallseg.data.remote_sensing_render`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.crs
import rasterio.errors
from rasterio.transform import Affine
from rasterio.windows import Window
from scipy import ndimage

from smallseg.data import landscape as _ls
from smallseg.data.remote_sensing_plan import (  # noqa: F401 - re-exported: the scene's classes and land uses
    BUILDING,
    CAR,
    CLASS_NAMES,
    COMMERCIAL,
    FARM,
    FIELD,
    FOREST,
    PARK,
    PARKING,
    RESIDENTIAL,
    TREE,
    WATER,
    _Plan,
    _plan_scene,
)
from smallseg.data.remote_sensing_render import _finish_window, _render_window
from smallseg.errors import SmallsegError
from smallseg.instances import Instances
from smallseg.io.atomic import atomic_path
from smallseg.io.tables import SceneObjects

WORLDS = ("v1", "v2")


@dataclass
class RemoteSensingScene:
    """A rendered scene held in memory.

    Attributes:
        image: (bands, H, W) uint8 or uint16 image, bands R, G, B(, NIR).
        instances: (H, W) uint32 instance ids, 0 = background.
        classes: (H, W) uint8 class ids, 0 = background, 1 = car, 2 = building.
        transform: rasterio ``Affine`` pixel -> map transform (north up, square pixels).
        crs: rasterio ``CRS`` of the map coordinates.
        nodata: image nodata value (0) when the scene has a nodata collar, else None.
        pixel_size_m: ground sampling distance, metres per pixel.
        objects: the :class:`SceneObjects` of every object in ``instances``.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    transform: object
    crs: object
    nodata: int | None
    pixel_size_m: float
    objects: SceneObjects

    def to_instances(self):
        """Ground truth as :class:`smallseg.instances.Instances` (ids = table ids, class_ids 1 car / 2 building)."""
        present = self.objects.area_px > 0
        ids = self.objects.id[present].astype(np.int64)
        centroids = np.zeros((len(ids), 2))
        if len(ids):
            centroids = np.asarray(ndimage.center_of_mass(np.ones(self.instances.shape, np.uint8),
                                                          self.instances, ids)).reshape(-1, 2)
        return Instances(labels=self.instances, ids=ids, class_ids=self.objects.class_id[present].astype(np.int32),
                         scores=np.ones(len(ids), np.float32), centroids_yx=centroids)


@dataclass(frozen=True)
class SceneSettings:
    """Everything that defines a scene; equal settings give bit-identical scenes.

    Attributes:
        height, width: scene size in pixels.
        seed: master seed.
        pixel_size_m: ground sampling distance, 0.1 to 2 m.
        bands: 3 (RGB) or 4 (RGB + NIR).
        dtype: ``"uint8"`` or ``"uint16"``.
        nodata_collar: surround the valid area with a nodata collar.
        crs: any CRS string rasterio accepts; should be projected with metre units.
        origin_xy: map coordinates of the scene's upper-left corner (metres).
        density: multiplies how built-up the scene is (0.3 sparse rural ... 1.5 dense urban); 1 = as drawn
            from the seed.
        world: ``"v1"`` the classic world (cars and buildings; bit-identical to earlier releases) or ``"v2"``
            (:mod:`smallseg.data.landscape`: trees as class 3, forests, water, snow, soil, roof detail,
            occlusion by crowns, and :mod:`smallseg.data.sensor` effects: PSF, noise, haze, radiometric
            jitter, JPEG).
        landscape: v2 only: ``"auto"`` (drawn from the seed), ``"urban"``, ``"suburban"``, ``"rural"``, ``"forest"``.
        season: v2 only: ``"auto"``, ``"summer"`` or ``"winter"`` (snow, low sun, leaf-off broadleaves).
    """

    height: int
    width: int
    seed: int
    pixel_size_m: float = 0.5
    bands: int = 3
    dtype: str = "uint8"
    nodata_collar: bool = False
    crs: str = "EPSG:32633"
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0)
    density: float = 1.0
    world: str = "v1"
    landscape: str = "auto"
    season: str = "auto"

    def __post_init__(self) -> None:
        self.validate()  # at construction: nothing is planned or written for bad settings

    def validate(self) -> None:
        """Refuse bad settings in one line naming the field (the CLI spells it as its flag)."""
        if self.height < 16 or self.width < 16:
            raise SmallsegError(f"height x width {self.height}x{self.width}: scenes must be at least 16x16 pixels")
        if not 0.1 <= self.pixel_size_m <= 2.0:
            raise SmallsegError(f"pixel_size_m {self.pixel_size_m}: use 0.1 to 2 m (cars must span pixels)")
        if self.bands not in (1, 3, 4):
            raise SmallsegError(f"bands {self.bands}: use 1 (panchromatic), 3 (RGB) or 4 (RGB+NIR)")
        if self.world not in WORLDS:
            raise SmallsegError(f"world {self.world!r}: use one of {', '.join(WORLDS)}")
        if self.landscape not in _ls.LANDSCAPES:
            raise SmallsegError(f"landscape {self.landscape!r}: use one of {', '.join(_ls.LANDSCAPES)}")
        if self.season not in _ls.SEASONS:
            raise SmallsegError(f"season {self.season!r}: use one of {', '.join(_ls.SEASONS)}")
        if self.world == "v1" and (self.landscape, self.season) != ("auto", "auto"):
            raise SmallsegError("landscape and season choose parts of world 'v2'; pass world='v2' as well")
        if self.dtype not in ("uint8", "uint16"):
            raise SmallsegError(f"dtype {self.dtype}: use uint8 or uint16")
        if not 0.0 <= self.density <= 3.0:
            raise SmallsegError(f"density {self.density}: use 0 to 3")
        try:
            crs = rasterio.crs.CRS.from_user_input(self.crs)
        except rasterio.errors.CRSError:
            raise SmallsegError(f"crs {self.crs}: not a CRS rasterio knows; use e.g. EPSG:32633") from None
        if not crs.is_projected:
            raise SmallsegError(f"crs {self.crs}: not a projected CRS; pixel sizes are in metres, use a UTM zone")

    @property
    def transform(self):
        x0, y0 = self.origin_xy
        return Affine(self.pixel_size_m, 0.0, x0, 0.0, -self.pixel_size_m, y0)

    @property
    def nodata(self) -> int | None:
        return 0 if self.nodata_collar else None


# ----------------------------------------------------------------------------------------------------------
# Public API (planning: remote_sensing_plan.py; rendering: remote_sensing_render.py)


def _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
              world="v1", landscape="auto", season="auto"):
    return SceneSettings(int(height), int(width), int(seed), float(pixel_size_m), int(bands), str(dtype),
                         bool(nodata_collar), str(crs), (float(origin_xy[0]), float(origin_xy[1])),
                         float(density), str(world), str(landscape), str(season))


def _object_table(plan: _Plan, area_px: np.ndarray, bbox_px: np.ndarray) -> SceneObjects:
    s = plan.settings
    px = s.pixel_size_m
    n = len(plan.obj_cx)
    x0, y0 = s.origin_xy
    angle = -np.degrees(plan.obj_ang)  # internal frame has y down; map angles count counter-clockwise
    angle = (angle + 90.0) % 180.0 - 90.0
    angle[angle == -90.0] = 90.0
    return SceneObjects(
        id=np.arange(1, n + 1, dtype=np.uint32), class_id=plan.obj_class.copy(),
        center_x=x0 + plan.obj_cx, center_y=y0 - plan.obj_cy,
        center_row_px=plan.obj_cy / px - 0.5, center_col_px=plan.obj_cx / px - 0.5,
        length_m=plan.obj_len.copy(), width_m=plan.obj_wid.copy(), angle_deg=angle,
        height_m=plan.obj_height.copy(), footprint_area_m2=plan.obj_len * plan.obj_wid,
        area_px=area_px.astype(np.int64), area_m2=area_px * px * px, bbox_px=bbox_px.astype(np.int64),
        context=np.array([str(c) for c in plan.obj_context], dtype=str),
    )


def _accumulate_objects(instances: np.ndarray, row0: int, col0: int, area_px, bbox_px) -> None:
    """Add one window's pixel counts and bounding boxes into the scene-wide columns (index = id - 1)."""
    fg = np.flatnonzero(instances.ravel())
    if len(fg) == 0:
        return
    ids = instances.ravel()[fg].astype(np.int64) - 1
    rr, cc = np.divmod(fg, instances.shape[1])
    order = np.argsort(ids, kind="stable")
    ids, rr, cc = ids[order], rr[order] + row0, cc[order] + col0
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    uid = ids[starts]
    area_px[uid] += np.diff(np.r_[starts, len(ids)])
    for col, fn, off in ((0, np.minimum, 0), (1, np.minimum, 0), (2, np.maximum, 1), (3, np.maximum, 1)):
        src = rr if col in (0, 2) else cc
        red = (np.minimum if fn is np.minimum else np.maximum).reduceat(src, starts) + off
        cur = bbox_px[uid, col]
        bbox_px[uid, col] = np.where(cur < 0, red, fn(cur, red))


def make_remote_sensing_scene(
    height: int,
    width: int,
    *,
    seed: int,
    pixel_size_m: float = 0.5,
    bands: int = 3,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0),
    density: float = 1.0,
    world: str = "v1",
    landscape: str = "auto",
    season: str = "auto",
) -> RemoteSensingScene:
    """Render a whole scene in memory.

    Args:
        height, width: scene size in pixels (keep to a few thousand; use :func:`write_remote_sensing_scene`
            for big scenes).
        seed: any int; equal arguments give bit-identical output.
        pixel_size_m: ground sampling distance in metres (0.1-2; cars 3.6-4.9 m and buildings 6-20 m
            keep their physical size, so they span fewer pixels at coarser resolution).
        bands: 1 (panchromatic), 3 (R, G, B) or 4 (R, G, B, NIR).
        dtype: ``"uint8"`` (display stretch) or ``"uint16"`` (linear 12-bit).
        nodata_collar: surround the valid area with a nodata (0) collar, as in orthorectified scenes.
        crs: projected CRS (metre units) written to the GeoTIFF.
        origin_xy: map coordinates (m) of the upper-left corner.
        density: scales how built-up the scene is (1 = as drawn from the seed).
        world: ``"v1"`` (classic: cars and buildings) or ``"v2"`` (adds trees as class 3, forests, water, snow,
            soils, roof detail, occlusion by crowns and sensor effects; see :class:`SceneSettings`).
        landscape, season: v2 only, ``"auto"`` or a choice (:data:`smallseg.data.landscape.LANDSCAPES`,
            :data:`~smallseg.data.landscape.SEASONS`).

    Returns:
        :class:`RemoteSensingScene` with image (bands, H, W), instances (H, W) uint32, classes (H, W) uint8,
        transform, crs, nodata and the object table (areas counted from the rendered raster).
    """
    s = _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
                  world, landscape, season)
    plan = _plan_scene(s)
    refl, instances, valid = _render_window(plan, 0, s.height, 0, s.width)
    image = _finish_window(plan, refl, valid, 0, 0)
    n = len(plan.obj_cx)
    area_px = np.zeros(n, np.int64)
    bbox_px = np.full((n, 4), -1, np.int64)
    _accumulate_objects(instances, 0, 0, area_px, bbox_px)
    lut = np.concatenate([[0], plan.obj_class]).astype(np.uint8)
    return RemoteSensingScene(
        image=image, instances=instances, classes=lut[instances], transform=s.transform,
        crs=rasterio.crs.CRS.from_user_input(s.crs), nodata=s.nodata, pixel_size_m=s.pixel_size_m,
        objects=_object_table(plan, area_px, bbox_px),
    )


@dataclass(frozen=True)
class RemoteSensingScenePaths:
    """Files of a written scene: ``<stem>_image.tif``, ``_instances.tif``, ``_classes.tif``, ``_objects.csv``."""

    image: Path
    instances: Path
    classes: Path
    objects_csv: Path

    @classmethod
    def from_stem(cls, path_stem: str | os.PathLike) -> "RemoteSensingScenePaths":
        stem = Path(path_stem)
        return cls(*(stem.with_name(stem.name + suffix) for suffix in
                     ("_image.tif", "_instances.tif", "_classes.tif", "_objects.csv")))


def _block_size(n: int) -> int:
    return 512 if n >= 512 else max(16, 16 * ((n + 15) // 16))


def geotiff_profiles(settings: SceneSettings) -> tuple[dict, dict, dict]:
    """rasterio profiles (image, instances, classes): same CRS, transform and size; tiled, deflate."""
    s = settings
    common = dict(
        driver="GTiff", height=s.height, width=s.width, crs=rasterio.crs.CRS.from_user_input(s.crs),
        transform=s.transform, tiled=True, blockxsize=_block_size(s.width), blockysize=_block_size(s.height),
        compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
    )
    image = dict(common, count=s.bands, dtype=s.dtype, nodata=s.nodata, interleave="pixel")
    if s.bands == 3 and s.dtype == "uint8":
        image["photometric"] = "RGB"
    instances = dict(common, count=1, dtype="uint32", nodata=None)
    classes = dict(common, count=1, dtype="uint8", nodata=None)
    return image, instances, classes


def write_remote_sensing_scene(
    path_stem: str | os.PathLike,
    height: int,
    width: int,
    *,
    seed: int,
    pixel_size_m: float = 0.5,
    bands: int = 3,
    dtype: str = "uint8",
    nodata_collar: bool = False,
    crs: str = "EPSG:32633",
    origin_xy: tuple[float, float] = (389_000.0, 5_819_000.0),
    density: float = 1.0,
    world: str = "v1",
    landscape: str = "auto",
    season: str = "auto",
    window_px: int = 1024,
) -> RemoteSensingScenePaths:
    """Render and write a scene window by window, in memory bounded by ``window_px`` (not the scene size).

    Writes ``<stem>_image.tif`` (bands, dtype, nodata), ``<stem>_instances.tif`` (uint32) and
    ``<stem>_classes.tif`` (uint8) with one profile (CRS, transform, size; tiled 512 blocks, deflate), and
    ``<stem>_objects.csv`` (:class:`SceneObjects`). Output is identical to :func:`make_remote_sensing_scene`
    with the same arguments, whatever ``window_px``. Files are written under temporary names
    (:func:`smallseg.io.atomic.atomic_path`) and renamed only when complete.

    Args:
        path_stem: output path without suffix; its folder is created.
        window_px: render window side in pixels, a multiple of 16 (blocks of 512 are filled whole when it is
            a multiple of 512). Peak memory is roughly ``80 * window_px**2`` bytes plus the object table.
        (other arguments as :func:`make_remote_sensing_scene`)

    Returns:
        :class:`RemoteSensingScenePaths` of the four files.
    """
    if window_px < 16 or window_px % 16:
        raise SmallsegError(f"window_px {window_px}: use a positive multiple of 16 (e.g. 1024)")
    s = _settings(height, width, seed, pixel_size_m, bands, dtype, nodata_collar, crs, origin_xy, density,
                  world, landscape, season)
    paths = RemoteSensingScenePaths.from_stem(path_stem)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    plan = _plan_scene(s)
    n = len(plan.obj_cx)
    area_px = np.zeros(n, np.int64)
    bbox_px = np.full((n, 4), -1, np.int64)
    lut = np.concatenate([[0], plan.obj_class]).astype(np.uint8)
    p_img, p_ins, p_cls = geotiff_profiles(s)
    # The three rasters are renamed to their final names together, once all are complete (io.atomic names).
    with contextlib.ExitStack() as staged:
        tmp = {key: staged.enter_context(atomic_path(final)) for key, final in
               (("image", paths.image), ("instances", paths.instances), ("classes", paths.classes))}
        with rasterio.open(tmp["image"], "w", **p_img) as d_img, \
                rasterio.open(tmp["instances"], "w", **p_ins) as d_ins, \
                rasterio.open(tmp["classes"], "w", **p_cls) as d_cls:
            for row0 in range(0, s.height, window_px):
                row1 = min(row0 + window_px, s.height)
                for col0 in range(0, s.width, window_px):
                    col1 = min(col0 + window_px, s.width)
                    refl, instances, valid = _render_window(plan, row0, row1, col0, col1)
                    win = Window(col0, row0, col1 - col0, row1 - row0)
                    d_img.write(_finish_window(plan, refl, valid, row0, col0), window=win)
                    d_ins.write(instances[None], window=win)
                    d_cls.write(lut[instances][None], window=win)
                    _accumulate_objects(instances, row0, col0, area_px, bbox_px)
    _object_table(plan, area_px, bbox_px).write_csv(paths.objects_csv, class_names=CLASS_NAMES)
    return paths


def save_remote_sensing_scene(scene: RemoteSensingScene, path_stem: str | os.PathLike) -> RemoteSensingScenePaths:
    """Write an in-memory scene to the same four files as :func:`write_remote_sensing_scene`."""
    paths = RemoteSensingScenePaths.from_stem(path_stem)
    paths.image.parent.mkdir(parents=True, exist_ok=True)
    bands, height, width = scene.image.shape
    settings = SceneSettings(height, width, 0, scene.pixel_size_m, bands, str(scene.image.dtype),
                             scene.nodata is not None, scene.crs.to_string(),
                             (scene.transform.c, scene.transform.f))
    p_img, p_ins, p_cls = geotiff_profiles(settings)
    for profile, data, final in ((p_img, scene.image, paths.image), (p_ins, scene.instances[None], paths.instances),
                                 (p_cls, scene.classes[None], paths.classes)):
        with atomic_path(final) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
    scene.objects.write_csv(paths.objects_csv, class_names=CLASS_NAMES)
    return paths
