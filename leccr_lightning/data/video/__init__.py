"""Video data: monolingual video-text collections in the Dual Encoding / RIVRL "VisualSearch" layout
(itr_video_methods §1.4: caption files, the BoW/RNN vocabularies, word2vec initialisation, concept tags, BERT sentence
features, the DataModule and a synthetic writer under the real file names), and per-item video extras: region
features (ViSERN), cached frame tokens and raw frames (ProTA), paragraph captions."""
