"""RIVRL recipe card: LiJiaBei-7/rivrl do_all_{msrvtt,vatex,tgif_li,tgif_chen}.sh over the trainer.py defaults."""

METHOD = "rivrl"
SOURCES = [
    "LiJiaBei-7/rivrl:do_all_msrvtt.sh:1-40 (num_cnn 1, kernel 3, stride 2, 2048 filters, qkv 2048, rnn 512, pooling "
    "max, mapping 0-1024, --max_violation; same in do_all_vatex.sh, do_all_tgif_li.sh, do_all_tgif_chen.sh)",
    "LiJiaBei-7/rivrl:trainer.py:39-103 (space hybrid, dropout 0.2, word_dim 500, text rnn 512, 512 kernels 2-3-4, "
    "margins 0.2, cost sum, Adam 1e-4, decay 0.99, grad clip 2, 50 epochs, batch 128, tag vocab 512, gru_pool mean)",
    "LiJiaBei-7/rivrl:trainer.py:310-327 (x0.5 after >= 3 epochs without improvement, stop when > 10)",
    "LiJiaBei-7/rivrl:validate.py:112-122 and tester.py:170 (selection on SumR of both directions, 0.6 / 0.4 fusion)",
    "LiJiaBei-7/rivrl:util/tag_data_provider.py:9 (VIDEO_MAX_LEN 64, first frames); util/vocab.py:124 (threshold 5)",
]
MODEL = "model.init_args."
COMMON = {
    "model.class_path": "leccr_lightning.methods.rivrl.RIVRL",
    MODEL + "space": "hybrid",
    MODEL + "preview_size": 512,
    MODEL + "intensive_dim": 2048,
    MODEL + "clip_kernel_sizes": [3],
    MODEL + "clip_strides": [2],
    MODEL + "key_dim": 512,
    MODEL + "residual_pooling": "max",
    MODEL + "word_dim": 500,
    MODEL + "text_rnn_size": 512,
    MODEL + "text_kernel_num": 512,
    MODEL + "text_kernel_sizes": [2, 3, 4],
    MODEL + "gru_pool": "mean",
    MODEL + "dropout": 0.2,
    MODEL + "latent_dim": 1024,
    MODEL + "concept_dim": 512,
    MODEL + "sentence_dim": 0,
    MODEL + "objective.init_args.margin": 0.2,
    MODEL + "objective.init_args.mining": "hardest",
    MODEL + "objective.init_args.reduction": "sum",
    MODEL + "concept_objective.init_args.margin": 0.2,
    MODEL + "concept_objective.init_args.mining": "hardest",
    MODEL + "concept_objective.init_args.reduction": "sum",
    MODEL + "latent_weight": 0.6,
    MODEL + "concept_score_weight": 0.4,
    MODEL + "gradient_clip_norm": 2.0,
    MODEL + "optimizer.class_path": "torch.optim.Adam",
    MODEL + "optimizer.init_args.lr": 0.0001,
    "data.init_args.batch_size": 128,
    "data.init_args.vocabulary_threshold": 5,
    "data.init_args.max_frames": 64,
    "data.init_args.frame_sampling": "first",
    "data.init_args.word2vec": "word2vec/flickr/vec500flickr30m",
    "data.init_args.extras.tags.init_args.path": "TextData/tags/video_label_th_1.txt",
    "data.init_args.extras.tags.init_args.vocabulary": "TextData/tags/video_label_th_1/tag_vocab_512.json",
    "trainer.max_epochs": 50,
    "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/sumr",
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.monitor": "val/sumr",
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.decay": 0.99,
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.halve_factor": 0.5,
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.halve_every": 3,
    "trainer.callbacks.EarlyStopping.init_args.patience": 11,
}


def _collection(name: str, feature: str) -> dict:
    return {
        "data.init_args.collection": name,
        "data.init_args.train_captions": f"{name}train.caption.txt",
        "data.init_args.test_captions": f"{name}test.caption.txt",
        "data.init_args.features.path": f"FeatureData/{feature}",
        "data.init_args.features.video2frames": f"FeatureData/{feature}/video2frames.txt",
    }


RECIPES = {
    "msrvtt10k": _collection("msrvtt10k", "resnext101-resnet152"),
    "msrvtt10kyu": _collection("msrvtt10kyu", "resnext101-resnet152"),
    "msrvtt10kmiech": _collection("msrvtt10kmiech", "resnext101-resnet152"),
    "vatex": _collection("vatex", "i3d_kinetics"),
    "tgif_li": _collection("tgif_li", "resnext-101_resnet152-13k"),
    "tgif_chen": _collection("tgif_chen", "resnet152.pth"),
}
