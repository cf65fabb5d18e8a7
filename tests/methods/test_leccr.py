"""LECCR: the invariants of spec ccr_methods §3.7, the schedule, the video fusion scorer and the CLI end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.callbacks.schedules import WarmupSchedule
from leccr_lightning.cli import lightning_main
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.losses import minmax_normalize, mix_targets, slot_diversity
from leccr_lightning.losses.slots import (
    english_guided_soft_matching,
    max_over_slots,
    slot_text_matching,
    slot_vision_alignment,
    slot_vision_summary,
)
from leccr_lightning.methods.leccr import LECCR, MaxSlotScorer
from leccr_lightning.methods.objectives import MethodTemperatureInfoNCE
from leccr_lightning.metrics import DotScorer, FusedScorer, retrieval_report, retrieval_report_from_views
from leccr_lightning.modules.slots import SemanticSlots
from tests.helpers import CONFIGS, assert_consistent_report, pair_context, resolved_config, written_test_metrics

TERMS = ("vs", "vt", "st", "slot_text", "slot_vision", "slot_diversity", "dstl")
LEARNS_SUMR = 200.0  # 231-262 over 3 seeds, native and ATEN_CPU_CAPABILITY=default kernels


def tiny_leccr(**overrides) -> LECCR:
    torch.manual_seed(0)
    args = dict(
        visual_dim=8,
        vocab_size=40,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        text_pooling="mean",
        visual_width=16,
        embed_dim=8,
        num_slots=3,
        slot_layers=1,
        interaction_layers=1,
        attention_heads=2,
    )
    return LECCR(**{**args, **overrides})


def tokens(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[::2, length - 2 :] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def training_batch(index: list[int], frames: int = 1) -> dict:
    batch = len(index)
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    mask[0, frames // 2 + 1 :] = False
    return {
        "visual": torch.randn(batch, frames, 8, generator=generator),
        "visual_mask": mask,
        "visual_index": torch.tensor(index),
        "text": {"source": tokens(batch, 6, 2), "target": tokens(batch, 7, 3), "description": tokens(batch, 9, 4)},
        "caption_ids": [f"v{i}#enc#0" for i in index],
    }


def take(batch: dict, rows: slice) -> dict:
    """Rows of a training batch (the local batch of one emulated rank)."""
    return {
        "visual": batch["visual"][rows],
        "visual_mask": batch["visual_mask"][rows],
        "visual_index": batch["visual_index"][rows],
        "text": {r: {k: v[rows] for k, v in t.items()} for r, t in batch["text"].items()},
        "caption_ids": batch["caption_ids"][rows],
    }


# --- slots ---------------------------------------------------------------------------------------------------------
def test_zero_initialised_slots_are_identical_without_dropout_and_normal_init_breaks_symmetry():
    description, mask = torch.randn(3, 5, 16), torch.tensor([[1, 1, 1, 0, 0]] * 3).bool()
    zeros = SemanticSlots(4, 16, num_layers=2, num_heads=2, init="zeros").eval()
    slots = zeros(description, mask)
    assert torch.allclose(slots, slots[:, :1].expand_as(slots), atol=1e-6)
    assert slot_diversity(slots).item() == pytest.approx(3 / 4, abs=1e-5)
    normal = SemanticSlots(4, 16, num_layers=2, num_heads=2, init="normal").eval()
    assert not torch.allclose(normal(description, mask)[:, 0], normal(description, mask)[:, 1], atol=1e-4)
    with pytest.raises(ValueError, match="slot init"):
        SemanticSlots(4, 16, init="uniform")


def test_slot_diversity_values_and_gradient_direction():
    assert slot_diversity(torch.eye(4).expand(2, 4, 4)).item() == pytest.approx(0.0, abs=1e-7)
    slots = torch.tensor([[[1.0, 0.0], [1.0, 0.2]]], requires_grad=True)
    before = slot_diversity(slots)
    before.backward()
    after = slot_diversity(slots.detach() - 0.1 * slots.grad)
    assert after < before


def test_max_over_slots_bounds_each_slot_and_reduces_to_dot_with_one_slot():
    slots, texts = torch.randn(5, 3, 4), torch.randn(6, 4)
    scores = max_over_slots(slots, texts)
    for k in range(3):
        assert torch.all(scores >= slots[:, k] @ texts.T - 1e-6)
    assert torch.allclose(max_over_slots(slots[:, :1], texts), slots[:, 0] @ texts.T)
    with pytest.raises(ValueError, match="texts"):
        max_over_slots(slots, torch.randn(6, 5))


def test_slot_text_matching_is_the_symmetric_cross_entropy_of_max_similarities():
    slots, texts = torch.randn(4, 2, 3), torch.randn(4, 3)
    scores = max_over_slots(slots, texts) / 0.5
    labels = torch.arange(4)
    expected = 0.5 * (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels))
    assert torch.allclose(slot_text_matching(slots, texts, 0.5), expected)


def test_slot_vision_summaries_give_the_mean_similarity_over_slots_and_valid_tokens():
    slots, tokens = torch.randn(3, 2, 4), torch.randn(5, 6, 4)
    mask = torch.rand(5, 6) > 0.3
    mask[:, 0] = True
    unit_slots, unit_tokens = F.normalize(slots, dim=-1), F.normalize(tokens, dim=-1)
    brute = torch.stack(
        [torch.stack([(unit_slots[i] @ unit_tokens[j][mask[j]].T).mean() for j in range(5)]) for i in range(3)]
    )
    scores = slot_vision_summary(slots) @ slot_vision_summary(tokens, mask).T
    assert torch.allclose(scores, brute, atol=1e-6)
    garbage = tokens.clone()
    garbage[~mask] = 1e3
    assert torch.allclose(slot_vision_summary(garbage, mask), slot_vision_summary(tokens, mask), atol=1e-6)
    # the official normalisation (over the K vectors of an item) is a different quantity
    assert not torch.allclose(slot_vision_summary(tokens, mask, "across"), slot_vision_summary(tokens, mask))
    positives = torch.eye(3, 5, dtype=torch.bool)
    expected = -(torch.log_softmax(brute, dim=1) * positives).sum(1).mean()
    assert slot_vision_alignment(slot_vision_summary(slots), slot_vision_summary(tokens, mask), positives).item() == (
        pytest.approx(expected.item(), abs=1e-6)
    )
    with pytest.raises(ValueError, match="normalize"):
        slot_vision_summary(tokens, mask, "per_slot")
    with pytest.raises(ValueError, match="summaries"):
        slot_vision_alignment(slots, tokens, positives)


# --- contrastive and soft matching ---------------------------------------------------------------------------------
def test_multi_positive_infonce_reduces_to_clip_and_is_permutation_invariant():
    scores, tau = torch.randn(6, 6), torch.tensor(0.07)
    distinct = torch.eye(6, dtype=torch.bool)
    labels = torch.arange(6)
    clip = 0.5 * (F.cross_entropy(scores / tau, labels) + F.cross_entropy(scores.T / tau, labels))
    objective = MethodTemperatureInfoNCE()
    assert torch.allclose(objective(pair_context(scores, distinct, temperature=tau)), clip)
    ids = torch.tensor([0, 1, 0, 2, 1, 3])
    positives = ids[:, None] == ids[None, :]
    perm = torch.randperm(6)
    assert torch.allclose(
        objective(pair_context(scores, positives, temperature=tau)),
        objective(pair_context(scores[perm][:, perm], positives[perm][:, perm], temperature=tau)),
    )
    assert objective.reads == {"temperature"}


def test_soft_matching_target_properties():
    english = torch.randn(5, 5, requires_grad=True)
    slots = torch.randn(5, 5, requires_grad=True)
    student = torch.randn(5, 5, requires_grad=True)
    target = mix_targets(english, slots, alpha=0.8)
    assert torch.allclose(target.sum(1), torch.ones(5))
    assert not target.requires_grad
    assert torch.allclose(mix_targets(3.0 * english + 1.0, 0.5 * slots - 2.0), target, atol=1e-6)
    assert torch.allclose(minmax_normalize(4.0 * english + 7.0), minmax_normalize(english), atol=1e-6)
    loss = english_guided_soft_matching(english, slots, student)
    assert loss.item() >= 0.0
    loss.backward()
    assert english.grad is None and slots.grad is None and student.grad is not None
    matched = english_guided_soft_matching(english, slots, torch.log(target))
    assert matched.item() == pytest.approx(0.0, abs=1e-6)


# --- the method ----------------------------------------------------------------------------------------------------
def test_every_term_is_returned_finite_and_the_total_follows_the_paper_formula():
    model = tiny_leccr(slot_vision_weight=0.1, slot_text_weight=0.2, dstl_weight=0.3, diversity_weight=0.4)
    losses = model.compute_losses(training_batch([0, 1, 0, 2, 3, 1]))
    assert set(TERMS) <= set(losses)
    assert all(torch.isfinite(losses[t]) for t in TERMS)
    expected = (
        (losses["vs"] + 0.1 * losses["slot_vision"])
        + (0.7 * losses["vt"] + 0.3 * losses["dstl"])
        + (losses["st"] + 0.2 * losses["slot_text"] + 0.4 * losses["slot_diversity"])
    )
    assert torch.allclose(losses["loss"], expected)
    losses["loss"].backward()
    assert model.temperature.grad is not None and model.slots.queries.grad is not None


def test_dstl_orientation_flag_changes_only_the_soft_matching_term():
    batch = training_batch([0, 1, 2, 3, 4])
    correct = tiny_leccr().eval()
    parity = tiny_leccr(parity_dstl_orientation=True).eval()
    parity.load_state_dict(correct.state_dict())
    a, b = correct.compute_losses(batch), parity.compute_losses(batch)
    for term in ("vs", "vt", "st", "slot_text", "slot_vision", "slot_diversity"):
        assert torch.allclose(a[term], b[term])
    assert not torch.allclose(a["dstl"], b["dstl"])


def test_descriptions_are_encoded_without_gradient_by_default():
    batch = training_batch([0, 1, 2])
    for description_grad in (False, True):
        model = tiny_leccr(description_grad=description_grad)
        slots = model.description_slots(batch["text"]["description"])
        slots.sum().backward()
        has_grad = model.text.backbone.embeddings.word_embeddings.weight.grad is not None
        assert has_grad is description_grad
    with pytest.raises(ValueError, match="description"):
        model.encode_visual({**batch, "text": {"source": batch["text"]["source"]}})


def test_gathered_losses_equal_the_single_process_losses_with_two_emulated_ranks():
    """Each emulated rank scores its half against both halves (what all_gather gives): the gathered terms equal
    the single-process terms of the whole batch (§3.7)."""
    model = tiny_leccr(visual_encoder="self_attention", visual_pooling="mean").eval()
    batch = training_batch([0, 1, 2, 0, 3, 2, 4, 1], frames=4)
    full = model.compute_losses(batch)
    halves = [take(batch, slice(0, 4)), take(batch, slice(4, 8))]
    recorded: list[list[torch.Tensor]] = [[], []]
    for rank in (0, 1):
        model.gather = lambda x, rank=rank: recorded[rank].append(x) or x
        model.compute_losses(halves[rank])
    model.gather_negatives = True
    for rank in (0, 1):
        calls = iter(range(len(recorded[rank])))
        model.gather = lambda x, rank=rank, calls=calls: (
            lambda i: torch.cat([x, recorded[1][i]] if rank == 0 else [recorded[0][i], x])
        )(next(calls))
        gathered = model.compute_losses(halves[rank])
        for term in ("vs", "vt", "st", "slot_vision", "dstl"):
            assert torch.allclose(gathered[term], full[term], atol=1e-5), term


def test_linear_warmup_then_linear_decay_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupSchedule(optimizer, warmup_fraction=0.2, num_training_steps=10)
    seen = [optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0])


def test_video_fusion_scores_through_the_shared_metric():
    generator = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(7, 4, generator=generator), torch.randn(5, 4, generator=generator)
    slots = torch.randn(5, 2, 4, generator=generator)
    targets = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    model = tiny_leccr(eval_scoring="fused")
    report = retrieval_report_from_views(
        {"query": query}, {"gallery": gallery, "slots": slots}, targets, model.scorer(), chunk_size=3
    )
    global_scores = query @ gallery.T
    slot_scores = torch.stack([(slots[:, k] @ query.T).T for k in range(2)]).amax(0)
    fused = 0.9 * minmax_normalize(global_scores) + 0.1 * minmax_normalize(slot_scores)
    assert report == pytest.approx(retrieval_report(fused, targets))
    assert isinstance(tiny_leccr().scorer(), DotScorer)
    assert isinstance(model.scorer(), FusedScorer)
    with pytest.raises(ValueError, match="slots"):
        MaxSlotScorer()({"query": query}, {"gallery": gallery})


# --- CLI -----------------------------------------------------------------------------------------------------------
def leccr_cli(command: str):
    """``leccr`` in process; ``command`` is split on spaces (tmp paths have none)."""
    return lightning_main(command.split())


def test_cli_fit_then_test_on_the_tiny_experiment(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    write_synthetic_collection(root, SynthConfig(n_train=80, n_val=20, n_test=20))
    leccr_cli(
        f"fit --config {CONFIGS}/experiments/leccr/tiny.yaml --data.init_args.root {root} "
        f"--trainer.default_root_dir {out} --trainer.logger.init_args.save_dir {out} --trainer.max_epochs 2 "
        "--trainer.log_every_n_steps 1 --test_after_fit true"
    )
    logged = next(out.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    for term in (*TERMS, "loss", "temperature"):
        assert f"train/{term}" in logged
    assert "val/sumr" in logged
    assert_consistent_report(written_test_metrics(out))


def test_missing_description_is_an_error_naming_the_id(tmp_path):
    root, out = tmp_path / "data", tmp_path / "run"
    folder = write_synthetic_collection(root, SynthConfig(n_train=20, n_val=6, n_test=6))
    train_id = (folder / "FeatureData/train_id.txt").read_text().split()[0]
    (folder / "descriptions" / f"{train_id}.txt").unlink()
    with pytest.raises(ValueError, match=train_id):
        leccr_cli(
            f"fit --config {CONFIGS}/experiments/leccr/tiny.yaml --data.init_args.root {root} "
            f"--trainer.default_root_dir {out} --trainer.logger.init_args.save_dir {out} --trainer.max_epochs 1"
        )


REAL = [
    ("multi30k_de", "multi30k", "de", False),
    ("multi30k_fr", "multi30k", "fr", False),
    ("multi30k_cs", "multi30k", "cs", False),
    ("mscoco_ja", "mscoco", "ja", False),
    ("mscoco_zh", "mscoco", "zh", False),
    ("msrvtt10kcn_zh", "msrvtt10kcn", "zh", True),
    ("vatex_zh", "vatex", "zh", True),
]


@pytest.mark.parametrize(("experiment", "layout", "language", "video"), REAL)
def test_real_data_config_loads_and_trains_one_step(tmp_path, experiment, layout, language, video):
    root = tmp_path / "data"
    config = SynthConfig(
        languages=[language], layout=layout, video=video, n_train=12, n_val=4, n_test=4, feature_dim=16
    )
    write_synthetic_collection(root, config)
    cli = leccr_cli(
        f"fit --config {CONFIGS}/experiments/leccr/{experiment}.yaml --data.init_args.root {root} "
        "--data.init_args.tokenizer train --data.init_args.num_workers 0 --data.init_args.batch_size 8 "
        "--model.init_args.text_model tiny --model.init_args.text_hidden 16 --model.init_args.text_layers 1 "
        "--model.init_args.visual_width 16 --model.init_args.embed_dim 8 --trainer.accelerator cpu "
        "--trainer.devices 1 --trainer.strategy auto "
        "--trainer.max_steps 1 --trainer.limit_val_batches 0 --trainer.logger false --trainer.callbacks [] "
        f"--trainer.enable_checkpointing false --trainer.default_root_dir {tmp_path / 'run'}"
    )
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert cli.datamodule.roles == ["source", "target", "description"]
    assert cli.model.hparams.eval_scoring == ("fused" if video else "global")


# --- parity flags (LECCR docstring, differences 1-4) -------------------------------------------------------------
def video_batch(index: list[int]) -> dict:
    """A frame batch whose first video is padded (frames 3..5 invalid)."""
    return training_batch(index, frames=6)


@pytest.mark.parametrize(
    ("flag", "video"),
    [("parity_slot_vision_norm", False), ("parity_slot_vision_norm", True), ("parity_slot_vision_padding", True)],
)
def test_slot_vision_parity_flags_change_only_the_slot_vision_term(flag, video):
    encoder = {"visual_encoder": "self_attention", "visual_pooling": "mean"} if video else {}
    batch = video_batch([0, 1, 2, 3]) if video else training_batch([0, 1, 2, 3], frames=5)
    correct = tiny_leccr(**encoder).eval()
    parity = tiny_leccr(**encoder, **{flag: True}).eval()
    parity.load_state_dict(correct.state_dict())
    a, b = correct.compute_losses(batch), parity.compute_losses(batch)
    for term in ("vs", "vt", "st", "slot_text", "slot_diversity", "dstl"):
        assert torch.allclose(a[term], b[term]), term
    assert not torch.allclose(a["slot_vision"], b["slot_vision"])


def test_padded_frames_count_in_slot_vision_only_with_the_padding_flag():
    """Garbage in padded frame features changes the encoded padded positions; only the official L_cv sees them."""
    batch = video_batch([0, 1, 2, 3])
    garbage = {**batch, "visual": batch["visual"].clone()}
    garbage["visual"][~batch["visual_mask"]] = 25.0
    for flag in (False, True):
        model = tiny_leccr(visual_encoder="self_attention", visual_pooling="mean", parity_slot_vision_padding=flag)
        model.eval()
        clean, noisy = model.compute_losses(batch), model.compute_losses(garbage)
        for term in ("vs", "vt", "st", "slot_text", "dstl"):
            assert torch.allclose(clean[term], noisy[term], atol=1e-5), term
        assert torch.allclose(clean["slot_vision"], noisy["slot_vision"], atol=1e-5) is not flag


def test_slot_vision_scores_the_local_batch_when_not_gathered():
    """With two emulated ranks, ``slot_vision_gather: false`` (the official video code) gives each rank the L_cv
    of its own half, while the gathered terms stay those of the whole batch."""
    batch = training_batch([0, 1, 2, 0, 3, 2, 4, 1], frames=4)
    halves = [take(batch, slice(0, 4)), take(batch, slice(4, 8))]
    model = tiny_leccr(visual_encoder="self_attention", visual_pooling="mean", slot_vision_gather=False).eval()
    full = model.compute_losses(batch)
    local = [model.compute_losses(half) for half in halves]
    recorded: list[list[torch.Tensor]] = [[], []]
    for rank in (0, 1):
        model.gather = lambda x, rank=rank: recorded[rank].append(x) or x
        model.compute_losses(halves[rank])
    model.gather_negatives = True
    for rank in (0, 1):
        calls = iter(range(len(recorded[rank])))
        model.gather = lambda x, rank=rank, calls=calls: (
            lambda i: torch.cat([x, recorded[1][i]] if rank == 0 else [recorded[0][i], x])
        )(next(calls))
        gathered = model.compute_losses(halves[rank])
        assert torch.allclose(gathered["slot_vision"], local[rank]["slot_vision"], atol=1e-6)
        for term in ("vs", "vt", "st", "dstl"):
            assert torch.allclose(gathered[term], full[term], atol=1e-5), term


def test_parity_gather_gradient_leaves_a_single_process_unchanged():
    batch = training_batch([0, 1, 2, 0, 3])
    grads = []
    for flag in (False, True):
        model = tiny_leccr(gather_negatives=True, parity_gather_gradient=flag).eval()
        model.compute_losses(batch)["loss"].backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


# --- recipes -------------------------------------------------------------------------------------------------------
PAPER_RECIPES = sorted(p for p in (CONFIGS / "experiments" / "leccr").glob("*.yaml") if not p.stem.startswith("tiny"))


@pytest.mark.parametrize("recipe", PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_train_every_epoch_without_early_stopping(recipe):
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in resolved_config(recipe)["trainer"]["callbacks"]]
    assert "EarlyStopping" not in callbacks and "ModelCheckpoint" in callbacks


def test_tiny_experiments_are_the_preset_at_tiny_sizes():
    """The tiny configs change sizes, the text backbone and the optimiser's lr, never a loss weight or a flag."""
    paper = resolved_config(CONFIGS / "experiments" / "leccr" / "multi30k_cs.yaml")["model"]["init_args"]
    for name in ("tiny", "tiny_images"):
        tiny = resolved_config(CONFIGS / "experiments" / "leccr" / f"{name}.yaml")
        args = tiny["model"]["init_args"]
        for key in ("slot_vision_weight", "slot_text_weight", "dstl_weight", "diversity_weight", "dstl_alpha"):
            assert args[key] == paper[key], key
        assert all(args[key] for key in args if key.startswith("parity_"))
        assert tiny["trainer"]["accelerator"] == "cpu" and tiny["trainer"]["devices"] == 1
        assert tiny["data"]["init_args"]["normalization"] == "leccr"


def test_cli_tiny_experiment_learns(tmp_path, run_cli):
    root, out = tmp_path / "data", tmp_path / "run"
    write_synthetic_collection(root, SynthConfig(n_train=150, n_val=20, n_test=20))
    run_cli(
        "fit",
        str(CONFIGS / "experiments" / "leccr" / "tiny.yaml"),
        root,
        out,
        "--trainer.max_epochs",
        "6",
        "--test_after_fit",
        "true",
    )
    report = written_test_metrics(out)
    assert_consistent_report(report)
    # chance SumR on a 20-item gallery with one positive per query is about 2 x (5 + 25 + 50) = 160
    assert report["test/sumr"] > LEARNS_SUMR


def test_a_text_batch_longer_than_the_text_model_is_an_error_naming_the_setting():
    model = tiny_leccr()
    batch = training_batch([0, 1])
    limit = model.text.backbone.config.max_position_embeddings
    long = {"input_ids": torch.ones(2, limit + 1, dtype=torch.long), "attention_mask": torch.ones(2, limit + 1)}
    with pytest.raises(ValueError, match="data.init_args.max_length"):
        model.compute_losses({**batch, "text": {**batch["text"], "description": long}})
