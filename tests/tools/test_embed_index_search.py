"""``leccr embed`` -> ``leccr index`` -> ``leccr search`` on a trained tiny baseline: the embeddings reproduce the
run's test metrics, faiss returns the method's own scores, and a user's sentence is encoded from the checkpoint
alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.cli import main
from leccr_lightning.data.features import BigFileStore
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list
from leccr_lightning.metrics import retrieval_report_from_embeddings
from leccr_lightning.tools import load_tool
from leccr_lightning.tools.embed import read_embeddings
from leccr_lightning.tools.index import build_index, exact_top_k, recall_against_exact


def run_tool(*argv: str):
    """A tool's return value (``main`` returns nothing)."""
    return load_tool(argv[0])(list(argv[1:]))


@pytest.fixture(scope="module")
def embedded(trained_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embeddings")
    main(["embed", "--checkpoint", str(trained_run["checkpoint"]), "--out", str(out)])
    return out


def top_k(query: np.ndarray, items: np.ndarray, item_ids: list[str], k: int) -> tuple[list[str], np.ndarray]:
    scores = torch.from_numpy(query) @ torch.from_numpy(items).T
    values, rows = scores.topk(k)
    return [item_ids[r] for r in rows.tolist()], values.numpy()


def test_embeddings_reproduce_the_test_metrics_of_the_run(trained_run, embedded, tmp_path):
    collection = trained_run["root"] / "synthetic"
    query_ids, queries = read_embeddings(embedded / "queries" / "query")
    gallery_ids, gallery = read_embeddings(embedded / "gallery" / "gallery")
    assert query_ids == list(read_caption_file(collection / "TextData" / "synthtest_de.caption.txt").ids)
    assert gallery_ids == read_id_list(collection / "FeatureData" / "test_id.txt")
    assert queries.shape == (len(query_ids), 128) and gallery.shape == (len(gallery_ids), 128)
    targets = torch.tensor([gallery_ids.index(q.split("#")[0]) for q in query_ids])
    report = retrieval_report_from_embeddings(torch.from_numpy(queries), torch.from_numpy(gallery), targets)
    for key in ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r10", "t2v_medr", "sumr"):
        assert report[key] == pytest.approx(trained_run["metrics"][f"test/{key}"], abs=1e-4), key
    manifest = json.loads((embedded / "embeddings.json").read_text(encoding="utf-8"))
    assert manifest["split"] == "test" and manifest["dot_views"] == ["query", "gallery"]
    assert manifest["counts"] == {"queries": len(query_ids), "gallery": len(gallery_ids)}
    assert BigFileStore(embedded / "gallery" / "gallery").names == gallery_ids

    main(["embed", "--checkpoint", str(trained_run["checkpoint"]), "--out", str(tmp_path), "--format", "npy"])
    npy_ids, npy = read_embeddings(tmp_path / "gallery" / "gallery.npy")
    assert npy_ids == gallery_ids and np.allclose(npy, gallery, atol=1e-6)


def test_flat_index_returns_the_methods_scores(embedded, tmp_path):
    main(["index", "--embeddings", str(embedded / "gallery" / "gallery"), "--out", str(tmp_path / "flat")])
    meta = json.loads((tmp_path / "flat" / "index.json").read_text(encoding="utf-8"))
    assert (meta["factory"], meta["role"], meta["view"], meta["count"]) == ("Flat", "gallery", "gallery", 20)
    assert "recall_at_10" not in meta
    query_ids, queries = read_embeddings(embedded / "queries" / "query")
    gallery_ids, gallery = read_embeddings(embedded / "gallery" / "gallery")
    import faiss

    index = faiss.read_index(str(tmp_path / "flat" / "index.faiss"))
    scores, rows = index.search(queries[:5], 10)
    stored_ids = (tmp_path / "flat" / "ids.txt").read_text(encoding="utf-8").splitlines()
    for q in range(5):
        ids, values = top_k(queries[q], gallery, gallery_ids, 10)
        assert [stored_ids[r] for r in rows[q]] == ids
        assert np.allclose(scores[q], values, atol=1e-5)


def test_recall_of_an_approximate_index_is_measured_on_the_splits_text_queries(embedded, tmp_path):
    args = ["--embeddings", str(embedded / "gallery" / "gallery"), "--out", str(tmp_path), "--kind", "hnsw"]
    meta = run_tool("index", *args)
    assert meta["factory"] == "HNSW32" and meta["search_parameters"] == {"efSearch": 128}
    assert meta["recall_queries"] == f"{meta_queries(embedded)} text queries (queries/query)"
    assert meta["recall_at_10"] == 1.0  # 20 items, ef_search 128: HNSW visits them all
    assert json.loads((tmp_path / "index.json").read_text(encoding="utf-8")) == meta


def test_approximate_indexes_report_their_recall_against_exact(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16))
    vectors = (centres[rng.integers(0, 20, 4000)] + 0.3 * rng.standard_normal((4000, 16))).astype(np.float32)
    queries = vectors[rng.choice(4000, 200, replace=False)] + 0.05 * rng.standard_normal((200, 16)).astype(np.float32)
    exact, description, _ = build_index(vectors)
    assert description == "Flat" and recall_against_exact(exact, vectors, queries) == 1.0
    every_list, description, parameters = build_index(vectors, "ivf", nlist=16, nprobe=16)
    assert (description, parameters) == ("IVF16,Flat", {"nprobe": 16})
    assert recall_against_exact(every_list, vectors, queries) == 1.0
    one_list, _, _ = build_index(vectors, "ivf", nlist=16, nprobe=1)
    found = one_list.search(queries, 10)[1]
    truth = exact_top_k(vectors, queries, 10)
    by_hand = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist(), strict=True)])
    assert recall_against_exact(one_list, vectors, queries) == pytest.approx(by_hand)
    assert 0.0 < by_hand < 1.0
    hnsw, description, parameters = build_index(vectors, "hnsw", hnsw_m=16, ef_search=64)
    assert (description, parameters) == ("HNSW16", {"efSearch": 64})
    assert recall_against_exact(hnsw, vectors, queries) > 0.9
    with pytest.raises(ValueError, match="could not train 'IVF16,PQ8' on 100 vectors"):
        build_index(vectors[:100], factory="IVF16,PQ8")

    ids = [f"v{i}" for i in range(4000)]
    from leccr_lightning.data.features import write_bigfile

    write_bigfile(tmp_path / "view", ids, vectors)
    meta = run_tool("index", "--embeddings", str(tmp_path / "view"), "--out", str(tmp_path / "ivf"), "--kind", "ivf",
                    "--nlist", "16", "--nprobe", "2", "--recall_sample", "300")  # fmt: skip
    printed = capsys.readouterr().out
    assert f"recall@10 against exact search: {meta['recall_at_10']:.4f} on 300 indexed vectors" in printed
    assert 0.5 < meta["recall_at_10"] < 1.0


def test_search_with_your_own_sentence_from_the_checkpoint_alone(trained_run, embedded, tmp_path, capsys):
    main(["index", "--embeddings", str(embedded / "gallery" / "gallery"), "--out", str(tmp_path / "gallery")])
    main(["index", "--embeddings", str(embedded / "queries" / "query"), "--out", str(tmp_path / "captions")])
    query_ids, queries = read_embeddings(embedded / "queries" / "query")
    gallery_ids, gallery = read_embeddings(embedded / "gallery" / "gallery")
    captions = read_caption_file(trained_run["root"] / "synthetic" / "TextData" / "synthtest_de.caption.txt")
    checkpoint = tmp_path / "copy.ckpt"
    shutil.copy(trained_run["checkpoint"], checkpoint)
    moved = trained_run["root"].with_name("moved_away")
    trained_run["root"].rename(moved)  # no collection, no tokenizer cache: the checkpoint alone
    capsys.readouterr()
    try:
        own = ["search", "--checkpoint", str(checkpoint), "--index", str(tmp_path / "gallery"), "--top_k", "5"]
        results = run_tool(*own, captions.texts[3], "ein Hund läuft")
    finally:
        moved.rename(trained_run["root"])
    printed = capsys.readouterr().out
    assert printed.startswith(f"{captions.texts[3]}  (text-to-visual, gallery/gallery)")
    ids, values = top_k(queries[3], gallery, gallery_ids, 5)
    assert [hit["id"] for hit in results[0]["results"]] == ids
    assert np.allclose([hit["score"] for hit in results[0]["results"]], values, atol=1e-5)
    assert results[1]["query"] == "ein Hund läuft" and len(results[1]["results"]) == 5
    assert f"  1  {ids[0]:<32} {values[0]:.4f}" in printed

    query_file = tmp_path / "queries.txt"
    query_file.write_text(f"{captions.texts[0]}\n\n{captions.texts[7]}\n", encoding="utf-8")
    text_to_text = run_tool("search", "--index", str(tmp_path / "captions"), "--queries", str(query_file), "--json")
    assert [r["direction"] for r in text_to_text] == ["text-to-text", "text-to-text"]
    for result, row in zip(text_to_text, (0, 7), strict=True):
        ids, values = top_k(queries[row], queries, query_ids, 10)
        assert [hit["id"] for hit in result["results"]] == ids
        assert result["results"][0]["score"] == pytest.approx(float(queries[row] @ queries[row]), abs=1e-5)
    assert json.loads(capsys.readouterr().out.splitlines()[0])["query"] == captions.texts[0]

    item = gallery_ids[4]
    args = ["--item", item, "--embeddings", str(embedded / "gallery" / "gallery"), "--top_k", "3"]
    visual_to_text = run_tool("search", "--index", str(tmp_path / "captions"), *args)
    ids, values = top_k(gallery[4], queries, query_ids, 3)
    assert visual_to_text[0]["direction"] == "visual-to-text"
    assert [hit["id"] for hit in visual_to_text[0]["results"]] == ids


def test_search_errors_name_what_is_wrong(embedded, tmp_path):
    main(["index", "--embeddings", str(embedded / "gallery" / "gallery"), "--out", str(tmp_path / "idx")])
    with pytest.raises(FileNotFoundError, match="lacks index.faiss"):
        main(["search", "--index", str(tmp_path), "a dog"])
    with pytest.raises(KeyError, match="'imgte999999' is not an id of"):
        main(["search", "--index", str(tmp_path / "idx"), "--item", "imgte999999", "--embeddings",
              str(embedded / "gallery" / "gallery")])  # fmt: skip
    with pytest.raises(ValueError, match="give query sentences"):
        main(["search", "--index", str(tmp_path / "idx")])
    with pytest.raises(FileNotFoundError, match="checkpoint .*nothing.ckpt does not exist"):
        main(["search", "--index", str(tmp_path / "idx"), "--checkpoint", str(tmp_path / "nothing.ckpt"), "a dog"])


def test_the_checkpoint_holds_the_trained_tokenizer(trained_run):
    from leccr_lightning.data.text import tokenizer_from_state, tokenizer_state, train_wordpiece
    from leccr_lightning.tools.embed import load_datamodule, read_checkpoint

    state = read_checkpoint(trained_run["checkpoint"])["CCRDataModule"]["tokenizer"]
    restored = tokenizer_from_state(state)
    datamodule = load_datamodule(trained_run["checkpoint"])
    captions = read_caption_file(trained_run["root"] / "synthetic" / "TextData" / "synthtest_de.caption.txt")
    texts = ["ein Hund läuft", *captions.texts[:20]]
    assert restored(texts)["input_ids"] == datamodule.tokenizer(texts)["input_ids"]
    assert restored.pad_token_id == datamodule.tokenizer.pad_token_id
    before = datamodule.split("test")
    datamodule.load_state_dict({"tokenizer": state})  # the same tokenizer: the tokenised splits are kept
    assert datamodule.split("test") is before
    other = train_wordpiece(["entirely different words here"], vocab_size=40)
    datamodule.load_state_dict({"tokenizer": tokenizer_state(other)})
    assert len(datamodule.tokenizer) == len(other) and datamodule.split("test") is not before


def meta_queries(embedded: Path) -> int:
    """The number of text queries ``leccr embed`` wrote."""
    return json.loads((embedded / "embeddings.json").read_text(encoding="utf-8"))["counts"]["queries"]


def test_index_refuses_a_view_of_several_vectors_per_item(tmp_path):
    from leccr_lightning.data.features import write_bigfile

    write_bigfile(tmp_path / "gallery" / "slots", ["a", "b"], np.zeros((2, 8), dtype=np.float32))
    views = {"gallery": {"slots": {"shape": [2, 2, 4], "path": "gallery/slots"}}}
    (tmp_path / "embeddings.json").write_text(json.dumps({"views": views}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"view slots of .*slots has shape \[2, 2, 4\]"):
        main(["index", "--embeddings", str(tmp_path / "gallery" / "slots"), "--out", str(tmp_path / "idx")])
