"""Feature stores: memory-mapped BigFile, video2frames padding/masks, npy and HDF5 behind the same interface."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import BigFileStore, HDF5Store, NpyStore, write_bigfile


@pytest.fixture
def matrix():
    return np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)


def test_bigfile_roundtrip_and_batch(tmp_path, matrix):
    names = [f"v{i}" for i in range(6)]
    write_bigfile(tmp_path / "feat", names, matrix)
    store = BigFileStore(tmp_path / "feat")
    assert store.dim == 4 and "v3" in store and "nope" not in store
    visual, mask = store.batch([store.rows_of("v5"), store.rows_of("v0"), store.rows_of("v5")])
    assert visual.shape == (3, 1, 4) and mask.all()
    assert torch.equal(visual[:, 0], torch.from_numpy(matrix[[5, 0, 5]]))


def test_bigfile_errors_name_the_file(tmp_path, matrix):
    write_bigfile(tmp_path / "feat", [f"v{i}" for i in range(6)], matrix)
    with pytest.raises(KeyError, match="visual id ghost has no feature in"):
        BigFileStore(tmp_path / "feat").rows_of("ghost")
    with open(tmp_path / "feat" / "feature.bin", "r+b") as handle:
        handle.truncate(6 * 4 * 4 - 8)
    with pytest.raises(DataFormatError, match=r"feature.bin: 88 bytes, expected 96 .*truncated"):
        BigFileStore(tmp_path / "feat")
    write_bigfile(tmp_path / "f2", [f"v{i}" for i in range(6)], matrix)
    (tmp_path / "f2" / "shape.txt").write_text("7 4")
    with pytest.raises(DataFormatError, match="6 ids but shape.txt says N = 7"):
        BigFileStore(tmp_path / "f2")


def test_video2frames_padding_mask_and_frame_cap(tmp_path, matrix):
    names = [f"a_{i}" for i in range(4)] + ["b_0", "b_1"]
    write_bigfile(tmp_path / "feat", names, matrix)
    (tmp_path / "v2f.txt").write_text(repr({"a": [f"a_{i}" for i in range(4)], "b": ["b_0", "b_1"]}))
    store = BigFileStore(tmp_path / "feat", video2frames=tmp_path / "v2f.txt", max_frames=3)
    visual, mask = store.batch([store.rows_of("b"), store.rows_of("a")])
    assert visual.shape == (2, 3, 4)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert torch.equal(visual[0, :2], torch.from_numpy(matrix[4:6])) and visual[0, 2].abs().sum() == 0
    assert torch.equal(visual[1], torch.from_numpy(matrix[0:3]))
    uniform = BigFileStore(tmp_path / "feat", video2frames=tmp_path / "v2f.txt", max_frames=2, frame_sampling="uniform")
    assert uniform.rows_of("a").tolist() == [0, 3]
    (tmp_path / "bad.txt").write_text(repr({"a": ["a_0", "zz"]}))
    with pytest.raises(DataFormatError, match="bad.txt: id a: frame zz is not in"):
        BigFileStore(tmp_path / "feat", video2frames=tmp_path / "bad.txt")
    (tmp_path / "evil.txt").write_text("__import__('os').system('true')")
    with pytest.raises(DataFormatError, match="not a Python dict literal"):
        BigFileStore(tmp_path / "feat", video2frames=tmp_path / "evil.txt")


def test_npy_and_hdf5_match_bigfile(tmp_path, matrix):
    names = [f"v{i}" for i in range(6)]
    write_bigfile(tmp_path / "feat", names, matrix)
    np.save(tmp_path / "x.npy", matrix)
    (tmp_path / "ids.txt").write_text("\n".join(names))
    with h5py.File(tmp_path / "x.h5", "w") as handle:
        handle["features"] = matrix
        handle["ids"] = np.array(names, dtype="S")
    stores = [
        BigFileStore(tmp_path / "feat"),
        NpyStore(tmp_path / "x.npy", tmp_path / "ids.txt"),
        HDF5Store(tmp_path / "x.h5"),
    ]
    batches = [s.batch([s.rows_of(v) for v in ("v4", "v1", "v4")])[0] for s in stores]
    assert all(torch.equal(batches[0], b) for b in batches[1:])
    (tmp_path / "short.txt").write_text("\n".join(names[:5]))
    with pytest.raises(DataFormatError, match=r"shape \(6, 4\) does not match 5 ids"):
        NpyStore(tmp_path / "x.npy", tmp_path / "short.txt")
