"""``leccr tags``: mine the concept tags of a Dual Encoding collection from its training captions and write the
official files (LiJiaBei-7/rivrl:util/get_concept_tags.py, util/do_get_tags.sh; itr_video_methods §1.4, §1.9).

    leccr tags --root $HOME/VisualSearch --collection msrvtt10k

reads ``TextData/<collection>.caption.txt`` when it exists, else ``TextData/<collection>train.caption.txt``
(``--captions`` names another file under ``TextData/``), and writes ``TextData/tags/video_label_th_1.txt`` and
``TextData/tags/video_label_th_1/{all_words.txt, tag_vocab_512.json, tag_vocab_512.txt}``. Existing files are kept
unless ``--overwrite true`` (upstream skips too). The part-of-speech filter and lemmas come from lemminflect's
lexicon (``--pos_filter lexicon``; ``none`` keeps every word), see ``data/video/tags.py``.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from leccr_lightning.data.video.captions import read_video_captions
from leccr_lightning.data.video.tags import POS_FILTERS, TAG_FILE, mine_concept_tags, write_concept_tags


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr tags", description=__doc__)
    parser.add_argument("--root", required=True, help="the VisualSearch root folder")
    parser.add_argument("--collection", required=True, help="collection folder under the root (msrvtt10k, vatex...)")
    parser.add_argument("--captions", default=None, help="caption file under TextData/ (default: the official rule)")
    parser.add_argument("--threshold", type=int, default=1, help="keep tags counted more than this per video (th4vl)")
    parser.add_argument("--tgif_threshold", type=int, default=0, help="the threshold of video ids starting with tgif")
    parser.add_argument("--vocabulary_size", type=int, default=512, help="tags in tag_vocab_<n>.json")
    parser.add_argument(
        "--pos_filter",
        choices=POS_FILTERS,
        default="lexicon",
        help="keep nouns, verbs and adjectives by their lemminflect readings (lexicon), or every word (none)",
    )
    parser.add_argument("--overwrite", type=bool, default=False, help="replace existing tag files")
    return parser


def tags_main(argv: list[str]) -> Path:
    """Parse ``argv``, mine and write the tag files; returns the tag file (existing and kept, or written)."""
    cfg = build_parser().parse_args(argv)
    collection = Path(cfg.root) / cfg.collection
    text_dir = collection / "TextData"
    if cfg.captions is not None:
        captions = text_dir / cfg.captions
    elif (text_dir / f"{cfg.collection}.caption.txt").is_file():
        captions = text_dir / f"{cfg.collection}.caption.txt"
    else:
        captions = text_dir / f"{cfg.collection}train.caption.txt"
    tag_file = collection / TAG_FILE
    if tag_file.exists() and not cfg.overwrite:
        print(f"{tag_file} exists; kept (pass --overwrite true to mine again)")
        return tag_file
    video_tags = mine_concept_tags(read_video_captions(captions), cfg.threshold, cfg.tgif_threshold, cfg.pos_filter)
    vocabulary = write_concept_tags(collection, video_tags, cfg.vocabulary_size)
    print(f"wrote {tag_file} ({len(video_tags)} videos from {captions.name}, {len(vocabulary)} tags in the vocabulary)")
    return tag_file
