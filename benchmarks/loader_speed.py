"""Training-loader throughput against the floor of reading the same feature rows straight from a memmap.

Writes a synthetic collection (``--items`` visual items, ``--dim``-d features), then times, in the same process,
(a) ``CCRDataModule.train_dataloader()`` batches per second (visual rows + tokenised source/target captions, padded),
and (b) the bare floor: the same batches' feature rows read from ``np.memmap`` with one fancy index each. Prints
both and their ratio (loader / floor; 1.0 would mean text and collation cost nothing). With ``--device cuda`` both
sides also move every batch to the GPU, as the Trainer does, and the clock stops after the copies finished.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import add_device_options, setup_device, synchronize
from lightning.fabric.utilities.apply_func import move_data_to_device

from leccr_lightning.data.datamodule import CCRDataModule, FeatureSpec
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    add_device_options(parser)
    parser.set_defaults(threads=1)
    args = parser.parse_args()
    device = setup_device(args)
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_collection(tmp, SynthConfig(n_train=args.items, n_val=10, n_test=10, feature_dim=args.dim))
        dm = CCRDataModule(
            root=tmp,
            collection="synthetic",
            language="de",
            train_captions={
                "source": "synthtrain_enc.caption.txt",
                "target": "synthtrain_google_enc2de.caption.txt",
            },
            val_captions={"query": "synthval_de.caption.txt"},
            test_captions={"query": "synthtest_de.caption.txt"},
            features=FeatureSpec(path="FeatureData/synthetic_feat"),
            id_lists={
                "train": "FeatureData/train_id.txt",
                "val": "FeatureData/val_id.txt",
                "test": "FeatureData/test_id.txt",
            },
            batch_size=args.batch_size,
        )
        dm.setup("fit")
        dataset = dm.split("train")["train"]
        store = dataset.items.store
        shape = store.shape
        memmap = np.memmap(
            Path(tmp) / "synthetic/FeatureData/synthetic_feat/feature.bin",
            dtype=np.float32,
            mode="r",
            shape=shape,
        )
        rows = [
            np.concatenate([dataset.items.rows[p] for p in dataset.visual_index[i : i + args.batch_size]])
            for i in range(0, len(dataset), args.batch_size)
        ]
        loader_times, floor_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            n_batches = sum(1 for batch in dm.train_dataloader() if move_data_to_device(batch, device) is not None)
            synchronize(device)
            loader_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            for block in rows:
                torch.from_numpy(np.asarray(memmap[np.sort(block)])).to(device)
            synchronize(device)
            floor_times.append(time.perf_counter() - start)
        loader_bps = n_batches / float(np.median(loader_times))
        floor_bps = len(rows) / float(np.median(floor_times))
        print(f"captions {len(dataset)}  batch {args.batch_size}  dim {args.dim}  batches {n_batches}")
        print(
            f"loader: {loader_bps:9.1f} batches/s   memmap floor: {floor_bps:9.1f} batches/s   "
            f"ratio loader/floor: {loader_bps / floor_bps:.3f} (reported, no goal)"
        )


if __name__ == "__main__":
    main()
