"""Bad input through the real CLI: one clear message naming file/line/field, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_train import write_chat_data, write_config
from tunesmith.cli.main import main


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, " ".join((captured.out + captured.err).split())  # undo console line wrapping


def test_unknown_config_key_suggests_closest(tmp_path, tiny_model_dir, capsys):
    config = write_config(tmp_path, tiny_model_dir, write_chat_data(tmp_path / "d.jsonl"))
    code, text = run_cli(["train", str(config), "train.learning_rate=1e-3"], capsys)
    assert code == 2 and "learning_rate" in text and "train.lr" in text


def test_wrong_type_names_the_key(tmp_path, tiny_model_dir, capsys):
    config = write_config(tmp_path, tiny_model_dir, write_chat_data(tmp_path / "d.jsonl"))
    code, text = run_cli(["train", str(config), "train.batch_size=eight"], capsys)
    assert code == 2 and "train.batch_size" in text


def test_missing_model_path(tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "no-such-model", write_chat_data(tmp_path / "d.jsonl"))
    code, text = run_cli(["train", str(config)], capsys)
    assert code == 2 and "no-such-model" in text and "not found" in text


def test_malformed_jsonl_names_file_and_line(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "d.jsonl")
    with data.open("a") as handle:
        handle.write('{"messages": [{"role": "user", "content": "hi"}\n')
    config = write_config(tmp_path, tiny_model_dir, data)
    code, text = run_cli(["train", str(config)], capsys)
    assert code == 2 and "d.jsonl:17" in text


def test_bad_rows_skipped_and_counted_when_asked(tmp_path, tiny_model_dir, capsys):
    data = write_chat_data(tmp_path / "d.jsonl")
    with data.open("a") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}) + "\n")
        handle.write(json.dumps({"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    config = write_config(tmp_path, tiny_model_dir, data, data={"on_error": "skip"}, train={"max_steps": 1})
    main(["train", str(config), "--quiet"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["total"] == 18 and summary["data"]["kept"] == 16
    assert sum(summary["data"]["skipped"].values()) == 2
    assert "skipped 2" in capsys.readouterr().err


def test_adapter_for_another_base_is_refused(tmp_path, tiny_model_dir, tokenizer, capsys):
    from tests.conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "other", tokenizer, hidden=32)
    data = write_chat_data(tmp_path / "d.jsonl")
    first = tmp_path / "first"
    first.mkdir()
    main(["train", str(write_config(first, other, data, train={"max_steps": 1})), "--quiet"])
    second = tmp_path / "second"
    second.mkdir()
    config = write_config(second, tiny_model_dir, data, model={"adapter": str(first / "run" / "adapter")})
    code, text = run_cli(["train", str(config)], capsys)
    assert code == 2 and "adapter" in text.lower()


def test_subprocess_error_has_no_traceback(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("train:\n  lr: [oops\n")
    proc = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "train", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "c.yaml" in proc.stderr


def test_kill_minus_9_leaves_last_checkpoint_loadable(tmp_path, tiny_model_dir):
    data = write_chat_data(tmp_path / "d.jsonl", repeat=4)
    config = write_config(tmp_path, tiny_model_dir, data, train={"max_steps": 100000, "save_every": 1, "keep_last": 2})
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli.main", "train", str(config), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    root = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(root.glob("checkpoint-*"))) < 2:
        time.sleep(0.05)
    time.sleep(0.37)  # land somewhere inside a later step or save
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from tunesmith.training.checkpoint import checkpoints

    last = checkpoints(root)[-1]
    step = json.loads((last / "state.json").read_text())["step"]
    main(["train", str(config), "--quiet", f"train.max_steps={step + 2}"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == step + 2
    assert not list(root.glob(".tmp-*"))
