"""Video-specific per-item data: region features (ViSERN), cached frame tokens and raw frames (ProTA), paragraphs."""
