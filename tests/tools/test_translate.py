"""``leccr translate``: official ids, tags and names, language codes per model family, resume, sacreBLEU scores, and
``leccr fit`` on the translated collection."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from leccr_lightning.cli import main
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.visualsearch import read_caption_file, write_caption_file
from leccr_lightning.tools.translate import language_setup, output_tag, read_partial, retagged_id, translation_scores
from tests.helpers import experiment
from tests.tools.conftest import write_marian_tokenizer

MT_FILES = {
    "target": "synthtrain_google_enc2de.caption.txt",
    "back": "synthtrain_google_enc2de2enc.caption.txt",
    "val": "synthval_google_de2enc.caption.txt",
    "test": "synthtest_google_de2enc.caption.txt",
}


@pytest.fixture
def collection(mt_collection, tmp_path) -> tuple[Path, dict[str, Path]]:
    """A copy of the collection without its machine translations (kept aside as references)."""
    root = tmp_path / "root"
    shutil.copytree(mt_collection, root)
    text = root / "synthetic" / "TextData"
    references = {}
    for role, name in MT_FILES.items():
        references[role] = tmp_path / f"reference_{name}"
        shutil.move(text / name, references[role])
    return root, references


def test_output_tags_follow_the_input_tag():
    assert output_tag("enc", "de") == "enc2de"
    assert output_tag("enc2de", "de") == "enc2de2enc"
    assert output_tag("de", "de") == "de2enc"
    with pytest.raises(ValueError, match="'fr'.*'de'"):
        output_tag("fr", "de")
    assert retagged_id("1000092795.jpg#enc#3", "enc2de") == "1000092795.jpg#enc2de#3"


def test_language_codes_of_each_model_family(mt_collection, tmp_path):
    from transformers import M2M100Tokenizer, MarianTokenizer, NllbTokenizer

    corpus = [t for t in read_caption_file(mt_collection / "synthetic/TextData/synthtrain_enc.caption.txt").texts]
    write_marian_tokenizer(tmp_path / "pair", corpus)
    assert language_setup(MarianTokenizer.from_pretrained(tmp_path / "pair"), "en", "de").convention == "marian"
    with pytest.raises(ValueError, match="single language pair"):
        language_setup(MarianTokenizer.from_pretrained(tmp_path / "pair"), "en", "de", target_code=">>de<<")

    vocab = write_marian_tokenizer(tmp_path / "multi", corpus, language_tokens=[">>deu<<", ">>fra<<"])
    multi = MarianTokenizer.from_pretrained(tmp_path / "multi")
    setup = language_setup(multi, "en", "de")
    assert (setup.convention, setup.prefix) == ("marian-multi", ">>deu<< ")
    assert multi(setup.prefix + "a dog").input_ids[0] == vocab.index(">>deu<<")
    with pytest.raises(ValueError, match="no target token for 'cs'.*>>deu<<, >>fra<<"):
        language_setup(multi, "en", "cs")

    spm_model = str(tmp_path / "pair" / "source.spm")
    m2m = M2M100Tokenizer(vocab_file=str(tmp_path / "pair" / "vocab.json"), spm_file=spm_model)
    setup = language_setup(m2m, "de", "en")
    assert (setup.convention, setup.source_code, setup.target_code) == ("m2m100", "de", "en")
    assert setup.forced_bos_token_id == m2m.get_lang_id("en")
    assert m2m("a dog").input_ids[0] == m2m.get_lang_id("de")

    nllb = NllbTokenizer()
    setup = language_setup(nllb, "en", "zh")
    assert (setup.convention, setup.source_code, setup.target_code) == ("nllb", "eng_Latn", "zho_Hans")
    assert setup.forced_bos_token_id == nllb.convert_tokens_to_ids("zho_Hans")
    assert nllb("a dog").input_ids[0] == nllb.convert_tokens_to_ids("eng_Latn")
    with pytest.raises(ValueError, match="no language token"):
        language_setup(nllb, "en", "de", target_code="xxx_Latn")


def test_translate_with_a_tiny_m2m100_forces_the_target_language(mt_collection, tmp_path):
    """M2M100 conventions end to end: ``src_lang`` on the tokenizer and the target code as the forced first token."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, M2M100Tokenizer

    source = mt_collection / "synthetic" / "TextData" / "synthval_de.caption.txt"
    folder = tmp_path / "m2m"
    write_marian_tokenizer(folder, list(read_caption_file(source).texts))
    tokenizer = M2M100Tokenizer(vocab_file=str(folder / "vocab.json"), spm_file=str(folder / "source.spm"))
    tokenizer.save_pretrained(folder)
    config = M2M100Config(
        vocab_size=max(tokenizer.id_to_lang_token) + 1, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(config).save_pretrained(folder)
    out = tmp_path / "out.caption.txt"
    entries = main_entries(["translate", "--model", str(folder), "--input", str(source), "--output", str(out),
                            "--max_new_tokens", "6", "--num_beams", "1"])  # fmt: skip
    setup = entries[0]["language_setup"]
    assert (setup["convention"], setup["source_code"], setup["target_code"]) == ("m2m100", "de", "en")
    assert setup["forced_bos_token_id"] == tokenizer.get_lang_id("en")
    assert len(read_caption_file(out, expected_tag="de2enc")) == len(read_caption_file(source))


def test_translate_a_collection_then_fit_on_it(collection, marian_en_de, marian_de_en, run_cli, tmp_path, capsys):
    root, references = collection
    text = root / "synthetic" / "TextData"
    main(["translate", "--model", str(marian_en_de), "--root", str(root), "--language", "de", "--batch_size", "16"])
    args = ["--root", str(root), "--language", "de", "--tasks", "back", "translated"]
    main(["translate", "--model", str(marian_de_en), *args])

    source = read_caption_file(text / "synthtrain_enc.caption.txt")
    target = read_caption_file(text / MT_FILES["target"], expected_tag="enc2de")
    assert list(target.ids) == [i.replace("#enc#", "#enc2de#") for i in source.ids]
    back = read_caption_file(text / MT_FILES["back"], expected_tag="enc2de2enc")
    assert list(back.ids) == [i.replace("#enc#", "#enc2de2enc#") for i in source.ids]
    for split in ("val", "test"):
        queries = read_caption_file(text / f"synth{split}_de.caption.txt")
        translated = read_caption_file(text / MT_FILES[split], expected_tag="de2enc")
        assert list(translated.ids) == [i.replace("#de#", "#de2enc#") for i in queries.ids]

    # the trained model's translation of each caption is close to the synthetic MT of that same caption
    reference = read_caption_file(references["target"]).as_dict()
    own = translation_scores(target.texts, [reference[i] for i in target.ids], "de")
    shifted = translation_scores(target.texts, [reference[i] for i in target.ids[1:] + target.ids[:1]], "de")
    assert own["bleu"] > 20 and own["bleu"] > 3 * shifted["bleu"], (own, shifted)

    manifest = json.loads((text / "MANIFEST.json").read_text(encoding="utf-8"))["translations"]
    assert set(manifest) == set(MT_FILES.values())
    entry = manifest[MT_FILES["target"]]
    assert entry["input"] == "synthtrain_enc.caption.txt"
    assert (entry["source_language"], entry["target_language"], entry["tag"]) == ("en", "de", "enc2de")
    assert entry["input_lines"] == entry["output_lines"] == len(source)
    assert entry["model"] == str(marian_en_de) and entry["language_setup"]["convention"] == "marian"
    assert entry["decoding"] == {"num_beams": 1, "max_new_tokens": 128, "min_new_tokens": 1, "max_input_tokens": 256}
    assert manifest[MT_FILES["val"]]["source_language"] == "de" and manifest[MT_FILES["val"]]["tag"] == "de2enc"

    extra = ["--trainer.max_epochs", "1", "--data.init_args.roles", "[source, target, back]"]
    extra += ["--data.init_args.query_roles", "[query, translated]"]
    cli = run_cli("fit", experiment("baseline"), root, tmp_path / "run", *extra)
    assert cli.trainer.current_epoch == 1
    assert "val/sumr" in cli.trainer.callback_metrics
    assert len(cli.datamodule.split("train")["train"]) == len(source)


def test_an_interrupted_translation_resumes_to_the_uninterrupted_result(collection, marian_en_de, tmp_path):
    root, _ = collection
    source = root / "synthetic" / "TextData" / "synthtrain_enc.caption.txt"
    straight, resumed = tmp_path / "straight.caption.txt", tmp_path / "resumed.caption.txt"
    common = ["translate", "--model", str(marian_en_de), "--input", str(source), "--language", "de"]
    common += ["--batch_size", "8"]
    main([*common, "--output", str(straight)])
    main([*common, "--output", str(resumed), "--max_captions", "24"])
    partial = tmp_path / "resumed.caption.txt.partial"
    assert partial.is_file() and not resumed.exists()
    assert len(partial.read_text(encoding="utf-8").splitlines()) == 1 + 24
    with partial.open("a", encoding="utf-8") as handle:  # a line cut mid-write is translated again
        handle.write('{"id": "imgtr000099#enc2de#0", "te')
    with pytest.raises(FileExistsError, match="half-written output .*resumed.caption.txt.partial.*--resume"):
        main([*common, "--output", str(resumed)])
    main([*common, "--output", str(resumed), "--resume"])
    assert not partial.exists()
    assert resumed.read_text(encoding="utf-8") == straight.read_text(encoding="utf-8")
    with pytest.raises(FileExistsError, match="straight.caption.txt exists: pass --overwrite"):
        main([*common, "--output", str(straight)])
    main([*common, "--output", str(tmp_path / "other.caption.txt"), "--max_captions", "8"])
    with pytest.raises(ValueError, match="other settings"):
        main([*common, "--output", str(tmp_path / "other.caption.txt"), "--resume", "--max_new_tokens", "9"])


def test_reference_prints_bleu_and_chrf(collection, marian_en_de, tmp_path, capsys):
    root, references = collection
    source = root / "synthetic" / "TextData" / "synthtrain_enc.caption.txt"
    out = tmp_path / "out.caption.txt"
    args = ["--input", str(source), "--output", str(out), "--language", "de", "--reference", str(references["target"])]
    entries = main_entries(["translate", "--model", str(marian_en_de), *args])
    printed = capsys.readouterr().out
    scores = entries[0]["scores"]
    assert f"BLEU {scores['bleu']:.2f}" in printed and f"chrF {scores['chrf']:.2f}" in printed
    assert scores["sentences"] == len(read_caption_file(source))
    assert "nrefs:1" in scores["bleu_signature"] and 20 < scores["bleu"] < 100
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text(encoding="utf-8"))
    assert manifest["translations"]["out.caption.txt"]["scores"] == scores

    same = ["--hypotheses", str(references["target"]), "--reference", str(references["target"]), "--language", "de"]
    main(["translate", *same])
    assert "BLEU 100.00" in capsys.readouterr().out


def main_entries(argv: list[str]) -> list[dict]:
    """The manifest entries ``leccr translate`` returns (``main`` itself returns nothing)."""
    from leccr_lightning.tools import load_tool

    return load_tool(argv[0])(argv[1:])


def test_identity_translation_of_real_multi30k_against_its_human_german(shared_data, capsys):
    """Wiring check on real text: English 'translated' by the identity against the human German of Multi30K task 1
    (test 2016, 1,000 lines) scores far below the German against itself."""
    raw = shared_data / "multi30k" / "task1" / "raw"
    english, german = raw / "test_2016_flickr.en.gz", raw / "test_2016_flickr.de.gz"
    entries = main_entries(["translate", "--hypotheses", str(english), "--reference", str(german), "--language", "de"])
    scores = entries[0]["scores"]
    printed = capsys.readouterr().out
    assert f"BLEU {scores['bleu']:.2f}" in printed and "(1000 sentences)" in printed
    assert 0 < scores["bleu"] < 10 and 10 < scores["chrf"] < 40, scores
    with gzip.open(german, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert translation_scores(lines, lines, "de")["chrf"] == pytest.approx(100.0)


def test_bad_inputs_name_the_file_and_caption(tmp_path, marian_en_de):
    mixed = tmp_path / "mixed.caption.txt"
    write_caption_file(mixed, [("a#enc#0", "a dog"), ("b#de#0", "ein hund")])
    with pytest.raises(DataFormatError, match=r"mixed.caption.txt.*b#de#0.*tag 'de' differs"):
        main(["translate", "--model", str(marian_en_de), "--input", str(mixed), "--output", str(tmp_path / "o")])
    english = tmp_path / "english.caption.txt"
    write_caption_file(english, [("a#enc#0", "a dog")])
    with pytest.raises(ValueError, match="English captions .*give --language"):
        main(["translate", "--model", str(marian_en_de), "--input", str(english), "--output", str(tmp_path / "o")])
    with pytest.raises(OSError, match="nowhere.*local seq2seq model folder"):
        main(["translate", "--model", str(tmp_path / "nowhere"), "--input", str(english), "--language", "de",
              "--output", str(tmp_path / "o")])  # fmt: skip


def test_a_cut_partial_translation_line_in_the_middle_is_an_error(tmp_path):
    partial = tmp_path / "x.caption.txt.partial"
    partial.write_text('{"settings": {}}\n{"id": "a#enc2de#0", "te\n{"id": "b#enc2de#0", "text": "x"}\n')
    with pytest.raises(DataFormatError, match=r"x.caption.txt.partial.*2.*not a JSON record"):
        read_partial(partial, {}, {"a#enc2de#0", "b#enc2de#0"})
