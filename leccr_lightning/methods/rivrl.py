"""RIVRL: Reading-strategy Inspired Visual Representation Learning for text-to-video retrieval (Dong et al., IEEE
TCSVT 2022; official code LiJiaBei-7/rivrl on Dual Encoding, danieljf24/hybrid_space; itr_video_methods §1).

Video (``modules/rivrl.py``): a *previewing* branch p = Dropout(mean biGRU(X)) and an *intensive-reading* branch
r = [PaA(F, p); PaA(C, p)] over the frame path F and its clips C, previewing-aware attention using p as the query.
Text (``modules/dual_encoding.py``): the multi-level encoding t = [biGRU mean; biGRU-CNN; BoW (; BERT)].
Hybrid space: every one of p, r and t (once per branch) gets a latent vector (unit, 1024-d) and a concept vector
(512 sigmoid tag probabilities); S_lat = cosine, S_con = soft Jaccard. Loss (§1.2):

    L = sum_b L_tri(S_lat^b) + sum_b L_tri(S_con^b) + B sum_b [BCE(v_con^b, y) + BCE(t_con^b, y)]

over the branches b = preview, intensive,
with L_tri the VSE++ hardest-negative triplet (margin 0.2, both directions, summed) and y the video's soft tags.
Evaluation (tester.py:159-171): each of the four caption x video matrices min-max normalised over the whole matrix,
S = 0.6 (S_lat^p + S_lat^i) + 0.4 (S_con^p + S_con^i), computed in two chunked passes (``FusedScorer``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from leccr_lightning.data.video.vocabulary import RNN_SPECIALS
from leccr_lightning.losses.hybrid_space import concept_bce, hybrid_space_loss, soft_jaccard
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import ROW_TEXTS, PairObjective, TripletObjective
from leccr_lightning.metrics.scoring import DotScorer, FusedScorer, JaccardScorer
from leccr_lightning.modules.dual_encoding import MultiLevelTextEncoder
from leccr_lightning.modules.heads import HybridHead
from leccr_lightning.modules.rivrl import PreviewIntensiveEncoder

SPACES = ("hybrid", "latent")
BRANCHES = ("preview", "intensive")


def rivrl_adam(params: Iterable) -> torch.optim.Optimizer:
    """RIVRL's optimiser: Adam(lr 1e-4), no weight decay (trainer.py:69-70)."""
    return torch.optim.Adam(params, lr=1e-4)


class RIVRL(RetrievalMethod):
    """RIVRL as a LightningModule (the official ``Preview_Intensive_Encoding_Hybrid``).

    Args:
        visual_dim, vocab_size: linked from the DataModule (frame feature width; RNN vocabulary size, the BoW
            vocabulary being the same words without the four specials).
        space: ``hybrid`` (latent + concept) or ``latent`` (``--space latent``: latent triplets only, scores summed).
        preview_size 512, intensive_dim 2048, clip_kernel_sizes (3,), clip_strides (2,), key_dim 512,
            attention_dropout 0.2, ffn_dropout 0.1, residual_pooling ``max``: the video encoder (do_all_*.sh).
        word_dim 500, text_rnn_size 512, text_kernel_num 512, text_kernel_sizes (2, 3, 4), sentence_dim (0; 1024
            with the BERT feature, ``--use_bert 1``, read from the ``bert`` extra): the text encoder.
        gru_pool: ``mean`` for both biGRUs; dropout 0.2; latent_dim 1024 (``0-1024`` mapping layers); concept_dim:
            the tag vocabulary's size (512, ``tag_vocab_512.json``; the DataModule's ``concept_dim`` tells it).
        objective: the latent triplet (default ``TripletObjective``: margin 0.2, hardest, both directions, sum);
        concept_objective: the concept triplet on soft-Jaccard scores (margin ``--margin_2`` 0.2).
        concept_weight 1, bce_weight 1 (x batch size): loss weights; latent_weight 0.6 / concept_score_weight 0.4:
            the evaluation fusion.
        upstream_padding: reproduce upstream's padding-dependent encoders (see "Differences").
        gradient_clip_norm: 2.0 (``--grad_clip``); optimizer: Adam 1e-4.
        mask_same_item (``RetrievalMethod``): two captions of one video in a batch are never negatives (upstream:
            only the diagonal is positive; ``False`` reproduces it).

    Differences from the official code (each with its flag; the defaults are the corrected behaviour):
        - the preview biGRU is packed, the clip features are masked, a video has max(1, floor((len-3)/2)+1) clip
          steps (shorter videos zero-padded to the kernel) and the text CNN pools only a caption's own positions;
          upstream's embeddings depend on the longest item of the batch: ``upstream_padding=True``.
        - captions of the same video in a batch are not negatives of each other: ``mask_same_item=False``.
        - the vocabulary is rebuilt from the training captions, not unpickled (``VideoTextDataModule``
          ``vocabulary_captions`` for another file, ``released_vocabulary`` to check it against the pickle).
        - concept tags are mined with lemminflect's lexicon instead of NLTK's tagger and WordNet
          (``leccr tags --pos_filter``); the released tag files are read as they are.
        - word2vec rows missing from the file are drawn from a seeded generator (``word2vec_seed``), not NumPy's
          global one.
        - evaluation scores are float32 on the model's device (upstream: float64 NumPy; ranks may differ on ties).
        - with ``gather_negatives`` the triplets and BCEs run over the gathered batch (upstream is single-GPU).
        - a training video without a tag line is an error (upstream: KeyError); ``ConceptTags(allow_missing=True)``
          gives it zeros. A constant score matrix min-max normalises to zeros (upstream divides by zero).
        - caption ids lose a ``.jpg``/``.mp4`` suffix on both sides of the ground truth (upstream's ``get_gt`` keeps
          it on the caption side only, util/metrics.py:106-120).
    """

    required_roles = ("source",)
    module_arguments = ("objective", "concept_objective")

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int,
        space: str = "hybrid",
        preview_size: int = 512,
        intensive_dim: int = 2048,
        clip_kernel_sizes: tuple[int, ...] = (3,),
        clip_strides: tuple[int, ...] = (2,),
        key_dim: int = 512,
        attention_dropout: float = 0.2,
        ffn_dropout: float = 0.1,
        residual_pooling: str = "max",
        word_dim: int = 500,
        text_rnn_size: int = 512,
        text_kernel_num: int = 512,
        text_kernel_sizes: tuple[int, ...] = (2, 3, 4),
        sentence_dim: int = 0,
        gru_pool: str = "mean",
        dropout: float = 0.2,
        latent_dim: int = 1024,
        concept_dim: int = 512,
        objective: PairObjective | None = None,
        concept_objective: PairObjective | None = None,
        concept_weight: float = 1.0,
        bce_weight: float = 1.0,
        latent_weight: float = 0.6,
        concept_score_weight: float = 0.4,
        upstream_padding: bool = False,
        optimizer: OptimizerCallable = rivrl_adam,
        gradient_clip_norm: float | None = 2.0,
        **base_kwargs,
    ):
        super().__init__(optimizer=optimizer, gradient_clip_norm=gradient_clip_norm, **base_kwargs)
        if space not in SPACES:
            raise ValueError(f"space: expected one of {SPACES}, got {space!r}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler", *self.module_arguments])
        self.hybrid = space == "hybrid"
        concepts = concept_dim if self.hybrid else 0
        self.video = PreviewIntensiveEncoder(
            visual_dim,
            preview_size,
            intensive_dim,
            clip_kernel_sizes,
            clip_strides,
            key_dim,
            dropout,
            attention_dropout,
            ffn_dropout,
            residual_pooling,
            gru_pool,
            upstream_padding,
        )
        self.text = MultiLevelTextEncoder(
            vocab_size,
            vocab_size - len(RNN_SPECIALS),
            word_dim,
            text_rnn_size,
            text_kernel_num,
            text_kernel_sizes,
            dropout,
            sentence_dim,
            gru_pool,
            upstream_padding,
        )
        self.video_heads = nn.ModuleDict(
            {
                "preview": HybridHead(self.video.preview_dim, latent_dim, concepts, dropout),
                "intensive": HybridHead(self.video.intensive_dim, latent_dim, concepts, dropout),
            }
        )
        self.text_heads = nn.ModuleDict(
            {b: HybridHead(self.text.out_dim, latent_dim, concepts, dropout) for b in BRANCHES}
        )
        self.required_extras = ("tags",) * self.hybrid + ("bert",) * bool(sentence_dim)
        self.context_roles = tuple(
            f"{side}_{branch}{suffix}"
            for suffix in ("", "_concepts")[: 1 + self.hybrid]
            for branch in BRANCHES
            for side in ("text", "video")
        )
        self.objective = self.attach_objective(objective if objective is not None else TripletObjective())
        self.concept_objective = self.attach_objective(
            concept_objective if concept_objective is not None else TripletObjective()
        )

    def provided_context(self) -> frozenset[str]:
        """The rows of RIVRL's pairs are caption embeddings of a space, not a text role of the batch: no row texts."""
        return super().provided_context() - {ROW_TEXTS}

    def setup(self, stage: str) -> None:
        """Initialise the word embeddings from the DataModule's word2vec rows when it has them (before a checkpoint
        is restored, so a resumed run keeps its trained table)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        matrix = getattr(datamodule, "word_embeddings", None)
        if stage == "fit" and matrix is not None:
            self.text.load_word_embeddings(torch.as_tensor(matrix, dtype=self.text.embed.weight.dtype))

    # --- encoders ---------------------------------------------------------------------------------------------
    def embed_video(self, visual: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latent (and concept) views of the previewing and intensive-reading branches."""
        preview, intensive, _ = self.video.encode(visual, mask)
        return self._views(self.video_heads, {"preview": preview, "intensive": intensive})

    def embed_text(self, tokens: Mapping[str, torch.Tensor], extras: Mapping) -> dict[str, torch.Tensor]:
        """Latent (and concept) views of a caption in both branches' spaces (one multi-level vector, two heads)."""
        sentence = extras["bert"]["values"] if self.hparams.sentence_dim else None
        features = self.text(tokens["input_ids"], tokens["attention_mask"], tokens["bow"], sentence)
        return self._views(self.text_heads, dict.fromkeys(BRANCHES, features))

    def _views(self, heads: nn.ModuleDict, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        views = {}
        for branch in BRANCHES:
            latent, concept = heads[branch](inputs[branch])
            views[branch] = latent
            if concept is not None:
                views[f"{branch}_concepts"] = concept
        return views

    # --- training ---------------------------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        video = self.embed_video(batch["visual"], batch["visual_mask"])
        text = self.embed_text(batch["text"]["source"], batch["extras"])
        embeddings = {f"video_{k}": v for k, v in video.items()} | {f"text_{k}": v for k, v in text.items()}
        step = self.alignment_step(batch, embeddings)
        latent = sum(self.objective(step.pair(f"text_{b}", f"video_{b}")) for b in BRANCHES)
        if not self.hybrid:
            return {"loss": latent, "latent": latent}
        concept = sum(
            self.concept_objective(step.pair(f"text_{b}_concepts", f"video_{b}_concepts", similarity=soft_jaccard))
            for b in BRANCHES
        )
        targets = self.gather(batch["extras"]["tags"]["values"])
        if targets.shape[1] != self.hparams.concept_dim:
            raise ValueError(
                f"the tag vocabulary has {targets.shape[1]} tags but concept_dim is {self.hparams.concept_dim} "
                "(set model.init_args.concept_dim to the length of tag_vocab_<n>.json)"
            )
        bce = sum(
            concept_bce(step.embeddings[f"video_{b}_concepts"], step.embeddings[f"text_{b}_concepts"], targets)
            for b in BRANCHES
        )
        loss = hybrid_space_loss(
            latent, concept, bce, targets.shape[0], self.hparams.concept_weight, self.hparams.bce_weight
        )
        return {"loss": loss, "latent": latent, "concept": concept, "bce": bce}

    # --- evaluation -------------------------------------------------------------------------------------------
    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return self.embed_text(batch["text"]["query"], batch["extras"])

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return self.embed_video(batch["visual"], batch["visual_mask"])

    def scorer(self, stage: str = "test") -> FusedScorer:
        """Hybrid: 0.6 (minmax S_lat^p + minmax S_lat^i) + 0.4 (minmax S_con^p + minmax S_con^i); latent: the sum of
        the two cosines (tester.py:158-179, the same at validation)."""
        latent = [(DotScorer(b, b), self.hparams.latent_weight if self.hybrid else 1.0) for b in BRANCHES]
        if not self.hybrid:
            return FusedScorer(latent, normalize=False)
        concept = [
            (JaccardScorer(f"{b}_concepts", f"{b}_concepts"), self.hparams.concept_score_weight) for b in BRANCHES
        ]
        return FusedScorer(latent + concept)
