"""Fixtures of the tool tests: tiny MarianMT models built from the synthetic captions (no download) and a small
synthetic collection."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import read_caption_file


def caption_texts(path: Path) -> list[str]:
    return list(read_caption_file(path).texts)


def write_marian_tokenizer(folder: Path, corpus: Sequence[str], language_tokens: Sequence[str] = ()) -> list[str]:
    """A MarianTokenizer folder (one SentencePiece unigram model for both sides + vocab.json) trained on ``corpus``;
    returns the vocabulary (``</s>`` 0, ``<unk>`` 1, the language tokens, the pieces, ``<pad>`` last)."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=200,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]
    vocab = ["</s>", "<unk>", *language_tokens, *pieces, "<pad>"]
    (folder / "vocab.json").write_text(json.dumps({piece: i for i, piece in enumerate(vocab)}), encoding="utf-8")
    MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json")).save_pretrained(
        folder
    )
    return vocab


def build_tiny_marian(
    folder: Path,
    corpus: Sequence[str],
    pairs: Sequence[tuple[str, str]] = (),
    steps: int = 0,
    seed: int = 0,
    language_tokens: Sequence[str] = (),
) -> Path:
    """A random-init 1+1-layer MarianMT (d_model 64) with a tokenizer trained on ``corpus``, then trained for
    ``steps`` AdamW steps on the (source, target) ``pairs`` (0: stays random), saved as a local model folder."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    vocab = write_marian_tokenizer(folder, corpus, language_tokens)
    pad = len(vocab) - 1
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=128,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config)
    tokenizer = MarianTokenizer.from_pretrained(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(pairs), (32,), generator=generator).tolist()
        batch = tokenizer(
            [pairs[i][0] for i in rows], text_target=[pairs[i][1] for i in rows], return_tensors="pt", padding=True
        )
        batch["labels"][batch["labels"] == pad] = -100
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.generation_config.num_beams = 1
    model.generation_config.bad_words_ids = [[pad]]
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def mt_collection(tmp_path_factory) -> Path:
    """A small synthetic German image collection (the VisualSearch root) whose MT files the tests replace."""
    root = tmp_path_factory.mktemp("mt_root")
    write_synthetic_collection(root, SynthConfig(n_train=100, n_val=20, n_test=20, seed=5))
    return root


@pytest.fixture(scope="session")
def marian_en_de(mt_collection, tmp_path_factory) -> Path:
    """A tiny MarianMT trained for a few seconds on the collection's English -> synthetic German training pairs."""
    text = mt_collection / "synthetic" / "TextData"
    source = read_caption_file(text / "synthtrain_enc.caption.txt")
    target = read_caption_file(text / "synthtrain_google_enc2de.caption.txt").as_dict()
    pairs = [(t, target[i.replace("#enc#", "#enc2de#")]) for i, t in zip(source.ids, source.texts, strict=True)]
    corpus = [*source.texts, *target.values()]
    return build_tiny_marian(tmp_path_factory.mktemp("marian_en_de"), corpus, pairs, steps=300)


@pytest.fixture(scope="session")
def marian_de_en(mt_collection, tmp_path_factory) -> Path:
    """A random (untrained) tiny MarianMT for German -> English: the back-translation and translate-test wiring."""
    text = mt_collection / "synthetic" / "TextData"
    corpus = caption_texts(text / "synthtrain_enc.caption.txt") + caption_texts(text / "synthval_de.caption.txt")
    return build_tiny_marian(tmp_path_factory.mktemp("marian_de_en"), corpus, seed=1)


@pytest.fixture(scope="session")
def trained_run(mt_collection, tmp_path_factory) -> dict:
    """The tiny baseline fitted 6 epochs (then tested) on its own copy of the collection: data root, best
    checkpoint and test metrics."""
    import shutil
    import sys

    from leccr_lightning.cli import lightning_main
    from tests.helpers import cli_args, experiment

    base = tmp_path_factory.mktemp("trained")
    root = base / "data"
    shutil.copytree(mt_collection, root)
    argv, sys.argv = sys.argv, ["leccr"]
    try:
        extra = ["--trainer.max_epochs", "6", "--test_after_fit", "true"]
        cli = lightning_main(["fit", *cli_args(experiment("baseline"), root, base / "run", *extra)])
    finally:
        sys.argv = argv
    metrics = json.loads((Path(cli.trainer.log_dir) / "test_metrics.json").read_text(encoding="utf-8"))
    return {"root": root, "checkpoint": Path(cli.trainer.checkpoint_callback.best_model_path), "metrics": metrics}
