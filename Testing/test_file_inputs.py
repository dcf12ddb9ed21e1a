"""Inputs that are not what they seem, and outputs that cannot be written: NaN / infinite voxels kept by every
reader (ITK's NIfTI reader turns them into 0), NIfTI scaling and byte order, complex and unsupported NIfTI
datatypes refused quietly, output folders checked before the work, failed T1 fits zero in every map, and T1 maps
refused when most fits failed (wrong inversion times)."""

import dataclasses
import gzip
import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from CMRSynthesisLib.analysis.t1fit import fit_t1
from CMRSynthesisLib.analysis.t1mapping import MAX_FAILED_FRACTION, t1_maps
from CMRSynthesisLib.cli import main
from CMRSynthesisLib.errors import InputError, OutputError
from CMRSynthesisLib.io import check_output_paths, read_volume, write_volume, writing
from CMRSynthesisLib.io.itk_files import read_itk_file, to_sitk
from CMRSynthesisLib.io.t1_series import T1Series, read_t1_series
from CMRSynthesisLib.volume import Volume

DATA = Path(__file__).parent / "Data"
NATIVE = DATA / "molli_patient_philips" / "native"
JITTER_TI = [587.0 + step for step in range(10)]  # TriggerTime jitter of a MOLLI series taken for its TIs
MAP_FIELDS = ("t1", "a", "b", "t1_star", "r2")


def _volume_with_non_finite(shape: tuple[int, ...]) -> Volume:
    array = np.random.default_rng(1).normal(100.0, 10.0, shape).astype(np.float32)
    array.flat[5], array.flat[-3], array.flat[7] = np.nan, np.inf, -np.inf
    return Volume(array, spacing=(0.8, 0.9, 6.0), origin=(10.0, -5.0, 2.5))


# --- NaN / Inf kept -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 2, 3, 4)])
def test_non_finite_voxels_are_read_as_stored(tmp_path, suffix, shape):
    volume = _volume_with_non_finite(shape)
    path = tmp_path / f"lge{suffix}"
    sitk.WriteImage(to_sitk(volume), str(path))  # written by ITK itself
    if suffix.startswith(".nii"):  # why the NIfTI voxels are not read through ITK
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).flat[5] == 0
    back = read_itk_file(path)
    assert back.array.dtype == np.float32 and back.array.shape == shape
    np.testing.assert_array_equal(back.array, volume.array)  # NaN at the same places, +-inf kept
    np.testing.assert_allclose(back.spacing, volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin, volume.origin)
    with pytest.raises(InputError, match=rf"{path.name}\) has 3 NaN or infinite voxel"):
        back.require_finite("the LGE volume")


def test_nifti_scaling_byte_order_and_version(tmp_path):
    stored = np.arange(-12, 12, dtype=np.int16).reshape(4, 3, 2)  # nibabel's (x, y, z) order
    scaled = nib.Nifti1Image(stored, np.diag([0.7, 0.8, 6.0, 1.0]))
    scaled.header.set_slope_inter(2.5, -3.0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    volume = read_itk_file(tmp_path / "scaled.nii.gz")
    assert volume.array.dtype == np.float32  # as ITK gives scaled data
    np.testing.assert_array_equal(volume.array, stored.T * 2.5 - 3.0)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "scaled.nii.gz"))))
    np.testing.assert_allclose(volume.spacing, (0.7, 0.8, 6.0), rtol=1e-6)

    values = np.linspace(-1.0, 1.0, 24, dtype=">f4").reshape(4, 3, 2)
    values[1, 2, 0] = np.nan
    big_endian = nib.Nifti1Image(values, np.eye(4), nib.Nifti1Header(endianness=">"))
    nib.save(big_endian, tmp_path / "big_endian.nii")
    assert (tmp_path / "big_endian.nii").read_bytes()[:4] == struct.pack(">i", 348)
    volume = read_itk_file(tmp_path / "big_endian.nii")
    assert volume.array.dtype == np.dtype("=f4")
    np.testing.assert_array_equal(volume.array, values.T)

    nib.save(nib.Nifti2Image(values, np.eye(4)), tmp_path / "nifti2.nii")
    with pytest.raises(InputError, match=r"nifti2.nii: is a NIfTI-2 file, which SimpleITK does not read; save it as "
                       "NIfTI-1"):
        read_itk_file(tmp_path / "nifti2.nii")


# --- complex and unsupported datatypes ------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_complex_images_are_refused_naming_the_pixel_type(tmp_path, capfd, suffix):
    path = tmp_path / f"complex{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((2, 3, 4), 1 + 2j, np.complex64)), str(path))
    capfd.readouterr()
    with pytest.raises(InputError, match=rf"^{path}: holds complex voxels \(.*(complex64|complex of 32-bit float)"):
        read_volume(path)
    assert capfd.readouterr() == ("", "")


def _nifti_with_datatype(folder: Path, code: int, bits: int, suffix: str = ".nii") -> Path:
    """A small valid uint8 NIfTI whose header's datatype and bitpix fields (bytes 70-73) are rewritten."""
    plain = folder / "plain.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)), str(plain))
    header = bytearray(plain.read_bytes())
    assert struct.unpack_from("<ihh", header, 0)[0] == 348 and struct.unpack_from("<hh", header, 70) == (2, 8)
    struct.pack_into("<hh", header, 70, code, bits)
    path = folder / f"datatype_{code}{suffix}"
    if suffix == ".nii.gz":
        path.write_bytes(gzip.compress(bytes(header)))
    else:
        path.write_bytes(bytes(header))
    return path


@pytest.mark.parametrize(("code", "bits", "suffix"), [
    (1, 1, ".nii"),  # DT_BINARY: neither ITK nor nibabel reads it
    (1, 1, ".nii.gz"),
    (1536, 128, ".nii"),  # float128: nibabel refuses the header, ITK knows no such component type
    (999, 8, ".nii"),  # no NIfTI datatype at all
    (128, 24, ".nii"),  # RGB: not a grey-level image
    (2304, 32, ".nii.gz"),  # RGBA
])
def test_unsupported_nifti_datatype_is_named_with_no_library_noise(tmp_path, capfd, code, bits, suffix):
    path = _nifti_with_datatype(tmp_path, code, bits, suffix)
    capfd.readouterr()
    with pytest.raises(InputError, match=rf"^{path}: unsupported NIfTI datatype {code} \("):
        read_volume(path)
    assert capfd.readouterr() == ("", "")  # nothing on stdout or stderr from ITK's NIfTI library or nibabel


def test_complex_nifti_datatype_codes_are_refused_as_complex(tmp_path, capfd):
    for code, bits in ((32, 64), (1792, 128), (2048, 256)):
        path = _nifti_with_datatype(tmp_path, code, bits)
        capfd.readouterr()
        with pytest.raises(InputError, match=rf"^{path}: holds complex voxels \(NIfTI datatype {code}, complex"):
            read_volume(path)
        assert capfd.readouterr() == ("", "")


# --- output folders checked first -----------------------------------------------------------------------------

def test_output_under_a_file_or_in_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder\n")
    for path in (a_file / "T1.nrrd", a_file / "maps" / "deeper" / "T1.nrrd"):
        with pytest.raises(OutputError, match=rf"^{path}: cannot be written: {a_file} is a file, not a folder"):
            check_output_paths([path])
    with pytest.raises(OutputError, match=r"^/proc/cmrsynth-out/T1.nrrd: cannot be written: no file can be created "
                       r"in /proc \("):
        check_output_paths(["/proc/cmrsynth-out/T1.nrrd"])  # procfs refuses new files, even to root
    good = tmp_path / "new" / "deeper" / "T1.nrrd"
    assert check_output_paths([good, tmp_path / "new" / "deeper" / "T1_A.nrrd"]) == [".nrrd", ".nrrd"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]  # probe removed, nothing made

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writing.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match=rf"{good}: cannot be written: no file can be created in {tmp_path} "
                       r"\(Permission denied\)"):
        check_output_paths([good])


def test_t1map_with_an_output_under_a_file_fails_before_fitting(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x\n")
    assert main(["t1map", "--molli", str(NATIVE), "--out", str(a_file / "T1.nrrd"), "--progress", "json"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "is a file, not a folder" in lines[0]  # an error, and no progress: nothing fitted


# --- T1: failed fits, non-finite signal, most fits failed -----------------------------------------------------

def test_failed_fits_hold_zero_in_every_map():
    rng = np.random.default_rng(3)
    ti = np.array([100.0, 180, 260, 1100, 1180, 1260, 2100, 2180, 3100, 4100])
    t1 = rng.uniform(400.0, 2000.0, 300)
    t1_star = t1 / 1.0
    good = np.abs(500.0 - 1000.0 * np.exp(-ti[:, None] / t1_star[None, :]) + rng.normal(0, 2.0, (10, 300)))
    noise = np.abs(rng.normal(0, 10, (10, 300)) + 1j * rng.normal(0, 10, (10, 300)))
    signal = np.concatenate([good, noise, np.zeros((10, 20))], axis=1).reshape(10, 31, 20)
    fit = fit_t1(signal, ti)
    failed = fit.failed
    flat = failed.reshape(-1)
    assert not flat[:300].any() and flat[300:600].any() and flat[600:].all()  # good curves, pure noise, zeros
    for name in MAP_FIELDS:
        values = getattr(fit, name)
        assert np.all(np.isfinite(values)), name
        assert not values[failed].any(), name  # 0 where failed, in every map
        assert (values[~failed] > 0).all(), name


def test_non_finite_signal_message_mentions_a_mask_only_when_given():
    signal = np.ones((3, 4))
    signal[1, 2] = np.nan
    with pytest.raises(InputError, match=r"^the signal has NaN or infinite values$"):
        fit_t1(signal, [100, 200, 300])
    with pytest.raises(InputError, match=r"^the signal has NaN or infinite values inside the mask$"):
        fit_t1(signal, [100, 200, 300], mask=[False, True, True, False])


def _series(array: np.ndarray, times: list[float], source: str = "/data/molli.nii.gz") -> T1Series:
    """A T1Series of images (n, z, y, x) read from `source`, every slice with `times` (sorted)."""
    n, slices = array.shape[:2]
    return T1Series(images=Volume(array, metadata={"source_files": [source]}),
                    inversion_times_ms=np.repeat(np.asarray(times, float)[:, None], slices, axis=1),
                    acquisition_rank=np.repeat(np.arange(n)[:, None], slices, axis=1),
                    time_source="given by the user", order_source="the file's time axis")


def test_t1_maps_non_finite_images_name_the_files():
    ti = [100.0, 400.0, 1000.0, 2500.0]
    curve = np.abs(500.0 - 1000.0 * np.exp(-np.asarray(ti) / 800.0))
    images = np.broadcast_to(curve[:, None, None, None], (4, 2, 3, 3)).astype(np.float32).copy()
    images[2, 1, 0, 0] = np.nan
    series = _series(images, ti)
    with pytest.raises(InputError, match=r"^the T1-mapping images \(/data/molli.nii.gz\) has 1 NaN or infinite voxel"
                       r"\(s\), the first at index \(2, 1, 0, 0\)"):
        t1_maps(series)
    mask = np.zeros((2, 3, 3), np.uint8)
    mask[0] = 1
    assert t1_maps(series, Volume(mask))["t1"].array[0] == pytest.approx(800.0 * (2 - 1), rel=1e-3)  # NaN outside
    mask[1, 0, 0] = 1
    with pytest.raises(InputError, match=r"^the T1-mapping images inside the mask \(/data/molli.nii.gz\) has 1 NaN"):
        t1_maps(series, Volume(mask))


@pytest.fixture(scope="module")
def native_maps() -> tuple[T1Series, dict[str, Volume]]:
    """The real Philips native MOLLI series and its maps fitted everywhere (no mask)."""
    series = read_t1_series(NATIVE)
    return series, t1_maps(series)


def test_real_native_maps_hold_plausible_values_and_zero_where_failed(native_maps):
    series, maps = native_maps
    failed = maps["failed"].array > 0
    assert 0.3 < failed.mean() < 0.6  # the air around the body fails
    brightest = float(series.images.array.max())  # 3188
    for name in MAP_FIELDS:
        values = maps[name].array
        assert np.all(np.isfinite(values)) and not values[failed].any(), name
    # Before failed fits were zeroed the B map reached 3.4e38 and the T1* map 40000 ms (the grid's end) in the air.
    # Fits kept at tissue edges still reach B 42 x the brightest image value and T1* 36 s; in the LV blood B / A = 2.
    assert maps["b"].array.max() < 50 * brightest
    assert maps["a"].array.max() < 5 * brightest
    assert maps["t1_star"].array.max() < 37000.0
    assert maps["t1"].array.max() <= 5000.0
    blood = (slice(None), slice(122, 139), slice(131, 148))
    assert 1.8 < np.median(maps["b"].array[blood] / maps["a"].array[blood]) < 2.3


def _one_slice(series: T1Series, times: list[float]) -> T1Series:
    """Slice 1 of `series` with other inversion times (its images kept in their TI order)."""
    images = series.images
    return dataclasses.replace(series, images=Volume(images.array[:, :1], images.spacing, images.origin,
                                                     images.direction, images.metadata),
                               inversion_times_ms=np.asarray(times, float)[:, None],
                               acquisition_rank=series.acquisition_rank[:, :1], time_source="TriggerTime (0018,1060)")


def test_t1_map_with_wrong_inversion_times_is_refused(native_maps):
    series, maps = native_maps  # the right TIs: the fit succeeds (8.5 % of the signal-bearing voxels fail)
    assert maps["t1"].array.max() > 0
    with pytest.raises(InputError) as raised:
        t1_maps(_one_slice(series, JITTER_TI))
    message = str(raised.value)
    assert message.startswith(f"{series.images.describe_source()}: the T1 fit failed in ")
    assert re.search(r"failed in (99|100)% of the \d+ voxels with signal; check the inversion times \(587, 588, 589, "
                     r"590, 591, 592, 593, 594, 595, 596 ms; source: TriggerTime \(0018,1060\)\), and give the right "
                     r"ones with --ti$", message), message
    assert MAX_FAILED_FRACTION == 0.5


def test_t1map_command_refuses_jittered_times_inside_a_mask(tmp_path, capsys):
    series = read_t1_series(NATIVE)
    one = _one_slice(series, JITTER_TI)
    molli = write_volume(one.images, tmp_path / "molli.nrrd")
    mask = np.zeros(one.images.spatial_shape, np.uint8)
    mask[:, 122:139, 131:148] = 1  # the LV blood box of the data README
    mask_path = write_volume(one.reference().with_array(mask), tmp_path / "mask.nrrd")
    argv = ["t1map", "--molli", str(molli), "--mask", str(mask_path), "--out", str(tmp_path / "T1.nrrd"),
            "--progress", "none"]
    right = ",".join(f"{time:g}" for time in series.inversion_times_ms[:, 0])
    assert main([*argv, "--ti", right]) == 0
    capsys.readouterr()
    (tmp_path / "T1.nrrd").unlink()
    assert main([*argv, "--ti", ",".join(f"{time:g}" for time in JITTER_TI)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {molli}: the T1 fit failed in 100% of the 289 voxels of the mask; check the "
                            "inversion times (587, 588")
    assert "596 ms; source: given by the user), and give the right ones with --ti" in error
    assert not (tmp_path / "T1.nrrd").exists()
