"""`leccr extract`: timm features of raw images cached as a BigFile that the data layer reads back."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.cli import main
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import BigFileStore
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.modules.visual_encoders import TimmImageEncoder


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return write_synthetic_collection(root, SynthConfig(n_train=6, n_val=3, n_test=3, write_images=True, seed=3))


def test_extract_writes_a_bigfile_of_the_listed_images(collection, tmp_path):
    out = tmp_path / "FeatureData" / "test_resnet"
    ids_file = collection / "FeatureData" / "test_id.txt"
    args = ["extract", "--images", str(collection / "images"), "--out", str(out), "--ids", f"[{ids_file}]"]
    main([*args, "--model", "test_resnet", "--image_size", "32", "--batch_size", "2"])
    store = BigFileStore(out)
    ids = ids_file.read_text().split()
    assert store.names == ids
    torch.manual_seed(0)
    encoder = TimmImageEncoder("test_resnet", trainable=False).eval()
    images = ImageFolderStore(collection / "images", model_name="test_resnet", image_size=32)
    with torch.no_grad():
        expected = encoder(torch.stack([images.load(v) for v in ids]))[1]
    stored = store.batch([store.rows_of(v) for v in ids])[0][:, 0]
    assert torch.allclose(stored, expected, atol=1e-5)
    assert not torch.allclose(stored[0], stored[1])


def test_extract_names_an_id_without_image(collection, tmp_path):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("imgte000000\nimgte999999\n")
    with pytest.raises(DataFormatError, match="imgte999999"):
        main(
            [
                "extract",
                "--images",
                str(collection / "images"),
                "--out",
                str(tmp_path / "f"),
                "--ids",
                f"[{ids_file}]",
                "--model",
                "test_resnet",
                "--image_size",
                "32",
            ]
        )
