"""``fractal serve-scores``: step scores over HTTP for a training loop, on a tiny model over a tiny encoder.

Live servers on loopback (in a thread, and the real command in a subprocess for the client example): the token,
bad input, the model id in every answer, segmentation as on ingest, batching, and the same scores as
``fractal score`` and ``FractalModel.predict``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from app.score_server import SCORES_PATH, Limits, ScoreBatcher, ScoreServer, load_model_dir
from fractal_core import EncoderConfig, FractalModel, InputError, TrainConfig
from fractal_core.data.io import read_records
from fractal_core.fitting.step_scores import model_digest, responses_from_request, score_responses
from fractal_core.mil import semantics
from tests.app.conftest import REPO, _stop, app_env
from tests.app.data import BAD, GOOD, tiny_records, write_jsonl

TOKEN = "test-token-0123456789abcdef"
STEPS_TEXT = (
    "Step 1: We add the two numbers to get the total.\nThe sum of 12 and 30 is 52.\n"
    "Step 2: Dividing 42 by 6 gives 7.\nStep 3: So each friend receives 7 apples."
)
PROSE_TEXT = "We add the numbers. The sum of 12 and 30 is 52! Is that right? See https://x.org/a?b=1. Done."


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private FRACTAL_HOME (embedding cache) for the module."""
    path = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FRACTAL_HOME", str(path))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield path


@pytest.fixture(scope="module")
def model_dir(home: Path, tiny_encoder_dir: Path) -> Path:
    """A bagloss model on the tiny encoder, trained in a second on the tiny dataset and saved."""
    path = write_jsonl(home / "train.jsonl", tiny_records(16))
    config = TrainConfig(max_epochs=2, patience=1, batch_bags=8, min_batches_per_epoch=1, hidden=32)
    model = FractalModel(
        "bagloss", config=config, encoder=EncoderConfig(model_path=str(tiny_encoder_dir)), seed=0
    ).fit(read_records(path))
    return model.save(home / "model")


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ScoreServer]:
    served = load_model_dir(model_dir, segment_mode="steps")
    srv = ScoreServer(("127.0.0.1", 0), served, token=TOKEN, limits=Limits(max_body_bytes=20_000))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _url(srv: ScoreServer, path: str = SCORES_PATH) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _call(
    srv: ScoreServer,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    raw: bytes | None = None,
    path: str = SCORES_PATH,
) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(_url(srv, path), data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _items() -> list[dict[str, Any]]:
    return [
        {"context": "Problem 1: compute the answer step by step.", "sentences": [GOOD[0], BAD[1], GOOD[2]]},
        {"context": "Problem 2.", "text": STEPS_TEXT},
        {"id": "mine", "context": "", "sentences": [GOOD[3], GOOD[4]]},
    ]


def test_the_token_is_required_and_health_is_open(server: ScoreServer) -> None:
    body = {"responses": _items()[:1]}
    for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1]):
        status, answer = _call(server, body, token=token)
        assert status == 401 and answer["error"] == "missing or wrong bearer token"
        assert "results" not in answer and set(answer["model"]) == {
            "id"
        }  # nothing about the model but its id
    assert _call(server, token=None, path="/health") == (
        200,
        {"status": "ok", "model": {"id": server.served.info["id"]}},
    )
    assert _call(server, body)[0] == 200


def test_the_command_listens_on_loopback_unless_told_otherwise() -> None:
    import inspect

    from app.score_server import serve_scores_cmd
    from app.settings import LOOPBACK

    assert inspect.signature(serve_scores_cmd).parameters["host"].default == LOOPBACK == "127.0.0.1"


def test_every_answer_names_the_model(server: ScoreServer, model_dir: Path) -> None:
    info = server.served.info
    assert info["id"] == model_digest(model_dir, FractalModel.FILES) and len(info["id"]) == 16
    assert info["segment_mode"] == "steps" and info["method"] == "bagloss" and info["version"] is None
    status, ok = _call(server, {"responses": _items()})
    assert status == 200 and ok["model"] == info
    assert _call(server, {"responses": []})[1]["model"] == info  # errors too
    assert _call(server, token="nope-nope-nope-nope-nope")[1]["model"] == {"id": info["id"]}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (b"{not json", "body", "invalid JSON"),
        (b"\xff\xfe", "body", "not UTF-8"),
        (b"[1, 2]", "body", "must be an object"),
        (b'{"answers": []}', "answers", "unknown field"),
        (b"{}", "responses", "missing required field"),
        (b'{"responses": "text"}', "responses", "must be a list"),
        (b'{"responses": []}', "responses", "at least one"),
        (b'{"responses": [7]}', "responses[0]", "must be an object"),
        (b'{"responses": [{"context": "c"}]}', "responses[0].sentences", "give either sentences"),
        (b'{"responses": [{"sentences": ["a"]}, {"text": 3}]}', "responses[1].text", "must be a string"),
        (b'{"responses": [{"text": "   "}]}', "responses[0].text", "empty"),
        (b'{"responses": [{"sentences": ["a", ""]}]}', "responses[0].sentences", "item 1 is empty"),
        (b'{"responses": [{"sentence": ["a"]}]}', "responses[0].sentence", "unknown field"),
        (
            b'{"responses": [{"sentences": ["a"], "text": "a"}]}',
            "responses[0].text",
            "either sentences or text",
        ),
        (b'{"responses": [{"context": 1, "text": "a"}]}', "responses[0].context", "must be a string"),
        (b'{"responses": [{"text": "a\\u0000b"}]}', "responses[0].text", "NUL"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(server: ScoreServer, body: bytes, field: str, says: str) -> None:
    status, answer = _call(server, raw=body)
    assert status == 400, answer
    assert answer["field"] == field and says in answer["error"]
    assert "Traceback" not in answer["error"]


def test_size_limits(server: ScoreServer) -> None:
    status, answer = _call(server, {"responses": [{"text": "x" * 30_000}]})
    assert status == 413 and answer["field"] == "body" and "limit is 20000" in answer["error"]
    with pytest.raises(InputError, match="3 responses in one request; the limit is 2") as err:
        responses_from_request(
            [{"sentences": ["a"]}] * 3, segment_mode="steps", aggregation="max", max_responses=2
        )
    assert err.value.field == "responses"
    with pytest.raises(InputError, match="limit is 10") as err:
        responses_from_request(
            [{"text": "x" * 11}], segment_mode="steps", aggregation="max", max_field_chars=10
        )
    assert err.value.field == "responses[0].text"


def test_raw_text_is_segmented_as_on_ingest(server: ScoreServer, home: Path) -> None:
    status, answer = _call(server, {"responses": [{"text": STEPS_TEXT}, {"text": PROSE_TEXT}]})
    assert status == 200
    path = write_jsonl(
        home / "ingest.jsonl",
        [
            {"id": "a", "text": STEPS_TEXT, "response_label": 0},
            {"id": "b", "text": PROSE_TEXT, "response_label": 0},
        ],
    )
    ingested = read_records(path, segment_mode="steps")  # what `fractal ingest --segment-mode steps` stores
    for result, record in zip(answer["results"], ingested, strict=True):
        assert result["offsets"] == [[s.start, s.end] for s in record.spans]
        assert result["sentences"] == [s.text for s in record.spans]
        assert result["text"] == record.text
    assert len(answer["results"][0]["sentences"]) == 3  # the three "Step n:" markers


def test_scores_are_fractal_score_and_predict(server: ScoreServer, model_dir: Path, home: Path) -> None:
    from app.cli import _register_subcommands, app

    items = _items()
    status, answer = _call(server, {"responses": items})
    assert status == 200
    rows = [{"id": str(i), **item, "response_label": 0} for i, item in enumerate(items)]
    rows[2]["id"] = "mine"
    data = write_jsonl(home / "to-score.jsonl", rows)
    _register_subcommands()
    out = home / "scored.jsonl"
    run = CliRunner().invoke(
        app, ["score", "--model", str(model_dir), str(data), "--out", str(out), "--segment-mode", "steps"]
    )
    assert run.exit_code == 0, run.output
    cli = [json.loads(line) for line in out.read_text().splitlines()]
    records = read_records(data, segment_mode="steps")
    predicted = FractalModel.load(model_dir).predict(records)
    model = server.served.model
    for result, row, record, expected in zip(answer["results"], cli, records, predicted, strict=True):
        assert result["id"] == row["id"] == record.id
        assert result["offsets"] == row["offsets"]
        np.testing.assert_allclose(result["sentence_scores"], row["sentence_scores"], atol=1e-6)
        np.testing.assert_allclose(result["sentence_scores"], expected, rtol=1e-6, atol=1e-7)
        response = semantics.response_scores(
            expected, np.zeros(len(expected), dtype=np.int64), 1, aggregation=model.aggregation_,
            variant=model.config.bag_variant,
        )  # fmt: skip
        assert result["response_score"] == pytest.approx(float(response[0]), abs=1e-7)
    assert answer["results"][2]["id"] == "mine" and answer["results"][0]["id"] == "0"


def test_requests_that_arrive_together_share_one_pass_and_get_the_same_scores(server: ScoreServer) -> None:
    model = server.served.model
    requests = [responses_from_request([item], segment_mode="steps", aggregation="max") for item in _items()]
    alone = [score_responses(model, records)[0] for records in requests]
    gate, started = threading.Event(), threading.Event()
    sizes: list[int] = []

    def score(records: list[Any]) -> list[Any]:
        sizes.append(len(records))
        if len(sizes) == 1:  # the first batch holds the line until every other request is queued
            started.set()
            gate.wait(30)
        return score_responses(model, records)

    batcher = ScoreBatcher(score, max_batch=64, max_wait_s=0.0)
    results: dict[int, Any] = {}

    def submit(i: int) -> None:
        results[i] = batcher.submit(requests[i])[0]

    try:
        first = threading.Thread(target=submit, args=(0,))
        first.start()
        assert started.wait(30)
        others = [threading.Thread(target=submit, args=(i,)) for i in (1, 2)]
        for t in others:
            t.start()
        while batcher._queue.qsize() < 2:  # both queued behind the held batch (no timing involved)
            threading.Event().wait(0.01)
        gate.set()
        for t in [first, *others]:
            t.join(30)
    finally:
        batcher.close()
    assert sizes == [1, 2]  # the two that waited together went through one forward pass
    for i, expected in enumerate(alone):
        assert results[i].spans == expected.spans
        np.testing.assert_allclose(results[i].scores, expected.scores, rtol=1e-5, atol=1e-6)
        assert results[i].response_score == pytest.approx(expected.response_score, abs=1e-6)


def test_batches_respect_the_size_limit_and_never_split_a_request(server: ScoreServer) -> None:
    seen: list[int] = []
    gate = threading.Event()

    def score(records: list[Any]) -> list[Any]:
        seen.append(len(records))
        if len(seen) == 1:
            gate.wait(30)
        return list(records)

    batcher = ScoreBatcher(score, max_batch=3, max_wait_s=0.0)
    threads = [threading.Thread(target=batcher.submit, args=([object()] * n,)) for n in (1, 2, 2, 4)]
    try:
        threads[0].start()
        while not seen:
            threading.Event().wait(0.01)
        for t in threads[1:]:
            t.start()
            while batcher._queue.qsize() == 0 and t.is_alive():  # queued in this order
                threading.Event().wait(0.01)
        gate.set()
        for t in threads:
            t.join(30)
    finally:
        batcher.close()
    assert seen == [1, 2, 2, 4]  # 2 + 2 > 3: each its own batch; 4 alone although over the limit


def test_a_failing_batch_answers_500_in_one_line(
    server: ScoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(records: list[Any]) -> list[Any]:
        raise RuntimeError("out of memory on the device")

    monkeypatch.setattr(server.batcher, "_score", broken)
    status, answer = _call(server, {"responses": _items()[:1]})
    assert status == 500 and answer["error"] == "scoring failed: RuntimeError: out of memory on the device"
    monkeypatch.undo()
    assert _call(server, {"responses": _items()[:1]})[0] == 200  # the batcher lives on


def test_concurrent_http_requests_get_their_own_answers(server: ScoreServer) -> None:
    items = _items()
    single = [_call(server, {"responses": [item]})[1]["results"][0] for item in items]
    answers: dict[int, Any] = {}

    def ask(i: int) -> None:
        answers[i] = _call(server, {"responses": [items[i % 3]]})[1]["results"][0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for i in range(9):
        expected = single[i % 3]
        assert answers[i]["offsets"] == expected["offsets"]
        np.testing.assert_allclose(answers[i]["sentence_scores"], expected["sentence_scores"], atol=1e-6)


def _example() -> Any:
    """examples/trl_reward.py, loaded from its file as a user copies it (it is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("trl_reward", REPO / "examples" / "trl_reward.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_example(url: str, token: str) -> dict[str, Any]:
    trl_reward = _example()
    prompts = ["Problem 1: compute the answer step by step.", [{"role": "user", "content": "Problem 2."}]]
    completions = [STEPS_TEXT, [{"role": "assistant", "content": PROSE_TEXT}]]
    steps = trl_reward.step_rewards(prompts, completions, url=url, token=token)
    # TRL passes dataset columns and completion ids as keyword arguments: they are ignored.
    whole = trl_reward.response_rewards(prompts, completions, url=url, token=token, completion_ids=[[1], [2]])
    raw = trl_reward.score(prompts, completions, url=url, token=token)
    assert [len(s) for s in steps] == [3, len(raw[1]["sentences"])]
    assert raw[1]["text"] == PROSE_TEXT and raw[0]["text"] == STEPS_TEXT
    for rewards, result in zip(steps, raw, strict=True):
        np.testing.assert_allclose(rewards, [1 - s for s in result["sentence_scores"]])
    np.testing.assert_allclose(whole, [1 - r["response_score"] for r in raw])
    good = trl_reward.step_rewards(prompts, completions, url=url, token=token, label_is_error=False)
    np.testing.assert_allclose(good[0], raw[0]["sentence_scores"])
    with pytest.raises(trl_reward.ScoreServerError, match="HTTP 401"):
        trl_reward.step_rewards(prompts, completions, url=url, token="x" * 32)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        trl_reward.step_rewards(prompts, completions[:1], url=url, token=token)
    return raw[0]["model"]


def test_the_trl_reward_example(server: ScoreServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    assert _check_example(url, TOKEN) == server.served.info


@pytest.mark.slow
def test_the_command_prints_its_loopback_address_and_a_token_once(model_dir: Path, home: Path) -> None:
    """The real command in a subprocess: loopback, a fresh token printed once, and the example works with it."""
    env = {**app_env(home, f"sqlite:///{home / 'unused.sqlite'}"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve-scores", "--model", str(model_dir), "--port", "0",
         "--segment-mode", "steps"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner, token_line = proc.stdout.readline(), proc.stdout.readline()
        assert "http://localhost:" in banner and SCORES_PATH in banner, banner
        assert token_line.startswith("token: ")
        port = int(banner.split("http://localhost:")[1].split("/")[0])
        token = token_line.split(": ", 1)[1].strip()
        assert len(token) >= 32
        model = _check_example(f"http://127.0.0.1:{port}", token)
        assert model["id"] == model_digest(model_dir, FractalModel.FILES)
        assert proc.poll() is None
    finally:
        _stop(proc)
    rest = proc.stdout.read()
    assert token not in rest  # printed once
    assert "warning" not in proc.stderr.read()  # loopback: nothing to warn about


def test_a_token_file_and_bad_options_exit_2(model_dir: Path, tmp_path: Path) -> None:
    from app.cli import _register_subcommands, app

    _register_subcommands()
    short = tmp_path / "short"
    short.write_text("abc\n")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{")
    cases = [
        (["--model", str(model_dir), "--dataset", "x"], "give either --model DIR or --dataset NAME"),
        ([], "give either --model DIR or --dataset NAME"),
        (["--model", str(tmp_path)], "no model.json"),
        (["--model", str(broken)], "cannot load the model"),
        (["--model", str(model_dir), "--token-file", str(short)], "at least 16 characters"),
        (["--model", str(model_dir), "--token-file", str(tmp_path / "none")], "--token-file"),
        (
            ["--model", str(model_dir), "--segment-mode", "words"],
            "--segment-mode: expected sentences or steps",
        ),
        (["--model", str(model_dir), "--max-batch", "0"], "--max-batch must be >= 1"),
    ]
    for args, says in cases:
        run = CliRunner().invoke(app, ["serve-scores", *args])
        assert run.exit_code == 2, (args, run.output)
        assert says in run.output and "Traceback" not in run.output


@pytest.mark.slow
def test_a_datasets_active_version_is_served_with_its_version_and_segment_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_encoder_dir: Path
) -> None:
    from app.score_server import ServeError, load_active_model
    from db import artifacts
    from db import repository as repo
    from tests.app.conftest import make_store
    from tests.app.data import FAST_TRAIN

    monkeypatch.setenv("FRACTAL_ENCODER", str(tiny_encoder_dir))  # the train job embeds with the tiny encoder
    with make_store("sqlite", tmp_path, monkeypatch) as store:
        ds = store.ingest(tiny_records(12), segment_mode="steps")
        with pytest.raises(ServeError, match="has no active model yet"):
            load_active_model(store.db_url, "tiny")
        with pytest.raises(ServeError, match="no dataset 'nope'"):
            load_active_model(store.db_url, "nope")
        repo.create_job(
            store.engine,
            "train",
            {"dataset_id": ds.dataset_id, "method": "bagloss", "config": FAST_TRAIN, "seed": 0},
        )
        store.run_jobs()
        version = repo.active_model_version(store.engine, ds.dataset_id)
        assert version is not None
        served = load_active_model(store.db_url, "tiny")
        directory = artifacts.model_dir(store.engine, version, store.home / "models")
        assert served.info["version"] == version.version and served.info["model_version_id"] == version.id
        assert served.info["dataset"] == "tiny" and served.segment_mode == "steps"
        assert served.info["id"] == model_digest(directory, FractalModel.FILES)
        srv = ScoreServer(("127.0.0.1", 0), served, token=TOKEN)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        try:
            status, answer = _call(srv, {"responses": [{"text": STEPS_TEXT}]})
        finally:
            srv.shutdown()
            srv.server_close()
        assert status == 200 and answer["model"]["version"] == version.version
        assert len(answer["results"][0]["sentences"]) == 3  # split into steps, as the dataset's file was
        expected = FractalModel.load(directory).predict(
            responses_from_request([{"text": STEPS_TEXT}], segment_mode="steps", aggregation="max")
        )[0]
        np.testing.assert_allclose(answer["results"][0]["sentence_scores"], expected, rtol=1e-6, atol=1e-7)
        # A dataset whose files were split both ways: the command asks which one new text gets.
        more = [{**r, "id": f"more-{r['id']}"} for r in tiny_records(3)]
        store.ingest(more, name="tiny", segment_mode="sentences")
        with pytest.raises(ServeError, match="segmented as sentences and steps"):
            load_active_model(store.db_url, "tiny")
        assert load_active_model(store.db_url, "tiny", segment_mode="sentences").segment_mode == "sentences"
