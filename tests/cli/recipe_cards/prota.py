"""ProTA recipe card: no public code; CLIP4Clip conventions as recalled (itr_video_methods §3.2) [recall]: CLIP
ViT-B/32, CLIP lr 1e-7, new modules 1e-4, batch 128, 12 frames / 32 tokens (DiDeMo 64 / 64)."""

METHOD = "prota"
SOURCES = [
    "Fang et al., ICME 2024 (arXiv 2404.12216) abstract and §3 [recall]",
    "CLIP4Clip (Luo et al. 2021) training conventions [recall]",
]
COMMON = {
    "model.class_path": "leccr_lightning.methods.prota.ProTA",
    "model.init_args.clip_model": "openai/clip-vit-base-patch32",
    "model.init_args.clip_lr": 1e-7,
    "model.init_args.optimizer.init_args.lr": 0.0001,
    "model.init_args.temporal_layers": 4,
    "model.init_args.kl_weight": 0.001,
    "data.init_args.batch_size": 128,
}
_TOKENS = {"model.init_args.video_input": "tokens", "data.init_args.extras.frame_tokens.init_args.num_frames": 12}
_FRAMES = {
    "model.init_args.video_input": "frames",
    "data.init_args.extras.frames.init_args.num_frames": 12,
    "data.init_args.extras.frames.init_args.image_size": 224,
}
_SHORT = {"model.init_args.max_text_tokens": 32, "model.init_args.eval_frames": 12, "data.init_args.max_length": 32}
_DIDEMO = {"model.init_args.max_text_tokens": 64, "model.init_args.eval_frames": 64, "data.init_args.max_length": 64}
RECIPES = {
    "msrvtt1ka_tokens": {**_TOKENS, **_SHORT, "data.init_args.collection": "msrvtt1ka"},
    "msrvtt1ka_end_to_end": {**_FRAMES, **_SHORT, "data.init_args.collection": "msrvtt1ka"},
    "lsmdc_tokens": {**_TOKENS, **_SHORT, "data.init_args.collection": "lsmdc"},
    "lsmdc_end_to_end": {**_FRAMES, **_SHORT, "data.init_args.collection": "lsmdc"},
    "didemo_tokens": {
        **_TOKENS,
        **_DIDEMO,
        "data.init_args.extras.frame_tokens.init_args.num_frames": 64,
        "data.init_args.collection": "didemo",
    },
    "didemo_end_to_end": {
        **_FRAMES,
        **_DIDEMO,
        "data.init_args.extras.frames.init_args.num_frames": 64,
        "data.init_args.collection": "didemo",
    },
}
