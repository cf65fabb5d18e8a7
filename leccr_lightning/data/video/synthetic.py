"""Learnable synthetic video data beside a synthetic collection (``leccr synth --regions true --frame_tokens true
--frame_images true``): region shards, cached frame tokens and frame pictures drawn from the collection's concepts.

Each item (a video, or an image as a one-frame video) gets a number of frames in ``frames``; in each frame every
concept of the item is visible with probability ``FRAME_VISIBILITY`` (at least one is). A visible concept occupies one
region of the frame (its prototype at a weight in [0.7, 1.3] plus Gaussian noise of std ``REGION_NOISE_SCALE *
feature_noise``: a detector's box is dominated by its object); the other regions are clutter (noise of std
``feature_noise`` only) or absent (probability ``region_absent``, masked). A frame token is the weighted sum
of the visible prototypes plus noise (what a CLIP frame embedding of the frame would carry); a frame picture renders
the visible concepts as ``render_picture`` does. Everything draws from one generator seeded by ``[seed, 2]``, so the
collection's other files do not change when these are written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leccr_lightning.data.synthetic import SynthConfig, render_picture
from leccr_lightning.data.video.frames import write_frame_images, write_frame_tokens
from leccr_lightning.data.video.regions import write_region_shards

REGIONS_DIR = "FeatureData/regions"
FRAME_TOKENS_DIR = "FeatureData/clip_frame_tokens"
FRAMES_DIR = "frames"
FRAME_VISIBILITY = 0.8
REGION_NOISE_SCALE = 0.5


def write_video_extras(
    folder: str | Path, splits: dict[str, dict[str, list[int]]], prototypes: np.ndarray, config: SynthConfig
) -> dict[str, Path]:
    """Write the extras ``config`` asks for under the collection ``folder``; returns name -> written path."""
    high = config.concepts_per_item[1]
    if config.regions and config.regions_per_frame < high:
        raise ValueError(f"regions_per_frame must be at least {high} (the most concepts of an item)")
    if not 0.0 <= config.region_absent < 1.0:
        raise ValueError(f"region_absent: expected a probability in [0, 1), got {config.region_absent}")
    rng = np.random.default_rng([config.seed, 2])
    dim = prototypes.shape[1]
    regions, masks, tokens, pictures = {}, {}, {}, {}
    for items in splits.values():
        for visual_id, concepts in items.items():
            count = int(rng.integers(config.frames[0], config.frames[1] + 1)) if config.video else 1
            visible = [_visible(concepts, rng) for _ in range(count)]
            weights = [rng.uniform(0.7, 1.3, len(v)) for v in visible]
            if config.regions:
                shard = config.feature_noise * rng.standard_normal((count, config.regions_per_frame, dim))
                present = rng.random((count, config.regions_per_frame)) >= config.region_absent
                for f, (seen, weight) in enumerate(zip(visible, weights, strict=True)):
                    slots = rng.permutation(config.regions_per_frame)[: len(seen)]
                    shard[f, slots] *= REGION_NOISE_SCALE
                    shard[f, slots] += weight[:, None] * prototypes[seen]
                    present[f, slots] = True
                shard[~present] = 0.0
                regions[visual_id] = shard
                if not present.all():
                    masks[visual_id] = present
            if config.frame_tokens:
                noise = config.feature_noise * rng.standard_normal((count, dim))
                tokens[visual_id] = np.stack([w @ prototypes[v] for v, w in zip(visible, weights, strict=True)]) + noise
            if config.frame_images:
                pictures[visual_id] = [render_picture(v, config.image_size, config.image_noise, rng) for v in visible]
    folder = Path(folder)
    written = {}
    if config.regions:
        written["regions"] = write_region_shards(folder / REGIONS_DIR, regions, masks)
    if config.frame_tokens:
        written["frame_tokens"] = write_frame_tokens(folder / FRAME_TOKENS_DIR, tokens)
    if config.frame_images:
        written["frames"] = write_frame_images(folder / FRAMES_DIR, pictures)
    return written


def _visible(concepts: list[int], rng: np.random.Generator) -> list[int]:
    """The concepts visible in one frame (each with probability FRAME_VISIBILITY, at least one)."""
    seen = [c for c in concepts if rng.random() < FRAME_VISIBILITY]
    return seen or [int(rng.choice(concepts))]
