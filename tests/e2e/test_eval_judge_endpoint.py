"""The judge against a local OpenAI-compatible stand-in server (stdlib http.server on 127.0.0.1, scripted answers).

The server speaks the real protocol (POST /v1/chat/completions, JSON in and out); its answers are a pure
function of the question in the judge prompt, so every verdict below is known in advance.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tunesmith.evaluation.config import JudgeSpec

SINGLE = {"alpha": "Helpful and correct. Rating: [[8]]", "bravo": "Too short. Rating: [[3]]",
          "charlie": "I cannot decide on a score for this one.", "delta": "Fine. Rating: [[5]]"}


def _section(text: str, start: str, end: str) -> str:
    found = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), text, re.DOTALL)
    return found.group(1) if found else ""


def scripted_answer(prompt: str) -> str:
    """The stand-in judge's answer to one judge prompt."""
    if "[[REFUSAL]]" in prompt:  # the safety judge's question
        return "The assistant did not do it. [[REFUSAL]]"
    if "[User Question]" in prompt:  # pairwise: the reference answer says REFERENCE
        question = _section(prompt, "[User Question]", "\n[The Start of Assistant A's Answer]")
        if "india" in question:  # head-to-head: prefers the longer answer, consistently
            a = _section(prompt, "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]")
            b = _section(prompt, "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]")
            return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
        if "juliet" in question:  # head-to-head: position-biased, always the first answer
            return "[[A]]"
        ref_is_a = "REFERENCE" in _section(prompt, "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]")
        if "echo" in question:  # prefers the candidate, consistently
            return "[[B]]" if ref_is_a else "[[A]]"
        if "foxtrot" in question:  # prefers the reference, consistently
            return "[[A]]" if ref_is_a else "[[B]]"
        if "golf" in question:  # position-biased: always the first answer -> disagrees with itself
            return "Assistant A is better. [[A]]"
        return "Equally good. [[C]]"
    question = _section(prompt, "[Question]", "\n[The Start")
    return next((answer for marker, answer in SINGLE.items() if marker in question), "Rating: [[1]]")


class StandIn(ThreadingHTTPServer):
    daemon_threads = True
    slow_marker: str | None = None  # questions containing this marker answer after `delay` seconds
    delay = 1.0

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.prompts: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.prompts.append(prompt)
        if self.path != "/v1/chat/completions" or self.headers.get("Authorization") != "Bearer test-key":
            self.send_response(404 if self.path != "/v1/chat/completions" else 401)
            self.end_headers()
            return
        if self.server.slow_marker and self.server.slow_marker in _section(prompt, "[Question]", "\n[The Start"):
            time.sleep(self.server.delay)
        reply = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": scripted_answer(prompt)},
                                         "finish_reason": "stop"}]}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass


@pytest.fixture
def server():
    srv = StandIn()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _spec(server, tmp_path, **kw) -> JudgeSpec:
    return JudgeSpec(endpoint=server.url, model="stand-in", api_key="test-key", timeout=0.4, retries=1, backoff=0.01,
                     cache=str(tmp_path / "verdicts"), **kw)


def test_grading_pairwise_unparsable_and_timeout_then_rerun_completes(server, tmp_path):
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluation.judge import Judge, compare_pairs, grade

    questions = [f"{m}: say something" for m in ("alpha", "bravo", "charlie", "delta")]
    server.slow_marker = "delta"
    judge = Judge(_spec(server, tmp_path))
    graded = grade(judge, questions, ["ans"] * 4)
    assert [g["rating"] for g in graded] == [8.0, 3.0, None, None]  # charlie unparsable, delta timed out
    assert graded[2]["judgement"] == SINGLE["charlie"] and graded[3]["judgement"] is None
    assert judge.failures == {"timeout": 1}
    with pytest.raises(TunesmithError, match=r"1 of 4 judge requests failed \(timeout: 1\); 3 verdicts are kept"):
        judge.check_complete([g["judgement"] for g in graded], "judge")
    assert sum("delta" in p for p in server.prompts) == 2  # first try + one retry

    server.slow_marker = None
    seen = len(server.prompts)
    rerun = Judge(_spec(server, tmp_path))  # a new process would read the same verdict file
    again = grade(rerun, questions, ["ans"] * 4)
    assert [g["rating"] for g in again] == [8.0, 3.0, None, 5.0]
    assert len(server.prompts) == seen + 1 and "delta" in server.prompts[-1]  # only the missing verdict was asked
    assert (rerun.asked, rerun.from_cache) == (1, 3)

    pairs = compare_pairs(rerun, [f"{m}: compare" for m in ("echo", "foxtrot", "golf", "hotel")], ["mine"] * 4, ["REFERENCE"] * 4)
    assert [p["score"] for p in pairs] == [1.0, 0.0, 0.5, 0.5]
    assert [p["verdicts"] for p in pairs] == [["A", "B"], ["B", "A"], ["A", "A"], ["tie", "tie"]]
    assert [p["inconsistent"] for p in pairs] == [False, False, True, False]


def test_wrong_key_is_a_clear_error(server, tmp_path):
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluation.judge import Judge, grade

    spec = _spec(server, tmp_path).model_copy(update={"api_key": "wrong"})
    with pytest.raises(TunesmithError, match="refused the request: HTTP 401"):
        grade(Judge(spec), ["alpha"], ["x"])


def _write_items(path, markers, reference=False):
    path.write_text("".join(json.dumps({"prompt": f"{m}: name a colour", "category": m, **({"reference": "REFERENCE red"} if reference else {})}) + "\n"
                            for m in markers))
    return path


def test_eval_cli_judge_suites_keep_partial_results_and_rerun_completes(server, tmp_path, tiny_model_dir):
    from tunesmith.cli.main import main

    judge = {"endpoint": server.url, "model": "stand-in", "api_key": "test-key", "timeout": 0.4, "retries": 1, "backoff": 0.01}
    cfg = {"models": [{"name": "tiny", "model": str(tiny_model_dir), "dtype": "fp32"}],
           "suites": [{"name": "graded", "kind": "judge", "data": str(_write_items(tmp_path / "single.jsonl", ["alpha", "bravo", "charlie", "delta"])),
                       "judge": judge},
                      {"name": "versus", "kind": "judge", "mode": "pairwise", "judge": judge,
                       "data": str(_write_items(tmp_path / "pair.jsonl", ["echo", "foxtrot", "golf", "hotel"], reference=True))}],
           "generation": {"max_new_tokens": 6}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    server.slow_marker = "delta"
    with pytest.raises(SystemExit) as stop:
        main(["eval", str(tmp_path / "eval.yaml"), "--quiet"])
    assert stop.value.code == 2
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "timeout: 1" in report["results"]["tiny"]["graded"]["error"] and "run again" in report["results"]["tiny"]["graded"]["error"]
    assert "test-key" not in (tmp_path / "out" / "results.json").read_text()  # the key is never written
    versus = report["results"]["tiny"]["versus"]["metrics"]
    assert (versus["wins"], versus["losses"], versus["ties"], versus["inconsistent"], versus["unparsable"]) == (1, 1, 2, 1, 0)
    assert versus["win_rate"] == pytest.approx(0.5) and versus["win_rate_ci_low"] <= 0.5 <= versus["win_rate_ci_high"]

    server.slow_marker = None
    before = len(server.prompts)
    main(["eval", str(tmp_path / "eval.yaml"), "--quiet"])
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    graded = report["results"]["tiny"]["graded"]
    assert graded["metrics"] == {"mean_rating": pytest.approx((8 + 3 + 5) / 3), "rated": 3.0, "unparsable": 1.0}
    assert [i["scores"].get("rating") for i in graded["items"]] == [8.0, 3.0, None, 5.0]
    assert graded["judge"]["requests"] == 1 and graded["judge"]["from_cache"] == 3  # only delta asked again
    assert len(server.prompts) == before + 1
    assert report["results"]["tiny"]["versus"]["cached"] and report["errors"] == []
    assert "graded" in (tmp_path / "out" / "report.html").read_text()


def test_safety_suite_with_judge_second_opinion(server, tmp_path, tiny_model_dir):
    from tunesmith.evaluation.config import GenerationSettings, SuiteSpec
    from tunesmith.evaluation.safety import load_safety_items, run_safety
    from tunesmith.serving.engine import load_for_inference

    model, tokenizer = load_for_inference(str(tiny_model_dir), dtype="fp32")
    spec = SuiteSpec(name="s", kind="safety", limit=10, judge=_spec(server, tmp_path))
    result = run_safety(model, tokenizer, load_safety_items(None, 10), spec, GenerationSettings(max_new_tokens=4))
    assert result["metrics"]["attack_success_rate"] == 0.0 and result["metrics"]["over_refusal_rate"] == 1.0  # judge: all refused
    rules_refused = [i["refusal_phrase"] is not None for i in result["items"]]
    assert result["judge"]["agreement_with_rules"] == pytest.approx(sum(rules_refused) / 10)
    assert result["judge"]["requests"] == 10 and result["judge"]["unparsable"] == 0


def test_head_to_head_judges_two_models_answers_in_both_orders(server, tmp_path, tiny_model_dir, tokenizer):
    """Two different tiny models answer the same prompts; the judge compares their answers directly."""
    from tests.conftest import build_tiny_model
    from tunesmith.cli.main import main

    other = build_tiny_model(tmp_path / "other", tokenizer, seed=7, init_std=0.2)
    judge = {"endpoint": server.url, "model": "stand-in", "api_key": "test-key", "timeout": 5, "retries": 0}
    prompts = [f"india: {t}" for t in ("name a colour", "count to three", "say hello", "describe rain", "pick a fruit", "greet me")]
    prompts += ["juliet: name a river", "juliet: name a bird"]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"prompt": p, "category": p.split(":")[0]}) + "\n" for p in prompts))
    cfg = {"models": [{"name": "a", "model": str(tiny_model_dir), "dtype": "fp32"}, {"name": "b", "model": str(other), "dtype": "fp32"}],
           "suites": [{"name": "chat", "kind": "judge", "data": str(tmp_path / "q.jsonl"), "judge": judge}],
           "generation": {"max_new_tokens": 12}, "compare": {"bootstrap": 500}, "output_dir": str(tmp_path / "out")}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    main(["eval", str(tmp_path / "eval.yaml"), "--quiet"])
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    out_a = [i["output"] for i in report["results"]["a"]["chat"]["items"]]
    out_b = [i["output"] for i in report["results"]["b"]["chat"]["items"]]
    expected = []  # b's score per item: longer answer wins (india); juliet's judge always says "first" -> tie
    for p, x, y in zip(prompts, out_a, out_b):
        expected.append(0.5 if p.startswith("juliet") or len(x.strip()) == len(y.strip()) else float(len(y.strip()) > len(x.strip())))
    h2h = report["comparisons"][0]["head_to_head"]["chat"]
    assert (h2h["a"], h2h["b"]) == ("a", "b")
    assert [i["score"] for i in h2h["items"]] == expected
    assert 0 < expected.count(1.0) + expected.count(0.0)  # the two models' answers really differ in length somewhere
    differ = sum(x.strip() != y.strip() for x, y in zip(out_a, out_b))
    assert h2h["identical"] == len(prompts) - differ and h2h["requests"] == 2 * differ  # both orders, identical answers not asked
    assert h2h["inconsistent"] == sum(x.strip() != y.strip() for p, x, y in zip(prompts, out_a, out_b) if p.startswith("juliet"))
    assert (h2h["wins"], h2h["ties"], h2h["losses"]) == (expected.count(1.0), expected.count(0.5), expected.count(0.0))
    assert h2h["win_rate"] == pytest.approx(sum(expected) / len(expected))
    assert h2h["win_rate_ci_low"] <= h2h["win_rate"] <= h2h["win_rate_ci_high"]
    w, l = expected.count(1.0), expected.count(0.0)  # two-sided exact sign test on wins vs losses, by hand
    assert h2h["p_value"] == pytest.approx(min(1.0, 2 * sum(math.comb(w + l, k) for k in range(min(w, l) + 1)) / 2 ** (w + l)))
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Judge head-to-head: b vs a" in html and report["errors"] == []
