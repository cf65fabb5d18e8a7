"""DCOT (ccr_methods §5, [recon]): weighted losses, confidences (§5.3), baseline plug-in, noisy-MT ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.callbacks.confidence import ConfidenceLogger
from leccr_lightning.losses import bidirectional, hinge_triplet, positive_mask_from_ids, symmetric_info_nce
from leccr_lightning.losses.weighted import (
    weighted_bidirectional_triplet,
    weighted_hardest_triplet,
    weighted_symmetric_info_nce,
)
from leccr_lightning.methods.baseline import DualEncoderBaseline
from leccr_lightning.methods.objectives import DCOTObjective
from tests.helpers import experiment, pair_context


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _clean_triplets(n: int = 8, noise: float = 0.05, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Visual, English and MT embeddings that all sit near one random direction per item."""
    base = _unit(n, 16, seed=seed)
    return tuple(F.normalize(base + noise * _unit(n, 16, seed=seed + k), dim=-1) for k in (1, 2, 3))


def test_unit_weights_give_the_unweighted_losses() -> None:
    scores = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    mask = positive_mask_from_ids(torch.tensor([0, 1, 1, 2, 3, 4]), torch.tensor([0, 1, 1, 2, 3, 4]))
    ones = torch.ones(6)
    assert torch.allclose(
        weighted_bidirectional_triplet(scores, mask, ones, ones),
        bidirectional(hinge_triplet, scores, mask, weights=(1.0, 1.0)),
    )
    assert torch.allclose(
        weighted_symmetric_info_nce(scores, mask, ones, ones, 0.07), symmetric_info_nce(scores, mask, 0.07)
    )


def test_weighted_triplet_hand_value() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.4, 0.3], [0.2, 0.8, 0.1]])
    mask = torch.eye(3, dtype=torch.bool)
    weights = torch.tensor([1.0, 0.5, 0.0])
    # rows: [0.2 + 0.5 - 0.9]_+ = 0, [0.2 + 0.6 - 0.4]_+ = 0.4, [0.2 + 0.8 - 0.1]_+ = 0.9 (weight 0)
    assert float(weighted_hardest_triplet(scores, mask, weights)) == pytest.approx(0.5 * 0.4)
    with pytest.raises(ValueError, match="one weight per query row"):
        weighted_hardest_triplet(scores, mask, torch.ones(2))


def test_confidences_near_one_for_a_clean_batch_and_lowest_for_a_corrupted_pair() -> None:
    objective = DCOTObjective(epsilon=0.01, curriculum_start=0.5, curriculum_end=0.5)
    visual, source, target = _clean_triplets()
    mask = torch.eye(8, dtype=torch.bool)
    clean = objective.confidences(visual, source, target, mask, progress=0.5)
    assert torch.allclose(clean, torch.ones(8, dtype=clean.dtype), atol=1e-3)
    corrupted = target.clone()
    corrupted[3] = _unit(16, seed=99)
    # at small eps the balanced plan still matches the one corrupted pair by elimination; a softer plan does not
    softer = DCOTObjective(epsilon=0.2, curriculum_start=0.5, curriculum_end=0.5)
    weights = softer.confidences(visual, source, corrupted, mask, progress=0.5)
    others = torch.cat([weights[:3], weights[4:]])
    assert int(weights.argmin()) == 3 and float(weights[3]) < float(others.min()) - 0.1
    assert torch.allclose(
        DCOTObjective(epsilon=1e4).confidences(visual, source, target, mask, 0.0),
        torch.full((8,), 1 / 8),
        atol=1e-3,
    )


def test_confidences_are_permutation_equivariant() -> None:
    objective = DCOTObjective(epsilon=0.1)
    visual, source, target = _clean_triplets(noise=0.8, seed=4)
    mask = torch.eye(8, dtype=torch.bool)
    perm = torch.tensor([5, 2, 7, 0, 1, 6, 4, 3])
    weights = objective.confidences(visual, source, target, mask, 0.3)
    permuted = objective.confidences(visual[perm], source[perm], target[perm], mask, 0.3)
    assert torch.allclose(permuted, weights[perm], atol=1e-5)


def test_confidences_carry_no_gradient_and_warmup_gives_the_base_loss() -> None:
    objective = DCOTObjective(base="infonce", warmup=0.2)
    visual, source, target = (x.clone().requires_grad_(True) for x in _clean_triplets(noise=0.5, seed=7))
    mask = torch.eye(8, dtype=torch.bool)
    scores = (_unit(8, 16, seed=11) @ _unit(8, 16, seed=12).T).requires_grad_(True)
    embeddings = {"visual": visual, "source": source, "target": target}
    objective(pair_context(scores, mask, embeddings=embeddings, progress=0.5)).backward()
    assert visual.grad is None and source.grad is None and target.grad is None
    assert scores.grad is not None
    warm = objective(pair_context(scores, mask, embeddings=embeddings, progress=0.1))
    assert torch.allclose(warm, symmetric_info_nce(scores, mask, 0.07))
    english = objective(pair_context(scores, mask, rows="source", embeddings=embeddings, progress=0.5))
    assert torch.allclose(english, symmetric_info_nce(scores, mask, 0.07))


def test_accuracy_curriculum_moves_lambda_with_the_views() -> None:
    objective = DCOTObjective(curriculum_mode="accuracy", curriculum_momentum=0.0)
    visual, source, target = _clean_triplets(seed=20)
    mask = torch.eye(8, dtype=torch.bool)
    objective.confidences(_unit(8, 16, seed=30), source, target, mask, 0.5)
    assert objective.view_weight > 0.5
    objective.confidences(visual, _unit(8, 16, seed=31), target, mask, 0.5)
    assert objective.view_weight < 0.5
    with pytest.raises(ValueError, match="base"):
        DCOTObjective(base="hinge")


def test_plugs_into_the_baseline_and_records_target_confidences() -> None:
    torch.manual_seed(0)
    model = DualEncoderBaseline(
        visual_dim=12,
        vocab_size=30,
        text_hidden=16,
        text_layers=1,
        visual_hidden=16,
        embed_dim=8,
        objective=DCOTObjective(),
    )
    g = torch.Generator().manual_seed(1)
    tokens = {"input_ids": torch.randint(1, 30, (5, 6), generator=g), "attention_mask": torch.ones(5, 6)}
    batch = {
        "visual": torch.randn(5, 1, 12, generator=g),
        "visual_mask": torch.ones(5, 1, dtype=torch.bool),
        "visual_index": torch.arange(5),
        "text": {"source": tokens, "target": tokens},
        "caption_ids": [f"v{i}#enc#0" for i in range(5)],
    }
    losses = model.compute_losses(batch)
    losses["loss"].backward()
    recorded = model.objective.pop_recorded()
    assert sorted(recorded) == sorted(batch["caption_ids"]) and model.objective.recorded == []
    assert all(0.0 <= w <= 1.0 + 1e-6 for w in recorded.values())


def _auc(clean: np.ndarray, noisy: np.ndarray) -> float:
    """P(confidence of a clean pair > that of a corrupted one), ties counted half."""
    greater = (clean[:, None] > noisy[None, :]).mean()
    return float(greater + 0.5 * (clean[:, None] == noisy[None, :]).mean())


@pytest.mark.slow
def test_confidences_rank_corrupted_translations_below_clean_ones(tmp_path, run_cli) -> None:
    from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

    write_synthetic_collection(tmp_path / "data", SynthConfig(n_train=150, n_val=12, n_test=12, mt_noise=0.4))
    schedule = ("--trainer.max_epochs", "6", "--trainer.check_val_every_n_epoch", "6")
    cli = run_cli("fit", experiment("dcot"), tmp_path / "data", tmp_path / "run", *schedule)
    logger = next(c for c in cli.trainer.callbacks if isinstance(c, ConfidenceLogger))
    manifest = json.loads((tmp_path / "data" / "synthetic" / "MANIFEST.json").read_text())
    noisy_ids = set(manifest["noisy_translations"])
    is_noisy = np.array([cid.replace("#enc#", "#enc2de#") in noisy_ids for cid in logger.last_epoch])
    values = np.array(list(logger.last_epoch.values()))
    assert 0.2 < is_noisy.mean() < 0.6
    assert _auc(values[~is_noisy], values[is_noisy]) > 0.75
    columns = next((tmp_path / "run").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"train/confidence_mean", "train/confidence_q50", "train/confidence_lambda"} <= set(columns)


@pytest.mark.slow
def test_resume_from_last_checkpoint_matches_uninterrupted_run(tmp_path, run_cli) -> None:
    """A 4-epoch run interrupted after 2 epochs and resumed from last.ckpt equals the uninterrupted run, with the
    accuracy curriculum (whose EMA is state beyond the weights): same weights, same curriculum, same validation SumR."""
    from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection

    write_synthetic_collection(tmp_path / "data", SynthConfig(n_train=60, n_val=12, n_test=12, mt_noise=0.4, seed=3))
    config, root = experiment("dcot"), tmp_path / "data"
    extra = (
        "--model.init_args.objective.init_args.curriculum_mode=accuracy",
        "--data.init_args.batch_size=16",
        "--trainer.max_epochs=4",
    )
    straight = run_cli("fit", config, root, tmp_path / "straight", *extra)
    interrupt = ("--trainer.callbacks+=tests.helpers.StopAfterEpochs", "--trainer.callbacks.epochs=2")
    first = run_cli("fit", config, root, tmp_path / "resumed", *extra, *interrupt)
    assert first.trainer.current_epoch == 2
    last = first.trainer.checkpoint_callback.last_model_path
    resumed = run_cli("fit", config, root, tmp_path / "resumed", *extra, "--ckpt_path", last)
    assert resumed.trainer.current_epoch == straight.trainer.current_epoch == 4
    assert resumed.model.objective.curriculum.ema is not None
    assert resumed.model.objective.curriculum.ema == pytest.approx(straight.model.objective.curriculum.ema, abs=1e-12)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert float(resumed.trainer.callback_metrics["val/sumr"]) == pytest.approx(
        float(straight.trainer.callback_metrics["val/sumr"]), abs=1e-6
    )
