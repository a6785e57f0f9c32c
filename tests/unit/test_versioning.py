"""version manifests and diff: hashes, schema, parents, and rows added / removed / changed."""

from __future__ import annotations

import hashlib
import json

from tunesmith.cli.main import main
from tunesmith.data.versioning import diff_files, manifest_path, write_manifest


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_manifest(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello", "n": 1}, {"instruction": "Bye", "output": "Ciao", "n": None}])
    m = write_manifest(a)
    sha = hashlib.sha256(a.read_bytes()).hexdigest()
    assert (m["sha256"], m["version"], m["rows"], m["format"]) == (sha, sha[:12], 2, "alpaca")
    assert m["schema"]["n"] == {"rows": 2, "types": {"number": 1, "null": 1}} and m["parents"] == []
    b = _write(tmp_path / "b.jsonl", [{"instruction": "Hi", "output": "Hello"}])
    mb = write_manifest(b, parents=[a])
    assert mb["parents"][0] == {"path": str(a), "sha256": sha, "version": sha[:12], "manifest": str(manifest_path(a))}
    assert json.loads(manifest_path(b).read_text())["version"] == mb["version"]


def test_diff_counts_rows_and_fields(tmp_path):
    old = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)] + [{"instruction": "q0", "output": "a0"}]
    new = [{"output": "a0", "instruction": "q0"},  # same row, other key order: unchanged
           {"instruction": "q1", "output": "a1"},
           {"instruction": "q2", "output": "A TWO", "tag": "x"},  # changed (same prompt): output and tag
           {"instruction": "q9", "output": "a9"}]  # added; q3, q4 and one copy of q0 removed
    d = diff_files(_write(tmp_path / "a.jsonl", old), _write(tmp_path / "b.jsonl", new))
    assert (d["unchanged"], d["added"], d["removed"], d["changed"]) == (2, 1, 3, 1)
    assert d["changed_fields"] == {"output": 1, "tag": 1} and d["fields_added"] == ["tag"] and not d["identical"]
    assert diff_files(tmp_path / "a.jsonl", tmp_path / "a.jsonl")["identical"]


def test_cli_version_and_diff(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", [{"text": "one"}, {"text": "two"}])
    b = _write(tmp_path / "b.jsonl", [{"text": "one"}, {"text": "three"}, {"text": "four"}])
    main(["data", "version", str(b), "--parent", str(a)])
    assert "3 rows" in capsys.readouterr().out and manifest_path(b).is_file()
    main(["data", "diff", str(a), str(b), "--json", str(tmp_path / "d.json")])
    assert "2 -> 3 rows: +2 added, -1 removed, ~0 changed, 1 unchanged" in capsys.readouterr().out
    assert json.loads((tmp_path / "d.json").read_text())["added"] == 2
