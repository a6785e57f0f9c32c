"""`tunesmith data synth` end to end: the real CLI against an OpenAI-compatible HTTP server started here.

The server (stdlib http.server on 127.0.0.1, a free port) stands in for the protocol only: it answers
/v1/chat/completions with scripted, deterministic text chosen from the request, fails on cue (a 500 once,
a garbage body), and records every request so the tests can prove that reruns redo nothing.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tunesmith.cli.main import main

NEW_TASKS = [  # self-instruct answers, in request order: (instruction, input, output) or an unparsable reply
    ("Write a haiku about autumn leaves falling in the park.", "", "Red leaves drift and spin / the old bench wears a gold coat"),
    ("Give three tips for staying focused while studying at home.", "", "Close the door and silence your phone."),  # near-copy of a seed
    ("Describe the image of a sunset over the ocean in detail.", "", "Orange light spills over calm water."),  # modality
    None,  # unparsable
    ("Estimate how many minutes it takes to walk five kilometres at a normal pace.", "", "About 60 minutes at 5 km per hour."),
    ("Name the chemical symbol of the element with atomic number 26.", "", ""),  # empty output
    ("Turn the list of verbs into their past tense forms.", "go, see, write", "went, saw, wrote"),
]
ANSWERS = {t[0]: t[2] for t in NEW_TASKS if t}


def _task_text(task, one_step: bool) -> str:
    if task is None:
        return "I am not sure what you want me to do." if one_step else ""
    if one_step:
        return f"Instruction: {task[0]}\nInput: {task[1] or '<noinput>'}\nOutput: {task[2]}"
    return f"Task 9: {task[0]}"


class Script:
    """Deterministic answers keyed on the request; faults on cue; a log of every request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.seen: Counter = Counter()
        self.tasks = 0

    def answer(self, payload: dict) -> tuple[int, bytes]:
        messages = payload["messages"]
        last = messages[-1]["content"]
        key = json.dumps(messages, sort_keys=True)
        with self.lock:
            self.log.append(payload)
            self.seen[key] += 1
            first_time = self.seen[key] == 1
        if "SLOW" in key and first_time:
            time.sleep(1.0)  # longer than the client's --timeout
        if "FLAKY" in key and first_time:
            return 500, b'{"error": "overloaded"}'
        if "GARBAGE" in key:
            return 200, b"<html>502 bad gateway</html>"
        return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": self.text(messages, last)}}]}).encode()

    def text(self, messages: list[dict], last: str) -> str:
        if "come up with a new task" in last or "Here are some tasks for an AI assistant" in last:
            with self.lock:
                self.tasks += 1
                return _task_text(NEW_TASKS[(self.tasks - 1) % len(NEW_TASKS)], "come up with" in last)
        if last in ANSWERS:
            return ANSWERS[last]
        if "Your Judgement (Just answer: Equal or Not Equal" in last:  # evol-instruct elimination, rule 1
            second = re.search(r"The Second Prompt: (.*)\nYour Judgement", last, re.S).group(1)
            return "Equal" if "SAMEGAIN" in second else "Hmm, hard to say." if "JUDGEJUNK" in second else "Not Equal."
        if "#Rewritten Prompt#:" in last or "#Created Prompt#:" in last:
            given = re.search(r"Prompt#:\n(.*)\n#(?:Rewritten|Created) Prompt#:", last, re.S).group(1)
            if "Name a colour" in given:
                return given  # unchanged: eliminated
            if "leftover" in given:
                return f"#Rewritten Prompt#: {given} and explain the rewritten prompt"
            return f"#Rewritten Prompt#:\n{given} Answer in exactly three numbered steps and give one concrete example."
        if messages[0]["role"] == "system" and "impartial judge" in messages[0]["content"]:
            a = re.search(r"Assistant A's Answer\]\n(.*)\n\[The End of Assistant A", last, re.S).group(1)
            if "CONFUSED" in last:
                return "Both have merits; I cannot decide."
            if "SAME" in last:
                return "The first one reads better. [[A]]"  # always the first: position bias -> tie
            return "A is complete. [[A]]" if "GOOD" in a else "Explanation: B is complete.\n[[B]]"
        if "Write only the critique." in last:
            return "Critique: the answer is abrupt and gives no safety advice."
        if "Reply with the rewritten response only" in last:
            original = messages[-4]["content"]
            return original if "PERFECT" in original else "Revision: Please be careful; here is a safe, complete answer."
        if "steps" in last and ("ECHO" in last or "TERSE" in last):
            return last if "ECHO" in last else "Yes."
        if "steps" in last:
            return "Sorry, no." if "refuse" in last else "1. First step. 2. Second step. 3. Third step. Example: boiling water."
        return f"ORIGINAL reply to {last}"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer sk-test":
            status, data = 401, b'{"error": {"message": "invalid api key"}}'
        elif self.path != "/v1/chat/completions":
            status, data = 404, b'{"error": "no such route"}'
        else:
            status, data = self.server.script.answer(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out closed the socket: the late write fails, as on a real server


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.script = Script()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _endpoint(httpd) -> list[str]:
    return ["--endpoint", f"http://127.0.0.1:{httpd.server_address[1]}/v1", "--api-key", "sk-test", "--model", "stub",
            "--backoff", "0.01", "--quiet"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _stats(out: Path) -> dict:
    return json.loads(out.with_name(out.name.replace(".jsonl", ".stats.json")).read_text())


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("mode", ["two-step", "one-step"])
def test_self_instruct_filters_and_keeps_novel_tasks(server, tmp_path, mode):
    out = tmp_path / "si.jsonl"
    main(["data", "synth", "self-instruct", "-o", str(out), "--num", "3", "--batch-size", "4", "--concurrency", "1",
          "--mode", mode, *_endpoint(server)])
    rows = _rows(out)
    assert [r["instruction"].split()[:2] for r in rows] == [["Write", "a"], ["Estimate", "how"], ["Turn", "the"]]
    assert all(r["rouge_l_max"] < 0.7 for r in rows) and rows[2]["output"] == "went, saw, wrote"
    assert rows[2]["input"] == ("go, see, write" if mode == "one-step" else "")
    reasons = {r["id"]: r["reason"] for r in _rows(tmp_path / "si.rejected.jsonl")}
    assert sorted(reasons.values()) == ["empty output", "too similar to pool", "too similar to pool", "unparsable", "unsupported modality"]
    stats = _stats(out)
    answers = 4 if mode == "two-step" else 0  # step 2 answers the instructions that passed step 1's filters
    assert stats["processed"] == 8 and stats["kept"] == 3 and stats["backend"]["requests"] == 8 + answers  # 2 batches of 4
    # every request showed 6 seeds + up to 2 machine tasks as few-shot examples
    shots = [p["messages"][0]["content"].count("Instruction:" if mode == "one-step" else "\nTask ") for p in server.script.log]
    assert sum(n in range(6, 9) for n in shots) == 8


def test_evol_instruct_eliminates_failed_evolutions(server, tmp_path):
    inputs = _write(tmp_path / "in.jsonl", [
        {"instruction": "Explain photosynthesis."}, {"instruction": "Name a colour."},
        {"prompt": "Describe a leftover marker."}, {"instruction": "Plan a trip, refuse politely."},
        {"messages": [{"role": "user", "content": "Summarise the plot of Hamlet."}, {"role": "assistant", "content": "A prince..."}]},
    ])
    out = tmp_path / "evol.jsonl"
    main(["data", "synth", "evol-instruct", str(inputs), "-o", str(out), *_endpoint(server)])
    rows = _rows(out)
    assert sorted(r["original"] for r in rows) == ["Explain photosynthesis.", "Summarise the plot of Hamlet."]
    assert all(r["instruction"].endswith("one concrete example.") and not r["instruction"].startswith("#") for r in rows)
    assert all(r["output"].startswith("1. First step.") and r["round"] == 1 for r in rows)
    rejected = sorted(r["reason"] for r in _rows(tmp_path / "evol.rejected.jsonl"))
    assert rejected == ["refusal response", "template leftovers", "unchanged"]
    from tunesmith.data.formats import load_records

    records, _ = load_records(str(out))  # the rows are alpaca data training reads as is
    assert len(records) == 2 and records[0].messages[-1]["role"] == "assistant"


def test_evol_instruct_elimination_by_the_model(server, tmp_path):
    """WizardLM Sec. 3.3: the endpoint judges original vs evolved (Equal -> no information gain); answers that
    are too short or copy the instruction are eliminated too; every elimination is in the side file."""
    inputs = _write(tmp_path / "in.jsonl", [
        {"instruction": "Explain photosynthesis."}, {"instruction": "List SAMEGAIN fruits."},
        {"instruction": "Describe JUDGEJUNK clouds."}, {"instruction": "Say TERSE things."},
        {"instruction": "Repeat ECHO words back."},
    ])
    out = tmp_path / "evol.jsonl"
    main(["data", "synth", "evol-instruct", str(inputs), "-o", str(out), "--concurrency", "1", *_endpoint(server)])
    assert sorted(r["original"] for r in _rows(out)) == ["Describe JUDGEJUNK clouds.", "Explain photosynthesis."]
    rejected = {r["prompt"]: r for r in _rows(tmp_path / "evol.rejected.jsonl")}
    assert {p: r["reason"] for p, r in rejected.items()} == {
        "List SAMEGAIN fruits.": "no information gain", "Say TERSE things.": "too short response",
        "Repeat ECHO words back.": "response copies the prompt"}
    assert rejected["List SAMEGAIN fruits."]["judge"] == "Equal" and rejected["Say TERSE things."]["response"] == "Yes."
    stats = _stats(out)
    assert stats["rejected"] == {"no information gain": 1, "too short response": 1, "response copies the prompt": 1}
    assert stats["extra"]["unparsable equality judgements"] == 1  # kept: a reply that says neither is not evidence
    judged = [p for p in server.script.log if "Equal or Not Equal" in p["messages"][-1]["content"]]
    assert len(judged) == 5 and all(p["temperature"] == 0.0 and p["max_tokens"] == 16 for p in judged)
    assert len(server.script.log) == 5 + 5 + 4  # evolve all, judge all, answer the 4 that were not Equal
    out2 = tmp_path / "nojudge.jsonl"
    main(["data", "synth", "evol-instruct", str(inputs), "-o", str(out2), "--no-judge", *_endpoint(server)])
    assert "List SAMEGAIN fruits." in {r["original"] for r in _rows(out2)}


REPO = Path(__file__).resolve().parents[2]
CONFIG_TOKENS = {"self_instruct": 128, "evol_instruct": 160, "constitutional": 160, "rlaif": 128}


@pytest.mark.parametrize("name", list(CONFIG_TOKENS))
def test_synth_configs_run_and_flags_win(server, tmp_path, monkeypatch, name):
    """configs/synth_*.yaml hold every option; flags on the command line (endpoint, model, out) override them."""
    monkeypatch.chdir(REPO)  # the configs name configs/synth_seeds.jsonl relative to the repository
    out = tmp_path / f"{name}.jsonl"
    main(["data", "synth", name.replace("_", "-"), "--config", f"configs/synth_{name}.yaml", "-o", str(out),
          "--limit", "3", *_endpoint(server)])
    stats = _stats(out)
    assert stats["processed"] == 3 and stats["failed"] == 0 and stats["kept"] + sum(stats["rejected"].values()) == 3
    assert stats["kept"] >= (0 if name == "rlaif" else 1)  # the scripted server samples the same answer twice
    assert stats["inputs"] == 8  # the 8 rows of configs/synth_seeds.jsonl (self-instruct: as its seed tasks)
    first = server.script.log[0]
    assert first["model"] == "stub" and first["max_tokens"] == CONFIG_TOKENS[name] and first["seed"] == 0


def test_synth_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: x.jsonl\nmax_new_token: 5\n")
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "evol-instruct", "--config", str(bad), "-o", str(tmp_path / "o.jsonl")])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "unknown option 'max_new_token'" in err and "did you mean 'max_new_tokens'" in err
    bad.write_text("rounds: many\n")
    with pytest.raises(SystemExit):
        main(["data", "synth", "evol-instruct", "in.jsonl", "--config", str(bad), "-o", str(tmp_path / "o.jsonl")])
    assert "rounds: expected an integer, got 'many'" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit):
        main(["data", "synth", "rlaif", "-o", str(tmp_path / "o.jsonl")])
    assert "needs the INPUTS argument (or `inputs:` in --config)" in " ".join(capsys.readouterr().err.split())


def test_constitutional_writes_sft_rows_and_pairs(server, tmp_path, tokenizer):
    inputs = _write(tmp_path / "in.jsonl", [
        {"prompt": "How do I sharpen a kitchen knife?"},
        {"prompt": "Tell me a PERFECT joke."},
        {"instruction": "How do I clean a cast iron pan?", "output": "Scrub it with steel wool and soap."},
    ])
    out = tmp_path / "cai.jsonl"
    main(["data", "synth", "constitutional", str(inputs), "-o", str(out), *_endpoint(server)])
    rows, pairs = _rows(out), _rows(tmp_path / "cai.pairs.jsonl")
    assert len(rows) == 3 and len(pairs) == 2  # the unchanged revision makes an SFT row but no pair
    assert {p["rejected"] for p in pairs} == {"ORIGINAL reply to How do I sharpen a kitchen knife?", "Scrub it with steel wool and soap."}
    assert all(p["chosen"] == "Please be careful; here is a safe, complete answer." for p in pairs)
    assert all(r["critique"].startswith("the answer is abrupt") for r in rows)
    assert _stats(out)["extra"] == {"unchanged revisions (no pair)": 1}
    # the row with its own answer was not answered again: 2 answers + 3 critiques + 3 revisions
    assert len(server.script.log) == 8
    from tunesmith.data.formats import load_records
    from tunesmith.data.preference import load_preference_examples

    assert len(load_records(str(out))[0]) == 3
    assert len(load_preference_examples(str(tmp_path / "cai.pairs.jsonl"), tokenizer, "pairwise")) == 2


def test_rlaif_consistent_pairs_ties_and_unparsable(server, tmp_path, tokenizer):
    inputs = _write(tmp_path / "in.jsonl", [
        {"prompt": "Capital of France?", "responses": ["Lyon.", "GOOD: Paris."]},
        {"prompt": "2 + 2?", "response_a": "GOOD: 4", "response_b": "5"},
        {"prompt": "Pick SAME one.", "responses": ["x one", "y two"]},
        {"prompt": "CONFUSED question", "responses": ["a", "b"]},
        {"prompt": "Generate two answers.", "chosen": "same text", "rejected": "Same text!"},
    ])
    out = tmp_path / "pref.jsonl"
    main(["data", "synth", "rlaif", str(inputs), "-o", str(out), "--keep-ties", *_endpoint(server)])
    pairs = _rows(out)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("GOOD: Paris.", "Lyon."), ("GOOD: 4", "5")]
    ties = _rows(tmp_path / "pref.ties.jsonl")
    assert len(ties) == 1 and ties[0]["label"] == "tie" and ties[0]["verdicts"] == ["A", "A"]
    assert sorted(r["reason"] for r in _rows(tmp_path / "pref.rejected.jsonl")) == ["identical responses", "unparsable verdict"]
    stats = _stats(out)
    assert stats["extra"] == {"consistent verdicts": 2, "ties": 1, "position-biased ties": 1, "unparsable judgements": 2}
    assert len(server.script.log) == 8  # 4 pairs x 2 orders; identical answers are not judged
    from tunesmith.data.preference import load_preference_examples

    assert len(load_preference_examples(str(out), tokenizer, "pairwise")) == 2


def test_retry_after_500_and_garbage_counted_then_retried(server, tmp_path):
    inputs = _write(tmp_path / "in.jsonl", [{"prompt": "A FLAKY question"}, {"prompt": "A GARBAGE question"}, {"prompt": "Plain"}])
    out = tmp_path / "cai.jsonl"
    main(["data", "synth", "constitutional", str(inputs), "-o", str(out), "--concurrency", "1", *_endpoint(server)])
    assert sorted(r["messages"][0]["content"] for r in _rows(out)) == ["A FLAKY question", "Plain"]
    stats = _stats(out)
    assert stats["backend"]["retries"] == 3  # the FLAKY item's answer, critique and revision each got one 500
    assert stats["backend"]["failures"] == {"garbage": 1} and stats["failed"] == 1 and stats["kept"] == 2
    assert not (tmp_path / "cai.rejected.jsonl").exists()  # a failure is not a rejection: the next run retries it
    before = len(server.script.log)
    main(["data", "synth", "constitutional", str(inputs), "-o", str(out), *_endpoint(server)])
    again = server.script.log[before:]
    assert len(again) == 1 and "GARBAGE" in again[0]["messages"][-1]["content"]  # only the failed item is retried
    assert _stats(out)["resumed"] == 2


def test_timeout_is_retried(server, tmp_path):
    inputs = _write(tmp_path / "in.jsonl", [{"prompt": "SLOW judge", "responses": ["GOOD: yes", "no"]}])
    out = tmp_path / "pref.jsonl"
    main(["data", "synth", "rlaif", str(inputs), "-o", str(out), "--timeout", "0.4", *_endpoint(server)])
    assert _stats(out)["backend"]["retries"] == 2 and _rows(out)[0]["chosen"] == "GOOD: yes"  # both orders timed out once


def test_evol_rounds_build_on_the_previous_round(server, tmp_path):
    inputs = _write(tmp_path / "in.jsonl", [{"instruction": "Explain tides."}, {"instruction": "Explain rain."}])
    out = tmp_path / "evol.jsonl"
    main(["data", "synth", "evol-instruct", str(inputs), "-o", str(out), "--rounds", "2", "--no-respond", *_endpoint(server)])
    rows = _rows(out)
    assert [r["round"] for r in rows] == [1, 1, 2, 2] and not any("output" in r for r in rows)
    first = {r["id"]: r for r in rows[:2]}
    assert all(r["original"] == first[r["parent"]]["instruction"] and r["instruction"].count("one concrete example") == 2 for r in rows[2:])


def test_endpoint_down_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    inputs = _write(tmp_path / "in.jsonl", [{"prompt": "hello"}])
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "rlaif", str(inputs), "-o", str(tmp_path / "o.jsonl"), "--endpoint", f"http://127.0.0.1:{port}",
              "--model", "stub", "--retries", "1", "--backoff", "0.01", "--quiet"])
    text = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "unreachable after 2 attempts" in text and str(port) in text and "Traceback" not in text


def test_wrong_key_and_endless_garbage_stop_with_exit_2(server, tmp_path, capsys):
    inputs = _write(tmp_path / "in.jsonl", [{"prompt": f"GARBAGE {i}"} for i in range(10)])
    args = ["data", "synth", "constitutional", str(inputs), "-o", str(tmp_path / "o.jsonl"), "--concurrency", "1"]
    with pytest.raises(SystemExit) as info:
        main([*args, *_endpoint(server), "--api-key", "sk-wrong"])
    assert info.value.code == 2 and "HTTP 401" in capsys.readouterr().err and len(server.script.log) == 0
    with pytest.raises(SystemExit) as info:
        main([*args, *_endpoint(server)])
    text = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2 and "failed 8 requests in a row (last: garbage" in text and len(server.script.log) == 8


def test_resume_after_interruption_redoes_nothing(server, tmp_path):
    topics = ["photosynthesis", "tides", "volcanoes", "rainbows", "magnets", "seasons"]
    inputs = _write(tmp_path / "in.jsonl", [{"instruction": f"Explain {t}."} for t in topics])
    out = tmp_path / "evol.jsonl"
    args = ["data", "synth", "evol-instruct", str(inputs), "-o", str(out), "--batch-size", "2", *_endpoint(server)]
    main([*args, "--limit", "3"])
    assert len(_rows(out)) == 3
    with out.open("a") as f:
        f.write('{"id": "evol1-cut", "instruction": "Expl')  # a kill in the middle of a write
    main(args)
    rows = _rows(out)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6 and {r["original"] for r in rows} == {f"Explain {t}." for t in topics}
    assert _stats(out)["resumed"] == 3
    assert max(server.script.seen.values()) == 1  # no request was ever sent twice
    main(args)  # a third run finds everything done and sends nothing
    assert len(_rows(out)) == 6 and len(server.script.log) == 18  # 6 x (evolve, equality judgement, answer)


def test_local_backend_runs_end_to_end(tiny_model_dir, tmp_path):
    """The local path on a tiny random model: gibberish out, but every request is counted and filtered."""
    base = ["data", "synth", "self-instruct", "--model", str(tiny_model_dir), "--num", "2", "--max-requests", "3",
            "--batch-size", "3", "--max-new-tokens", "12", "--temperature", "0", "--quiet"]
    one = tmp_path / "one.jsonl"
    main([*base, "-o", str(one), "--mode", "one-step"])
    stats = _stats(one)  # gibberish never has the Instruction/Input/Output shape
    assert stats["processed"] == 3 and stats["backend"]["requests"] == 3 and stats["failed"] == 0
    assert stats["rejected"] == {"unparsable": 3} and not one.exists()
    two = tmp_path / "two.jsonl"
    main([*base, "-o", str(two)])
    stats, rows = _stats(two), _rows(two)
    rejected = _rows(tmp_path / "two.rejected.jsonl")
    answered = len(rows) + sum(r["reason"] in ("empty output", "copies the prompt", "output too long") for r in rejected)
    assert stats["processed"] == 3 and stats["backend"]["requests"] == 3 + answered  # step 2 only for screened instructions
    assert stats["kept"] == len(rows) and stats["extra"]["pool size"] == 20 + len(rows)
    assert all(r["instruction"] and r["output"] and r["rouge_l_max"] < 0.7 for r in rows)
    pairs = tmp_path / "pref.jsonl"
    inputs = _write(tmp_path / "in.jsonl", [{"prompt": "Capital of France?", "responses": ["Paris.", "Lyon."]}])
    main(["data", "synth", "rlaif", str(inputs), "-o", str(pairs), "--model", str(tiny_model_dir), "--judge-tokens", "8", "--quiet"])
    stats = _stats(pairs)
    assert stats["backend"]["requests"] == 2 and stats["extra"]["unparsable judgements"] == 2
    assert stats["rejected"] == {"unparsable verdict": 1}


@pytest.mark.slow
def test_bundled_model_self_instruct_makes_rows(tmp_path):
    out = tmp_path / "si.jsonl"
    main(["data", "synth", "self-instruct", "-o", str(out), "--num", "2", "--max-requests", "8", "--batch-size", "8",
          "--max-new-tokens", "48", "--temperature", "0.7", "--quiet"])
    rows = _rows(out)
    assert len(rows) >= 2 and all(r["instruction"] and r["output"] and r["rouge_l_max"] < 0.7 for r in rows)
