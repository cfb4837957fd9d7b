"""One object-table package (smallseg.io.tables): every table indexes, slices and iterates the same way, each
CSV format is written and read by one implementation, byte-identical to the writers it replaced, and text
cells cannot run as spreadsheet formulas."""

import csv
import dataclasses

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin

import smallseg.data.microscopy
import smallseg.data.remote_sensing
import smallseg.pipeline.volume
import smallseg.tiling.stitch
from smallseg.errors import SmallsegError
from smallseg.io.geotiff import RasterGeometry
from smallseg.io.tables import (
    NucleiTable,
    ObjectTable,
    SceneObjects,
    Table,
    VolumeObjects,
    read_object_table,
    read_objects_csv,
    write_objects_csv,
)

# Bytes written by the implementations these tables replaced (pipeline/geotiff.py write_objects_csv,
# data/remote_sensing.py and data/microscopy.py write_csv, pipeline/volume.py write_objects_csv at e53f5aa)
# for the tables built below: the shared module must write exactly these.
BEFORE = {
    'nuclei': (
        b'id,center_row_px,center_col_px,semi_axis_a_px,semi_axis_b_px,angle_deg,area_px,in_focus,brightness,cluster\r\n'
        b'1,3.142,2.718,5.500,4.250,12.35,77,1,1.2346,-1\r\n'
        b'2,10.000,0.500,7.000,6.125,-80.00,130,0,0.5000,3\r\n'
    ),
    'pred_plain': (
        b'id,class_id,class,score,area_px,area_m2,centroid_row,centroid_col,centroid_x,centroid_y,bbox_row0,bbox_col0,bbox_row1,bbox_col1,tile_row,tile_col,touches_tile_edge\r\n'
        b'3,1,car,0.91,40,,10.25,20.5,21.0,10.75,5,15,16,27,0,0,0\r\n'
        b'7,2,building,0.5,220,,100.0,3.75,4.25,100.5,90,0,111,9,1,0,1\r\n'
        b'12,2,building,0.12345679,9,,55.5,55.125,55.625,56.0,54,54,57,57,0,1,0\r\n'
    ),
    'pred_utm': (
        b'id,class_id,class,score,area_px,area_m2,centroid_row,centroid_col,centroid_x,centroid_y,bbox_row0,bbox_col0,bbox_row1,bbox_col1,tile_row,tile_col,touches_tile_edge\r\n'
        b'3,1,car,0.91,40,3.5999999999999996,10.25,20.5,389006.3,5818996.775,5,15,16,27,0,0,0\r\n'
        b'7,2,building,0.5,220,19.8,100.0,3.75,389001.275,5818969.85,90,0,111,9,1,0,1\r\n'
        b'12,2,building,0.12345679,9,0.8099999999999999,55.5,55.125,389016.6875,5818983.2,54,54,57,57,0,1,0\r\n'
    ),
    'scene': (
        b'id,class_id,class_name,center_x,center_y,center_row_px,center_col_px,length_m,width_m,angle_deg,height_m,footprint_area_m2,area_px,area_m2,bbox_row0,bbox_col0,bbox_row1,bbox_col1,context\r\n'
        b'1,1,car,389001.235,5819001.235,1.235,2.469,6.235,4.235,0.123,0.41,8.6419,4,0.1111,0,1,2,3,parking_lot\r\n'
        b'2,2,building,388997.500,5818997.500,-2.500,-5.000,2.500,0.500,-0.250,-0.83,-17.5000,50,-0.2250,4,5,6,7,house_row\r\n'
        b'3,1,car,390000.125,5820000.125,1000.125,2000.250,1005.125,1003.125,100.013,333.38,7000.8750,600,90.0112,8,9,10,11,kerbside\r\n'
    ),
    'volume2d': (
        b'id,class,class_id,score,max_slice_score,voxels,area_mm2,equivalent_diameter_mm,centroid_lps_x_mm,centroid_lps_y_mm,centroid_y_index,centroid_x_index,slice_first,slice_last,bbox_y0,bbox_x0,bbox_y1,bbox_x1\n'
        b'1,nuclei,1,0.75,0.8,10,5.1235,2.1235,-0.6667,-1.6667,0.3333,1.3333,0,0,0,1,2,3\n'
        b'2,nodule,2,0.333333,0.41,200,100.0,5.75,-2.6667,-3.6667,2.3333,3.3333,0,0,4,5,6,7\n'
    ),
    'volume3d': (
        b'id,class,class_id,score,max_slice_score,voxels,volume_mm3,equivalent_diameter_mm,centroid_lps_x_mm,centroid_lps_y_mm,centroid_lps_z_mm,centroid_z_index,centroid_y_index,centroid_x_index,slice_first,slice_last,bbox_z0,bbox_y0,bbox_x0,bbox_z1,bbox_y1,bbox_x1\n'
        b'1,nuclei,1,0.75,0.8,10,5.1235,2.1235,-0.6667,-1.6667,-2.6667,0.3333,1.3333,2.3333,0,2,0,1,2,3,4,5\n'
        b'2,nodule,2,0.333333,0.41,200,100.0,5.75,-3.6667,-4.6667,-5.6667,3.3333,4.3333,5.3333,1,4,6,7,8,9,10,11\n'
    ),
}


def prediction_table() -> ObjectTable:
    return ObjectTable(ids=np.array([3, 7, 12]), class_ids=np.array([1, 2, 2], np.int32),
                       scores=np.array([0.91, 0.5, 0.123456789], np.float32),
                       centroids_yx=np.array([[10.25, 20.5], [100.0, 3.75], [55.5, 55.125]]),
                       area_px=np.array([40, 220, 9]),
                       bbox=np.array([[5, 15, 16, 27], [90, 0, 111, 9], [54, 54, 57, 57]]),
                       tile_rc=np.array([[0, 0], [1, 0], [0, 1]], np.int32),
                       touches_tile_edge=np.array([False, True, False]))


def scene_table() -> SceneObjects:
    f = np.array([1.23456, -2.5, 1000.125])
    return SceneObjects(id=np.array([1, 2, 3], np.uint32), class_id=np.array([1, 2, 1], np.uint8),
                        center_x=f + 389000, center_y=f + 5819000, center_row_px=f, center_col_px=f * 2,
                        length_m=f + 5, width_m=f + 3, angle_deg=f / 10, height_m=f / 3, footprint_area_m2=f * 7,
                        area_px=np.array([4, 50, 600]), area_m2=f * 0.09,
                        bbox_px=np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]),
                        context=np.array(["parking_lot", "house_row", "kerbside"]))


def nuclei_table() -> NucleiTable:
    return NucleiTable(id=np.array([1, 2]), center_row_px=np.array([3.14159, 10.0]),
                       center_col_px=np.array([2.71828, 0.5]), semi_axes_px=np.array([[5.5, 4.25], [7.0, 6.125]]),
                       angle_deg=np.array([12.345, -80.0]), area_px=np.array([77, 130]),
                       in_focus=np.array([True, False]), brightness=np.array([1.23456, 0.5]),
                       cluster=np.array([-1, 3]))


def volume_table(nd: int, names=("nuclei", "nodule")) -> VolumeObjects:
    size = np.array([5.123456, 100.0])
    return VolumeObjects(ids=np.array([1, 2]), class_ids=np.array([1, 2], np.int32), class_names=list(names),
                         scores=np.array([0.75, 0.3333333], np.float32),
                         max_slice_scores=np.array([0.8, 0.41], np.float32), voxels=np.array([10, 200]),
                         volume_mm3=size if nd == 3 else None, area_mm2=None if nd == 3 else size,
                         equivalent_diameter_mm=np.array([2.1234567, 5.75]),
                         centroid_index=np.arange(2 * nd, dtype=float).reshape(2, nd) + 0.33333,
                         centroid_lps_mm=-np.arange(2 * nd, dtype=float).reshape(2, nd) - 0.66666,
                         slice_range=np.array([[0, 2], [1, 4]]) if nd == 3 else np.zeros((2, 2), np.int64),
                         bbox=np.arange(4 * nd).reshape(2, 2 * nd))


UTM = RasterGeometry(128, 128, CRS.from_epsg(32633), from_origin(389000.0, 5819000.0, 0.3, 0.3))
PLAIN = RasterGeometry(128, 128, None, from_origin(0, 0, 1, -1))


def test_every_csv_is_byte_identical_to_the_writer_it_replaced(tmp_path):
    write_objects_csv(tmp_path / "pred_utm.csv", prediction_table(), ["car", "building"], UTM)
    write_objects_csv(tmp_path / "pred_plain.csv", prediction_table(), ["car", "building"], PLAIN)
    scene_table().write_csv(tmp_path / "scene.csv", class_names=smallseg.data.remote_sensing.CLASS_NAMES)
    nuclei_table().write_csv(tmp_path / "nuclei.csv")
    volume_table(2).write_csv(tmp_path / "volume2d.csv")
    volume_table(3).write_csv(tmp_path / "volume3d.csv")
    for name, before in BEFORE.items():
        assert (tmp_path / f"{name}.csv").read_bytes() == before, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_each_table_reads_back_what_it_wrote(tmp_path):
    back = read_objects_csv(write_objects_csv(tmp_path / "p.csv", prediction_table(), ["car", "building"], UTM))
    for name in ObjectTable.column_names():
        np.testing.assert_array_equal(getattr(back, name), getattr(prediction_table(), name))
    scene = SceneObjects.read_csv(scene_table().write_csv(tmp_path / "s.csv", class_names={1: "car", 2: "building"}))
    np.testing.assert_array_equal(scene.bbox_px, scene_table().bbox_px)
    assert scene.context.tolist() == ["parking_lot", "house_row", "kerbside"] and scene.id.dtype == np.uint32
    nuclei = NucleiTable.read_csv(nuclei_table().write_csv(tmp_path / "n.csv"))
    np.testing.assert_array_equal(nuclei.in_focus, [True, False])
    for nd in (2, 3):
        volume = VolumeObjects.read_csv(volume_table(nd).write_csv(tmp_path / f"v{nd}.csv"))
        assert volume.ndim == nd and volume.class_names == ["nuclei", "nodule"]
        np.testing.assert_array_equal(volume.bbox, volume_table(nd).bbox)
    # Header only: an empty table of the right type.
    empty = read_objects_csv(write_objects_csv(tmp_path / "e.csv", ObjectTable.empty(), [], UTM))
    assert type(empty) is ObjectTable and len(empty) == 0


def test_rows_are_frozen_records_and_tables_index_slice_concat_and_iterate():
    table = prediction_table()
    row = table[1]
    assert (row.id, row.class_id, row.area_px, row.bbox, row.touches_tile_edge) == (7, 2, 220, (90, 0, 111, 9), True)
    assert isinstance(row.score, float) and row.centroid_yx == (100.0, 3.75)
    assert table[-1].id == 12 and [r.id for r in table] == [3, 7, 12] and table.to_dicts()[0]["id"] == 3
    with pytest.raises(IndexError):
        table[3]
    with pytest.raises(AttributeError):
        row.id = 4
    with pytest.raises(dataclasses.FrozenInstanceError):  # the table itself is frozen
        table.ids = np.zeros(3)
    sub = table[table.area_px > 20]
    assert type(sub) is ObjectTable and sub.ids.tolist() == [3, 7] and table[[2, 0]].ids.tolist() == [12, 3]
    both = ObjectTable.concat([table[1:], table[:1]])
    assert both.ids.tolist() == [7, 12, 3] and both.sorted_by_id().ids.tolist() == [3, 7, 12]
    volume = volume_table(3)
    assert volume[1].class_name == "nodule" and volume[volume.scores > 0.5].class_names == ["nuclei"]
    assert [r.id for r in scene_table()] == [1, 2, 3] and nuclei_table()[0].semi_axes_px == (5.5, 4.25)
    with pytest.raises(ValueError, match="differ in length"):
        ObjectTable(**{**{n: getattr(table, n) for n in ObjectTable.column_names()}, "scores": np.zeros(2)})


def test_one_class_per_role_everywhere():
    # The modules that used to define their own tables use these (one implementation each).
    assert smallseg.tiling.stitch.ObjectTable is ObjectTable
    assert smallseg.data.remote_sensing.SceneObjects is SceneObjects
    assert smallseg.data.microscopy.NucleiTable is NucleiTable
    assert smallseg.pipeline.volume.VolumeObjects is VolumeObjects
    for cls in (ObjectTable, SceneObjects, NucleiTable, VolumeObjects):
        assert issubclass(cls, Table)
    assert not hasattr(smallseg.data.remote_sensing, "ObjectTable")


def test_text_cells_cannot_run_as_formulas_and_read_back_unchanged(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+cmd|' /C calc'!A0"]
    path = write_objects_csv(tmp_path / "f.csv", prediction_table(), names, UTM)
    cells = [row[2] for row in csv.reader(path.open(newline="", encoding="utf-8"))][1:]
    assert cells == ["'" + names[0], "'" + names[1], "'" + names[1]]  # a spreadsheet shows them as text
    attrs = read_object_table(path, require=("id", "score"))
    assert attrs.class_names == [names[0], names[1], names[1]]
    assert attrs.class_name_map() == {1: names[0], 2: names[1]}
    volume = VolumeObjects.read_csv(volume_table(2, names=("@SUM(1)", "ok")).write_csv(tmp_path / "v.csv"))
    assert volume.class_names == ["@SUM(1)", "ok"] and "'@SUM(1)" in (tmp_path / "v.csv").read_text(encoding="utf-8")


def test_the_evaluate_reader_takes_any_table_and_rejects_broken_ones(tmp_path):
    scene = scene_table().write_csv(tmp_path / "s_objects.csv", class_names={1: "car", 2: "building"})
    attrs = read_object_table(scene)
    assert attrs.ids.tolist() == [1, 2, 3] and attrs.class_ids.tolist() == [1, 2, 1] and attrs.scores is None
    assert attrs.class_names == ["car", "building", "car"] and len(attrs) == 3 and attrs[0].class_name == "car"
    short = tmp_path / "short.csv"
    short.write_text("id,score,class_id\n1,0.5\n")
    with pytest.raises(SmallsegError, match="line 2: class_id '' is not an integer class id"):
        read_object_table(short)
    with pytest.raises(SmallsegError, match="no such object table"):
        read_object_table(tmp_path / "missing.csv")


# Bytes of dicom-batch's objects.csv with a geometry note, written by pipeline/volume.py write_objects_csv at
# 3531d6c (the second writer, now VolumeObjects.with_geometry_note(...).write_csv): note and class name through
# csv_safe, quoted by the csv module, a header even with no rows.
NOTE = '-pixel spacing missing: 1 mm assumed, "quoted"'
BEFORE_NOTED = {
    'volume2d': (
        b'id,class,class_id,score,max_slice_score,voxels,area_mm2,equivalent_diameter_mm,centroid_lps_x_mm,centroid_lps_y_mm,centroid_y_index,centroid_x_index,slice_first,slice_last,bbox_y0,bbox_x0,bbox_y1,bbox_x1,geometry_note\n'
        b'1,nuclei,1,0.75,0.8,10,5.1235,2.1235,-0.6667,-1.6667,0.3333,1.3333,0,0,0,1,2,3,"\'-pixel spacing missing: 1 mm assumed, ""quoted"""\n'
        b'2,\'=HYPERLINK(1),2,0.333333,0.41,200,100.0,5.75,-2.6667,-3.6667,2.3333,3.3333,0,0,4,5,6,7,"\'-pixel spacing missing: 1 mm assumed, ""quoted"""\n'
    ),
    'volume3d': (
        b'id,class,class_id,score,max_slice_score,voxels,volume_mm3,equivalent_diameter_mm,centroid_lps_x_mm,centroid_lps_y_mm,centroid_lps_z_mm,centroid_z_index,centroid_y_index,centroid_x_index,slice_first,slice_last,bbox_z0,bbox_y0,bbox_x0,bbox_z1,bbox_y1,bbox_x1,geometry_note\n'
        b'1,nuclei,1,0.75,0.8,10,5.1235,2.1235,-0.6667,-1.6667,-2.6667,0.3333,1.3333,2.3333,0,2,0,1,2,3,4,5,"\'-pixel spacing missing: 1 mm assumed, ""quoted"""\n'
        b'2,\'=HYPERLINK(1),2,0.333333,0.41,200,100.0,5.75,-3.6667,-4.6667,-5.6667,3.3333,4.3333,5.3333,1,4,6,7,8,9,10,11,"\'-pixel spacing missing: 1 mm assumed, ""quoted"""\n'
    ),
    'empty': (
        b'id,class,class_id,score,max_slice_score,voxels,volume_mm3,equivalent_diameter_mm,centroid_lps_x_mm,centroid_lps_y_mm,centroid_lps_z_mm,centroid_z_index,centroid_y_index,centroid_x_index,slice_first,slice_last,bbox_z0,bbox_y0,bbox_x0,bbox_z1,bbox_y1,bbox_x1,geometry_note\n'
    ),
}


def test_geometry_note_column_is_byte_identical_to_the_writer_it_replaced(tmp_path):
    for nd in (2, 3):
        table = volume_table(nd, names=("nuclei", "=HYPERLINK(1)")).with_geometry_note(NOTE)
        assert table.write_csv(tmp_path / f"v{nd}.csv").read_bytes() == BEFORE_NOTED[f"volume{nd}d"], nd
        back = VolumeObjects.read_csv(tmp_path / f"v{nd}.csv")
        assert back.geometry_notes == [NOTE, NOTE] and back.class_names == ["nuclei", "=HYPERLINK(1)"]
        assert back[1].geometry_note == NOTE
        assert back.with_geometry_note("") is back  # no note: the plain table, no column
    empty = volume_table(3).rows(slice(0, 0)).with_geometry_note(NOTE)
    assert empty.write_csv(tmp_path / "e.csv").read_bytes() == BEFORE_NOTED["empty"]
    assert "geometry_note" not in volume_table(3).write_csv(tmp_path / "plain.csv").read_text(encoding="utf-8")
