"""CPU cost of decoding WFDB / PTB-XL records per record, and memory of the HDF5 reader and the accumulator.

Issue 7: `melep rank` with a cheap model (Bi-LSTM, ONNX Runtime at 2 threads) ran at 0.75 of the
model-only throughput on 2 cores because decoding the records took CPU from the forward pass. This
script times each step of decoding one PTB-XL 100 Hz record (`parse_header`, `physical`,
`bad_record_reason`, `read_wfdb_signal`, and the three together) with the implementation before
that work (copied below, verbatim) and the current one, alternating them round by round, and checks
that both give the same headers, the same float32 bits and the same skip reasons on every record.

It then times whole `PtbxlTarget.batches(32)` passes over the same records in child processes,
alternating this checkout and the package at a reference git revision (`--against`, default
DECODE_REFERENCE: the revision before this work), and measures the tracemalloc peak of iterating an
HDF5 target (float32 and int16 files) and of `MelepAccumulator.compute()` the same way.

    python benchmarks/bench_decode.py                 # 1000 records
    python benchmarks/bench_decode.py --quick         # 200 records, fewer rounds
    python benchmarks/bench_decode.py --records 2992 --against 956096e
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common
import numpy as np

from melep_cli.errors import TargetError
from melep_cli.targets.base import bad_record_reason
from melep_cli.targets.challenge import (
    Header,
    _parse_header_fields,
    _split_header,
    parse_header,
    physical,
)
from melep_cli.targets.wfdb_dir import read_wfdb_signal

#: The revision before the decode work of issue 7 (what `--against` compares with by default).
DECODE_REFERENCE = "956096e"


# ----- the implementation before (melep_cli/targets at DECODE_REFERENCE): copied where the decode work changed it -
def old_parse_header(path: str | Path) -> Header:
    """The parser before: a buffered text read, then the general parser, which the decode work left unchanged
    (it is still the fallback of the fast path), so it is called rather than copied."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as error:
        raise TargetError(f"{path}: cannot read header ({error})") from None
    fields, comments = _split_header(text)
    return _parse_header_fields(path, fields, comments)


def old_physical(adu: np.ndarray, header: Header) -> np.ndarray:
    baseline = np.array([signal.baseline for signal in header.signals])
    scale = np.array([signal.mv_per_unit / signal.gain for signal in header.signals])
    return ((adu - baseline) * scale).astype(np.float32)


def old_bad_record_reason(signal: np.ndarray | None) -> str | None:
    if signal is None or signal.ndim != 2 or signal.shape[0] == 0 or signal.shape[1] == 0:
        return "no samples"
    if not np.isfinite(signal).all():
        return "contains NaN or infinite values"
    if (signal.max(axis=0) == signal.min(axis=0)).all():
        return "flat on every lead"
    return None


def old_read_wfdb_signal(header: Header) -> np.ndarray:
    """The format-16 branch of the old read_wfdb_signal (all PTB-XL records take it)."""
    if header.n_signals == 0:
        raise TargetError(f"{header.path}: no signals")
    files = {signal.file_name for signal in header.signals}
    for name in sorted(files):
        if not (header.path.parent / name).is_file():
            raise TargetError(f"{header.path.parent / name}: signal file missing (named in {header.path.name})")
    if not (len(files) == 1 and all(signal.plain_format16 for signal in header.signals)):
        raise NotImplementedError("this benchmark only copies the format-16 branch")
    signal = header.signals[0]
    data_path = header.path.parent / signal.file_name
    try:
        adu = np.fromfile(data_path, dtype="<i2", offset=signal.byte_offset)
    except OverflowError:
        raise TargetError(f"{header.path}: byte offset {signal.byte_offset} is out of range") from None
    except (OSError, ValueError) as error:
        raise TargetError(f"{data_path}: cannot read ({error})") from None
    frames = adu.size // header.n_signals
    if header.n_samples and frames < header.n_samples:
        raise TargetError(f"{data_path}: {frames} samples per lead, the header announces {header.n_samples}")
    adu = adu[: frames * header.n_signals].reshape(frames, header.n_signals)
    if header.n_samples:
        adu = adu[: header.n_samples]
    return old_physical(adu, header)


def old_decode(path: Path) -> tuple[np.ndarray, str | None]:
    signal = old_read_wfdb_signal(old_parse_header(path))
    return signal, old_bad_record_reason(signal)


def new_decode(path: Path) -> tuple[np.ndarray, str | None]:
    signal = read_wfdb_signal(parse_header(path))
    return signal, bad_record_reason(signal)


# ----- checks -----------------------------------------------------------------------------------------------------
def _header_fields(header: Header) -> tuple:
    return (
        header.path,
        header.record_name,
        header.n_signals,
        header.sampling_rate,
        header.n_samples,
        header.signals,
        header.comments,
    )


def check_identical(paths: Sequence[Path]) -> dict[str, Any]:
    """Old and new give equal headers, the same float32 bits and the same reasons on every record."""
    for path in paths:
        old_header, new_header = old_parse_header(path), parse_header(path)
        if _header_fields(old_header) != _header_fields(new_header):
            raise AssertionError(f"{path}: headers differ")
        old_signal, old_reason = old_decode(path)
        new_signal, new_reason = new_decode(path)
        if old_signal.dtype != new_signal.dtype or old_signal.shape != new_signal.shape:
            raise AssertionError(
                f"{path}: {old_signal.dtype} {old_signal.shape} != {new_signal.dtype} {new_signal.shape}"
            )
        if not np.array_equal(old_signal.view(np.uint32), new_signal.view(np.uint32)):
            raise AssertionError(f"{path}: millivolts differ")
        if old_reason != new_reason:
            raise AssertionError(f"{path}: reason {old_reason!r} != {new_reason!r}")
        # The flat and non-finite checks on altered copies of the real record.
        for altered in (np.repeat(new_signal[:1], len(new_signal), axis=0), _with_nan(new_signal)):
            if old_bad_record_reason(altered) != bad_record_reason(altered):
                raise AssertionError(f"{path}: reasons differ on an altered copy")
    return {"records": len(paths), "headers_equal": True, "float32_bits_equal": True, "reasons_equal": True}


def _with_nan(signal: np.ndarray) -> np.ndarray:
    copy = signal.copy()
    copy[len(copy) // 2, -1] = np.nan
    return copy


# ----- timing -----------------------------------------------------------------------------------------------------
def alternate(old: Callable[[], object], new: Callable[[], object], rounds: int) -> dict[str, list[float]]:
    """Seconds of each of `rounds` passes, old and new alternating (which goes first alternates too)."""
    old(), new()  # warm-up
    times: dict[str, list[float]] = {"before": [], "after": []}
    for round_index in range(rounds):
        order = [("before", old), ("after", new)]
        for name, function in order if round_index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def stage_row(stage: str, times: dict[str, list[float]], records: int) -> dict[str, Any]:
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    return {
        "stage": stage,
        "before_us_per_record": before / records * 1e6,
        "after_us_per_record": after / records * 1e6,
        "speedup": before / after,
        "before_best_us_per_record": min(times["before"]) / records * 1e6,
        "after_best_us_per_record": min(times["after"]) / records * 1e6,
        "rounds": len(times["before"]),
    }


def time_stages(paths: Sequence[Path], rounds: int) -> list[dict[str, Any]]:
    """Per-record microseconds of each decoding step, before and after; outputs are dropped as a reader drops them."""
    headers = [parse_header(path) for path in paths]
    adus = [np.fromfile(header.path.parent / header.signals[0].file_name, dtype="<i2") for header in headers]
    adus = [adu.reshape(-1, header.n_signals)[: header.n_samples] for adu, header in zip(adus, headers)]
    signals = [physical(adu, header) for adu, header in zip(adus, headers)]
    n = len(paths)

    def each(function: Callable[..., object], *columns: Sequence[Any]) -> Callable[[], None]:
        def run() -> None:
            for arguments in zip(*columns):
                function(*arguments)

        return run

    stages = {
        "parse_header": (each(old_parse_header, paths), each(parse_header, paths)),
        "physical": (each(old_physical, adus, headers), each(physical, adus, headers)),
        "bad_record_reason": (each(old_bad_record_reason, signals), each(bad_record_reason, signals)),
        "read_wfdb_signal": (each(old_read_wfdb_signal, headers), each(read_wfdb_signal, headers)),
        "decode (parse + read + check)": (each(old_decode, paths), each(new_decode, paths)),
    }
    rows = []
    for stage, (old, new) in stages.items():
        rows.append(stage_row(stage, alternate(old, new, rounds), n))
    return rows


# ----- whole PtbxlTarget.batches passes in child processes --------------------------------------------------------
_BATCHES_CHILD = """
import json, sys, time
import melep_cli
from melep_cli.targets import open_target
target = open_target(sys.argv[1])
passes = int(sys.argv[2])
records = sum(len(batch) for batch in target.batches(32))  # warm-up pass
wall, cpu = [], []
for _ in range(passes):
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in target.batches(32):
        pass
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - cpu_start)
print(json.dumps({"package": melep_cli.__file__, "records": records, "wall_s": wall, "cpu_s": cpu}))
"""


def time_batches(target: Path, trees: dict[str, Path], rounds: int, passes: int, workdir: Path) -> dict[str, Any]:
    """Whole `batches(32)` passes, before and after alternating by child process; per-record wall and CPU."""
    wall: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    records = 0
    names = list(trees)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            result = _common.run_child(_BATCHES_CHILD, trees[name], [str(target), str(passes)], workdir)
            wall[name] += result["wall_s"]
            cpu[name] += result["cpu_s"]
            records = result["records"]
    row: dict[str, Any] = {"records": records, "batch_size": 32}
    for name in names:
        row[name] = {
            "wall_us_per_record": statistics.median(wall[name]) / records * 1e6,
            "cpu_us_per_record": statistics.median(cpu[name]) / records * 1e6,
            "records_per_s": records / statistics.median(wall[name]),
            "passes": len(wall[name]),
        }
    row["speedup_wall"] = row["before"]["wall_us_per_record"] / row["after"]["wall_us_per_record"]
    row["speedup_cpu"] = row["before"]["cpu_us_per_record"] / row["after"]["cpu_us_per_record"]
    return row


# ----- memory: HDF5 reader and accumulator ------------------------------------------------------------------------
_HDF5_CHILD = """
import json, sys, tracemalloc
import melep_cli
from melep_cli.targets import open_target
target = open_target(sys.argv[1])
tracemalloc.start()
records = 0
for batch in target.batches(int(sys.argv[2])):
    records += len(batch)
    del batch
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"package": melep_cli.__file__, "records": records, "peak_bytes": peak}))
"""


def write_hdf5(path: Path, count: int, dtype: str, chunk_rows: int, samples: int = 1000, leads: int = 12) -> Path:
    """A FORMATS.md HDF5 target of `count` random records, chunked by `chunk_rows` records (`melep convert`: 16)."""
    import h5py

    rng = np.random.default_rng(0)
    values = rng.integers(-2000, 2000, size=(count, samples, leads)).astype(dtype)
    with h5py.File(path, "w") as handle:
        signals = handle.create_dataset("signals", data=values, chunks=(chunk_rows, samples, leads))
        signals.attrs["sampling_rate"] = 100.0
        handle.create_dataset("labels", data=(rng.random((count, 2)) < 0.4).astype(np.uint8))
    return path


def hdf5_memory(trees: dict[str, Path], count: int, workdir: Path) -> list[dict[str, Any]]:
    """tracemalloc peak of iterating every batch (32) of float32 and int16 files, chunks of 16 and 256 records."""
    rows = []
    for dtype, chunk_rows in (("float32", 16), ("int16", 16), ("float32", 256), ("int16", 256)):
        path = write_hdf5(workdir / f"target-{dtype}-{chunk_rows}.h5", count, dtype, chunk_rows)
        row: dict[str, Any] = {
            "file_dtype": dtype,
            "chunk_records": chunk_rows,
            "records": count,
            "signal_bytes_float32": count * 1000 * 12 * 4,
        }
        for name, tree in trees.items():
            row[f"{name}_peak_bytes"] = _common.run_child(_HDF5_CHILD, tree, [str(path), "32"], workdir)["peak_bytes"]
        row["peak_ratio"] = row["before_peak_bytes"] / row["after_peak_bytes"]
        rows.append(row)
    return rows


def accumulator_memory(records: int = 100_000, outputs: int = 100) -> dict[str, Any]:
    """tracemalloc peak of MelepAccumulator.compute() (float32 logits), before (concatenate, then activate) and now."""
    from melep_cli.metric import MelepAccumulator, _melep_from_probabilities, activate

    rng = np.random.default_rng(0)
    accumulator = MelepAccumulator(activation="logits")
    for _ in range(0, records, 1000):
        accumulator.update(
            rng.standard_normal((1000, outputs), dtype=np.float32),
            (rng.random((1000, 5)) < 0.3).astype(np.uint8),
        )

    def before() -> Any:
        theta = activate(np.concatenate(accumulator._outputs), accumulator.activation)
        labels = np.concatenate(accumulator._labels)
        return _melep_from_probabilities(theta, labels, "prevalence", None, None, None, accumulator.eps)

    results, peaks = {}, {}
    for name, function in (("before", before), ("after", accumulator.compute)):
        tracemalloc.start()
        results[name] = function()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if results["before"].score != results["after"].score:
        raise AssertionError("MelepAccumulator.compute changed the score")
    return {
        "records": records,
        "outputs": outputs,
        "outputs_float64_bytes": records * outputs * 8,
        "before_peak_bytes": peaks["before"],
        "after_peak_bytes": peaks["after"],
        "same_score": True,
    }


# ----- driver -----------------------------------------------------------------------------------------------------
def run(
    *,
    quick: bool = False,
    records: int | None = None,
    against: str | None = DECODE_REFERENCE,
    against_path: Path | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Time and check decoding; write `results/<name>.json` (decode.json, decode-quick.json)."""
    name = name or ("decode-quick" if quick else "decode")
    records_dir = _common.PTBXL_DIR / "records100"
    if not records_dir.is_dir():
        return {"skipped": f"PTB-XL records not found at {records_dir}"}
    count = records or (200 if quick else 1000)
    paths = sorted(records_dir.glob("*/*.hea"))[:count]
    rounds = 3 if quick else 7

    print(f"checking old and new decode on {len(paths)} records ...", flush=True)
    identical = check_identical(paths)
    print(f"  identical: headers, float32 bits, skip reasons on all {identical['records']} records")

    print(f"per-record steps, {len(paths)} PTB-XL 100 Hz records (12 x 1000 int16), {rounds} alternating rounds:")
    stages = time_stages(paths, rounds)
    print(f"  {'step':<32}{'before µs':>11}{'after µs':>11}{'speedup':>9}")
    for row in stages:
        print(
            f"  {row['stage']:<32}{row['before_us_per_record']:>11.1f}{row['after_us_per_record']:>11.1f}"
            f"{row['speedup']:>8.2f}x"
        )

    payload: dict[str, Any] = {
        "what": "decoding PTB-XL 100 Hz WFDB records (format 16, 12 x 1000): implementation before issue 7's "
        "decode work (copied into this script) against the current one, alternating rounds",
        "input": f"the first {len(paths)} headers (sorted) of {records_dir}, warm page cache",
        "note": _common.NOISE_NOTE,
        "identical": identical,
        "stages": stages,
        "reference_revision": None if against_path else against,
    }
    with tempfile.TemporaryDirectory(prefix="melep-bench-decode-") as scratch:
        workdir = Path(scratch)
        reference = against_path
        if reference is None and against:
            try:
                reference = _common.package_at(against, workdir / "reference")
            except (subprocess.CalledProcessError, FileNotFoundError) as error:
                print(f"  no reference revision {against} here ({error}): whole-pass and memory comparisons skipped")
        if reference is not None:
            trees = {"before": Path(reference), "after": _common.REPO_ROOT}
            target = _common.ptbxl_subset(count, workdir / "ptbxl")
            batch_rounds, passes = (2, 1) if quick else (4, 2)
            batches = time_batches(target, trees, batch_rounds, passes, workdir)
            payload["ptbxl_batches"] = batches
            print(
                f"PtbxlTarget.batches(32) over {batches['records']} records, child processes "
                f"(before = {reference if against_path else against}):"
            )
            for label in ("before", "after"):
                entry = batches[label]
                print(
                    f"  {label:<7} {entry['wall_us_per_record']:8.1f} µs/record wall, "
                    f"{entry['cpu_us_per_record']:8.1f} µs/record CPU ({entry['records_per_s']:,.0f} records/s)"
                )
            print(f"  speedup: x{batches['speedup_wall']:.2f} wall, x{batches['speedup_cpu']:.2f} CPU")
            memory = hdf5_memory(trees, 256 if quick else 1024, workdir)
            payload["hdf5_memory"] = memory
            print("HDF5 target, tracemalloc peak while iterating batches(32):")
            for row in memory:
                print(
                    f"  {row['file_dtype']:<8} chunks of {row['chunk_records']:>3} records: "
                    f"before {row['before_peak_bytes'] / 2**20:6.1f} MiB, after {row['after_peak_bytes'] / 2**20:6.1f} "
                    f"MiB (x{row['peak_ratio']:.2f}; {row['records']} records, "
                    f"{row['signal_bytes_float32'] / 2**20:.1f} MiB as float32)"
                )
    accumulator = accumulator_memory(records=20_000 if quick else 100_000)
    payload["accumulator_memory"] = accumulator
    print(
        f"MelepAccumulator.compute, {accumulator['records']:,} x {accumulator['outputs']} float32 logits: peak "
        f"{accumulator['before_peak_bytes'] / 2**20:.1f} MiB before, {accumulator['after_peak_bytes'] / 2**20:.1f} "
        f"MiB after (outputs as float64: {accumulator['outputs_float64_bytes'] / 2**20:.1f} MiB)"
    )
    path = _common.write_results(name, payload)
    print(f"wrote {path}")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, help="PTB-XL records to decode (default 1000; --quick 200)")
    parser.add_argument("--quick", action="store_true", help="fewer records and rounds")
    parser.add_argument("--against", default=DECODE_REFERENCE, help="git revision to compare whole passes with")
    parser.add_argument("--against-path", type=Path, help="a directory holding the reference melep_cli instead")
    parser.add_argument("--name", help="results file name (default: decode, or decode-quick with --quick)")
    args = parser.parse_args()
    payload = run(
        quick=args.quick, records=args.records, against=args.against, against_path=args.against_path, name=args.name
    )
    if "skipped" in payload:
        print(f"skipped: {payload['skipped']}")


if __name__ == "__main__":
    main()
