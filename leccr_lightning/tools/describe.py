"""``leccr describe``: write the MLLM description ``<out>/<visual_id>.txt`` of every image or video (LECCR §3.1).

Any Hugging Face image-text-to-text model (``AutoModelForImageTextToText`` + ``AutoProcessor``) from a local
directory; nothing is downloaded. Images are ``<images>/<visual_id>.<ext>`` (MSCOCO: the file stem keys the
description, as in the official loader); a video is a folder ``<images>/<visual_id>/`` of frame images of which
``frames_per_video`` are sampled uniformly. Items that already have a non-empty file are skipped, so an interrupted
run resumes. The official descriptions came from VideoChat2 with an unpublished prompt: ``--prompt`` is ours.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_PROMPT = "{images} Describe the content of this picture in detail in English."


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr describe", description=__doc__)
    parser.add_argument("--model", required=True, help="local directory of an image-text-to-text model")
    parser.add_argument("--images", required=True, help="folder of <id>.<ext> images or <id>/ frame folders")
    parser.add_argument("--out", required=True, help="output folder of <visual_id>.txt descriptions")
    parser.add_argument("--ids", type=list[str], default=[], help="id-list files (default: every item found)")
    parser.add_argument("--video", type=bool, default=False, help="items are folders of frames")
    parser.add_argument("--frames_per_video", type=int, default=4, help="frames sampled uniformly from a video")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="'{images}' becomes one image token per frame")
    parser.add_argument("--max_new_tokens", type=int, default=120, help="longest description in tokens")
    parser.add_argument("--batch_size", type=int, default=4, help="items per generate() call")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda...)")
    return parser


def list_items(images: Path, id_files: list[str], video: bool) -> list[tuple[str, Path]]:
    """(visual_id, image file or frame folder) of every item, from the id lists or the folder's content."""
    if not images.is_dir():
        raise ValueError(f"--images {images}: expected a folder of images or frame folders")
    found: dict[str, Path] = {}
    for path in sorted(images.iterdir()):
        if path.is_dir() if video else path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.stem if not video else path.name, path)
    if not id_files:
        return sorted(found.items())
    items = []
    for id_file in id_files:
        for line_number, line in enumerate(Path(id_file).read_text(encoding="utf-8").splitlines(), 1):
            visual_id = line.split()[0] if line.strip() else ""
            if not visual_id:
                continue
            if visual_id not in found:
                kind = "frame folder" if video else f"image ({'/'.join(IMAGE_SUFFIXES)})"
                raise ValueError(f"{id_file}:{line_number}: no {kind} for id {visual_id!r} in {images}")
            items.append((visual_id, found[visual_id]))
    return items


def sample_frames(folder: Path, count: int) -> list[Path]:
    """``count`` frames of a sorted frame folder at uniformly spaced indices (all frames if fewer)."""
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not frames:
        raise ValueError(f"frame folder {folder} holds no images ({'/'.join(IMAGE_SUFFIXES)})")
    if len(frames) <= count:
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, count).round().astype(int)]


def pending(items: list[tuple[str, Path]], out: Path) -> list[tuple[str, Path]]:
    """Items without a non-empty description file yet (resume)."""
    return [(i, p) for i, p in items if not ((out / f"{i}.txt").is_file() and (out / f"{i}.txt").stat().st_size)]


def describe_main(argv: list[str]) -> None:
    """Generate the missing descriptions of ``argv``'s items, ``batch_size`` items per ``generate`` call."""
    import torch
    from PIL import Image
    from tqdm import tqdm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = build_parser().parse_args(argv)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = pending(list_items(Path(cfg.images), cfg.ids, cfg.video), out)
    if not todo:
        print(f"all descriptions already in {out}")
        return
    processor = AutoProcessor.from_pretrained(cfg.model, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(cfg.model, local_files_only=True).to(cfg.device).eval()
    image_token = getattr(processor, "image_token", None) or "<image>"
    for start in tqdm(range(0, len(todo), cfg.batch_size), desc="describe", unit="batch", file=sys.stderr):
        batch = todo[start : start + cfg.batch_size]
        visuals = [sample_frames(p, cfg.frames_per_video) if cfg.video else [p] for _, p in batch]
        images = [[Image.open(f).convert("RGB") for f in frames] for frames in visuals]
        prompts = [cfg.prompt.replace("{images}", " ".join([image_token] * len(v))) for v in visuals]
        flat = images if cfg.video else [v[0] for v in images]
        inputs = processor(images=flat, text=prompts, return_tensors="pt", padding=True).to(cfg.device)
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=False)
        texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for (visual_id, _), text in zip(batch, texts, strict=True):
            (out / f"{visual_id}.txt").write_text(" ".join(text.split()) + "\n", encoding="utf-8")
    print(f"wrote {len(todo)} descriptions to {out}")
