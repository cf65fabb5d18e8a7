"""Caption files, caption ids and id lists of the official layout; every malformed line is a clear error."""

from __future__ import annotations

import gzip

import pytest

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.visualsearch import parse_caption_id, read_caption_file, read_id_list, tag_language


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_caption_id_grammar_and_tags():
    cid = parse_caption_id("video9770#enc2zh#0")
    assert (cid.visual_id, cid.tag, cid.index) == ("video9770", "enc2zh", "0")
    assert cid.with_tag("enc2zh2enc") == "video9770#enc2zh2enc#0"
    assert parse_caption_id("1000092795.jpg#enc#3").visual_id == "1000092795"
    assert [tag_language(t) for t in ("enc", "enc2de", "enc2de2enc", "de", "de2enc", "zhc2en")] == [
        "en",
        "de",
        "en",
        "de",
        "en",
        "en",
    ]
    with pytest.raises(ValueError, match="unknown caption tag 'xx'"):
        parse_caption_id("v1#xx#0")
    with pytest.raises(ValueError, match="not of the form"):
        parse_caption_id("v1#enc")


def test_read_caption_file_splits_on_first_space_and_keeps_order(tmp_path):
    path = write(tmp_path / "a.caption.txt", "v2#enc#0 a dog  runs\nv1#enc#0 ein Hund\n\nv1#enc#1 ünïcödé 中文\n")
    captions = read_caption_file(path, expected_tag="enc")
    assert captions.ids == ("v2#enc#0", "v1#enc#0", "v1#enc#1")
    assert captions.texts[0] == "a dog  runs"
    assert captions.unique_visual_ids() == ["v2", "v1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("v1#enc#0 fine\nno_id_here text\n", "line 2: no caption id"),
        ("v1#enc#0 fine\nv1#enc#1 \n", "line 2: caption v1#enc#1 has an empty text"),
        ("v1#enc#0 fine\nv1#enc#0 again\n", "line 2: caption id v1#enc#0 repeats line 1"),
        ("v1#de#0 falsch\n", "line 1: caption v1#de#0 has tag 'de', expected 'enc'"),
        ("v1#qq#0 what\n", "line 1: unknown caption tag 'qq'"),
        (b"v1#enc#0 fine\nv1#enc#1 caf\xe9\n", "line 2: bytes that are not UTF-8"),
    ],
)
def test_malformed_caption_lines_name_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "bad.caption.txt", content)
    with pytest.raises(DataFormatError) as info:
        read_caption_file(path, expected_tag="enc")
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_id_list_strips_suffix_and_rejects_repeats(tmp_path):
    assert read_id_list(write(tmp_path / "ids.txt", "a.jpg\nb\n\nc image_c.jpg\n")) == ["a", "b", "c"]
    with pytest.raises(DataFormatError, match="line 3: visual id a repeats line 1"):
        read_id_list(write(tmp_path / "dup.txt", "a\nb\na\n"))


def test_real_multi30k_text_reads_and_tokenises(shared_data, tmp_path):
    """The real Multi30K German test captions survive the caption-file round trip and the tokenizer."""
    from leccr_lightning.data.text import train_wordpiece
    from leccr_lightning.data.visualsearch import write_caption_file

    raw = shared_data / "multi30k" / "task1"
    lines = gzip.decompress((raw / "raw" / "test_2016_flickr.de.gz").read_bytes()).decode("utf-8").splitlines()
    images = (raw / "image_splits" / "test_2016_flickr.txt").read_text().split()
    assert len(lines) == len(images) == 1000
    path = tmp_path / "multi30ktest_de_2016.caption.txt"
    write_caption_file(path, [(f"{img}#de#0", text) for img, text in zip(images, lines, strict=True)])
    captions = read_caption_file(path, expected_tag="de")
    assert len(captions) == 1000 and captions.parsed[0].visual_id == images[0].removesuffix(".jpg")
    tokenizer = train_wordpiece(captions.texts, vocab_size=800)
    encoded = tokenizer(list(captions.texts[:50]))["input_ids"]
    unk = tokenizer.unk_token_id
    assert sum(t == unk for ids in encoded for t in ids) == 0
    assert any("ü" in tokenizer.decode(ids) or "ä" in tokenizer.decode(ids) for ids in encoded)
