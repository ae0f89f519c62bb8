"""--channel-map and --position-map on inspect, analyze, ask and serve; errors print the option to type."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from test_io import eeg_like, write_psg

from cli import main
from sleeplm.errors import ChannelMappingError
from sleeplm.io.channels import parse_channel_map, parse_position_map


def supine_then_left(n, sfreq, rng):
    """Compumedics codes: 1 supine for the first two thirds, 2 left for the last third."""
    return np.where(np.arange(n) < 2 * n // 3, 1.0, 2.0)


@pytest.fixture(scope="module")
def odd_edf(tmp_path_factory):
    """Six minutes whose labels say nothing: two EEG-like channels "Foo" and "Bar", and "Body" coded 1/2."""
    path = tmp_path_factory.mktemp("maps") / "odd.edf"
    write_psg(path, [("Foo", 128, "uV", eeg_like), ("Bar", 128, "uV", eeg_like), ("Body", 1, "", supine_then_left)],
              minutes=6)
    return path


@pytest.fixture(scope="module")
def brainnet_like_edf(tmp_path_factory):
    path = tmp_path_factory.mktemp("maps") / "brainnet.edf"
    write_psg(path, [("C3-A1", 50, "uV", eeg_like), ("O1-A1", 50, "uV", eeg_like), ("EMG1", 50, "uV", eeg_like)],
              minutes=2)
    return path


def preflight_rows(text: str) -> dict[str, str]:
    """channel -> the rest of its preflight line, from `Recording.describe()` output."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ("ECG", "ABD", "THX", "AF", "EOG_Left", "EOG_Right", "EEG_C3_A2", "EEG_C4_A1",
                                  "EMG_Chin", "POS"):
            rows[words[0]] = " ".join(words[1:])
    return rows


# ---- parsing the options -------------------------------------------------------------------------
def test_channel_map_forms(tmp_path):
    assert parse_channel_map("EEG_C3_A2=C3-A1,EMG_Chin=EMG1") == {"EEG_C3_A2": "C3-A1", "EMG_Chin": "EMG1"}
    assert parse_channel_map(" EEG_C3_A2 = EEG C3 - EEG A2 , ") == {"EEG_C3_A2": "EEG C3 - EEG A2"}
    as_json = tmp_path / "map.json"
    as_json.write_text(json.dumps({"EEG_C3_A2": "C3-A1"}))
    as_toml = tmp_path / "map.toml"
    as_toml.write_text('EEG_C3_A2 = "C3-A1"\nEMG_Chin = "EMG1"\n')
    assert parse_channel_map(str(as_json)) == {"EEG_C3_A2": "C3-A1"}
    assert parse_channel_map(str(as_toml)) == {"EEG_C3_A2": "C3-A1", "EMG_Chin": "EMG1"}
    with pytest.raises(ChannelMappingError, match="NAME=LABEL pairs"):
        parse_channel_map("EEG_C3_A2")
    with pytest.raises(ChannelMappingError, match="does not exist"):
        parse_channel_map(str(tmp_path / "missing.toml"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ChannelMappingError, match="could not be read"):
        parse_channel_map(str(broken))


def test_position_map_forms(tmp_path):
    assert parse_position_map("mesa") == "mesa"
    table = tmp_path / "codes.toml"
    table.write_text('1 = "Supine"\n2 = "Left"\n')
    assert parse_position_map(str(table)) == {1: "Supine", 2: "Left"}
    with pytest.raises(ChannelMappingError, match="unknown position map 'philips'; use one of compumedics"):
        parse_position_map("philips")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"1": "Sideways"}))
    with pytest.raises(ChannelMappingError, match="targets must be one of"):
        parse_position_map(str(wrong))


# ---- inspect -------------------------------------------------------------------------------------
def test_inspect_error_shows_the_option_to_type_with_the_files_labels(odd_edf, capsys):
    assert main(["inspect", str(odd_edf)]) == 2
    err = capsys.readouterr().err
    assert "no recognisable sleep channel" in err
    line = next(line for line in err.splitlines() if line.strip().startswith("--channel-map "))
    assert "EEG_C3_A2=<one of: Foo, Bar>" in line and "EMG_Chin=<one of: Foo, Bar>" in line
    assert "Body" not in line  # recognised as a position channel, so not offered for EEG


def test_inspect_with_a_map_naming_a_missing_label(brainnet_like_edf, capsys):
    assert main(["inspect", str(brainnet_like_edf), "--channel-map", "EEG_C3_A2=C3-A2"]) == 2
    err = capsys.readouterr().err
    assert "no such channel" in err
    assert "--channel-map EEG_C3_A2=<one of: C3-A1, O1-A1>" in err


@pytest.mark.parametrize("form", ["inline", "json", "toml"])
def test_inspect_with_a_channel_and_position_map(odd_edf, tmp_path, capsys, form):
    channel_map = {"EEG_C3_A2": "Foo", "EEG_C4_A1": "Bar", "POS": "Body"}
    spec = ",".join(f"{k}={v}" for k, v in channel_map.items())
    if form == "json":
        (tmp_path / "m.json").write_text(json.dumps(channel_map))
        spec = str(tmp_path / "m.json")
    elif form == "toml":
        (tmp_path / "m.toml").write_text("".join(f'{k} = "{v}"\n' for k, v in channel_map.items()))
        spec = str(tmp_path / "m.toml")
    assert main(["inspect", str(odd_edf), "--channel-map", spec, "--position-map", "compumedics"]) == 0
    out = capsys.readouterr().out
    rows = preflight_rows(out)
    assert rows["EEG_C3_A2"].startswith("present Foo") and rows["EEG_C4_A1"].startswith("present Bar")
    assert rows["POS"].startswith("present Body") and "Position map: compumedics" in out


def test_inspect_with_a_position_map_file(odd_edf, tmp_path, capsys):
    (tmp_path / "codes.json").write_text(json.dumps({"1": "Supine", "2": "Left"}))
    assert main(["inspect", str(odd_edf), "--channel-map", "EEG_C3_A2=Foo",
                 "--position-map", str(tmp_path / "codes.json")]) == 0
    assert "Position map: custom" in capsys.readouterr().out


def test_inspect_with_a_bad_position_map_exits_2(odd_edf, capsys):
    assert main(["inspect", str(odd_edf), "--position-map", "philips"]) == 2
    assert "unknown position map 'philips'" in capsys.readouterr().err


# ---- analyze -------------------------------------------------------------------------------------
def test_analyze_uses_the_maps(odd_edf, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(odd_edf), "--out", str(out)]) == 2
    assert "--channel-map ECG=<one of: Foo, Bar>,ABD=<one of: Foo, Bar>," in capsys.readouterr().err
    assert main(["analyze", str(odd_edf), "--out", str(out), "--channel-map", "EEG_C3_A2=Foo,POS=Body",
                 "--position-map", "compumedics"]) == 0
    # Compumedics codes 1 and 2 are supine and left (read as SleepLM codes they would be left and supine).
    assert "Time per position: Left 2 min, Supine 4 min" in (out / "report.md").read_text()
    assert [path.name for path in sorted(out.iterdir())] == ["events.csv", "hypnogram.csv", "report.md",
                                                              "summary.json"]


# ---- ask -----------------------------------------------------------------------------------------
def test_ask_uses_the_maps(odd_edf, capsys):
    assert main(["ask", str(odd_edf), "what channels are in the recording?", "--llm", "none", "--json"]) == 2
    assert ",EEG_C3_A2=<one of: Foo, Bar>," in capsys.readouterr().err
    assert main(["ask", str(odd_edf), "what channels are in the recording?", "--llm", "none", "--json",
                 "--channel-map", "EEG_C3_A2=Foo"]) == 0
    record = json.loads(capsys.readouterr().out)
    overview = next(call for call in record["tool_calls"] if call["name"] == "recording_overview")
    assert "EEG_C3_A2" in overview["result"]["channels_present"]


# ---- serve ---------------------------------------------------------------------------------------
def test_serve_passes_the_maps_to_the_app(odd_edf, monkeypatch):
    import app

    seen = {}
    monkeypatch.setattr(app, "serve", lambda **kwargs: seen.update(kwargs))
    assert main(["serve", "--recording", str(odd_edf), "--channel-map", "EEG_C3_A2=Foo",
                 "--position-map", "compumedics"]) == 0
    assert seen["channel_map"] == {"EEG_C3_A2": "Foo"} and seen["position_map"] == "compumedics"
    assert seen["recording"] == str(odd_edf)


def test_serve_checks_the_maps_before_starting(monkeypatch, capsys):
    import app

    monkeypatch.setattr(app, "serve", lambda **kwargs: pytest.fail("the app must not start with a broken map"))
    assert main(["serve", "--channel-map", "EEG_C3_A2"]) == 2
    assert "NAME=LABEL" in capsys.readouterr().err


def test_the_app_loads_with_the_maps_and_adds_the_users_edits(odd_edf, tmp_path):
    import app

    from test_app import overview_model

    outputs = list(app.load_night(str(odd_edf), None, SimpleNamespace(session_hash="maps"), None, owned=False,
                                  root=tmp_path / "sessions", llm_factory=overview_model,
                                  channel_map={"EEG_C3_A2": "Foo", "POS": "Body"}, position_map="compumedics"))
    bs = outputs[-1][0]
    try:
        sources = {ch.canonical: ch.source for ch in bs.night.night.rec.channels}
        assert sources["EEG_C3_A2"] == "Foo" and bs.night.night.rec.position_map == "compumedics"
        table = bs.preflight.copy()
        table.loc[table["channel"] == "EEG_C4_A1", "source"] = "Bar"
        list(app.reload_with_channel_map(table, bs, None))
        sources = {ch.canonical: ch.source for ch in bs.night.night.rec.channels}
        assert sources["EEG_C4_A1"] == "Bar" and sources["EEG_C3_A2"] == "Foo"  # the served map still holds
        assert bs.night.night.rec.position_map == "compumedics"
    finally:
        bs.close()
