"""``leccr translate``: machine-translate caption files with a local Hugging Face seq2seq model into the official files.

Any ``AutoModelForSeq2SeqLM`` from a local folder (MarianMT opus-mt, NLLB-200, M2M100; nothing is downloaded). Jobs on a
collection (``--root``, ``--layout``, ``--language xx``; file names from ``data/layouts.py``, ccr_methods §1.1-§1.2):

* ``target``: the training English ``<v>#enc#k`` into ``<v>#enc2xx#k`` (``<coll>train_google_enc2xx``), en->xx model;
* ``back``: that MT back into English, ``<v>#enc2xx2enc#k`` (``..._enc2xx2enc``, NRCCR), xx->en model;
* ``translated``: the human val/test queries ``<v>#xx#k`` into ``<v>#xx2enc#k`` (``..._google_xx2enc``,
  translate-test), xx->en model.

``--input FILE --output FILE`` translates any caption file (the output tag follows from the input tag). Captions are
sorted by token length and batched; each finished batch is appended to ``<output>.partial``, so an interrupted run
continues with ``--resume``; the final file is written in the input's line order and described in ``MANIFEST.json``
beside it (model, languages, decoding settings, line counts). ``--reference FILE`` prints sacreBLEU BLEU and chrF of
the translation; ``--hypotheses FILE --reference FILE`` scores an existing translation without a model.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from jsonargparse import ArgumentParser

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.layouts import LAYOUTS
from leccr_lightning.data.visualsearch import (
    TARGET_LANGUAGES,
    CaptionFile,
    parse_caption_id,
    read_caption_file,
    tag_language,
    write_caption_file,
)

TASKS = ("target", "back", "translated")
NLLB_CODES = {
    "en": "eng_Latn",
    "de": "deu_Latn",
    "fr": "fra_Latn",
    "cs": "ces_Latn",
    "ja": "jpn_Jpan",
    "zh": "zho_Hans",
}
"""FLORES-200 codes of NLLB-200 for the languages of the CCR releases."""
MARIAN_CODE_TOKENS = {
    "en": (">>en<<", ">>eng<<"),
    "de": (">>de<<", ">>deu<<"),
    "fr": (">>fr<<", ">>fra<<"),
    "cs": (">>cs<<", ">>ces<<"),
    "ja": (">>ja<<", ">>jpn<<"),
    "zh": (">>zh<<", ">>cmn_Hans<<", ">>zho_Hans<<", ">>cmn<<", ">>zho<<"),
}
"""Target-language tokens of multi-target opus-mt models, in order of preference (ISO 639-1, then 639-3 forms)."""
BLEU_TOKENIZE = {"ja": "char"}
"""sacreBLEU tokenisation where its language default needs an extra package (``ja-mecab``)."""
PARTIAL_SUFFIX = ".partial"


# --- ids, tags and jobs -------------------------------------------------------------------------------------------
def output_tag(input_tag: str, language: str) -> str:
    """The tag of a translation of ``input_tag`` captions: ``enc`` -> ``enc2xx``, ``enc2xx`` -> ``enc2xx2enc``,
    ``xx`` -> ``xx2enc`` (``language`` = xx, the collection's target language)."""
    if input_tag == "enc":
        return f"enc2{language}"
    if input_tag in (f"enc2{language}", language):
        return f"{input_tag}2enc"
    raise ValueError(
        f"cannot translate captions tagged {input_tag!r} for target language {language!r}: expected 'enc' "
        f"(English -> {language}), 'enc2{language}' (back-translation) or '{language}' (translate-test)"
    )


def retagged_id(cap_id: str, tag: str) -> str:
    """``<visual_id>#<tag>#<k>`` with the tag replaced (the visual id kept exactly as written, ``.jpg`` included)."""
    raw_visual, _, index = cap_id.split("#")
    return f"{raw_visual}#{tag}#{index}"


@dataclass(frozen=True)
class Job:
    """One caption file to translate: ``source`` -> ``target`` language, output ids tagged ``tag``."""

    input: Path
    output: Path
    source: str
    target: str
    tag: str


def job_for(input_path: Path, output_path: Path, language: str | None) -> Job:
    """The job translating one caption file; its tags give the direction (``language`` needed for ``enc`` input)."""
    captions = read_input(input_path)
    input_tag = captions.parsed[0].tag
    source = tag_language(input_tag)
    if language is None:
        if source == "en":
            raise ValueError(
                f"{input_path} holds English captions ({input_tag!r}): give --language, the target language"
            )
        language = source
    tag = output_tag(input_tag, language)
    return Job(input_path, output_path, source, tag_language(tag), tag)


def collection_jobs(collection_dir: Path, layout: str, language: str, tasks: Sequence[str]) -> list[Job]:
    """The jobs of ``tasks`` on a collection, with the official file names of ``layout`` for ``language``."""
    names = LAYOUTS[layout].resolve(language)
    text = collection_dir / "TextData"
    pairs = {
        "target": [(names["train"]["source"], names["train"]["target"])],
        "back": [(names["train"]["target"], names["train"]["back"])],
        "translated": [(names[split]["query"], names[split]["translated"]) for split in ("val", "test")],
    }
    jobs = []
    for task in tasks:
        if task not in pairs:
            raise ValueError(f"unknown translation task {task!r}; expected one of {TASKS}")
        jobs += [job_for(text / source, text / target, language) for source, target in pairs[task]]
    return jobs


def read_input(path: Path) -> CaptionFile:
    """A caption file whose captions all carry one tag (an error names the first caption with another)."""
    captions = read_caption_file(path)
    first = captions.parsed[0].tag
    for cap_id, parsed in zip(captions.ids, captions.parsed, strict=True):
        if parsed.tag != first:
            raise DataFormatError(path, cap_id, f"tag {parsed.tag!r} differs from the first caption's {first!r}")
    return captions


# --- language codes -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LanguageSetup:
    """How a model is told the languages: ``convention`` (``marian``, ``marian-multi``, ``m2m100``, ``nllb``), the
    tokenizer's ``src_lang`` code, a token prefixed to every source text, and the forced first target token."""

    convention: str
    source_code: str | None = None
    target_code: str | None = None
    prefix: str = ""
    forced_bos_token_id: int | None = None


def language_setup(
    tokenizer, source: str, target: str, source_code: str | None = None, target_code: str | None = None
) -> LanguageSetup:
    """The language codes of a translation ``source`` -> ``target`` (ISO 639-1) as the model family expects them.

    NLLB-200 (FLORES-200 codes such as ``deu_Latn`` in the vocabulary): ``tokenizer.src_lang`` and a forced
    target-code BOS. M2M100 (``__de__`` tokens): the same with ISO codes. Multi-target MarianMT (``>>xx<<`` tokens):
    the target token prefixed to each source text. A MarianMT model without such tokens is one language pair.
    ``source_code``/``target_code`` override the codes; this sets ``tokenizer.src_lang`` where the family has one.
    """
    if _has_token(tokenizer, NLLB_CODES["en"]):
        source_code = source_code or NLLB_CODES[source]
        target_code = target_code or NLLB_CODES[target]
        _require_tokens(tokenizer, "NLLB", source_code, target_code)
        tokenizer.src_lang = source_code
        return LanguageSetup("nllb", source_code, target_code, "", tokenizer.convert_tokens_to_ids(target_code))
    if _has_token(tokenizer, "__en__"):
        source_code, target_code = source_code or source, target_code or target
        _require_tokens(tokenizer, "M2M100", f"__{source_code}__", f"__{target_code}__")
        tokenizer.src_lang = source_code
        forced = tokenizer.convert_tokens_to_ids(f"__{target_code}__")
        return LanguageSetup("m2m100", source_code, target_code, "", forced)
    codes = sorted(token for token in tokenizer.get_vocab() if token.startswith(">>") and token.endswith("<<"))
    if codes:
        if target_code is None:
            target_code = next((t for t in MARIAN_CODE_TOKENS.get(target, ()) if t in codes), None)
        if target_code not in codes:
            raise ValueError(
                f"this multi-target MarianMT model has no target token for {target!r}; pass --target_code, one of "
                f"{', '.join(codes[:40])}"
            )
        return LanguageSetup("marian-multi", None, target_code, f"{target_code} ")
    if source_code or target_code:
        raise ValueError("this MarianMT model is a single language pair: it takes no --source_code/--target_code")
    return LanguageSetup("marian")


def _has_token(tokenizer, token: str) -> bool:
    """Whether ``token`` is one token of the vocabulary (language tokens may live among the added tokens)."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def _require_tokens(tokenizer, family: str, *tokens: str) -> None:
    missing = [token for token in tokens if not _has_token(tokenizer, token)]
    if missing:
        raise ValueError(f"the {family} tokenizer has no language token {missing}; pass --source_code/--target_code")


# --- the model ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoding:
    """Generation settings (greedy for ``num_beams`` 1, beam search otherwise; never sampling)."""

    num_beams: int
    max_new_tokens: int
    min_new_tokens: int
    max_input_tokens: int


class Translator:
    """A local seq2seq model and its tokenizer, translating batches of sentences."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.model_path = model_path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                model_path, local_files_only=True, dtype=getattr(torch, dtype)
            )
        except OSError as err:
            raise OSError(
                f"--model {model_path!r} is neither a local seq2seq model folder nor in the local Hugging Face cache "
                "(nothing is downloaded at run time)"
            ) from err
        self.model.to(device).eval()
        self.device = device

    @property
    def default_beams(self) -> int:
        """The model's own beam count (its generation config)."""
        return int(getattr(self.model.generation_config, "num_beams", 1) or 1)

    def token_lengths(self, texts: Sequence[str], setup: LanguageSetup) -> list[int]:
        """Source length in tokens of every text (for sorting)."""
        encoded = self.tokenizer([setup.prefix + t for t in texts], add_special_tokens=True)["input_ids"]
        return [len(ids) for ids in encoded]

    def translate(self, texts: Sequence[str], setup: LanguageSetup, decoding: Decoding) -> list[str]:
        """The translations of one batch, whitespace-normalised."""
        import torch

        inputs = self.tokenizer(
            [setup.prefix + t for t in texts],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=decoding.max_input_tokens,
        ).to(self.device)
        forced = {} if setup.forced_bos_token_id is None else {"forced_bos_token_id": setup.forced_bos_token_id}
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs,
                num_beams=decoding.num_beams,
                max_new_tokens=decoding.max_new_tokens,
                min_new_tokens=decoding.min_new_tokens,
                do_sample=False,
                **forced,
            )
        return [" ".join(text.split()) for text in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]


# --- one file, resumable ------------------------------------------------------------------------------------------
def partial_path(output: Path) -> Path:
    return output.with_name(output.name + PARTIAL_SUFFIX)


def read_partial(path: Path, settings: dict, expected_ids: set[str]) -> dict[str, str]:
    """Finished translations of an interrupted run (a last line cut mid-write is dropped); the run must have used
    the same settings."""
    lines = path.read_bytes().split(b"\n")
    complete = lines[:-1]
    if not complete:
        return {}
    records = []
    for line_no, line in enumerate(complete, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataFormatError(
                path, line_no, f"not a JSON record ({err.msg}): delete the file to start again"
            ) from err
    header = records[0]
    if header.get("settings") != settings:
        raise ValueError(
            f"{path} was written with other settings ({header.get('settings')}); now {settings}: delete it or pass "
            "--overwrite to start again"
        )
    done = {}
    for line_no, record in enumerate(records[1:], start=2):
        if record["id"] not in expected_ids:
            raise DataFormatError(path, line_no, f"caption {record['id']} is not a translation of the input")
        done[record["id"]] = record["text"]
    return done


def translate_file(
    job: Job,
    translator: Translator,
    decoding: Decoding,
    batch_size: int,
    setup: LanguageSetup,
    resume: bool = False,
    overwrite: bool = False,
    max_captions: int | None = None,
) -> dict | None:
    """Translate ``job.input`` into ``job.output``; returns the manifest entry, or ``None`` when the run stopped
    after ``max_captions`` new captions (the ``.partial`` file stays for ``--resume``)."""
    from tqdm import tqdm

    partial = partial_path(job.output)
    if job.output.exists() and not overwrite:
        if resume:
            print(f"kept {job.output} (already translated)")
            return None
        raise FileExistsError(f"{job.output} exists: pass --overwrite to translate again, or --resume to keep it")
    if partial.exists() and not (resume or overwrite):
        raise FileExistsError(
            f"half-written output {partial}: pass --resume to continue it, or --overwrite to start again"
        )
    captions = read_input(job.input)
    out_ids = [retagged_id(cap_id, job.tag) for cap_id in captions.ids]
    settings = {"model": translator.model_path, "language_setup": asdict(setup), "decoding": asdict(decoding)}
    done = read_partial(partial, settings, set(out_ids)) if partial.exists() and not overwrite else {}
    lengths = translator.token_lengths(captions.texts, setup)
    order = sorted((i for i in range(len(out_ids)) if out_ids[i] not in done), key=lambda i: -lengths[i])
    if max_captions is not None:
        order = order[:max_captions]
    job.output.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if done else "w"
    with partial.open(mode, encoding="utf-8") as handle:
        if not done:
            handle.write(json.dumps({"settings": settings}, ensure_ascii=False) + "\n")
        bar = tqdm(total=len(order), desc=job.output.name, unit="caption", file=sys.stderr)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            texts = translator.translate([captions.texts[i] for i in rows], setup, decoding)
            for row, text in zip(rows, texts, strict=True):
                if not text:
                    raise ValueError(
                        f"{job.input}: the translation of {captions.ids[row]} is empty; raise --min_new_tokens "
                        f"(now {decoding.min_new_tokens}) or check --model"
                    )
                done[out_ids[row]] = text
                handle.write(json.dumps({"id": out_ids[row], "text": text}, ensure_ascii=False) + "\n")
            handle.flush()
            bar.update(len(rows))
        bar.close()
    if len(done) < len(out_ids):
        print(
            f"stopped after {len(order)} captions: {len(done)} of {len(out_ids)} in {partial} (continue with --resume)"
        )
        return None
    staging = job.output.with_name(job.output.name + ".tmp")
    write_caption_file(staging, [(cap_id, done[cap_id]) for cap_id in out_ids])
    os.replace(staging, job.output)
    partial.unlink()
    print(f"wrote {len(out_ids)} captions to {job.output}")
    return {
        "input": job.input.name,
        "source_language": job.source,
        "target_language": job.target,
        "tag": job.tag,
        "input_lines": len(captions),
        "output_lines": len(out_ids),
        **settings,
        "batch_size": batch_size,
    }


def record_in_manifest(output: Path, entry: dict) -> Path:
    """Add (or replace) ``output``'s entry in ``MANIFEST.json`` beside it."""
    manifest = output.parent / "MANIFEST.json"
    content = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    content.setdefault("translations", {})[output.name] = entry
    manifest.write_text(json.dumps(content, indent=1, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return manifest


# --- quality ------------------------------------------------------------------------------------------------------
def read_scoring_texts(path: Path) -> tuple[list, list[str]]:
    """(alignment keys, texts) of a caption file (key = visual id and caption index) or of plain line-aligned text
    (``.gz`` allowed; key = line number)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw_lines = handle.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for line_no, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise DataFormatError(path, line_no, f"bytes that are not UTF-8 ({err.reason})") from err
    first = next((line.split(" ", 1)[0] for line in lines if line.strip()), "")
    try:
        parse_caption_id(first)
    except ValueError:
        return list(range(len(lines))), [" ".join(line.split()) for line in lines]
    captions = read_caption_file(path)
    return [(p.visual_id, p.index) for p in captions.parsed], list(captions.texts)


def aligned_texts(hypotheses: Path, references: Path) -> tuple[list[str], list[str]]:
    """Hypothesis and reference texts paired by caption (visual id + index) or by line."""
    hyp_keys, hyp_texts = read_scoring_texts(hypotheses)
    ref_keys, ref_texts = read_scoring_texts(references)
    if isinstance(hyp_keys[0], int) != isinstance(ref_keys[0], int):
        raise ValueError(f"{hypotheses} and {references}: one is a caption file and the other plain text")
    if isinstance(hyp_keys[0], int):
        if len(hyp_texts) != len(ref_texts):
            raise ValueError(
                f"{hypotheses} has {len(hyp_texts)} lines and {references} {len(ref_texts)}: plain files must be "
                "line-aligned"
            )
        return hyp_texts, ref_texts
    reference_of = dict(zip(ref_keys, ref_texts, strict=True))
    pairs = [(text, reference_of[key]) for key, text in zip(hyp_keys, hyp_texts, strict=True) if key in reference_of]
    if not pairs:
        raise ValueError(f"no caption of {hypotheses} has a reference (same visual id and index) in {references}")
    return [h for h, _ in pairs], [r for _, r in pairs]


def translation_scores(
    hypotheses: Sequence[str], references: Sequence[str], language: str, tokenize: str | None = None
) -> dict:
    """Corpus BLEU and chrF (sacreBLEU) of ``hypotheses`` against one reference each, with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    tokenize = tokenize or BLEU_TOKENIZE.get(language)
    bleu = BLEU(tokenize=tokenize) if tokenize else BLEU(trg_lang=language)
    chrf = CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "sentences": len(hypotheses),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def print_scores(scores: dict, hypotheses: Path, references: Path) -> None:
    print(f"{hypotheses} against {references} ({scores['sentences']} sentences):")
    print(f"  BLEU {scores['bleu']:.2f}  ({scores['bleu_signature']})")
    print(f"  chrF {scores['chrf']:.2f}  ({scores['chrf_signature']})")


# --- command line -------------------------------------------------------------------------------------------------
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr translate", description=__doc__)
    parser.add_argument("--model", default=None, help="local folder (or cached name) of an AutoModelForSeq2SeqLM")
    parser.add_argument("--root", default=None, help="VisualSearch root folder holding the collection")
    parser.add_argument("--collection", default=None, help="collection folder under --root; null: the layout's")
    parser.add_argument("--layout", default="synthetic", help=f"official file names: one of {', '.join(LAYOUTS)}")
    parser.add_argument("--language", default=None, choices=TARGET_LANGUAGES, help="target language xx of the data")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=["target"], help="what to translate (see above)")
    parser.add_argument("--input", default=None, help="one caption file to translate (instead of --root jobs)")
    parser.add_argument("--output", default=None, help="output caption file of --input")
    parser.add_argument("--source_code", default=None, help="source language code as the model names it")
    parser.add_argument("--target_code", default=None, help="target language code/token as the model names it")
    parser.add_argument("--batch_size", type=int, default=32, help="sentences per generate() call")
    parser.add_argument("--num_beams", type=int, default=None, help="beam size; null: the model's own")
    parser.add_argument("--max_new_tokens", type=int, default=128, help="longest translation in tokens")
    parser.add_argument("--min_new_tokens", type=int, default=1, help="shortest translation in tokens")
    parser.add_argument("--max_input_tokens", type=int, default=256, help="source texts are truncated to this")
    parser.add_argument("--device", default="cpu", help="torch device of the model (cpu, cuda, cuda:1...)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model dtype")
    parser.add_argument("--resume", action="store_true", help="continue half-written outputs, keep finished ones")
    parser.add_argument("--overwrite", action="store_true", help="translate again over existing outputs")
    parser.add_argument("--max_captions", type=int, default=None, help="stop after this many new captions per file")
    parser.add_argument("--reference", default=None, help="reference translation: print BLEU and chrF of the output")
    parser.add_argument("--hypotheses", default=None, help="score this existing translation against --reference")
    parser.add_argument("--bleu_tokenize", default=None, help="sacreBLEU tokeniser; null: the target language's")
    return parser


def translate_main(argv: list[str]) -> list[dict]:
    """Parse ``argv``; translate every job (or only score ``--hypotheses``); returns the manifest entries written."""
    cfg = build_parser().parse_args(argv)
    if cfg.hypotheses is not None:
        if cfg.reference is None or cfg.language is None:
            raise ValueError("--hypotheses needs --reference and --language (the language of both files)")
        scores = translation_scores(
            *aligned_texts(Path(cfg.hypotheses), Path(cfg.reference)), cfg.language, cfg.bleu_tokenize
        )
        print_scores(scores, Path(cfg.hypotheses), Path(cfg.reference))
        return [{"scores": scores}]
    if cfg.model is None:
        raise ValueError("--model is required to translate")
    if cfg.input is not None:
        if cfg.output is None:
            raise ValueError("--input needs --output")
        jobs = [job_for(Path(cfg.input), Path(cfg.output), cfg.language)]
    elif cfg.root is not None and cfg.language is not None:
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {cfg.layout!r}; expected one of {sorted(LAYOUTS)}")
        collection = cfg.collection or LAYOUTS[cfg.layout].collection
        jobs = collection_jobs(Path(cfg.root) / collection, cfg.layout, cfg.language, cfg.tasks)
    else:
        raise ValueError("give --root and --language (collection jobs) or --input and --output (one file)")
    if cfg.reference is not None and len(jobs) != 1:
        raise ValueError(
            f"--reference scores one output, but these options make {len(jobs)}: {[str(j.output) for j in jobs]}"
        )
    translator = Translator(cfg.model, cfg.device, cfg.dtype)
    decoding = Decoding(
        cfg.num_beams or translator.default_beams, cfg.max_new_tokens, cfg.min_new_tokens, cfg.max_input_tokens
    )
    entries = []
    for job in jobs:
        setup = language_setup(translator.tokenizer, job.source, job.target, cfg.source_code, cfg.target_code)
        entry = translate_file(
            job, translator, decoding, cfg.batch_size, setup, cfg.resume, cfg.overwrite, cfg.max_captions
        )
        if entry is None:
            continue
        if cfg.reference is not None:
            entry["scores"] = translation_scores(
                *aligned_texts(job.output, Path(cfg.reference)), job.target, cfg.bleu_tokenize
            )
            print_scores(entry["scores"], job.output, Path(cfg.reference))
        print(f"recorded in {record_in_manifest(job.output, entry)}")
        entries.append(entry)
    return entries
