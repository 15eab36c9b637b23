"""Sources: the embedded Shakespeare rendering, file resolution, and url downloads against a local server."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest

from nanogpt.data import sources
from nanogpt.data.files import open_dataset
from nanogpt.data.prepare import prepare
from nanogpt.errors import DataError, InputError
from nanogpt.config.tables import TokensSpec

PLAY = """\
# The Tragedy of Tests

## ACT I

### SCENE I. A room. LONG HEADING THAT WRAPS
onto a second line

_Enter HAMLET and
HORATIO, with attendants_

**HAMLET**  
Who's there? I say,\\--  
_\\[Aside]_  
hold \\[thy] peace.

_Exit HORATIO_

And yet I speak on.

**HORATIO**  
[Within]_  
My lord!

**ROSENCRANTZ: & GUILDENSTERN:**  
Together, as one.

*Sound a horn.*

**MUTE**  

_Exeunt_
"""


def tokens_spec(tmp_path: Path, **fields) -> TokensSpec:
    fields.setdefault("data_dir", str(tmp_path / "data"))
    fields.setdefault("dataset", "ds")
    return TokensSpec(**fields)


def test_render_play_exact():
    """Headings and stage directions go, markup goes, speeches keep their speaker across directions."""
    assert sources.render_play(PLAY) == [
        "HAMLET:\nWho's there? I say,--\nhold [thy] peace.\nAnd yet I speak on.",
        "HORATIO:\nMy lord!",
        "ROSENCRANTZ & GUILDENSTERN:\nTogether, as one.",
    ]


def test_embedded_shakespeare_shape():
    """All 38 plays, tiny Shakespeare's shape, no Markdown left, the same text every time."""
    paths = sources.shakespeare_files()
    assert len(paths) == 38 and all(p.suffix == ".md" for p in paths)
    text = sources.render_shakespeare()
    assert text == sources.render_shakespeare(paths)
    assert text.endswith("\n") and not text.endswith("\n\n")
    speeches = text[:-1].split("\n\n")
    assert len(speeches) > 20_000
    for speech in speeches:
        speaker, _, body = speech.partition("\n")
        assert re.fullmatch(r"[^\s:][^:\n]*:", speaker), speaker
        assert body and "\n\n" not in body
    assert not re.search(r"[*_#\\\[\]]| \n", text)
    assert 4_000_000 < len(text) < 5_500_000
    assert "HAMLET:\nTo be, or not to be: that is the question:" in text


def test_file_errors_before_work(tmp_path, monkeypatch):
    """Missing files, empty globs, folders, mixed globs and pinned globs are InputErrors naming the source."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jsonl").write_text('{"text": "y"}\n')
    (tmp_path / "folder").mkdir()
    cases = {
        "file:nope.txt": r"no such file 'nope.txt'",
        "file:corpus/*.txt": r"the glob 'corpus/\*.txt' matches no files",
        "file:folder": r"is a directory; name a file, or its files with a glob like 'file:folder/\*.txt'",
        "file:*.*": r"matches files of different kinds \(jsonl, text\)",
    }
    for source, message in cases.items():
        with pytest.raises(InputError, match=message):
            prepare(tokens_spec(tmp_path, source=source, split="contiguous"))
    with pytest.raises(InputError, match="pins one file, but data.source 'file:\\*.txt' is a glob"):
        prepare(tokens_spec(tmp_path, source="file:*.txt", source_sha256="0" * 64))
    assert not (tmp_path / "data").exists()


def test_resolve_kinds(tmp_path, monkeypatch):
    """A text file is a stream; a glob, .jsonl and .parquet are documents; hf ids split at ':'."""
    monkeypatch.chdir(tmp_path)
    for name in ("one.txt", "rows.jsonl", "rows.parquet"):
        (tmp_path / name).write_text("")
    got = {s: sources.resolve_source(tokens_spec(tmp_path, source=s)) for s in
           ("file:one.txt", "file:*.txt", "file:rows.jsonl", "file:rows.parquet", "hf:user/set:cfg", "embedded:shakespeare")}
    assert [(r.format, r.documents) for r in got.values()] == [
        ("text", False), ("text", True), ("jsonl", True), ("parquet", True), ("hf", True), ("embedded", False),
    ]
    assert (got["hf:user/set:cfg"].hf_id, got["hf:user/set:cfg"].hf_config) == ("user/set", "cfg")


@pytest.mark.parametrize(("target", "parsed"), [
    ("user/set", ("user/set", None, None)),
    ("user/set:cfg", ("user/set", None, "cfg")),
    ("user/set@refs/convert/parquet", ("user/set", "refs/convert/parquet", None)),
    ("Skylion007/openwebtext@0a1b2c3:plain_text", ("Skylion007/openwebtext", "0a1b2c3", "plain_text")),
])
def test_hf_sources_name_a_revision_with_at(target, parsed):
    """hf:ID[@REVISION][:CONFIG]: a revision (a branch, tag, commit or refs/convert/parquet) follows '@'."""
    assert sources.parse_hf(target) == parsed


@pytest.mark.parametrize("source", ["hf:@main", "hf:user/set@", "hf:user/set@:cfg"])
def test_hf_source_with_an_empty_id_or_revision_is_refused(source):
    """An '@' with nothing on one side of it is a spec error, at check time."""
    from nanogpt.config.problems import SpecError
    from nanogpt.config.load import loads_spec

    with pytest.raises(SpecError) as e:
        loads_spec(f'name = "h"\n[data]\nsource = "{source}"\n', source="s.toml")
    assert e.value.report() == f"s.toml: 1 problem\n  data.source: must be hf:DATASET_ID[@REVISION][:CONFIG] (got {source!r})"


def test_non_utf8_file(tmp_path):
    """A file that is not UTF-8 is a DataError naming it and the byte."""
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text: byte 3"):
        prepare(tokens_spec(tmp_path, source=f"file:{tmp_path / 'latin1.txt'}", split="contiguous"))


# ------------------------------------------------------------------------------------- url

BODY = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 200).encode()
BODY_SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture()
def server(monkeypatch):
    """A local HTTP server in a thread serving BODY at /tiny/input.txt, counting requests."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path != "/tiny/input.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def test_url_downloads_once_into_the_cache(tmp_path, server):
    """A url is downloaded into <data_dir>/<dataset>/source/, verified, and not fetched again."""
    base, hits = server
    spec = tokens_spec(tmp_path, source=f"url:{base}/tiny/input.txt", source_sha256=BODY_SHA,
                       tokenizer="char", split="contiguous", val_fraction=0.1)
    meta = prepare(spec, say=lambda line: None)
    cached = tmp_path / "data" / "ds" / "source" / "input.txt"
    assert cached.read_bytes() == BODY and hits == ["/tiny/input.txt"]
    assert meta["source"]["sha256"] == BODY_SHA and meta["train"]["tokens"] + meta["val"]["tokens"] == len(BODY)
    prepare(spec, force=True, say=lambda line: None)
    assert hits == ["/tiny/input.txt"]
    assert not list(cached.parent.glob(".*"))


def test_url_pin_mismatch_is_refused(tmp_path, server):
    """A download whose sha256 differs from the pin is refused and leaves nothing behind."""
    base, _ = server
    spec = tokens_spec(tmp_path, source=f"url:{base}/tiny/input.txt", source_sha256="ab" * 32, split="contiguous")
    with pytest.raises(DataError, match=f"has sha256 {BODY_SHA}, but data.source_sha256 pins abab"):
        prepare(spec, say=lambda line: None)
    assert not (tmp_path / "data").exists()


def test_url_http_error(tmp_path, server):
    """An HTTP error names the status and where to put the file by hand."""
    base, _ = server
    spec = tokens_spec(tmp_path, source=f"url:{base}/missing.txt", split="contiguous")
    with pytest.raises(DataError, match=r"HTTP 404 .* put it at .*ds/source/missing.txt"):
        prepare(spec, say=lambda line: None)


def test_url_offline_then_by_hand(tmp_path, monkeypatch):
    """Offline, the error names the manual path; a file put there (matching the pin) is then used."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    spec = tokens_spec(tmp_path, source="url:https://example.invalid/data/input.txt",
                       source_sha256=BODY_SHA, split="contiguous")
    manual = tmp_path / "data" / "ds" / "source" / "input.txt"
    with pytest.raises(DataError) as e:
        prepare(spec, say=lambda line: None)
    assert "could not download https://example.invalid/data/input.txt" in str(e.value)
    assert f"put it at {manual}" in str(e.value)
    assert not (tmp_path / "data").exists()

    manual.parent.mkdir(parents=True)
    manual.write_bytes(BODY[:-1] + b"?")
    with pytest.raises(DataError, match=r"input.txt has sha256 .* but data.source_sha256 pins .*delete it to download"):
        prepare(spec, say=lambda line: None)
    manual.write_bytes(BODY)
    meta = prepare(spec, say=lambda line: None)
    assert meta["source"]["url"] == "https://example.invalid/data/input.txt"
    ds = open_dataset(spec)
    assert ds.tokenizer.decode(ds.train[:3]) == "First Citizen:"


def test_url_without_its_download_stays_current(tmp_path, server):
    """Deleting the cached download does not force a new one while url and pin are unchanged."""
    base, hits = server
    spec = tokens_spec(tmp_path, source=f"url:{base}/tiny/input.txt", source_sha256=BODY_SHA, split="contiguous")
    prepare(spec, say=lambda line: None)
    (tmp_path / "data" / "ds" / "source" / "input.txt").unlink()
    lines = []
    prepare(spec, say=lines.append)
    assert hits == ["/tiny/input.txt"] and "up to date" in lines[0]


def test_a_pinned_url_and_a_local_copy_of_it_are_one_source(tmp_path, monkeypatch):
    """Offline, a dataset made once from `file:` (the url's pinned content) is up to date for the
    url spec, and stays so when the copy is put where the download would go: the pin names the
    content, wherever it came from. Pinning other content still rebuilds (and fails offline)."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.chdir(tmp_path)
    Path("input.txt").write_bytes(BODY)
    pinned = dict(source_sha256=BODY_SHA, tokenizer="char", split="contiguous", val_fraction=0.1)
    url_spec = tokens_spec(tmp_path, source="url:https://example.invalid/data/input.txt", **pinned)
    made = prepare(tokens_spec(tmp_path, source="file:input.txt", **pinned), say=lambda line: None)

    lines = []
    assert prepare(url_spec, say=lines.append) == made
    assert "up to date" in lines[-1]
    copy = tmp_path / "data" / "ds" / "source" / "input.txt"
    copy.parent.mkdir()
    copy.write_bytes(BODY)
    assert prepare(url_spec, say=lines.append) == made
    assert "up to date" in lines[-1]

    copy.unlink()
    other_pin = tokens_spec(tmp_path, source="url:https://example.invalid/data/input.txt", **{**pinned, "source_sha256": "ab" * 32})
    with pytest.raises(DataError, match="could not download"):
        prepare(other_pin, say=lines.append)
    assert lines[-1].endswith("(the source changed)")
