"""RVSE++ / VSE++ building blocks (GPO, region encoder, GRU text encoders), the methods and the tiny CLI run."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.methods.objectives import ListwiseObjective
from leccr_lightning.methods.rvsepp import RVSEPlusPlus, VSEPlusPlus
from leccr_lightning.modules.gpo import GPO, RegionEncoder, sine_positions
from leccr_lightning.modules.gru_text import BiGRUTextEncoder, GRUTextEncoder
from tests.helpers import assert_consistent_report, experiment


def test_sine_positions_hand_values():
    codes = sine_positions(3, 4)
    assert torch.allclose(codes[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert codes[2, 0] == pytest.approx(torch.sin(torch.tensor(2.0)).item())
    assert codes[1, 2] == pytest.approx(torch.sin(torch.tensor(0.01)).item(), abs=1e-6)


def test_gpo_is_a_set_function_that_ignores_padding():
    torch.manual_seed(0)
    gpo = GPO()
    features = torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    pooled = gpo(features, mask)
    shuffled = gpo(features[:, torch.tensor([4, 2, 0, 1, 3])], mask)
    assert torch.allclose(pooled[0], shuffled[0], atol=1e-6)
    padded = features.clone()
    padded[1, 3:] = 100.0
    assert torch.allclose(gpo(padded, mask)[1], pooled[1], atol=1e-6)
    weights = gpo.weights(mask.sum(1), 5).detach()
    assert torch.allclose(weights.sum(1), torch.ones(2)) and float(weights[1, 3:].abs().max()) < 1e-6
    single = gpo(features[:, :1], torch.ones(2, 1, dtype=torch.bool))
    assert torch.allclose(single, features[:, 0], atol=1e-6)


def test_gpo_pooling_of_an_item_does_not_depend_on_its_batch_mates_set_sizes():
    torch.manual_seed(0)
    gpo = GPO().double()
    features = torch.randn(1, 4, 6, dtype=torch.float64)
    alone = gpo(features, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([features, torch.zeros(1, 5, 6, dtype=torch.float64)], 1)
    mate = torch.randn(1, 9, 6, dtype=torch.float64)
    batch = gpo(torch.cat([padded, mate]), torch.tensor([[True] * 4 + [False] * 5, [True] * 9]))
    assert torch.allclose(batch[0], alone[0], atol=1e-12)


def test_region_encoder_mlp_modes_and_max_pooling():
    torch.manual_seed(0)
    x, mask = torch.randn(2, 3, 8), torch.ones(2, 3, dtype=torch.bool)
    residual = RegionEncoder(8, 6, mlp="residual").eval()
    torch.nn.init.zeros_(residual.mlp.fc2.weight)
    torch.nn.init.zeros_(residual.mlp.fc2.bias)
    plain = RegionEncoder(8, 6, mlp="none")
    plain.load_state_dict({k: v for k, v in residual.state_dict().items() if not k.startswith("mlp.")})
    assert torch.allclose(residual(x, mask), plain(x, mask))
    assert RegionEncoder(8, 6, mlp="parallel").mlp.fc1.in_features == 8
    pooled = RegionEncoder(8, 6, mlp="none", pooling="max")
    expected = torch.nn.functional.normalize(pooled.fc(x[:, :2]).max(1).values, dim=-1)
    assert torch.allclose(pooled(x, torch.tensor([[True, True, False]] * 2)), expected)
    with pytest.raises(ValueError, match="mlp"):
        RegionEncoder(8, 6, mlp="gated")


def test_bigru_text_encoder_ignores_padding_and_is_unit_norm():
    torch.manual_seed(0)
    encoder = BiGRUTextEncoder(vocab_size=20, embed_dim=8, word_dim=6).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [3, 4, 5, 7, 9]])
    mask = ids != 0
    out = encoder(ids, mask)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    other = encoder(torch.tensor([[3, 4, 5, 8, 8]]), torch.tensor([[True, True, True, False, False]]))
    assert torch.allclose(out[0], other[0], atol=1e-6)


def test_gru_text_encoder_reads_the_last_valid_token():
    torch.manual_seed(0)
    encoder = GRUTextEncoder(vocab_size=20, embed_dim=8, word_dim=6)
    ids, mask = torch.tensor([[3, 4, 5, 0], [3, 4, 5, 7]]), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    states, _ = encoder.gru(encoder.embedding(ids[:1, :3]))
    assert torch.allclose(encoder(ids, mask)[0], torch.nn.functional.normalize(states[0, -1], dim=0), atol=1e-6)


def test_rvsepp_takes_any_objective_and_needs_a_vocabulary_for_the_gru():
    with pytest.raises(ValueError, match="vocab_size"):
        RVSEPlusPlus(visual_dim=8)
    model = RVSEPlusPlus(
        visual_dim=8,
        vocab_size=30,
        embed_dim=16,
        word_dim=8,
        objective=ListwiseObjective(),
        train_roles=("source",),
    )
    ids = torch.randint(1, 30, (4, 6))
    batch = {
        "visual": torch.randn(4, 3, 8),
        "visual_mask": torch.ones(4, 3, dtype=torch.bool),
        "visual_index": torch.arange(4),
        "caption_ids": list("abcd"),
        "text": {"source": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}},
    }
    losses = model.compute_losses(batch)
    losses["loss"].backward()
    assert set(losses) == {"loss", "source"} and torch.isfinite(losses["loss"])
    assert model.encode_gallery(batch)["gallery"].shape == (4, 16)
    vsepp = VSEPlusPlus(visual_dim=8, vocab_size=30, embed_dim=16, word_dim=8)
    assert torch.isfinite(vsepp.compute_losses(batch)["loss"])
    with pytest.raises(ValueError, match="vocab_size"):
        VSEPlusPlus(visual_dim=8)


def test_rvsepp_tiny_trains_and_tests_through_the_cli(tmp_path, run_cli):
    root = tmp_path / "synth"
    write_synthetic_collection(root, SynthConfig(n_train=80, n_val=20, n_test=20))
    cli = run_cli("fit", experiment("rvsepp"), root, tmp_path, "--trainer.max_epochs", "1")
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule)
    assert_consistent_report(results[0])


def test_rvsepp_augments_training_batches_only(tmp_path):
    """Through a real Trainer: the training batches reaching the model have dropped regions; evaluation ones do not."""
    import lightning as L

    from leccr_lightning.data.precomp import PrecompDataModule, RegionCaptionAugmentation
    from tests.data.test_precomp import learnable_split

    for split, images in (("train", 16), ("dev", 4), ("test", 4)):
        learnable_split(tmp_path / "f30k_precomp", split, images, seed=len(split))
    data = PrecompDataModule(str(tmp_path), batch_size=16, eval_batch_size=8, word_min_count=1)
    seen = {"train": [], "val": []}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"].append(int(batch["visual_mask"].sum()))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch["kind"] == "gallery":
                seen["val"].append(int(batch["visual_mask"].sum()))

    model = RVSEPlusPlus(
        visual_dim=16, vocab_size=data.vocab_size, embed_dim=8, word_dim=8, augmentation=RegionCaptionAugmentation()
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    assert seen["train"] and all(count < 16 * 4 for count in seen["train"])  # p(no region dropped) = 0.8^64
    assert seen["val"] and all(count == 4 * 4 for count in seen["val"])
