"""The reader: real files round-trip; random bytes and random headers give SegkitError, never a crash."""

import gzip

import nibabel as nib
import numpy as np
from conftest import GEOMETRIES, write_nifti
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segkit.errors import SegkitError
from segkit.io import read_volume, write_volume


def test_write_then_read_keeps_data_affine_and_codes(tmp_path):
    src = write_nifti(tmp_path / "in.nii.gz", np.arange(60, dtype=np.float32).reshape(3, 4, 5), GEOMETRIES["oblique"])
    vol = read_volume(src)
    write_volume(tmp_path / "out.nii.gz", (vol.data > 30).astype(np.uint8), vol.affine, vol.header)
    out = nib.load(tmp_path / "out.nii.gz")
    assert np.allclose(out.affine, GEOMETRIES["oblique"]) and out.get_data_dtype() == np.uint8
    assert np.allclose(out.get_qform(), out.get_sform())
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_partial_nan_is_replaced_by_the_minimum(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    vol = read_volume(write_nifti(tmp_path / "n.nii.gz", data, np.eye(4)))
    assert np.isfinite(vol.data).all()


def _reads_or_segkit_error(path) -> None:
    try:
        read_volume(path)
    except SegkitError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(min_size=0, max_size=2048), gz=st.booleans())
def test_random_bytes_give_segkit_error_or_success(tmp_path, blob, gz):
    p = tmp_path / ("x.nii.gz" if gz else "x.nii")
    p.write_bytes(gzip.compress(blob) if gz else blob)
    _reads_or_segkit_error(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dims=st.lists(st.integers(-5, 70000), min_size=8, max_size=8),
    pixdim=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=8, max_size=8),
    datatype=st.sampled_from([2, 4, 8, 16, 64, 256, 512, 768, 1024, 1280, 0, 7]),
    tail=st.binary(max_size=512),
)
def test_random_headers_give_segkit_error_or_success(tmp_path, dims, pixdim, datatype, tail):
    hdr = nib.Nifti1Header()
    raw = bytearray(hdr.binaryblock)
    raw[40:56] = np.array(dims, dtype=np.int64).astype(np.int16).tobytes()
    raw[70:72] = np.int16(datatype).tobytes()
    raw[76:108] = np.array(pixdim, dtype=np.float32).tobytes()
    p = tmp_path / "h.nii"
    p.write_bytes(bytes(raw) + b"\0" * 4 + tail)
    _reads_or_segkit_error(p)
