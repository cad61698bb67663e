"""The benchmark's pure parts: CPU accounting, the growth fit, the 20 TB model and the PNG writer.

Numbers only: no timing is asserted here (the benchmark's times live in benchmarks/results/latest.json).
"""

from __future__ import annotations

import struct
import zlib

import pytest

from benchmarks import model

PROC_STAT = """cpu  300 0 100 500 100 0 0 0 0 0
cpu0 200 0 50 200 50 0 0 0 0 0
cpu1 100 0 50 300 50 0 0 0 0 0
intr 12345
"""


def test_proc_stat_counts_idle_and_iowait_as_not_busy():
    cpus = model.parse_proc_stat(PROC_STAT)
    assert cpus == {"cpu0": (250, 500), "cpu1": (150, 500)}


def test_core_busy_is_the_share_of_each_cpus_time_between_two_readings():
    before = {"cpu0": (250, 500), "cpu1": (150, 500)}
    after = {"cpu0": (350, 600), "cpu1": (175, 600)}
    assert model.core_busy(before, after) == {"cpu0": 1.0, "cpu1": 0.25}


def test_cpuacct_stat_is_read_in_seconds():
    assert model.parse_cpuacct_stat("user 250\nsystem 50\n", 100) == (2.5, 0.5)


def test_fit_recovers_a_quadratic_and_stays_non_negative():
    ns = [1000, 5000, 20000, 50000]
    fit = model.fit_growth(ns, [0.5 + 2e-9 * n * n for n in ns])
    assert fit.a == pytest.approx(0.5, rel=1e-6)
    assert fit.b == pytest.approx(0.0, abs=1e-12)
    assert fit.c == pytest.approx(2e-9, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)


def test_fit_never_lets_a_cost_fall_as_the_folder_grows():
    """Noise that a free fit would explain with a negative term is fitted with non-negative terms only."""
    ns = [1000, 5000, 20000, 50000]
    fit = model.fit_growth(ns, [1.2, 1.0, 1.1, 1.3])
    assert min(fit.a, fit.b, fit.c) >= 0
    assert fit(10**6) >= fit(50000)


def test_fit_needs_matching_points():
    with pytest.raises(ValueError, match="as many times"):
        model.fit_growth([1, 2], [1.0])


def test_blob_count_at_20_tb():
    # 20 TB in full 20 MiB packs: 20e12 / 20 MiB
    assert model.blobs_for(20 * model.TB, 20, 1.0) == 953675
    assert model.blobs_for(20 * model.TB, 64, 1.0) == 298024
    assert model.blobs_for(20 * model.TB, 64, 0.5) == 596047


def test_model_of_the_drive_scales_the_measured_shape():
    shape = model.RepositoryShape(
        stored_per_source_byte=0.5,
        pack_fill=1.0,
        contents_per_source_gib=256.0,
        index_bytes_per_content=100.0,
        metadata_per_source_byte=0.001,
    )
    fits = {"list": model.Fit(a=1.0, b=0.0, c=1e-9, r2=1.0)}
    m = model.model_drive(shape, 20 * model.TB, 64, fits)
    assert m["source_bytes"] == 40 * model.TB  # twice the drive backed up at 0.5 bytes stored per byte
    assert m["pack_blobs"] == 298024
    assert m["contents"] == round(40 * model.TB / 1024**3 * 256)
    assert m["index_bytes"] == pytest.approx(m["contents"] * 100, abs=100)
    assert m["metadata_bytes"] == round(40 * model.TB * 0.001)
    assert m["seconds"]["list"] == round(1.0 + 1e-9 * 298024**2, 1)


def _png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = {}, 8
    while i < len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + length]
        (crc,) = struct.unpack(">I", data[i + 8 + length : i + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = body
        i += 12 + length
    return chunks


def test_the_plot_is_a_valid_rgb_png_of_the_requested_size():
    fit = model.Fit(a=0.1, b=1e-5, c=0.0, r2=1.0)
    png = model.plot_growth({"LIST": ([1000, 10000], [0.11, 0.2], fit)}, {"20TB": 300000}, "T", 400, 300)
    chunks = _png_chunks(png)
    width, height, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (width, height, depth, color) == (400, 300, 8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    assert set(raw[:: 1 + 3 * width]) == {0}  # every row unfiltered
    assert raw.count(bytes(model.PALETTE[0])) > 50  # the series was drawn
