"""``leccr index``: a faiss inner-product index over one embedding view written by ``leccr embed``, saved with its ids.

``--kind flat`` (default) is exact (``IndexFlatIP``: the method's own dot-product scores). For galleries in the
millions, ``ivf`` (``IVF<nlist>,Flat``, ``nprobe`` lists searched) and ``hnsw`` (``HNSW<m>``, ``ef_search``) are
approximate, and ``--factory`` takes any faiss ``index_factory`` string (e.g. ``IVF4096,PQ64``); for those the
recall@10 against the exact search is measured and printed at build time, on the split's own text queries when
``leccr embed`` wrote them beside the view (else on a sample of the indexed vectors). ``--out`` receives
``index.faiss``, ``ids.txt`` and ``index.json`` (kind, parameters, source view, recall).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from leccr_lightning.tools.embed import embeddings_manifest, read_embeddings

KINDS = ("flat", "ivf", "hnsw")


def default_nlist(count: int) -> int:
    """IVF list count: about 4 sqrt(N), with at least 39 training points per list (faiss' own minimum)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39))


def factory_string(kind: str, count: int, nlist: int | None = None, hnsw_m: int = 32) -> str:
    """The faiss ``index_factory`` description of a kind (``flat``, ``ivf``, ``hnsw``)."""
    if kind == "flat":
        return "Flat"
    if kind == "ivf":
        return f"IVF{nlist or default_nlist(count)},Flat"
    if kind == "hnsw":
        return f"HNSW{hnsw_m}"
    raise ValueError(f"unknown index kind {kind!r}; expected one of {KINDS} (or give --factory)")


def apply_search_parameters(index, parameters: dict[str, float]) -> dict[str, float]:
    """Set the search-time parameters that apply to ``index`` (``nprobe`` of IVF, ``efSearch`` of HNSW); returns
    those that were set."""
    import faiss

    applies = {
        "nprobe": faiss.try_extract_index_ivf(index) is not None,
        "efSearch": hasattr(faiss.downcast_index(index), "hnsw"),
    }
    applied = {name: value for name, value in parameters.items() if applies.get(name, False)}
    space = faiss.ParameterSpace()
    for name, value in applied.items():
        space.set_index_parameter(index, name, value)
    return applied


def build_index(
    embeddings: np.ndarray,
    kind: str = "flat",
    factory: str | None = None,
    nlist: int | None = None,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_construction: int = 80,
    ef_search: int = 128,
    seed: int = 0,
):
    """A trained inner-product faiss index holding ``embeddings`` [N, D] (row i = id i), with its search parameters
    set; returns ``(index, description, search_parameters)``."""
    import faiss

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"expected a non-empty [N, D] embedding matrix, got shape {embeddings.shape}")
    description = factory or factory_string(kind, len(embeddings), nlist, hnsw_m)
    index = faiss.index_factory(embeddings.shape[1], description, faiss.METRIC_INNER_PRODUCT)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if hnsw is not None:
        hnsw.efConstruction = ef_construction
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.seed = seed
        try:
            index.train(embeddings)
        except RuntimeError as err:
            raise ValueError(f"faiss could not train '{description}' on {len(embeddings)} vectors: {err}") from err
    index.add(embeddings)
    parameters = apply_search_parameters(index, {"nprobe": nprobe, "efSearch": ef_search})
    return index, description, parameters


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` largest inner products of each query (exact, ``IndexFlatIP``)."""
    import faiss

    exact = faiss.IndexFlatIP(embeddings.shape[1])
    exact.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall_against_exact(index, embeddings: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k (faiss' "k-recall@k"), in [0, 1]."""
    k = min(k, len(embeddings))
    truth = exact_top_k(embeddings, queries, k)
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]
    hits = [len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found, strict=True)]
    return float(np.mean(hits)) / k


def recall_queries(view: Path, dim: int, sample: int, seed: int, embeddings: np.ndarray) -> tuple[np.ndarray, str]:
    """Queries for the recall check: the split's text queries (``queries/<query view>`` of the same ``leccr embed``
    output) when they exist with dimension ``dim``, else ``sample`` rows of the indexed vectors."""
    manifest = embeddings_manifest(view)
    query_view = (manifest.get("dot_views") or ["query"])[0]
    spec = manifest.get("views", {}).get("queries", {}).get(query_view)
    if spec is not None and spec["shape"][1:] == [dim]:
        root = next(p for p in view.resolve().parents if (p / "embeddings.json").is_file())
        _, queries = read_embeddings(root / spec["path"])
        return queries[:sample], f"{min(sample, len(queries))} text queries ({spec['path']})"
    rows = np.random.default_rng(seed).choice(len(embeddings), min(sample, len(embeddings)), replace=False)
    return embeddings[np.sort(rows)], f"{len(rows)} indexed vectors"


def save_index(index, ids: list[str], out: Path, meta: dict) -> None:
    """``index.faiss``, ``ids.txt`` (row order) and ``index.json`` under ``out``."""
    import faiss

    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "index.faiss"))
    (out / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    (out / "index.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def load_index(folder: str | Path):
    """``(index, ids, meta)`` of a folder written by ``leccr index`` (search parameters re-applied)."""
    import faiss

    folder = Path(folder)
    for name in ("index.faiss", "ids.txt", "index.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"index folder {folder} lacks {name} (write it with `leccr index`)")
    meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    index = faiss.read_index(str(folder / "index.faiss"))
    apply_search_parameters(index, meta["search_parameters"])
    ids = (folder / "ids.txt").read_text(encoding="utf-8").splitlines()
    if len(ids) != index.ntotal:
        raise ValueError(f"{folder}: ids.txt has {len(ids)} ids but the index holds {index.ntotal} vectors")
    return index, ids, meta


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr index", description=__doc__)
    parser.add_argument("--embeddings", required=True, help="one view of leccr embed: a BigFile folder or a .npy")
    parser.add_argument("--out", required=True, help="output folder (index.faiss, ids.txt, index.json)")
    parser.add_argument("--kind", default="flat", choices=KINDS, help="exact flat, or approximate ivf / hnsw")
    parser.add_argument("--factory", default=None, help="any faiss index_factory string (overrides --kind)")
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists; null: about 4 sqrt(N)")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    parser.add_argument("--hnsw_m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef_construction", type=int, default=80, help="HNSW candidate list size while adding")
    parser.add_argument("--ef_search", type=int, default=128, help="HNSW candidate list size while searching")
    parser.add_argument("--recall_sample", type=int, default=1000, help="queries of the recall@10 check")
    parser.add_argument("--seed", type=int, default=0, help="seed of IVF training and of the recall sample")
    return parser


def index_main(argv: list[str]) -> dict:
    """Parse ``argv``, build and save the index; returns ``index.json``'s content."""
    cfg = build_parser().parse_args(argv)
    view = Path(cfg.embeddings)
    ids, embeddings = read_embeddings(view)
    manifest = embeddings_manifest(view)
    for role in manifest.get("views", {}).values():
        for name, spec in role.items():
            if Path(spec["path"]).parts[-2:] == view.parts[-2:] and len(spec["shape"]) != 2:
                raise ValueError(
                    f"view {name} of {view} has shape {spec['shape']}: an index holds one vector per id ([N, D] views)"
                )
    index, description, parameters = build_index(
        embeddings,
        cfg.kind,
        cfg.factory,
        cfg.nlist,
        cfg.nprobe,
        cfg.hnsw_m,
        cfg.ef_construction,
        cfg.ef_search,
        cfg.seed,
    )
    role = view.parent.name
    meta = {
        "factory": description,
        "metric": "inner_product",
        "count": len(ids),
        "dim": int(embeddings.shape[1]),
        "search_parameters": parameters,
        "embeddings": str(view.resolve()),
        "role": role,
        "view": view.stem if view.suffix == ".npy" else view.name,
        "checkpoint": manifest.get("checkpoint"),
        "split": manifest.get("split"),
    }
    print(f"indexed {len(ids)} x {embeddings.shape[1]} {role} vectors of {view} with faiss '{description}'")
    if description != "Flat":
        queries, source = recall_queries(view, embeddings.shape[1], cfg.recall_sample, cfg.seed, embeddings)
        meta["recall_at_10"] = recall_against_exact(index, embeddings, queries, 10)
        meta["recall_queries"] = source
        print(f"recall@10 against exact search: {meta['recall_at_10']:.4f} on {source} ({parameters})")
    save_index(index, ids, Path(cfg.out), meta)
    print(f"wrote {Path(cfg.out) / 'index.faiss'}")
    return meta
