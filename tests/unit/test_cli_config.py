"""`tunesmith config` lists every key with its description, and --show prints a resolved config."""

from __future__ import annotations

import yaml

from tunesmith.cli.main import main


def test_config_lists_keys_of_a_section(capsys):
    main(["config", "method.lora"])
    out = capsys.readouterr().out
    assert "method.lora.rslora" in out and "train.lr" not in out


def test_config_show_fills_defaults(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n")
    main(["config", "--show", str(path)])
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lr"] == 0.001 and shown["method"]["lora"]["r"] == 16
