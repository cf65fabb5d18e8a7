"""Parity with the official NRCCR code (LiJiaBei-7/nrccr = HuiGuanLab/nrccr, read at 8721b81; ``file:line`` below).

Each ``ref_*`` function is our own re-statement of one official formula or module, written from the official code and
run on the same inputs (and, for modules, the same weights) as ours: losses and their gradients agree to 1e-6 in
float64, module outputs to 1e-6, and the learning-rate rule gives the official lr sequence on a scripted validation
history. Our corrected defaults (masked means, same-item masking) are checked against the official behaviour through
their parity flags, and shown to differ from it where they should.
"""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.callbacks.schedules import DecayAndHalveOnPlateau
from leccr_lightning.losses import feature_distillation, soft_target_distillation
from leccr_lightning.methods.nrccr import NRCCR
from leccr_lightning.methods.objectives import TripletObjective
from leccr_lightning.modules.attention import SequenceAttentionHead
from leccr_lightning.modules.discriminator import LanguageDiscriminator
from leccr_lightning.modules.visual_encoders import build_visual_encoder
from tests.helpers import pair_context

pytestmark = pytest.mark.usefixtures("float64")
TOL = dict(rtol=1e-6, atol=1e-6)
B, DIM = 6, 12


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def padding_mask(lengths: list[int], width: int) -> torch.Tensor:
    """A float mask [B, L] as the official collate builds it (``words_mask[i, :end] = 1.0``)."""
    return (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(torch.get_default_dtype())


def grads(loss: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs))


# --- official losses (loss.py, adv.py) ---------------------------------------------------------------------------
def ref_triplet(s: torch.Tensor, im: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """TripletLoss(max_violation, cost_style 'sum', direction 'all').forward(s, im), loss.py:113-154: scores = im s^T;
    the v2t costs of each row and the t2v costs of each column, diagonal cleared, hardest kept, summed."""
    scores = im @ s.T
    diagonal = scores.diag().view(-1, 1)
    eye = torch.eye(scores.shape[0], dtype=torch.bool)
    cost_s = (margin + scores - diagonal).clamp(min=0).masked_fill(eye, 0)
    cost_im = (margin + scores - diagonal.T).clamp(min=0).masked_fill(eye, 0)
    return cost_s.max(dim=1).values.sum() + cost_im.max(dim=0).values.sum()


def ref_dtl(feat_targets: torch.Tensor, feat: torch.Tensor, feat_v: torch.Tensor, temp: float = 0.07) -> torch.Tensor:
    """DtlLoss.forward(c.detach(), t, v), loss.py:164-180 with model.py:461 (only c is detached)."""
    targets_v2t = torch.softmax(feat_v @ feat_targets.T / temp, dim=1)
    targets_t2v = torch.softmax(feat_targets @ feat_v.T / temp, dim=1)
    loss_v2t = -(torch.log_softmax(feat_v @ feat.T / temp, dim=1) * targets_v2t).sum(dim=1).mean()
    loss_t2v = -(torch.log_softmax(feat @ feat_v.T / temp, dim=1) * targets_t2v).sum(dim=1).mean()
    return (loss_v2t + loss_t2v) / 2


def ref_dtl_feat(feat_target: torch.Tensor, feat: torch.Tensor, beta: float = 4.0) -> torch.Tensor:
    """dtl_feat: SmoothL1Loss(reduction 'mean', beta 4)(feat, feat_target), loss.py:185-194 (nothing detached)."""
    diff = (feat - feat_target).abs()
    return torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta).mean()


def ref_adversarial_loss(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Adversarial.loss for train_type 'GAN', adv.py:158-175: BCEWithLogits with the label filled into every logit."""
    labels = torch.full_like(logits, float(label))
    return (logits.clamp(min=0) - logits * labels + torch.log1p(torch.exp(-logits.abs()))).mean()


def test_triplet_and_back_translation_losses_and_gradients_match() -> None:
    s, t, b, v = (unit(B, DIM, seed=k).requires_grad_(True) for k in range(4))
    objective = TripletObjective()
    eye = torch.eye(B, dtype=torch.bool)
    for rows, columns, reference in ((s, v, ref_triplet(s, v)), (t, v, ref_triplet(t, v)), (s, b, ref_triplet(s, b))):
        ours = objective(pair_context(rows @ columns.T, eye))  # model.py:458-463: criterion(text, visual or back)
        assert torch.allclose(ours, reference, **TOL)
        for mine, theirs in zip(grads(ours, [rows, columns]), grads(reference, [rows, columns]), strict=True):
            assert torch.allclose(mine, theirs, **TOL)


def test_similarity_distillation_matches_with_the_gradient_into_the_visual_target() -> None:
    c, t, v = (unit(B, DIM, seed=10 + k).requires_grad_(True) for k in range(3))
    tau = 0.07
    ours = soft_target_distillation(v @ t.T / tau, v @ c.detach().T / tau, detach_teacher=False)
    reference = ref_dtl(c.detach(), t, v)
    assert torch.allclose(ours, reference, **TOL)
    mine, theirs = grads(ours, [t, v]), grads(reference, [t, v])
    for a, b in zip(mine, theirs, strict=True):
        assert torch.allclose(a, b, **TOL)
    # the softmax(v c^T) target is differentiated too: detaching all of the teacher logits changes dL/dv
    detached = soft_target_distillation(v @ t.T / tau, v @ c.T / tau)
    assert not torch.allclose(grads(detached, [v])[0], theirs[1], atol=1e-4)


def test_feature_distillation_matches_and_reaches_both_sides() -> None:
    c, t = (unit(B, DIM, seed=20 + k).requires_grad_(True) for k in range(2))
    ours, reference = feature_distillation(t, c, beta=4.0), ref_dtl_feat(c, t)
    assert torch.allclose(ours, reference, **TOL)
    for a, b in zip(grads(ours, [t, c]), grads(reference, [t, c]), strict=True):
        assert torch.allclose(a, b, **TOL) and float(a.abs().sum()) > 0


def _nrccr(**kwargs) -> NRCCR:
    torch.manual_seed(0)
    options = dict(
        visual_dim=DIM,
        vocab_size=40,
        text_hidden=16,
        text_layers=1,
        text_heads=2,
        attention_heads=2,
        attention_qk_dim=8,
        visual_hidden=16,
        embed_dim=8,
        unmasked_mean=True,
    )
    return NRCCR(**{**options, **kwargs}).eval()


def test_generator_and_discriminator_losses_match_the_official_gan_losses() -> None:
    model = _nrccr()
    h_s, h_t = torch.randn(B, 5, 16), torch.randn(B, 7, 16)
    streams = {
        "h_source": h_s.requires_grad_(True),
        "mask_source": torch.ones(B, 5),
        "h_target": h_t.requires_grad_(True),
        "mask_target": torch.ones(B, 7),
    }
    disc = model.discriminator

    def logits(states: torch.Tensor) -> torch.Tensor:  # MLP(mean over positions), adv.py:23-32, 94-114
        return disc.net(states.mean(dim=1))

    reference_d = 0.5 * (ref_adversarial_loss(logits(h_s.detach()), 1) + ref_adversarial_loss(logits(h_t.detach()), 0))
    assert torch.allclose(model.discriminator_loss(streams), reference_d, **TOL)  # adv.py:188-205
    ours_g = model.generator_loss(streams["h_target"], streams["mask_target"])
    reference_g = ref_adversarial_loss(logits(h_t), 1)  # adv.py:224-226 (scale applied by the caller)
    assert torch.allclose(ours_g, reference_g, **TOL)
    params = [h_t, *disc.parameters()]
    for a, b in zip(grads(ours_g, params), grads(reference_g, params), strict=True):
        assert torch.allclose(a, b, **TOL)


# --- official modules (transformer_cross.py, model.py, adv.py) ------------------------------------------------------
def ref_linear_layer(layer, x: torch.Tensor) -> torch.Tensor:
    """LinearLayer(layer_norm, relu) in eval mode, transformer_cross.py:46-53."""
    x = F.layer_norm(x, x.shape[-1:], layer.norm.weight, layer.norm.bias, layer.norm.eps)
    return F.relu(F.linear(x, layer.linear.weight, layer.linear.bias))


def ref_positions(positions, x: torch.Tensor) -> torch.Tensor:
    """TrainablePositionalEncoding.forward in eval mode, transformer_cross.py:18-25."""
    pos = positions.table.weight[torch.arange(x.shape[1])].unsqueeze(0).repeat(x.shape[0], 1, 1)
    return F.layer_norm(x + pos, x.shape[-1:], positions.norm.weight, positions.norm.bias, positions.norm.eps)


def ref_bert_attention(block, query, key, mask_query, mask, cross: bool = False) -> torch.Tensor:
    """BertAttention(query, key, mask_q.unsqueeze(1), mask.unsqueeze(1), cross), eval mode, transformer_cross.py:56-157:
    outer-product mask as -10000 * (1 - m), scores / sqrt(hidden / heads), dense, LN(out [+ query])."""
    heads = block.num_heads
    attention_mask = mask_query.unsqueeze(1).transpose(-1, -2) @ mask.unsqueeze(1)  # get_attention_mask, :78-80
    attention_mask = (1.0 - attention_mask.unsqueeze(1)) * -10000.0

    def split(x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        return x.view(n, length, heads, width // heads).permute(0, 2, 1, 3)

    q = split(F.linear(query, block.query.weight, block.query.bias))
    k = split(F.linear(key, block.key.weight, block.key.bias))
    v = split(F.linear(key, block.value.weight, block.value.bias))
    head_size = query.shape[-1] // heads
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_size) + attention_mask, dim=-1)
    context = (probs @ v).permute(0, 2, 1, 3).reshape(query.shape[0], query.shape[1], -1)
    out = F.linear(context, block.dense.weight, block.dense.bias)
    residual = out if cross else out + query
    return F.layer_norm(residual, residual.shape[-1:], block.norm.weight, block.norm.bias, block.norm.eps)


def ref_prepare(head: SequenceAttentionHead, states: torch.Tensor) -> torch.Tensor:
    """feat = pos_embed_layer(input_proj_layer(bert_seq)), model.py:231-233."""
    return ref_positions(head.positions, ref_linear_layer(head.input_layer, states))


def ref_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """F.avg_pool1d(x.permute(0, 2, 1), x.size(1)).squeeze(2): the mean over every position, model.py:247."""
    return F.avg_pool1d(x.permute(0, 2, 1), x.size(1)).squeeze(2)


def ref_text_share(head, h_s, mask_s, h_t, mask_t, h_b, mask_b):
    """Text_share.forward up to the pooled vectors (s, t, cross, back), model.py:219-272."""
    feat, feat_trans, feat_back = ref_prepare(head, h_s), ref_prepare(head, h_t), ref_prepare(head, h_b)
    attention = head.attention
    feat_self = ref_bert_attention(attention, feat, feat, mask_s, mask_s)
    feat_self_trans = ref_bert_attention(attention, feat_trans, feat_trans, mask_t, mask_t)
    feat_cross = ref_bert_attention(attention, feat, feat_trans, mask_s, mask_t, cross=True)
    feat_self_back = ref_bert_attention(attention, feat_back, feat_back, mask_b, mask_b)
    cross_vec = ref_avg_pool(torch.cat((feat_cross, feat_trans), 1))
    return ref_avg_pool(feat_self), ref_avg_pool(feat_self_trans), cross_vec, ref_avg_pool(feat_self_back)


def ref_mapping(head, x: torch.Tensor) -> torch.Tensor:
    """Latent_mapping: fc1 -> BatchNorm1d (eval: running stats) -> dropout (eval: no-op) -> l2norm, model.py:34-79."""
    x = F.linear(x, head.linear.weight, head.linear.bias)
    bn = head.norm
    x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return x / x.pow(2).sum(dim=1, keepdim=True).sqrt()


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def tokens(width: int, lengths: list[int]) -> dict:
        mask = padding_mask(lengths, width).long()
        return {"input_ids": torch.randint(1, 40, (B, width), generator=g) * mask, "attention_mask": mask}

    return {
        "visual": torch.randn(B, 1, DIM, generator=g),
        "visual_mask": torch.ones(B, 1, dtype=torch.bool),
        "visual_index": torch.arange(B),
        "text": {
            "source": tokens(7, [7, 5, 3, 6, 2, 4]),
            "target": tokens(9, [4, 9, 6, 2, 8, 5]),
            "back": tokens(6, [6, 3, 5, 4, 2, 6]),
        },
    }


@pytest.mark.parametrize("unmasked_mean", [True, False])
def test_text_streams_and_teacher_match_text_share_with_shared_weights(unmasked_mean: bool) -> None:
    model = _nrccr(unmasked_mean=unmasked_mean)
    batch = _batch()
    text = batch["text"]
    with torch.no_grad():
        streams = model.streams(batch)
        states = {role: model.text(text[role]["input_ids"], text[role]["attention_mask"])[0] for role in text}
        masks = {role: text[role]["attention_mask"].to(torch.float64) for role in text}
        ref = ref_text_share(
            model.text_attention, states["source"], masks["source"], states["target"], masks["target"],
            states["back"], masks["back"],
        )  # fmt: skip
        expected = [ref_mapping(model.text_head, x) for x in ref]
    ours = [streams[role] for role in ("source", "target", "teacher", "back")]
    for role, mine, theirs in zip(("source", "target", "teacher", "back"), ours, expected, strict=True):
        same = torch.allclose(mine, theirs, **TOL)
        # the official means include padding: only the parity flag reproduces them (every batch here is padded)
        assert same == unmasked_mean, role


def test_cross_mode_attends_from_source_to_target_without_the_residual() -> None:
    head = _nrccr().text_attention
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 5, 16, generator=g), torch.randn(2, 4, 16, generator=g)
    mask_q, mask_k = padding_mask([5, 3], 5), padding_mask([2, 4], 4)
    with torch.no_grad():
        for cross in (False, True):
            keys, key_mask = (k, mask_k) if cross else (q, mask_q)
            ours = head(q, mask_q, k, mask_k) if cross else head(q, mask_q)
            assert torch.allclose(ours, ref_bert_attention(head.attention, q, keys, mask_q, key_mask, cross), **TOL)


def test_image_encoders_match_the_clip_and_resnet_paths() -> None:
    torch.manual_seed(4)
    features = torch.randn(B, 1, 512)
    mask = torch.ones(B, 1, dtype=torch.bool)
    clip = build_visual_encoder("linear", 512, hidden=1024).eval()
    with torch.no_grad():  # image_encoding_clip: self.proj(encode_image(x)), model.py:145-150
        expected = F.linear(features[:, 0], clip.linear.weight, clip.linear.bias)
        assert torch.allclose(clip(features, mask).pooled, expected, **TOL)
    resnet = build_visual_encoder("linear_relu", 2048, hidden=2048).eval()
    features = torch.randn(B, 1, 2048)
    with torch.no_grad():  # image_encoding: relu(self.proj(x)), model.py:127-129
        expected = F.relu(F.linear(features[:, 0], resnet.linear.weight, resnet.linear.bias))
        assert torch.allclose(resnet(features, mask).pooled, expected, **TOL)


def test_video_encoder_matches_video_transformer_encoding_with_shared_weights() -> None:
    torch.manual_seed(5)
    encoder = build_visual_encoder("frame_attention", 10, hidden=16, heads=2, max_frames=80).eval()
    frames, mask = torch.randn(3, 6, 10), padding_mask([6, 4, 2], 6)
    with torch.no_grad():  # model.py:104-117: input_proj_layer, pos_embed_layer, one BertAttention, mean over frames
        feat = ref_prepare(encoder.head, frames)
        feat = ref_bert_attention(encoder.head.attention, feat, feat, mask, mask)
        out = encoder(frames, mask.bool())
        assert torch.allclose(out.tokens.mean(dim=1), ref_avg_pool(feat), **TOL)
        assert not torch.allclose(out.pooled, ref_avg_pool(feat), atol=1e-4)  # the masked mean is the correction
        model = _nrccr(visual_dim=10, visual_encoder="frame_attention", visual_hidden=16, visual_heads=2)
        expected = ref_mapping(model.visual_head, ref_avg_pool(ref_bert_attention(
            model.visual.head.attention, ref_prepare(model.visual.head, frames),
            ref_prepare(model.visual.head, frames), mask, mask,
        )))  # fmt: skip
        assert torch.allclose(model.embed_visual(frames, mask.bool()), expected, **TOL)


@pytest.mark.parametrize("kind", ["not-so-weak", "strong"])
def test_discriminators_match_mlp_and_conv_discriminator(kind: str) -> None:
    torch.manual_seed(6)
    states, mask = torch.randn(B, 7, 16), padding_mask([7, 3, 5, 1, 6, 2], 7)
    official = LanguageDiscriminator(16, kind, unmasked_mean=True).eval()
    corrected = LanguageDiscriminator(16, kind).eval()
    corrected.load_state_dict(official.state_dict())
    with torch.no_grad():
        if kind == "not-so-weak":  # MLP._run_forward_pass = identity, then the mean over dim 1, adv.py:29-32, 105-111
            expected = official.net(states.mean(dim=1))
        else:  # ConvDiscriminator: Conv1d(1x1), 3 ResBlocks (relu, conv5, relu, conv5, x + 0.3 out), mean, Linear
            x = F.conv1d(states.transpose(1, 2), official.project.weight, official.project.bias)
            for block in official.blocks:
                first, second = block.first, block.second
                inner = F.conv1d(F.relu(F.conv1d(F.relu(x), first.weight, first.bias, padding=2)), second.weight,
                                 second.bias, padding=2)  # fmt: skip
                x = x + 0.3 * inner  # adv.py:55-63
            expected = official.net(x.transpose(1, 2).mean(dim=1))  # adv.py:86-91, 29-32
        assert torch.allclose(official(states, mask), expected, **TOL)
        garbage = states.clone()
        garbage[mask == 0] = 30.0
        assert torch.allclose(corrected(garbage, mask), corrected(states, mask), **TOL)  # masked: padding-invariant
        assert not torch.allclose(official(garbage, mask), official(states, mask), atol=1e-4)


def test_masked_means_are_invariant_to_padding_and_the_parity_flag_is_not() -> None:
    batch = _batch(7)
    padded = {**batch, "text": {role: dict(tokens) for role, tokens in batch["text"].items()}}
    for role, tokens in padded["text"].items():  # three more padding positions on every caption
        extra = torch.zeros(B, 3, dtype=tokens["input_ids"].dtype)
        padded["text"][role] = {key: torch.cat([value, extra], dim=1) for key, value in tokens.items()}
    with torch.no_grad():
        corrected = _nrccr(unmasked_mean=False)
        for role in ("source", "target", "back", "teacher"):
            assert torch.allclose(corrected.streams(batch)[role], corrected.streams(padded)[role], **TOL), role
        official = _nrccr(unmasked_mean=True)
        assert not torch.allclose(official.streams(batch)["target"], official.streams(padded)["target"], atol=1e-4)


def test_nrccr_total_matches_forward_loss_with_shared_weights() -> None:
    """model.py:453-474 on the embeddings of the official modules: the weighted sum of the five terms."""
    model = _nrccr()
    batch = _batch(8)
    model.train()
    for module in model.modules():  # deterministic: no dropout; BatchNorm keeps its batch statistics
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    streams = model.streams(batch)
    terms = model.loss_terms(streams, batch)
    s, t, c, b, v = (streams[role] for role in ("source", "target", "teacher", "back", "visual"))
    logits = model.discriminator.net(streams["h_target"].mean(dim=1))
    expected = (
        ref_triplet(s, v)
        + ref_triplet(t, v) * 0.6
        + ref_dtl(c.detach(), t, v) * 0.4
        + ref_triplet(s, b) * 0.5
        + 0.001 * ref_adversarial_loss(logits, 1)
        + ref_dtl_feat(c, t) * 0.1
    )
    assert torch.allclose(terms["loss"], expected, **TOL)
    params = [p for p in model.parameters() if p.requires_grad]
    for mine, theirs in zip(
        torch.autograd.grad(terms["loss"], params, allow_unused=True, retain_graph=True),
        torch.autograd.grad(expected, params, allow_unused=True),
        strict=True,
    ):
        if theirs is None:
            assert mine is None or bool((mine == 0).all())
        else:
            assert torch.allclose(mine, theirs, **TOL)


def test_mapping_layers_are_xavier_initialised() -> None:
    model = _nrccr(embed_dim=1536, visual_hidden=1024)
    for head in (model.text_head, model.visual_head):  # xavier_init_fc, model.py:25-31
        fan_in, fan_out = head.linear.in_features, head.linear.out_features
        bound = math.sqrt(6.0) / math.sqrt(fan_in + fan_out)
        largest = float(head.linear.weight.detach().abs().max())
        assert 0.95 * bound < largest <= bound
        assert bool((head.linear.bias == 0).all())


# --- the official learning-rate rule and early stop (trainer_img.py:157-208) ---------------------------------------
def ref_lr_schedule(history: list[float], lr: float = 1e-4, decay: float = 0.99) -> tuple[list[float], int]:
    """The lr after each epoch and the number of epochs run, trainer_img.py:157-208 (best_rsum starts at 0)."""
    best_rsum, no_impr_counter, lr_counter, lrs = 0.0, 0, 0, []
    for epoch, rsum in enumerate(history):
        is_best = rsum > best_rsum
        best_rsum = max(rsum, best_rsum)
        lr_counter += 1
        lr *= decay
        if not is_best and lr_counter > 2:
            lr *= 0.5
            lr_counter = 0
        lrs.append(lr)
        no_impr_counter = 0 if is_best else no_impr_counter + 1
        if no_impr_counter > 10:
            return lrs, epoch + 1
    return lrs, len(history)


HISTORY = [10.0, 9.0, 8.0, 12.0, 11.0, 11.0, 11.0, 13.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0]
HISTORY += [12.0] * 6


class ScriptedValidation(L.LightningModule):
    """One parameter, one SGD step per epoch, and a scripted ``val/t2v_sumr``; records the lr of every epoch."""

    def __init__(self, history: list[float]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.history, self.lrs = history, []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return (self.weight * batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/t2v_sumr", self.history[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD([self.weight], lr=1e-4)


def test_lr_rule_and_early_stop_follow_the_official_trainer_on_a_scripted_history(tmp_path) -> None:
    expected_lrs, epochs = ref_lr_schedule(HISTORY)
    model = ScriptedValidation(HISTORY)
    trainer = L.Trainer(
        max_epochs=len(HISTORY),
        callbacks=[
            DecayAndHalveOnPlateau(monitor="val/t2v_sumr"),
            L.pytorch.callbacks.EarlyStopping(monitor="val/t2v_sumr", mode="max", patience=11),
        ],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    data = torch.utils.data.DataLoader(torch.ones(1, 1), batch_size=1)
    trainer.fit(model, data, data)
    assert trainer.current_epoch == epochs < len(HISTORY)
    # the lr used in epoch e + 1 is the one the rule set after the validation of epoch e
    assert model.lrs[1:] == pytest.approx(expected_lrs[: len(model.lrs) - 1], rel=1e-12)
    assert model.lrs[0] == pytest.approx(1e-4)
    halvings = [e for e in range(1, len(expected_lrs)) if expected_lrs[e] < 0.6 * expected_lrs[e - 1]]
    assert halvings and halvings[0] == 2  # the first halving can come at the third validation
