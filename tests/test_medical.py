"""DICOM and NIfTI input: the standard's pixel pipeline, frames and slices, patients,
and every bad input named with its fix.

Offline: files bundled with pydicom and nibabel, and small files written here."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
)

from pytest_gan_privacy import medical
from pytest_gan_privacy.errors import AuditInputError
from pytest_gan_privacy.groups import read_groups_file
from pytest_gan_privacy.images import decode_image, iter_batches, load_image_set
from pytest_gan_privacy.medical import DecodeOptions, pixel_hash, read_image, read_medical_file
from pytest_gan_privacy.settings import AuditSettings, parse_slice_range, parse_window
from pytest_gan_privacy.synthetic import write_dicom, write_nifti

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nib.__file__).parent / "tests" / "data"

# pydicom warns about the odd elements of its own test files
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def bundled(name: str) -> Path:
    path = PYDICOM_FILES / name
    if not path.is_file():
        pytest.skip(f"pydicom does not ship {name} here")
    return path


def images_of(path: Path, options: DecodeOptions | None = None, fmt: str = medical.DICOM):
    """(pixels, hash, window) of every image of one medical file."""
    opened = read_medical_file(path, fmt, options or DecodeOptions())
    return [(read_image(ref), digest, ref.window) for ref, digest in opened.images]


def only_image(path: Path, options: DecodeOptions | None = None) -> np.ndarray:
    (pixels, _, _), *rest = images_of(path, options)
    assert not rest
    return pixels


def ramp(rows: int = 32, cols: int = 24, top: int = 4000) -> np.ndarray:
    """Stored values with structure in both directions (no two rows alike)."""
    r, c = np.mgrid[:rows, :cols]
    return ((r * 131 + c * 17) % top).astype(np.uint16)


# --- transfer syntaxes -------------------------------------------------------------------

LOSSLESS_TWINS = [
    # (file, its transfer syntax): the same MR slice as MR_small.dcm (Explicit VR LE)
    ("MR_small_implicit.dcm", "Implicit VR Little Endian"),
    ("MR_small_bigendian.dcm", "Explicit VR Big Endian"),
    ("MR_small_expb.dcm", "Explicit VR Big Endian"),
    ("MR_small_padded.dcm", "Explicit VR Little Endian"),
    ("MR_small_RLE.dcm", "RLE Lossless"),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless Image Compression"),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
]


@pytest.mark.parametrize(("name", "syntax"), LOSSLESS_TWINS)
def test_a_lossless_syntax_gives_the_uncompressed_pixels_and_hash(name, syntax):
    path = bundled(name)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.name == syntax
    [(original, original_hash, window)] = images_of(bundled("MR_small.dcm"))
    [(pixels, digest, _)] = images_of(path)
    assert window.source == "header" and (window.center, window.width) == (600, 1600)
    np.testing.assert_array_equal(pixels, original)
    assert digest == original_hash


@pytest.mark.parametrize(
    ("name", "syntax", "lossy"),
    [
        ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless, Non-Hierarchical, First-Order Prediction", 0),
        ("SC_rgb_gdcm_KY.dcm", "JPEG 2000 Image Compression", 0),
        ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)", 1),
        ("SC_rgb_jls_lossy_line.dcm", "JPEG-LS Lossy (Near-Lossless) Image Compression", 1),
    ],
)
def test_colour_syntaxes_give_the_rle_original_in_grey(name, syntax, lossy):
    """pydicom ships one RGB picture in many syntaxes; RLE is lossless."""
    path = bundled(name)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.name.startswith(syntax)
    [(original, _, window)] = images_of(bundled("SC_rgb_rle.dcm"))
    [(pixels, _, _)] = images_of(path)
    assert window.source == "colour" and pixels.shape == original.shape == (100, 100)
    difference = np.abs(pixels - original)
    if lossy:  # lossy JPEG: close, not equal
        assert difference.mean() < 0.01 and difference.max() < 0.05
    else:
        assert difference.max() == 0


def test_colour_becomes_bt601_grey_like_pillow():
    ds = pydicom.dcmread(bundled("SC_rgb_rle.dcm"))
    rgb = ds.pixel_array
    grey = only_image(bundled("SC_rgb_rle.dcm"))
    pillow = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype=np.float32) / 255
    assert np.abs(grey - pillow).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    ("name", "syntax", "shape"),
    [
        ("JPGExtended.dcm", "JPEG Extended (Process 2 and 4)", (1024, 256)),
        ("JPEG2000.dcm", "JPEG 2000 Image Compression", (1024, 256)),
        ("JPEGLSNearLossless_16.dcm", "JPEG-LS Lossy (Near-Lossless) Image Compression", (50, 10)),
        ("image_dfl.dcm", "Deflated Explicit VR Little Endian", (512, 512)),
        ("693_J2KI.dcm", "JPEG 2000 Image Compression", (512, 512)),
    ],
)
def test_syntaxes_without_an_uncompressed_twin_decode(name, syntax, shape):
    path = bundled(name)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.name == syntax
    pixels = only_image(path)
    assert pixels.shape == shape and pixels.dtype == np.float32
    assert 0 <= pixels.min() < pixels.max() <= 1


def test_the_same_slice_re_encoded_is_the_same_image(tmp_path: Path):
    """Same stored values in three syntaxes, in used and in not_used: the audit's
    "same image in both folders" check sees one image, and not_used holds it once."""
    stored = ramp(64, 48)  # OpenJPEG's default resolutions need at least 32 x 32 tiles
    write_dicom(tmp_path / "used" / "a.dcm", stored, RescaleIntercept=-1024, RescaleSlope=1)
    for name, syntax in (("rle", RLELossless), ("j2k", JPEG2000Lossless)):
        header = {"RescaleIntercept": -1024, "RescaleSlope": 1}
        write_dicom(tmp_path / "not_used" / name, stored, syntax=syntax, **header)
    used = load_image_set(tmp_path / "used", "used")
    not_used = load_image_set(tmp_path / "not_used", "not_used")
    # the two files of not_used are one image: counted once, the other named as a copy
    assert len(not_used) == 1 and set(not_used.hashes) == set(used.hashes)
    assert [set(pair) for pair in not_used.duplicates] == [{"rle", "j2k"}]

    from pytest_gan_privacy.loading import load_candidates

    (tmp_path / "generated").mkdir()
    settings = AuditSettings(tmp_path / "generated", tmp_path / "used", tmp_path / "not_used")
    with pytest.raises(AuditInputError, match=r"1 image\(s\) are in both used and not_used"):
        load_candidates(settings)


# --- the pixel pipeline --------------------------------------------------------------------


def test_rescale_slope_and_intercept_give_hounsfield_units(tmp_path: Path):
    stored = ramp(top=4000)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-3000)
    hu = stored * 2.0 - 3000  # -3000 .. 4998 HU
    window = DecodeOptions(window=(-600.0, 1500.0))
    expected = np.clip((hu - (-600)) / 1500 + 0.5, 0, 1).astype(np.float32)
    [(pixels, _, used_window)] = images_of(path, window)
    assert used_window.source == "user"
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


def test_header_window_user_override_and_percentile(tmp_path: Path):
    stored = ramp()
    values = stored.astype(np.float64)
    header = write_dicom(
        tmp_path / "header.dcm", stored, WindowCenter=[1000, 3000], WindowWidth=[2001, 500]
    )
    plain = write_dicom(tmp_path / "plain.dcm", stored)
    # the header's first window, LINEAR (PS3.3 C.11.2.1.2.1)
    [(pixels, _, window)] = images_of(header)
    assert (window.source, window.center, window.width, window.function) == (
        "header",
        1000,
        2001,
        "LINEAR",
    )
    linear = np.clip((values - 999.5) / 2000 + 0.5, 0, 1).astype(np.float32)
    np.testing.assert_allclose(pixels, linear, atol=1e-6)
    # the user's window overrides it
    [(pixels, _, window)] = images_of(header, DecodeOptions(window=(2000.0, 1000.0)))
    assert window.source == "user"
    np.testing.assert_allclose(pixels, np.clip((values - 2000) / 1000 + 0.5, 0, 1), atol=1e-6)
    # no window in the header: the 0.5-99.5 percentile window of the pixels
    [(pixels, _, window)] = images_of(plain)
    lo, hi = np.percentile(stored, [0.5, 99.5])
    assert window.source == "percentile"
    assert window.center == pytest.approx((lo + hi) / 2) and window.width == pytest.approx(hi - lo)
    assert window.describe().startswith("percentile 0.5-99.5 ")
    assert pixels.min() == 0 and pixels.max() == 1


def test_bundled_ct_without_a_window_gets_the_percentile_window():
    [(pixels, _, window)] = images_of(bundled("CT_small.dcm"))
    hu = pydicom.dcmread(bundled("CT_small.dcm")).pixel_array - 1024.0
    lo, hi = np.percentile(hu, [0.5, 99.5])
    assert window.source == "percentile" and window.width == pytest.approx(hi - lo)
    np.testing.assert_allclose(pixels, np.clip((hu - lo) / (hi - lo), 0, 1), atol=1e-5)


def test_voi_lut_sequence_is_used_when_no_window(tmp_path: Path):
    lut = Dataset()
    lut.add_new("LUTDescriptor", "US", [4096, 0, 16])
    lut.add_new("LUTData", "US", [int(v) for v in np.linspace(0, 1000, 4096)])
    path = write_dicom(tmp_path / "lut.dcm", ramp(), VOILUTSequence=[lut])
    [(pixels, _, window)] = images_of(path)
    assert window.source == "voi_lut"
    np.testing.assert_allclose(pixels, np.floor(np.linspace(0, 1000, 4096))[ramp()] / 1000)


def test_monochrome1_is_inverted(tmp_path: Path):
    stored = ramp()
    options = DecodeOptions(window=(2000.0, 4000.0))
    two = only_image(write_dicom(tmp_path / "m2.dcm", stored), options)
    one = only_image(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"), options)
    np.testing.assert_allclose(one, 1 - two, atol=1e-6)


def test_a_multi_frame_file_gives_one_image_per_frame(tmp_path: Path):
    frames = images_of(bundled("rtdose.dcm"))
    assert len(frames) == 15
    rle = images_of(bundled("rtdose_rle.dcm"))  # RLE, multi-frame: the same frames
    assert [h for _, h, _ in rle] == [h for _, h, _ in frames]
    # one window for the file's frames, from all of them
    assert len({w for _, _, w in frames}) == 1

    folder = tmp_path / "used"
    folder.mkdir()
    shutil.copy(bundled("rtdose.dcm"), folder / "dose")
    images = load_image_set(folder, "used")
    assert len(images) == 15
    assert sorted(images.ids, key=lambda i: int(i.split("#")[1])) == [
        f"dose#{k}" for k in range(15)
    ]
    assert images.frames == [int(i.split("#")[1]) for i in images.ids]
    # the frames of one file are neighbours in the set, in frame order
    assert images.frames == sorted(images.frames)


# --- finding DICOM files, objects that are not images -------------------------------------


def test_dicom_is_found_by_content_in_nested_folders(tmp_path: Path):
    """A PACS export: one folder per patient and series, files without a suffix; a bare
    data set without the preamble; a stray text file and a .gz that is not NIfTI."""
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.DCM")
    (tmp_path / "PAT1" / "SER1").mkdir(parents=True)
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "PAT1" / "SER1" / "IM0001")
    write_dicom(tmp_path / "PAT2" / "IM0001", ramp(), preamble=False)
    assert (tmp_path / "PAT2" / "IM0001").read_bytes()[128:132] != b"DICM"
    (tmp_path / "notes.txt").write_text("not an image")
    shutil.copy(bundled("zipMR.gz"), tmp_path / "zipMR.gz")
    images = load_image_set(tmp_path, "used")
    assert sorted(images.ids) == ["PAT1/SER1/IM0001", "PAT2/IM0001", "ct.DCM"]
    assert sorted(images.groups) == ["patient:1CT1", "patient:4MR1", "patient:P1"]


def test_objects_that_are_not_images_are_skipped_and_counted(tmp_path: Path):
    names = {
        "rtstruct.dcm": "RTSTRUCT",  # no preamble
        "test-SR.dcm": "SR",
        "rtplan.dcm": "RTPLAN",
        "liver_1frame.dcm": "SEG",  # has pixel data: masks, not pictures
        "waveform_ecg.dcm": "ECG",
    }
    for name in names:
        shutil.copy(bundled(name), tmp_path / name.removesuffix(".dcm"))
    shutil.copy(bundled("dicomdirtests/DICOMDIR"), tmp_path / "DICOMDIR")
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "image")
    images = load_image_set(tmp_path, "used")
    assert images.ids == ["image"]
    assert images.left_out_counts() == {**dict.fromkeys(names.values(), 1), "DICOMDIR": 1}


def test_a_folder_of_only_non_images_says_so(tmp_path: Path):
    shutil.copy(bundled("test-SR.dcm"), tmp_path / "report.dcm")
    with pytest.raises(AuditInputError, match=r"has no image to audit.*1 SR"):
        load_image_set(tmp_path, "used")


def test_renaming_and_moving_files_changes_nothing(tmp_path: Path):
    names = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb_rle_2frame.dcm"]
    (tmp_path / "a").mkdir()
    for name in names:
        shutil.copy(bundled(name), tmp_path / "a" / name)
    for i, name in enumerate(reversed(names)):
        target = tmp_path / "b" / f"z{i}" / f"{i}"
        target.parent.mkdir(parents=True)
        shutil.copy(bundled(name), target)
    a, b = load_image_set(tmp_path / "a", "used"), load_image_set(tmp_path / "b", "used")
    assert a.hashes == b.hashes and a.frames == b.frames and a.windows == b.windows


# --- bad input ----------------------------------------------------------------------------


def test_corrupt_dicom_files_are_named_with_the_fix(tmp_path: Path):
    shutil.copy(bundled("MR_truncated.dcm"), tmp_path / "truncated.dcm")
    (tmp_path / "text.dcm").write_text("hello, not DICOM")
    (tmp_path / "cut.dcm").write_bytes(bundled("CT_small.dcm").read_bytes()[:700])
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "good.dcm")
    with pytest.raises(AuditInputError) as err:
        load_image_set(tmp_path, "used")
    message = str(err.value)
    assert "3 of 4 used images could not be read" in message
    assert "truncated.dcm: its pixel data cannot be decoded" in message
    assert "text.dcm: not a DICOM file (no 'DICM' marker at byte 128" in message
    assert "cut.dcm: " in message and "export it again" in message
    assert "--skip-bad-images" in message and "good.dcm" not in message

    images = load_image_set(tmp_path, "used", skip_bad=True)
    assert images.ids == ["good.dcm"] and len(images.skipped) == 3


def test_an_image_object_without_pixels_is_bad_input(tmp_path: Path):
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(AuditInputError, match=r"nopixels.dcm: an image object \(CT Image Stor"):
        load_image_set(tmp_path, "used")


def test_a_missing_decoder_names_the_file_the_syntax_and_the_pip_command(
    tmp_path: Path, monkeypatch
):
    shutil.copy(bundled("MR_small_jp2klossless.dcm"), tmp_path / "j2k.dcm")
    # as if pylibjpeg-openjpeg (and Pillow's OpenJPEG) were not installed
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    expected = (
        r"j2k.dcm: its pixels are compressed as JPEG 2000 Image Compression \(Lossless "
        r"Only\) \(1.2.840.10008.1.2.4.90\) and no decoder for it is installed; .*"
        r"pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"
    )
    with pytest.raises(AuditInputError, match=expected):
        load_image_set(tmp_path, "used")
    with pytest.raises(AuditInputError, match=expected):  # an installation, not a bad file
        load_image_set(tmp_path, "used", skip_bad=True)


def test_a_header_window_of_width_zero_is_bad_unless_overridden(tmp_path: Path):
    write_dicom(tmp_path / "w0.dcm", ramp(), WindowCenter=40, WindowWidth=0)
    with pytest.raises(
        AuditInputError,
        match=r"w0.dcm: its Window Width \(0028,1051\) is not valid: it must be at least 1"
        r".*--window=",
    ):
        load_image_set(tmp_path, "used")
    images = load_image_set(tmp_path, "used", options=DecodeOptions(window=(40.0, 400.0)))
    assert images.windowing() == {"user": 1}


def test_window_settings_parse_and_refuse_a_width_of_zero():
    assert parse_window("-600,1500") == (-600.0, 1500.0)
    assert parse_window(" 40 , 400 ") == (40.0, 400.0)
    assert parse_window((40, 400)) == (40.0, 400.0)
    for bad, why in (("40,0", "greater than 0"), ("40,-5", "greater than 0"), ("40", "CENTER")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_window(bad)
    with pytest.raises(AuditInputError, match="window width must be greater than 0"):
        AuditSettings(Path("g"), Path("u"), Path("n"), window="40,0")
    settings = AuditSettings(Path("g"), Path("u"), Path("n"), window="-600,1500")
    assert DecodeOptions.from_settings(settings).window == (-600.0, 1500.0)


def test_a_negative_window_centre_needs_the_equals_form():
    from pytest_gan_privacy.cli import build_parser

    paths = ["audit", "--generated", "g", "--used", "u", "--not-used", "n"]
    args = build_parser().parse_args([*paths, "--window=-600,1500"])
    assert args.window == (-600.0, 1500.0)
    with pytest.raises(SystemExit):  # argparse reads "-600,1500" as an option
        build_parser().parse_args([*paths, "--window", "-600,1500"])


def test_slice_settings_parse():
    assert parse_slice_range("10:50") == (10, 50)
    assert parse_slice_range("10:") == (10, None) and parse_slice_range(":50") == (None, 50)
    for bad in ("50:10", "10", "a:b", "-1:5", "1:2:3"):
        with pytest.raises(argparse.ArgumentTypeError, match="slice range"):
            parse_slice_range(bad)
    settings = AuditSettings(
        Path("g"), Path("u"), Path("n"), slice_axis="Coronal", slice_range="2:9", volume="1"
    )
    options = DecodeOptions.from_settings(settings)
    assert (options.slice_axis, options.slice_range, options.volume) == ("coronal", (2, 9), 1)
    with pytest.raises(AuditInputError, match="unknown slice axis 'oblique'"):
        AuditSettings(Path("g"), Path("u"), Path("n"), slice_axis="oblique")


# --- NIfTI --------------------------------------------------------------------------------


def canonical_volume(shape=(20, 24, 16), seed=0) -> np.ndarray:
    """A volume in RAS+ order with no symmetry, and no blank slice."""
    rng = np.random.default_rng(seed)
    return (rng.integers(1, 1000, size=shape)).astype(np.int16)


def test_a_volume_is_reoriented_to_canonical_and_shown_radiologically(tmp_path: Path):
    volume = canonical_volume()
    x, y, z = volume.shape
    volume[x - 1, y - 1, 3] = 5000  # the patient's right, front, in axial slice 3
    canonical = write_nifti(tmp_path / "ras.nii", volume)
    # the same voxels stored as (z, x flipped, y): world x = X-1-j, y = k, z = i
    stored = np.ascontiguousarray(np.transpose(volume, (2, 0, 1))[:, ::-1, :])
    affine = np.array([[0, -1, 0, x - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    other = write_nifti(tmp_path / "stored.nii.gz", stored, affine)
    options = DecodeOptions(window=(500.0, 1000.0))
    a, b = images_of(canonical, options, medical.NIFTI), images_of(other, options, medical.NIFTI)
    assert len(a) == len(b) == z
    assert [h for _, h, _ in a] == [h for _, h, _ in b]
    pixels = a[3][0]
    # rows from the front to the back, columns from the patient's right to left
    expected = np.clip((volume[::-1, ::-1, 3].T - 500.0) / 1000 + 0.5, 0, 1)
    assert pixels.shape == (y, x) and pixels[0, 0] == 1.0
    np.testing.assert_allclose(pixels, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("axis", "count", "shape"),
    [("axial", 16, (24, 20)), ("coronal", 24, (16, 20)), ("sagittal", 20, (16, 24))],
)
def test_a_volume_is_sliced_along_the_chosen_axis(tmp_path: Path, axis, count, shape):
    path = write_nifti(tmp_path / "used" / "vol.nii.gz", canonical_volume())
    images = load_image_set(tmp_path / "used", "used", options=DecodeOptions(slice_axis=axis))
    assert len(images) == count
    assert sorted(images.ids) == sorted(f"vol.nii.gz#{k}" for k in range(count))
    assert images.groups == [f"volume:{path.resolve()}"] * count
    assert images.windowing() == {"percentile": count}
    pixels, _ = next(iter_batches(images, shape[0], 1, batch_size=count, workers=0))
    assert pixels.shape == (count, 1, shape[0], shape[0])
    assert read_image(images.sources[0]).shape == shape


def test_a_slice_range_keeps_those_slices_and_refuses_an_empty_one(tmp_path: Path):
    write_nifti(tmp_path / "a.nii", canonical_volume())
    images = load_image_set(tmp_path, "used", options=DecodeOptions(slice_range=(4, 8)))
    assert sorted(images.ids) == [f"a.nii#{k}" for k in range(4, 8)]
    images = load_image_set(tmp_path, "used", options=DecodeOptions(slice_range=(12, None)))
    assert len(images) == 4
    with pytest.raises(AuditInputError, match=r"a.nii: the slice range 40:60 holds none of its 16"):
        load_image_set(tmp_path, "used", options=DecodeOptions(slice_range=(40, 60)))


def test_nifti_scaling_is_applied_to_the_stored_values(tmp_path: Path):
    stored = canonical_volume()
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)  # stored int16, read as 2 x - 1000
    nib.save(img, tmp_path / "scaled.nii")
    assert nib.load(tmp_path / "scaled.nii").dataobj.slope == 2.0
    images = images_of(tmp_path / "scaled.nii", DecodeOptions(window=(0.0, 2000.0)), medical.NIFTI)
    values = stored[::-1, ::-1, 0].T * 2.0 - 1000
    np.testing.assert_allclose(images[0][0], np.clip(values / 2000 + 0.5, 0, 1), atol=1e-6)


def test_blank_slices_are_left_out_and_counted(tmp_path: Path):
    volume = canonical_volume()
    volume[:, :, :3] = 0  # below the head
    write_nifti(tmp_path / "a.nii", volume)
    images = load_image_set(tmp_path, "used")
    assert len(images) == 13 and images.left_out_counts() == {"blank": 3}


def test_a_4d_series_needs_a_volume(tmp_path: Path):
    shutil.copy(NIBABEL_FILES / "example4d.nii.gz", tmp_path / "fmri.nii.gz")
    with pytest.raises(
        AuditInputError,
        match=r"fmri.nii.gz: a 4-D NIfTI \(2 volumes of 128x96x24\); choose one with "
        r"--volume INDEX \(0 to 1\)",
    ):
        load_image_set(tmp_path, "used")
    images = load_image_set(tmp_path, "used", options=DecodeOptions(volume=1))
    assert 0 < len(images) <= 24
    with pytest.raises(AuditInputError, match=r"--volume 2 is past the last: choose 0 to 1"):
        load_image_set(tmp_path, "used", options=DecodeOptions(volume=2))


def test_bundled_nifti_volumes_load(tmp_path: Path):
    shutil.copy(NIBABEL_FILES / "anatomical.nii", tmp_path / "anat.nii")  # LAS, big endian
    shutil.copy(NIBABEL_FILES / "standard.nii.gz", tmp_path / "std.nii.gz")
    images = load_image_set(tmp_path, "used")
    by_file = {i.split("#")[0] for i in images.ids}
    assert by_file == {"anat.nii", "std.nii.gz"} and len(set(images.groups)) == 2
    assert (
        sum(i.startswith("anat") for i in images.ids) + images.left_out_counts().get("blank", 0)
        == 25
    )


def test_a_corrupt_nifti_is_named(tmp_path: Path):
    data = (NIBABEL_FILES / "anatomical.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(AuditInputError) as err:
        load_image_set(tmp_path, "used")
    message = str(err.value)
    assert "cut.nii: " in message and "junk.nii.gz: not a readable NIfTI file" in message


def test_medical_images_decode_in_worker_processes_as_they_were_hashed(tmp_path: Path):
    write_nifti(tmp_path / "a.nii.gz", canonical_volume(seed=1))
    write_nifti(tmp_path / "b.nii.gz", canonical_volume(seed=2))
    shutil.copy(bundled("rtdose.dcm"), tmp_path / "dose.dcm")
    images = load_image_set(tmp_path, "used")
    for source, digest in zip(images.sources, images.hashes, strict=True):
        assert pixel_hash(read_image(source)) == digest
    native = torch.stack([decode_image(s, 24, 1) for s in images.sources])
    decoded = torch.zeros_like(native)
    for pixels, indices in iter_batches(images, 24, 1, batch_size=7, workers=1):
        decoded[indices] = pixels
    torch.testing.assert_close(decoded, native)


# --- groups -------------------------------------------------------------------------------


def png_folder(root: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 10 + i * 20).save(root / name)
    return root


def test_a_groups_file_gives_png_images_their_patients(tmp_path: Path):
    png_folder(tmp_path / "real" / "used", ["a.png", "b.png", "sub/c.png"])
    png_folder(tmp_path / "real" / "not_used", ["d.png"])
    csv = tmp_path / "real" / "groups.csv"
    csv.write_text(
        "path,group\nused/a.png,p1\nused/b.png, p1\n\nused/sub/c.png,p2\nnot_used/d.png,p3\n"
    )
    groups = read_groups_file(csv)
    used = load_image_set(tmp_path / "real" / "used", "used", groups=groups)
    by_id = dict(zip(used.ids, used.groups, strict=True))
    assert by_id == {"a.png": "patient:p1", "b.png": "patient:p1", "sub/c.png": "patient:p2"}
    # without the file, a PNG has no group
    assert load_image_set(tmp_path / "real" / "used", "used").groups == [None] * 3


def test_a_groups_file_overrides_dicom_patient_ids(tmp_path: Path):
    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "mr.dcm")
    (tmp_path / "groups.csv").write_text("ct.dcm,anonymised-7\n")
    images = load_image_set(tmp_path, "used", groups=read_groups_file(tmp_path / "groups.csv"))
    assert sorted(images.groups) == ["patient:4MR1", "patient:anonymised-7"]


def test_a_groups_file_and_its_folder_must_agree(tmp_path: Path):
    used = png_folder(tmp_path / "used", ["a.png", "b.png"])
    csv = tmp_path / "groups.csv"
    csv.write_text("used/a.png,p1\n")
    with pytest.raises(
        AuditInputError,
        match=r"1 used images are not in the groups file .*groups.csv and have no patient "
        r"of their own: add a line 'path,group' for each .*\n  used/b.png",
    ):
        load_image_set(used, "used", groups=read_groups_file(csv))
    csv.write_text("used/a.png,p1\nused/b.png,p2\nused/gone.png,p3\nnot_used/x.png,p4\n")
    with pytest.raises(
        AuditInputError,
        match=r"(?s)lists 1 file\(s\) in the used folder .* not there.*used/gone.png",
    ):
        load_image_set(used, "used", groups=read_groups_file(csv))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png\n", r"line 1: expected two cells, 'image path,group', found 1$"),
        ("a.png,p1,extra\n", r"line 1: expected two cells, 'image path,group', found 3$"),
        ("path,group\na.png,\n", r"line 2: the group of a.png is empty"),
        (
            "a.png,p1\na.png,p2\n",
            r"line 2: a.png is listed again \(first on line 1\) with another group: keep one$",
        ),
        ("path,group\n", r"lists no images"),
    ],
)
def test_a_malformed_groups_file_names_the_line(tmp_path: Path, text, message):
    (tmp_path / "groups.csv").write_text(text)
    with pytest.raises(AuditInputError, match=message):
        read_groups_file(tmp_path / "groups.csv")


def test_a_missing_groups_file_is_named(tmp_path: Path):
    with pytest.raises(AuditInputError, match=r"groups file .*nope.csv does not exist.*--groups"):
        read_groups_file(tmp_path / "nope.csv")


def test_dicom_groups_fall_back_to_study_series_and_file(tmp_path: Path):
    write_dicom(tmp_path / "a.dcm", ramp(), PatientID="", StudyInstanceUID="1.2.3")
    write_dicom(tmp_path / "b.dcm", ramp(rows=30), PatientID="", SeriesInstanceUID="1.2.4")
    write_dicom(tmp_path / "c.dcm", ramp(rows=28), PatientID="")
    images = load_image_set(tmp_path, "used")
    groups = dict(zip(images.ids, images.groups, strict=True))
    assert groups == {
        "a.dcm": "study:1.2.3",
        "b.dcm": "series:1.2.4",
        "c.dcm": f"file:{(tmp_path / 'c.dcm').resolve()}",
    }
