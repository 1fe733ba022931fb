"""`Target.batches(positions=...)` and `Target.storage_blocks()`: decoding chosen records in a chosen order.

The records decoded for a subset, in any order, must be the very records a full pass decodes, with their
labels and ids; storage blocks must partition the records and follow the HDF5 chunks.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from melep_cli.errors import TargetError, UsageError
from melep_cli.targets import open_target

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def _records(target, **kwargs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """record id -> (signal, labels), and the ids in the order decoded."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    order: list[str] = []
    for batch in target.batches(**kwargs):
        for row, record_id in enumerate(batch.ids):
            found[record_id] = (np.asarray(batch.signals[row]), batch.labels[row])
            order.append(record_id)
    return found, order


def _copy_sample(path: Path, *, chunks, skip_rows=(), nan_row: int | None = None) -> Path:
    """The sample target's real records rewritten with another chunking (and optionally rows left out or one
    record spoiled with NaN)."""
    with h5py.File(SAMPLE / "ptbxl_target.h5", "r") as source:
        keep = np.setdiff1d(np.arange(source["signals"].shape[0]), np.asarray(skip_rows, dtype=int))
        signals = source["signals"][keep]
        if nan_row is not None:
            signals[nan_row, 10:20, 0] = np.nan
        with h5py.File(path, "w") as copy:
            copy.create_dataset("signals", data=signals, chunks=chunks)
            copy.create_dataset("labels", data=source["labels"][keep])
            copy.create_dataset("record_ids", data=source["record_ids"][keep])
            for key, value in source.attrs.items():
                copy.attrs[key] = value
            for key, value in source["labels"].attrs.items():
                copy["labels"].attrs[key] = value
            for key, value in source["signals"].attrs.items():
                copy["signals"].attrs[key] = value
    return path


@pytest.mark.parametrize("chunks", [(16, 1000, 12), (7, 1000, 12), None])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_hdf5_positions_in_any_order_give_the_full_pass_records(tmp_path, chunks, batch_size):
    path = _copy_sample(tmp_path / "copy.h5", chunks=chunks)
    target = open_target(path)
    full, full_order = _records(target, batch_size=64)
    assert full_order == target.record_ids
    generator = np.random.default_rng(3)
    for size in (1, 17, 150, len(target)):
        positions = generator.permutation(len(target))[:size]
        chosen, order = _records(target, batch_size=batch_size, positions=positions)
        assert order == [target.record_ids[p] for p in positions]
        for record_id, (signal, labels) in chosen.items():
            np.testing.assert_array_equal(signal, full[record_id][0])
            np.testing.assert_array_equal(labels, full[record_id][1])


@pytest.mark.parametrize("chunks", [(16, 1000, 12), (7, 1000, 12), None])
def test_hdf5_storage_blocks_partition_the_records_by_chunk(tmp_path, chunks):
    path = _copy_sample(tmp_path / "copy.h5", chunks=chunks, skip_rows=[0, 1, 40])
    target = open_target(path)
    blocks = target.storage_blocks()
    np.testing.assert_array_equal(np.concatenate(blocks), np.arange(len(target)))
    chunk_rows = chunks[0] if chunks else 1
    with h5py.File(path, "r") as handle:
        ids = [value.decode() if isinstance(value, bytes) else str(value) for value in handle["record_ids"][()]]
    row_of = {record_id: row for row, record_id in enumerate(ids)}
    for block in blocks:
        assert len({row_of[target.record_ids[p]] // chunk_rows for p in block}) == 1
    assert len(blocks) == len({row // chunk_rows for row in row_of.values()})


def test_shuffled_storage_blocks_decode_every_record_once(tmp_path):
    path = _copy_sample(tmp_path / "copy.h5", chunks=(16, 1000, 12))
    target = open_target(path)
    blocks = target.storage_blocks()
    order = np.concatenate([blocks[i] for i in np.random.default_rng(0).permutation(len(blocks))])
    _, decoded = _records(target, batch_size=32, positions=order)
    assert sorted(decoded) == sorted(target.record_ids)
    assert decoded == [target.record_ids[p] for p in order]


def test_a_bad_record_among_the_positions_is_skipped_or_strict(tmp_path):
    path = _copy_sample(tmp_path / "copy.h5", chunks=(16, 1000, 12), nan_row=5)
    target = open_target(path)
    bad = target.record_ids[5]
    _, order = _records(target, batch_size=8, positions=[9, 5, 2])
    assert order == [target.record_ids[9], target.record_ids[2]]
    assert [record for record, _ in target.skipped] == [bad]
    _records(target, batch_size=8, positions=[9, 2])
    assert target.skipped == []
    strict = open_target(path, strict=True)
    with pytest.raises(TargetError, match=bad):
        _records(strict, batch_size=8, positions=[9, 5])


@pytest.mark.parametrize("positions", [[0, 0], [-1], [300]])
def test_bad_positions_are_a_usage_error_naming_the_parameter(positions):
    target = open_target(SAMPLE / "ptbxl_target.h5")
    with pytest.raises(UsageError, match="positions") as caught:
        next(target.batches(8, positions=positions))
    assert caught.value.parameter == "positions"


def test_wfdb_directory_positions(tmp_path):
    target = open_target(SAMPLE / "cinc_wfdb")
    full, _ = _records(target, batch_size=64)
    positions = np.random.default_rng(1).permutation(len(target))[: max(1, len(target) // 2)]
    chosen, order = _records(target, batch_size=3, positions=positions)
    assert order == [target.record_ids[p] for p in positions if target.record_ids[p] in full]
    for record_id, (signal, labels) in chosen.items():
        np.testing.assert_array_equal(signal, full[record_id][0])
        np.testing.assert_array_equal(labels, full[record_id][1])
    assert [len(block) for block in target.storage_blocks()] == [1] * len(target)


def test_ptbxl_positions(ptbxl_dir):
    target = open_target(ptbxl_dir, folds="10")
    positions = np.random.default_rng(2).permutation(len(target))[:40]
    first = set(positions[:20].tolist())
    full, _ = _records(target, batch_size=16, positions=sorted(first))
    chosen, order = _records(target, batch_size=16, positions=positions)
    assert order == [target.record_ids[p] for p in positions]
    for record_id, (signal, _labels) in full.items():
        np.testing.assert_array_equal(chosen[record_id][0], signal)
