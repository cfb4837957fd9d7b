"""One DICOM file, headers only: what it is (image, non-image object, not DICOM, unreadable) and what grouping,
stacking and geometry need from it.

Image files are described by GDCM (``ReadImageInformation``: no pixel decoding). For everything GDCM refuses,
and for non-image objects decided from the file meta group, the top level of the data set is walked here
directly (explicit or implicit VR, little or big endian; sequences skipped without being parsed), so that:

- a non-image object carries its *own* Series Instance UID (a SEG's, not the UID of the series it references
  in a nested sequence; a DICOMDIR none, not the UID of an image it indexes);
- a data set without Pixel Data is called what it is ("no pixel data"), not corrupt;
- an RT Structure Set without the Part-10 header is called RTSTRUCT, not "not DICOM".
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field

import SimpleITK as sitk

from smallseg.errors import one_line

# Storage SOP classes that hold no image we could segment: (short name used as the row's modality, long name).
# Prefix entries (ending in ".") cover families.
NON_IMAGE_SOP_CLASSES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.5.1.4.1.1.66.4": ("SEG", "DICOM Segmentation Storage object"),
    "1.2.840.10008.5.1.4.1.1.66.7": ("SEG", "DICOM Label Map Segmentation Storage object"),
    "1.2.840.10008.5.1.4.1.1.66.5": ("SEG", "DICOM Surface Segmentation Storage object"),
    "1.2.840.10008.5.1.4.1.1.66": ("RAW", "DICOM Raw Data Storage object"),
    "1.2.840.10008.5.1.4.1.1.66.1": ("REG", "DICOM Spatial Registration Storage object"),
    "1.2.840.10008.5.1.4.1.1.66.2": ("FID", "DICOM Spatial Fiducials Storage object"),
    "1.2.840.10008.5.1.4.1.1.66.3": ("REG", "DICOM Deformable Spatial Registration Storage object"),
    "1.2.840.10008.5.1.4.1.1.481.2": ("RTDOSE", "DICOM RT Dose Storage object (a dose grid)"),
    "1.2.840.10008.5.1.4.1.1.481.3": ("RTSTRUCT", "DICOM RT Structure Set Storage object"),
    "1.2.840.10008.5.1.4.1.1.481.5": ("RTPLAN", "DICOM RT Plan Storage object"),
    "1.2.840.10008.5.1.4.1.1.104.1": ("DOC", "DICOM Encapsulated PDF Storage object"),
    "1.2.840.10008.5.1.4.1.1.104.2": ("DOC", "DICOM Encapsulated CDA Storage object"),
    "1.2.840.10008.1.3.10": ("DICOMDIR", "DICOMDIR (media storage directory index)"),
    "1.2.840.10008.5.1.4.1.1.88.": ("SR", "DICOM Structured Report object"),
    "1.2.840.10008.5.1.4.1.1.11.": ("PR", "DICOM Presentation State object"),
    "1.2.840.10008.5.1.4.1.1.9.": ("ECG", "DICOM Waveform object"),
    "1.2.840.10008.5.1.4.1.1.481.": ("RT", "DICOM RT (non-image) object"),
}
_IMAGE_SOP_EXCEPTIONS = {"1.2.840.10008.5.1.4.1.1.481.1"}  # RT Image Storage: a real (portal) image
NON_IMAGE_MODALITIES = {"SEG": "DICOM Segmentation object", "SR": "DICOM Structured Report object",
                        "RTSTRUCT": "DICOM RT Structure Set object", "RTPLAN": "DICOM RT Plan object",
                        "RTDOSE": "DICOM RT Dose object (a dose grid)", "PR": "DICOM Presentation State object",
                        "KO": "DICOM Key Object Selection object", "REG": "DICOM Registration object",
                        "FID": "DICOM Spatial Fiducials object", "DOC": "DICOM encapsulated document"}

# Tags copied into Volume.meta. Deliberately no patient identifiers: meta ends up in logs and outputs.
META_TAGS = {
    "0008|0016": "SOPClassUID", "0008|0060": "Modality", "0008|0070": "Manufacturer",
    "0008|1090": "ManufacturerModelName", "0008|0020": "StudyDate", "0008|1030": "StudyDescription",
    "0008|103e": "SeriesDescription", "0020|0011": "SeriesNumber", "0018|0015": "BodyPartExamined",
    "0018|0050": "SliceThickness", "0018|0088": "SpacingBetweenSlices", "0018|0060": "KVP",
    "0018|1210": "ConvolutionKernel", "0018|5100": "PatientPosition", "0028|0004": "PhotometricInterpretation",
    "0028|0101": "BitsStored", "0028|0103": "PixelRepresentation", "0028|1050": "WindowCenter",
    "0028|1051": "WindowWidth", "0028|1052": "RescaleIntercept", "0028|1053": "RescaleSlope",
    "0028|1054": "RescaleType", "0018|0087": "MagneticFieldStrength", "0018|0081": "EchoTime",
    "0018|0080": "RepetitionTime", "0008|0008": "ImageType", "0028|0030": "PixelSpacing",
    "0018|1164": "ImagerPixelSpacing", "0018|0086": "EchoNumbers", "0020|0012": "AcquisitionNumber",
    "0020|0100": "TemporalPositionIdentifier",
}

HEAD_BYTES = 64 * 1024
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # Pixel Data, Float / Double Float Pixel Data
_UNDEFINED = 0xFFFFFFFF
# Top-level tags the walker keeps.
_WALK_TAGS = {0x00080016: "sop_class_uid", 0x00080060: "modality", 0x0020000E: "series_uid",
              0x0020000D: "study_uid", 0x0008103E: "description"}

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png",
                     ".jpg", ".jpeg", ".bmp")


@dataclass
class FileInfo:
    """What :func:`inspect_file` found in one file (headers only)."""

    path: str
    kind: str  # image | not_image | not_dicom | unreadable
    reason: str = ""
    sop_class_uid: str = ""
    sop_name: str = ""  # long name of a non-image object
    sop_code: str = ""  # its short name (SEG, RTSTRUCT, SR, DICOMDIR...)
    series_uid: str = ""
    study_uid: str = ""
    modality: str = ""
    description: str = ""
    rows: int = 0
    cols: int = 0
    frames: int = 1
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    instance_number: int | None = None
    pixel_id: int = -1
    components: int = 1
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def image_type(self) -> tuple[str, ...]:
        """Image Type (0008,0008) values, upper case (``("ORIGINAL", "PRIMARY", "AXIAL")``)."""
        return tuple(v.strip().upper() for v in self.tags.get("ImageType", "").split("\\") if v.strip())


def non_image_name(sop_class_uid: str, modality: str = "") -> tuple[str, str]:
    """(short, long) name when the SOP class / modality is a non-image object, else ``("", "")``."""
    if sop_class_uid and sop_class_uid not in _IMAGE_SOP_EXCEPTIONS:
        if sop_class_uid in NON_IMAGE_SOP_CLASSES and not sop_class_uid.endswith("."):
            return NON_IMAGE_SOP_CLASSES[sop_class_uid]
        for prefix, names in NON_IMAGE_SOP_CLASSES.items():
            if prefix.endswith(".") and sop_class_uid.startswith(prefix):
                return names
    code = modality.strip().upper()
    return (code, NON_IMAGE_MODALITIES[code]) if code in NON_IMAGE_MODALITIES else ("", "")


def parse_file_meta(head: bytes) -> tuple[dict[int, str], int]:
    """The file meta group (0002,xxxx) of a Part-10 file (explicit VR little endian after 'DICM'): its UI values
    by element number, and the offset where the data set starts."""
    out: dict[int, str] = {}
    pos = 132
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4: pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                break
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if vr == b"UI":
            out[elem] = head[start: start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return out, pos


class _Malformed(Exception):
    """The bytes do not parse as DICOM elements (the walk gives up; nothing is claimed)."""


def _walk(buf, pos: int, explicit: bool, endian: str, found: dict | None, nested: bool) -> tuple[int, bool]:
    """Walk data elements from ``pos``; record wanted top-level values in ``found`` (None inside sequences).

    Returns (position after the walk, whether Pixel Data was reached). A nested walk stops after an Item
    Delimitation item. Raises :class:`_Malformed` on bytes that are not elements, ``EOFError`` at the end of
    ``buf`` inside an element.
    """
    n = len(buf)
    while pos + 8 <= n:
        group, elem = struct.unpack_from(endian + "HH", buf, pos)
        tag = (group << 16) | elem
        if tag == 0xFFFEE00D:  # item delimitation: end of a nested data set
            if not nested:
                raise _Malformed
            return pos + 8, False
        if found is not None and tag in _PIXEL_TAGS:
            return pos, True
        if explicit:
            vr = bytes(buf[pos + 4: pos + 6])
            if vr not in _VRS:
                raise _Malformed
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise EOFError
                (length,) = struct.unpack_from(endian + "I", buf, pos + 8)
                start = pos + 12
            else:
                (length,) = struct.unpack_from(endian + "H", buf, pos + 6)
                start = pos + 8
        else:
            vr = b""
            (length,) = struct.unpack_from(endian + "I", buf, pos + 4)
            start = pos + 8
        if length == _UNDEFINED:
            # A sequence (or UN of undefined length, which is implicit VR inside): skip its items.
            pos = _skip_sequence(buf, start, explicit and vr != b"UN", endian)
            continue
        if start + length > n:
            raise EOFError
        if found is not None and tag in _WALK_TAGS:
            found[_WALK_TAGS[tag]] = bytes(buf[start: start + length]).rstrip(b"\x00 ").decode("latin-1").strip()
        pos = start + length
    if pos != n:
        raise EOFError
    return pos, False


def _skip_sequence(buf, pos: int, explicit: bool, endian: str) -> int:
    n = len(buf)
    while pos + 8 <= n:
        group, elem = struct.unpack_from(endian + "HH", buf, pos)
        (length,) = struct.unpack_from(endian + "I", buf, pos + 4)
        tag = (group << 16) | elem
        if tag == 0xFFFEE0DD:  # sequence delimitation
            return pos + 8
        if tag != 0xFFFEE000:
            raise _Malformed
        if length == _UNDEFINED:
            pos, _ = _walk(buf, pos + 8, explicit, endian, None, nested=True)
        else:
            pos += 8 + length
    raise EOFError


def walk_top_level(buf, start: int, transfer_syntax: str | None) -> tuple[dict[str, str], bool | None]:
    """Top-level values of a data set (SOP class, modality, series/study UID, description) and whether it has
    Pixel Data: True, False (the whole data set was walked and holds none), or None (could not tell).

    ``transfer_syntax``: from the file meta, or None for a data set without one (explicit VR is recognised by
    the VR letters of its first element; little endian assumed).
    """
    found: dict[str, str] = {}
    if transfer_syntax == "1.2.840.10008.1.2.1.99":  # deflated: the data set is zlib-compressed
        return found, None
    endian = ">" if transfer_syntax == "1.2.840.10008.1.2.2" else "<"
    if transfer_syntax is None:
        explicit = bytes(buf[start + 4: start + 6]) in _VRS
    else:
        explicit = transfer_syntax != "1.2.840.10008.1.2"
    try:
        _, pixels = _walk(buf, start, explicit, endian, found, nested=False)
    except (_Malformed, EOFError, struct.error):
        return found, None
    return found, pixels


def truncation_note(path: str) -> str:
    """Explain a GDCM failure when the Pixel Data element is shorter than it declares, else ``""``."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            i = m.find(b"\xe0\x7f\x10\x00")
            if i < 0 or i + 12 > len(m):
                return ""
            if m[i + 4: i + 6] in (b"OB", b"OW"):
                (declared,) = struct.unpack_from("<I", m, i + 8)
                start = i + 12
            else:
                (declared,) = struct.unpack_from("<I", m, i + 4)
                start = i + 8
            available = len(m) - start
            if declared != _UNDEFINED and declared > available:
                return (f"pixel data declares {declared} bytes but only {available} remain in the file: "
                        "the file is truncated")
    except (OSError, ValueError):
        return ""
    return ""


def _gdcm_info(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader


def floats(text: str) -> tuple[float, ...]:
    """``"0.5\\0.7"`` -> ``(0.5, 0.7)``; ``()`` when not numbers."""
    try:
        return tuple(float(v) for v in text.replace(" ", "").split("\\") if v != "")
    except ValueError:
        return ()


def not_dicom_reason(path: str) -> str:
    lower = path.lower()
    for ext in VOLUME_EXTENSIONS:
        if lower.endswith(ext):
            return f"not DICOM (a {ext} file: read it with read_volume on the file itself)"
    return "not DICOM (no 'DICM' marker at byte 128 and no DICOM data element at the start)"


def _walked_info(path: str, found: dict[str, str], pixels: bool | None, sop_class: str = "") -> FileInfo | None:
    """A FileInfo for a non-image or pixel-less data set from the walked top level, else None."""
    sop_class = sop_class or found.get("sop_class_uid", "")
    code, name = non_image_name(sop_class, found.get("modality", ""))
    common = dict(sop_class_uid=sop_class, series_uid=found.get("series_uid", ""),
                  study_uid=found.get("study_uid", ""), modality=found.get("modality", ""),
                  description=found.get("description", ""))
    if name:
        return FileInfo(path, "not_image", f"{name}, not an image", sop_name=name, sop_code=code, **common)
    if pixels is False and (sop_class or found.get("series_uid")):
        return FileInfo(path, "not_image", "no pixel data (a DICOM data set without an image)",
                        sop_name="no pixel data", sop_code=found.get("modality", ""), **common)
    return None


def inspect_file(path: str, try_bare_dataset: bool = False) -> FileInfo:
    """Classify one file cheaply (headers only) and collect what grouping, stacking and geometry need."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
            whole = len(head) < HEAD_BYTES or not fh.read(1)
    except OSError as exc:
        return FileInfo(path, "unreadable", f"cannot open: {one_line(exc)}")
    if not head:
        return FileInfo(path, "not_dicom", "empty file")
    has_preamble = head[128:132] == b"DICM"
    transfer_syntax: str | None = None
    start = 0
    info = FileInfo(path, "image")
    if has_preamble:
        file_meta, start = parse_file_meta(head)
        transfer_syntax = file_meta.get(0x0010, "")
        info.sop_class_uid = file_meta.get(0x0002, "")
        if non_image_name(info.sop_class_uid)[1]:
            # Decided from the file meta alone: no need to ask GDCM (which rejects pixel-less objects anyway).
            found, _ = _walk_file(path, head, whole, start, transfer_syntax)
            return _walked_info(path, found, None, info.sop_class_uid)  # type: ignore[return-value]
    else:
        # A data set without the Part-10 header starts with a group-0008 (or 0002) element; GDCM can read those.
        looks_bare = len(head) >= 4 and head[0] in (0x02, 0x08) and head[1] == 0 and head[3] == 0
        if not (looks_bare or try_bare_dataset):
            return FileInfo(path, "not_dicom", not_dicom_reason(path))
    try:
        reader = _gdcm_info(path)
    except RuntimeError:
        found, pixels = _walk_file(path, head, whole, start, transfer_syntax)
        walked = _walked_info(path, found, pixels)
        if walked is not None:
            return walked
        if not has_preamble and not found.get("sop_class_uid"):
            return FileInfo(path, "not_dicom", not_dicom_reason(path) + "; GDCM cannot parse it as a DICOM "
                            "data set without header either")
        note = truncation_note(path)
        return FileInfo(path, "unreadable", f"DICOM file that GDCM cannot read ({note or 'corrupt or unsupported'})",
                        sop_class_uid=info.sop_class_uid or found.get("sop_class_uid", ""),
                        series_uid=found.get("series_uid", ""), modality=found.get("modality", ""))

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    info.sop_class_uid = info.sop_class_uid or tag("0008|0016")
    info.modality = tag("0008|0060")
    info.sop_code, info.sop_name = non_image_name(info.sop_class_uid, info.modality)
    info.series_uid = tag("0020|000e")
    info.study_uid = tag("0020|000d")
    info.description = tag("0008|103e")
    if info.sop_name:
        info.kind, info.reason = "not_image", f"{info.sop_name}, not an image"
        return info
    size = reader.GetSize()
    info.cols, info.rows = int(size[0]), int(size[1])
    info.frames = int(size[2]) if len(size) > 2 else 1
    pos = floats(tag("0020|0032"))
    info.position = pos if len(pos) == 3 else None  # type: ignore[assignment]
    ori = floats(tag("0020|0037"))
    info.orientation = ori if len(ori) == 6 else None
    number = tag("0020|0013")
    info.instance_number = int(float(number)) if re.fullmatch(r"[-+]?\d+(\.0*)?", number) else None
    info.pixel_id = reader.GetPixelID()
    info.components = reader.GetNumberOfComponents()
    info.tags = {name: tag(key) for key, name in META_TAGS.items() if tag(key)}
    return info


def _walk_file(path: str, head: bytes, whole: bool, start: int,
               transfer_syntax: str | None) -> tuple[dict[str, str], bool | None]:
    """:func:`walk_top_level` over the whole file (memory-mapped when it is larger than ``head``)."""
    if whole:
        return walk_top_level(head, start, transfer_syntax)
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return walk_top_level(m, start, transfer_syntax)
    except (OSError, ValueError):
        return walk_top_level(head, start, transfer_syntax)
