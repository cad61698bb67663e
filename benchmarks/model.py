"""Pure parts of the benchmark: CPU accounting, curve fits, the 20 TB model and a stdlib-only PNG plot.

No Docker, no Kopia: everything here takes numbers and returns numbers (or PNG bytes), so
tests/unit/test_benchmark_model.py checks it without a run.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIB = 1024 * 1024
TB = 10**12  # a drive's "20 TB" is decimal

# ---------------------------------------------------------------- CPU accounting


def parse_proc_stat(text: str) -> dict[str, tuple[int, int]]:
    """`/proc/stat` -> {"cpu0": (busy ticks, total ticks), ...} for every single CPU line.

    Busy is everything but idle and iowait (user, nice, system, irq, softirq, steal)."""
    cpus: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        ticks = [int(v) for v in fields[1:9]]
        idle = ticks[3] + ticks[4]
        cpus[fields[0]] = (sum(ticks) - idle, sum(ticks))
    return cpus


def core_busy(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """Share of each CPU's time that was busy between two `parse_proc_stat` readings (0..1)."""
    busy = {}
    for cpu, (busy_after, total_after) in after.items():
        busy_before, total_before = before.get(cpu, (0, 0))
        total = total_after - total_before
        busy[cpu] = round((busy_after - busy_before) / total, 3) if total > 0 else 0.0
    return busy


def parse_cpuacct_stat(text: str, hz: int) -> tuple[float, float]:
    """cgroup v1 `cpuacct.stat` ("user N\\nsystem M", in USER_HZ ticks) -> (user s, system s)."""
    values = dict(line.split() for line in text.splitlines() if line.strip())
    return int(values["user"]) / hz, int(values["system"]) / hz


# ---------------------------------------------------------------- fits


@dataclass(frozen=True)
class Fit:
    """t(n) = a + b*n + c*n^2, every coefficient >= 0 (a cost never falls as the folder grows)."""

    a: float
    b: float
    c: float
    r2: float

    def __call__(self, n: float) -> float:
        return self.a + self.b * n + self.c * n * n

    def describe(self) -> str:
        terms = [f"{self.a:.3g}"]
        if self.b:
            terms.append(f"{self.b:.3g}*n")
        if self.c:
            terms.append(f"{self.c:.3g}*n^2")
        return "t = " + " + ".join(terms) + f" s (R^2 {self.r2:.3f})"

    def as_dict(self) -> dict[str, float]:
        return {"a_s": self.a, "b_s_per_blob": self.b, "c_s_per_blob2": self.c, "r2": round(self.r2, 4)}


def _solve(matrix: list[list[float]], rhs: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when singular."""
    n = len(rhs)
    m = [[*row, rhs[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[pivot][col]) < 1e-300:
            return None
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_growth(ns: Sequence[float], ts: Sequence[float]) -> Fit:
    """Least squares of t = a + b*n + c*n^2 over the non-negative subsets of {a, b, c}: the subset with the
    smallest residual whose coefficients are all >= 0. Columns are scaled, so n up to millions is fine."""
    if len(ns) != len(ts) or not ns:
        raise ValueError("need as many times as blob counts, at least one")
    scale = max(ns) or 1.0
    columns = {"a": [1.0] * len(ns), "b": [n / scale for n in ns], "c": [(n / scale) ** 2 for n in ns]}
    best: tuple[float, dict[str, float]] | None = None
    for size in (1, 2, 3):
        for subset in itertools.combinations("abc", size):
            if len(subset) > len(ns):
                continue
            cols = [columns[k] for k in subset]
            normal = [[sum(x * y for x, y in zip(ci, cj, strict=True)) for cj in cols] for ci in cols]
            rhs = [sum(x * t for x, t in zip(ci, ts, strict=True)) for ci in cols]
            solution = _solve(normal, rhs)
            if solution is None or any(v < 0 for v in solution):
                continue
            coef = dict(zip(subset, solution, strict=True))
            predicted = [sum(coef[k] * columns[k][i] for k in subset) for i in range(len(ns))]
            residual = sum((p - t) ** 2 for p, t in zip(predicted, ts, strict=True))
            if best is None or residual < best[0] - 1e-12:
                best = (residual, coef)
    assert best is not None  # {a} alone always solves with a >= 0 for non-negative times
    residual, coef = best
    mean = sum(ts) / len(ts)
    total = sum((t - mean) ** 2 for t in ts)
    return Fit(
        a=coef.get("a", 0.0),
        b=coef.get("b", 0.0) / scale,
        c=coef.get("c", 0.0) / scale**2,
        r2=1.0 - residual / total if total > 0 else 1.0,
    )


# ---------------------------------------------------------------- the 20 TB model


@dataclass(frozen=True)
class RepositoryShape:
    """What one measured first snapshot says about how a repository grows with the data in it."""

    stored_per_source_byte: float  # bytes in the bucket per byte backed up
    pack_fill: float  # mean pack blob size / max pack size
    contents_per_source_gib: float  # Kopia contents (chunks) per GiB backed up
    index_bytes_per_content: float  # bytes of index blobs (x*) per content
    metadata_per_source_byte: float  # bytes of metadata packs (q*) per byte backed up


def blobs_for(stored_bytes: float, pack_mib: int, pack_fill: float) -> int:
    """Pack blobs a bucket holds when `stored_bytes` are in packs of `pack_mib` MiB, filled to `pack_fill`."""
    return math.ceil(stored_bytes / (pack_mib * MIB * pack_fill))


def model_drive(shape: RepositoryShape, drive_bytes: float, pack_mib: int, fits: Mapping[str, Fit]) -> dict:
    """The repository when it fills the drive: blob count, index, caches and the measured costs at that count."""
    source_bytes = drive_bytes / shape.stored_per_source_byte
    contents = source_bytes / (1024**3) * shape.contents_per_source_gib
    blobs = blobs_for(drive_bytes, pack_mib, shape.pack_fill)
    index_bytes = contents * shape.index_bytes_per_content
    metadata_bytes = source_bytes * shape.metadata_per_source_byte
    return {
        "pack_mib": pack_mib,
        "drive_bytes": drive_bytes,
        "source_bytes": round(source_bytes),
        "pack_blobs": blobs,
        "contents": round(contents),
        "index_bytes": round(index_bytes),
        "metadata_bytes": round(metadata_bytes),
        "seconds": {name: round(fit(blobs), 1) for name, fit in fits.items()},
    }


# ---------------------------------------------------------------- a PNG plot, stdlib only

# 3x5 glyphs, rows top to bottom, "#" = ink
_FONT = {
    "0": ["###", "#.#", "#.#", "#.#", "###"], "1": [".#.", "##.", ".#.", ".#.", "###"],
    "2": ["###", "..#", "###", "#..", "###"], "3": ["###", "..#", ".##", "..#", "###"],
    "4": ["#.#", "#.#", "###", "..#", "..#"], "5": ["###", "#..", "###", "..#", "###"],
    "6": ["###", "#..", "###", "#.#", "###"], "7": ["###", "..#", ".#.", ".#.", ".#."],
    "8": ["###", "#.#", "###", "#.#", "###"], "9": ["###", "#.#", "###", "..#", "###"],
    "A": [".#.", "#.#", "###", "#.#", "#.#"], "B": ["##.", "#.#", "##.", "#.#", "##."],
    "C": [".##", "#..", "#..", "#..", ".##"], "D": ["##.", "#.#", "#.#", "#.#", "##."],
    "E": ["###", "#..", "##.", "#..", "###"], "F": ["###", "#..", "##.", "#..", "#.."],
    "G": [".##", "#..", "#.#", "#.#", ".##"], "H": ["#.#", "#.#", "###", "#.#", "#.#"],
    "I": ["###", ".#.", ".#.", ".#.", "###"], "J": ["..#", "..#", "..#", "#.#", ".#."],
    "K": ["#.#", "#.#", "##.", "#.#", "#.#"], "L": ["#..", "#..", "#..", "#..", "###"],
    "M": ["#.#", "###", "###", "#.#", "#.#"], "N": ["##.", "#.#", "#.#", "#.#", "#.#"],
    "O": [".#.", "#.#", "#.#", "#.#", ".#."], "P": ["##.", "#.#", "##.", "#..", "#.."],
    "Q": [".#.", "#.#", "#.#", "##.", ".##"], "R": ["##.", "#.#", "##.", "#.#", "#.#"],
    "S": [".##", "#..", ".#.", "..#", "##."], "T": ["###", ".#.", ".#.", ".#.", ".#."],
    "U": ["#.#", "#.#", "#.#", "#.#", "###"], "V": ["#.#", "#.#", "#.#", "#.#", ".#."],
    "W": ["#.#", "#.#", "###", "###", "#.#"], "X": ["#.#", "#.#", ".#.", "#.#", "#.#"],
    "Y": ["#.#", "#.#", ".#.", ".#.", ".#."], "Z": ["###", "..#", ".#.", "#..", "###"],
    " ": ["...", "...", "...", "...", "..."], ".": ["...", "...", "...", "...", ".#."],
    "-": ["...", "...", "###", "...", "..."], "/": ["..#", "..#", ".#.", "#..", "#.."],
    "(": [".#.", "#..", "#..", "#..", ".#."], ")": [".#.", "..#", "..#", "..#", ".#."],
    ":": ["...", ".#.", "...", ".#.", "..."], "=": ["...", "###", "...", "###", "..."],
    "^": [".#.", "#.#", "...", "...", "..."], "%": ["#.#", "..#", ".#.", "#..", "#.#"],
    "+": ["...", ".#.", "###", ".#.", "..."], ",": ["...", "...", "...", ".#.", "#.."],
}  # fmt: skip

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def set(self, x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], dash: int = 0) -> None:
        steps = max(int(max(abs(x1 - x0), abs(y1 - y0))), 1)
        for s in range(steps + 1):
            if dash and (s // dash) % 2:
                continue
            x, y = x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps
            self.set(round(x), round(y), color)

    def dot(self, x: float, y: float, color: tuple[int, int, int], r: int = 3) -> None:
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if dx * dx + dy * dy <= r * r:
                    self.set(round(x) + dx, round(y) + dy, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = BLACK, scale: int = 2) -> None:
        for i, char in enumerate(text.upper()):
            glyph = _FONT.get(char, _FONT[" "])
            for row, bits in enumerate(glyph):
                for col, bit in enumerate(bits):
                    if bit == "#":
                        for sx in range(scale):
                            for sy in range(scale):
                                self.set(x + (i * 4 + col) * scale + sx, y + row * scale + sy, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[3 * y * self.width : 3 * (y + 1) * self.width]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body


def _log_ticks(low: float, high: float) -> list[float]:
    return [10.0**e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def _tick_label(value: float) -> str:
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def plot_growth(
    series: Mapping[str, tuple[Sequence[float], Sequence[float], Fit]],
    markers: Mapping[str, float],
    title: str,
    width: int = 1000,
    height: int = 640,
) -> bytes:
    """Log-log plot of seconds against blobs in the folder: measured points, each fit drawn out to the
    largest marker (dashed past the last measured point), and vertical lines at `markers` (label -> blobs)."""
    canvas = Canvas(width, height)
    left, right, top, bottom = 90, width - 30, 50, height - 150
    n_max = max([*markers.values(), *(max(ns) for ns, _, _ in series.values())])
    n_min = min(min(ns) for ns, _, _ in series.values())
    t_values = [t for _, ts, _ in series.values() for t in ts] + [
        fit(n) for _, _, fit in series.values() for n in markers.values()
    ]
    t_min, t_max = max(min(t_values), 1e-3), max(t_values)
    x_ticks, y_ticks = _log_ticks(n_min, n_max), _log_ticks(t_min, t_max)
    lx0, lx1 = math.log10(x_ticks[0]), math.log10(x_ticks[-1])
    ly0, ly1 = math.log10(y_ticks[0]), math.log10(y_ticks[-1])

    def px(n: float) -> float:
        return left + (math.log10(max(n, 1e-9)) - lx0) / (lx1 - lx0) * (right - left)

    def py(t: float) -> float:
        return bottom - (math.log10(max(t, 1e-9)) - ly0) / (ly1 - ly0) * (bottom - top)

    for n in x_ticks:
        canvas.line(px(n), top, px(n), bottom, GREY)
        canvas.text(round(px(n)) - 10, bottom + 8, _tick_label(n))
    for t in y_ticks:
        canvas.line(left, py(t), right, py(t), GREY)
        canvas.text(8, round(py(t)) - 5, _tick_label(t) + " S")
    canvas.line(left, bottom, right, bottom, BLACK)
    canvas.line(left, top, left, bottom, BLACK)
    canvas.text(left, 12, title, scale=3)
    canvas.text((left + right) // 2 - 120, bottom + 30, "BLOBS IN THE REPOSITORY FOLDER (LOG)")
    for label, n in markers.items():
        canvas.line(px(n), top, px(n), bottom, BLACK, dash=6)
        canvas.text(round(px(n)) - 4 * 2 * len(label) - 4, top + 4, label)
    for i, (name, (ns, ts, fit)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        last = max(ns)
        steps = 200
        points = [n_min * (n_max / n_min) ** (s / steps) for s in range(steps + 1)]
        for a, b in itertools.pairwise(points):
            if fit(a) > 0 and fit(b) > 0:
                canvas.line(px(a), py(fit(a)), px(b), py(fit(b)), color, dash=0 if b <= last else 4)
        for n, t in zip(ns, ts, strict=True):
            canvas.dot(px(n), py(t), color)
        row_y = bottom + 60 + 18 * (i // 2)
        col_x = left + (i % 2) * ((right - left) // 2)
        canvas.line(col_x, row_y + 5, col_x + 30, row_y + 5, color)
        canvas.dot(col_x + 15, row_y + 5, color)
        canvas.text(col_x + 40, row_y, name)
    return canvas.png()
