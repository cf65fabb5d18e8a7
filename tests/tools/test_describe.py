"""``leccr describe`` end to end with a tiny random LLaVA (CLIP vision + Llama text) that the test builds itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leccr_lightning.cli import main
from leccr_lightning.tools.describe import sample_frames

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"] + [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def tiny_mllm(tmp_path_factory) -> Path:
    """A random-init LlavaForConditionalGeneration + LlavaProcessor saved to a local folder (no network)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny_llava")
    vocab = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    vocab.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=vocab,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        image_token="<image>",
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_index=4,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_image(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_describe_images_resumes_and_keys_by_file_stem(tiny_mllm, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "descriptions"
    images.mkdir()
    for i, name in enumerate(["1000092795", "COCO_val2014_000000000042", "36979"]):
        write_image(images / f"{name}.jpg", i)
    args = [
        "describe",
        "--model",
        str(tiny_mllm),
        "--images",
        str(images),
        "--out",
        str(out),
        "--batch_size",
        "2",
        "--max_new_tokens",
        "4",
    ]
    main(args)
    written = sorted(p.stem for p in out.glob("*.txt"))
    assert written == ["1000092795", "36979", "COCO_val2014_000000000042"]
    assert all(p.read_text().strip() for p in out.glob("*.txt"))
    (out / "36979.txt").write_text("kept from the first run\n")
    (out / "1000092795.txt").unlink()
    main(args)
    assert (out / "36979.txt").read_text() == "kept from the first run\n"
    assert (out / "1000092795.txt").read_text().strip()
    assert "wrote 1 descriptions" in capsys.readouterr().out


def test_describe_videos_from_frame_folders_with_an_id_list(tiny_mllm, tmp_path):
    frames, out = tmp_path / "frames", tmp_path / "descriptions"
    for v, video in enumerate(["video7010", "video7011"]):
        (frames / video).mkdir(parents=True)
        for f in range(5):
            write_image(frames / video / f"{video}_{f}.jpg", 10 * v + f)
    id_list = tmp_path / "test_id.txt"
    id_list.write_text("video7011\n")
    main(
        [
            "describe",
            "--model",
            str(tiny_mllm),
            "--images",
            str(frames),
            "--out",
            str(out),
            "--video",
            "true",
            "--frames_per_video",
            "2",
            "--ids",
            f"[{id_list}]",
            "--max_new_tokens",
            "3",
        ]
    )
    assert [p.stem for p in out.glob("*.txt")] == ["video7011"]
    assert [p.name for p in sample_frames(frames / "video7010", 3)] == [f"video7010_{i}.jpg" for i in (0, 2, 4)]
    id_list.write_text("video7011\nvideo9999\n")
    with pytest.raises(ValueError, match=r"test_id.txt:2: .*'video9999'"):
        main(
            [
                "describe",
                "--model",
                str(tiny_mllm),
                "--images",
                str(frames),
                "--out",
                str(out),
                "--video",
                "true",
                "--ids",
                f"[{id_list}]",
            ]
        )
