"""Official file names of each collection of the NRCCR/LECCR release (ccr_methods §1.2), per target language.

``{xx}`` stands for the target language. The same names appear in ``configs/data/*.yaml``; ``leccr synth --layout``
uses this table to write a synthetic collection under the real file names.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    """File names (relative to ``TextData/`` for captions, to the collection folder otherwise).

    ``monolingual``: an English text-to-video collection of the Dual Encoding release (``source`` captions for
    training, ``query`` captions for evaluation, concept tags; itr_video_methods §1.4).
    """

    collection: str
    train: dict[str, str]
    val: dict[str, str]
    test: dict[str, str]
    features: str
    id_lists: dict[str, str] = field(default_factory=dict)
    video: bool = False
    monolingual: bool = False
    language_overrides: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)

    def resolve(self, language: str) -> dict[str, dict[str, str]]:
        """The caption file names of every split for ``language`` (with its per-language exceptions)."""
        overrides = self.language_overrides.get(language, {})
        return {
            split: {role: overrides.get(split, {}).get(role, name).format(xx=language) for role, name in names.items()}
            for split, names in (("train", self.train), ("val", self.val), ("test", self.test))
        }

    def id_list_names(self, language: str) -> dict[str, str]:
        return {split: name.format(xx=language) for split, name in self.id_lists.items()}


LAYOUTS: dict[str, Layout] = {
    "synthetic": Layout(
        collection="synthetic",
        train={
            "source": "synthtrain_enc.caption.txt",
            "target": "synthtrain_google_enc2{xx}.caption.txt",
            "back": "synthtrain_google_enc2{xx}2enc.caption.txt",
        },
        val={"query": "synthval_{xx}.caption.txt", "translated": "synthval_google_{xx}2enc.caption.txt"},
        test={"query": "synthtest_{xx}.caption.txt", "translated": "synthtest_google_{xx}2enc.caption.txt"},
        features="FeatureData/synthetic_feat",
        id_lists={
            "train": "FeatureData/train_id.txt",
            "val": "FeatureData/val_id.txt",
            "test": "FeatureData/test_id.txt",
        },
    ),
    "multi30k": Layout(
        collection="multi30k",
        train={
            "source": "Flickr30ktrain_enc.caption.txt",
            "target": "Flickr30ktrain_google_enc2{xx}.caption.txt",
            "back": "Flickr30ktrain_google_enc2{xx}2enc.caption.txt",
        },
        val={
            "query": "multi30kval_{xx}.caption.txt",
            "translated": "multi30kval_google_{xx}2enc.caption.txt",
        },
        test={
            "query": "multi30ktest_{xx}_2016.caption.txt",
            "translated": "multi30ktest_google_{xx}2enc_2016.caption.txt",
        },
        features="FeatureData/clip_vit_b32",
        id_lists={
            "train": "FeatureData/train_id.txt",
            "val": "FeatureData/val_id.txt",
            "test": "FeatureData/test_id_2016.txt",
        },
    ),
    "mscoco": Layout(
        collection="mscoco",
        train={
            "source": "mscocotrain_enc.caption.txt",
            "target": "mscocotrain_google_enc2{xx}.caption.txt",
            "back": "mscocotrain_google_enc2{xx}2enc.caption.txt",
        },
        val={"query": "mscocoval_{xx}.caption.txt", "translated": "mscocoval_google_{xx}2enc.caption.txt"},
        test={"query": "mscocotest_{xx}.caption.txt", "translated": "mscocotest_google_{xx}2enc.caption.txt"},
        features="FeatureData/clip_vit_b32",
        id_lists={
            "train": "FeatureData/train_id.txt",
            "val": "FeatureData/{xx}_val_id.txt",
            "test": "FeatureData/{xx}_test_id.txt",
        },
        language_overrides={
            "ja": {
                "test": {
                    "query": "mscocotest_1k_ja.caption.txt",
                    "translated": "mscocotest_1k_google_ja2enc.caption.txt",
                }
            }
        },
    ),
    "multi30k_task1": Layout(
        collection="multi30k",
        train={
            "source": "multi30ktrain_enc.caption.txt",
            "target": "multi30ktrain_google_enc2{xx}.caption.txt",
            "back": "multi30ktrain_google_enc2{xx}2enc.caption.txt",
        },
        val={
            "query": "multi30kval_{xx}.caption.txt",
            "translated": "multi30kval_google_{xx}2enc.caption.txt",
        },
        test={
            "query": "multi30ktest_{xx}_2016.caption.txt",
            "translated": "multi30ktest_google_{xx}2enc_2016.caption.txt",
        },
        features="FeatureData/clip_vit_b32",
        id_lists={
            "train": "FeatureData/train_id.txt",
            "val": "FeatureData/val_id.txt",
            "test": "FeatureData/test_id_2016.txt",
        },
        language_overrides={
            "de": {
                "val": {
                    "query": "multi30kval_de_task1.caption.txt",
                    "translated": "multi30kval_google_de2enc_task1.caption.txt",
                },
                "test": {
                    "query": "multi30ktest_de_2016_task1.caption.txt",
                    "translated": "multi30ktest_google_de2enc_2016_task1.caption.txt",
                },
            }
        },
    ),
    "vatex": Layout(
        collection="vatex",
        train={
            "source": "vatextrain.caption.txt",
            "target": "vatextrain_google_enc2{xx}.caption.txt",
            "back": "vatextrain_google_enc2{xx}2enc.caption.txt",
        },
        val={"query": "vatexval_{xx}.caption.txt", "translated": "vatexval_google_{xx}2enc.caption.txt"},
        test={"query": "vatextest_{xx}.caption.txt", "translated": "vatextest_google_{xx}2enc.caption.txt"},
        features="FeatureData/i3d_kinetics",
        video=True,
    ),
    "msrvtt10kcn": Layout(
        collection="msrvtt10kcn",
        train={
            "source": "msrvtt10kcntrain.caption.txt",
            "target": "msrvtt10kcntrain_google_enc2{xx}.caption.txt",
            "back": "msrvtt10kcntrain_google_enc2{xx}2enc.caption.txt",
        },
        val={
            "query": "msrvtt10kcnval_{xx}.caption.txt",
            "translated": "msrvtt10kcnval_google_{xx}2enc.caption.txt",
        },
        test={
            "query": "msrvtt10kcntest_{xx}.caption.txt",
            "translated": "msrvtt10kcntest_google_{xx}2enc.caption.txt",
        },
        features="FeatureData/resnext101-resnet152",
        video=True,
    ),
    # English text-to-video collections (Dual Encoding / RIVRL); the key of VATEX's is vatex_en, its folder vatex
    **{
        ("vatex_en" if name == "vatex" else name): Layout(
            collection=name,
            train={"source": f"{name}train.caption.txt"},
            val={"query": f"{name}val.caption.txt"},
            test={"query": f"{name}test.caption.txt"},
            features=f"FeatureData/{feature}",
            video=True,
            monolingual=True,
        )
        for name, feature in (
            ("synthvideo", "synthetic_frames"),
            ("msrvtt10k", "resnext101-resnet152"),
            ("msrvtt10kyu", "resnext101-resnet152"),
            ("msrvtt10kmiech", "resnext101-resnet152"),
            ("vatex", "i3d_kinetics"),
            ("tgif_li", "resnext-101_resnet152-13k"),
            ("tgif_chen", "resnet152.pth"),
        )
    },
}
