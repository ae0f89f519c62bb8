"""CLIP BPE tokenizer: identical ids to the reference fixture, truncation, decoding."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from sleeplm.model.tokenizer import EOT_TOKEN_ID, SOT_TOKEN_ID, ClipTokenizer, get_tokenizer

DATA = Path(__file__).parent / "data"


def test_vocabulary_file_is_open_clips():
    blob = resources.files("sleeplm.model").joinpath("vocab", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    assert hashlib.md5(blob).hexdigest() == "933b7abbbbde62c36f02f0e6ccde464f"


FIXTURE_FILES = sorted(p for p in DATA.glob("fixture_*.pt") if not p.stem.endswith("_beam_eos"))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_ids_equal_the_reference_fixture(path):
    fixture = torch.load(path, weights_only=True)
    tok = get_tokenizer(fixture["config"]["text_cfg"]["context_length"])
    assert torch.equal(tok(fixture["captions"]), fixture["text_ids"])
    assert (tok.sot_token_id, tok.eot_token_id, tok.pad_token_id, tok.vocab_size) == (49406, 49407, 0, 49408)


def test_default_context_and_known_ids():
    tok = get_tokenizer()
    ids = tok("Stage N2 sleep.")
    assert ids.shape == (1, 256) and ids.dtype == torch.long
    # <sot> stage n 2 sleep . <eot>, then zero padding (ids checked against the fixture's vocabulary)
    assert ids[0, :7].tolist() == [SOT_TOKEN_ID, 2170, 333, 273, 3840, 269, EOT_TOKEN_ID]
    assert (ids[0, 7:] == 0).all()


def test_cleaning_is_case_html_and_whitespace_insensitive():
    tok = get_tokenizer(32)
    assert torch.equal(tok("  Heart   RATE &amp; rhythm "), tok("heart rate & rhythm"))


def test_truncation_keeps_start_and_ends_with_end_token():
    tok = ClipTokenizer(context_length=8)
    ids = tok(["one two three four five six seven eight nine ten"])[0]
    assert ids[0] == SOT_TOKEN_ID and ids[-1] == EOT_TOKEN_ID and (ids != 0).all()
    assert tok(["a b"], context_length=12).shape == (1, 12)


def test_decode_drops_special_and_padding_ids():
    tok = get_tokenizer()
    ids = tok(["Regular heart rhythm, no arousal."])[0]
    assert tok.decode(ids) == "regular heart rhythm , no arousal ."
    assert tok.decode([SOT_TOKEN_ID, 0, 0, EOT_TOKEN_ID]) == ""
    assert tok.decode(torch.tensor([SOT_TOKEN_ID, *tok.encode("Café ünïcode"), EOT_TOKEN_ID])) == "café ünïcode"


def test_ids_and_decoding_equal_the_reference_tokenizer_on_varied_text():
    """Ids and decoded text written by the reference SimpleTokenizer (unicode, HTML, '!' = id 0, truncation)."""
    stored = json.loads((DATA / "fixture_tokenizer_reference.json").read_text(encoding="utf-8"))
    tok = get_tokenizer(256)
    assert len(stored["cases"]) >= 15
    for case in stored["cases"]:
        ids = tok(case["text"])[0]
        assert ids[: len(case["ids"])].tolist() == case["ids"], case["text"]
        assert (ids[len(case["ids"]) :] == 0).all()
        assert tok.decode(case["ids"]) == case["decoded"]
