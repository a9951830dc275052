"""The Review page's navigation state and its label events, without AppTest: every key and transition is a
method of ``app.review.ReviewNav``, and ``app.review_events.apply_batch`` stores what the browser sends."""

from __future__ import annotations

import pytest

from app import review, review_events
from db import repository as repo
from db.engine import get_engine
from db.ingest import ingest_file
from db.rows import ResponseDetail
from tests.app.data import tiny_records, write_jsonl

# ------------------------------------------------------------------------------------------- navigation


def test_new_filters_start_at_the_top_but_not_on_the_first_run() -> None:
    nav = review.ReviewNav(index=7, response_id=40)
    nav.set_filters({"sort": "id"})  # first run: a link's position wins
    assert (nav.index, nav.response_id) == (7, 40)
    nav.set_filters({"sort": "id"})
    assert nav.index == 7
    nav.set_filters({"sort": "score"})
    assert (nav.index, nav.response_id, nav.queue) == (0, None, None)


def test_link_is_read_once_and_bad_text_is_reported() -> None:
    nav = review.ReviewNav()
    assert nav.read_link("12", "3") is None
    assert (nav.response_id, nav.index, nav.link_response, nav.link_index) == (12, 3, 12, 3)
    assert nav.read_link("99", "0") is None  # a rerun does not read the URL again
    assert nav.response_id == 12
    other = review.ReviewNav()
    assert "not a response number" in (other.read_link("<b>x</b>", "") or "")


def test_a_position_past_the_end_says_out_of_range() -> None:
    nav = review.ReviewNav()
    nav.read_link("", "4999")  # ?i=4999 without a response
    message = nav.clamp(150)
    assert message is not None and "out of range" in message and "5000" in message
    assert nav.index == 149
    assert nav.clamp(150) is None  # said once


def test_a_linked_response_takes_its_real_position() -> None:
    nav = review.ReviewNav()
    nav.read_link("204", "")
    nav.locate(57)
    assert nav.index == 57 and nav.response_id == 204
    assert nav.position(150) == ("58 / 150", None)


def test_missing_response_goes_back_to_the_top_and_says_if_a_link_named_it() -> None:
    nav = review.ReviewNav()
    nav.read_link("77", "")
    assert nav.missing(10) is True
    assert (nav.index, nav.response_id) == (0, None)
    nav.response_id = 5
    assert nav.missing(10) is False


def test_queue_is_followed_and_left() -> None:
    nav = review.ReviewNav()
    nav.follow_queue("Gold queue", [4, 9, 2], 9)
    assert nav.position(100) == ("2 / 3", "Gold queue")
    assert nav.step(1, 100) is None and nav.response_id == 2
    assert "last response of the Gold queue" in (nav.step(1, 100) or "")
    assert nav.step(-1, 100) is None and nav.response_id == 9
    nav.response_id = 55
    nav.check_queue()
    assert nav.queue is None


def test_step_and_save_and_next_along_the_list() -> None:
    nav = review.ReviewNav(index=3, response_id=30)
    nav.step(1, 10)
    assert (nav.index, nav.response_id) == (4, None)
    nav.step(-1, 10)
    assert nav.index == 3
    nav.advance = True
    nav.after_save(10, still_listed=False)  # the response dropped out: the next one moved up
    assert nav.index == 3 and nav.advance is False
    nav.after_save(10, still_listed=True)
    assert nav.index == 4
    nav.go_to(99, 10)
    assert nav.index == 9


def test_moving_clears_a_question_raised_for_the_old_response() -> None:
    nav = review.ReviewNav(index=0, response_id=1)
    nav.question = review.Question(5, 1, "contradiction")
    nav.step(1, 10)
    assert nav.question is None and nav.conflict is None


# ------------------------------------------------------------------------------------------- label events


@pytest.fixture
def engine(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    ingest_file(engine, write_jsonl(tmp_path / "tiny.jsonl", tiny_records(4)), "tiny")
    return engine


def _detail(engine, label: int) -> ResponseDetail:
    ds = repo.list_datasets(engine)[0]
    rows = repo.list_responses(engine, ds.id, sort="id").rows
    return repo.get_response(engine, next(r.id for r in rows if r.response_label == label))


def _apply(engine, events, acked=0, who="ann"):
    def save(proposal, finished):
        return review.store(engine, proposal, who)

    return review_events.apply_batch(
        events,
        acked=acked,
        load=lambda rid: repo.get_response(engine, rid),
        save=save,
        undo=lambda rid: repo.undo_last(engine, who, response_id=rid),
    )


def _set(event_id, detail, labels, versions=None):
    seen = (
        versions
        if versions is not None
        else {sid: v for sid, v in _versions(detail).items() if sid in labels}
    )
    return review_events.LabelEvent(event_id, detail.id, "set", labels, seen)


def _versions(detail):
    return {s.id: s.label_version for s in detail.sentences}


def test_events_are_stored_in_order_each_as_one_action(engine) -> None:
    d = _detail(engine, 0)
    sids = [s.id for s in d.sentences]
    events = [_set(10 + i, d, {sid: 0}) for i, sid in enumerate(sids)]
    out = _apply(engine, events)
    assert out.acked == 10 + len(sids) - 1 and out.question is None and out.n_changed == len(sids)
    history = sorted(repo.label_history(engine, response_id=d.id), key=lambda h: h.event_id)
    assert [h.sentence_id for h in history] == sids
    assert {(h.annotator, h.source) for h in history} == {("ann", "human")}
    # The same batch again (a reload before the answer arrived): nothing stored twice.
    again = _apply(engine, events, acked=0)
    assert again.acked == out.acked and again.n_changed == 0 and again.conflict is None
    assert len(repo.label_history(engine, response_id=d.id)) == len(sids)


def test_a_contradiction_is_asked_and_stored_only_when_forced(engine) -> None:
    d = _detail(engine, 0)
    first, second = d.sentences[0].id, d.sentences[1].id
    events = [_set(1, d, {first: 0}), _set(2, d, {second: 1}), _set(3, d, {d.sentences[2].id: 0})]
    out = _apply(engine, events)
    assert out.acked == 1  # stopped at the contradiction; the later event waits behind it
    assert out.question is not None and out.question.event_id == 2
    assert repo.get_response(engine, d.id).sentences[1].label is None
    forced = review_events.LabelEvent(2, d.id, "set", {second: 1}, {second: None}, force=True)
    out = _apply(engine, [forced, events[2]], acked=1)
    # Stored; the next change still leaves the response contradicted, so it is asked about in its turn.
    assert out.acked == 2 and out.question is not None and out.question.event_id == 3
    assert [s.label for s in repo.get_response(engine, d.id).sentences[:3]] == [0, 1, None]


def test_a_stale_save_is_refused_and_shows_their_label(engine) -> None:
    d = _detail(engine, 1)
    sid = d.sentences[0].id
    seen = _versions(d)
    repo.record_labels(engine, d.id, {sid: 1}, "other")  # someone else, after this view was read
    out = _apply(engine, [review_events.LabelEvent(1, d.id, "set", {sid: 0}, {sid: seen[sid]})])
    assert out.acked == 0 and out.conflict is not None
    [c] = out.conflict.conflicts
    assert (c.label, c.annotator) == (1, "other")
    assert repo.get_response(engine, d.id).sentences[0].label == 1


def test_a_change_that_follows_its_own_earlier_change_is_no_conflict(engine) -> None:
    d = _detail(engine, 1)
    sid = d.sentences[0].id
    _apply(engine, [_set(1, d, {sid: 1})])
    now = repo.get_response(engine, d.id)
    out = _apply(engine, [_set(2, now, {sid: 0})], acked=1)  # the browser sends the version its change made
    assert out.acked == 2 and out.conflict is None


def test_undo_and_refusal(engine) -> None:
    d = _detail(engine, 0)
    sid = d.sentences[0].id
    _apply(engine, [_set(1, d, {sid: 0})])
    out = _apply(engine, [review_events.LabelEvent(2, d.id, "undo")], acked=1)
    assert out.undone == 1 and repo.get_response(engine, d.id).sentences[0].label is None
    outside = review_events.LabelEvent(3, d.id, "set", {sid: 7}, {sid: None}, force=True)
    bad = _apply(engine, [outside], acked=2)  # a level outside the dataset, even "stored anyway"
    assert bad.refused and bad.acked == 3


def test_events_naming_another_responses_sentence_are_refused(engine) -> None:
    a, b = _detail(engine, 0), _detail(engine, 1)
    out = _apply(engine, [review_events.LabelEvent(1, a.id, "set", {b.sentences[0].id: 0}, {})])
    assert out.refused and repo.label_history(engine, response_id=b.id) == []


@pytest.mark.parametrize(
    "raw",
    [None, {"events": "x"}, {"events": [{"id": "1", "response_id": 1, "kind": "set"}]},
     {"events": [{"id": 1, "response_id": 1, "kind": "drop table"}]},
     {"events": [{"id": 1, "response_id": 1, "kind": "set", "labels": {"1": "one"}}]}],
)  # fmt: skip
def test_a_malformed_batch_is_refused(raw) -> None:
    from fractal_core.errors import InputError

    with pytest.raises(InputError):
        review_events.parse_batch(raw)


def test_accept_rest_stores_the_views_labels_as_accepted_from_the_model(engine) -> None:
    d = _detail(engine, 0)
    sids = [s.id for s in d.sentences]
    proposal = review.propose_accept_rest(d)
    assert proposal.source == review.MODEL_SOURCE
    out = _apply(engine, [review_events.LabelEvent(1, d.id, "accept_rest", {}, _versions(d))])
    assert out.advance or not proposal.labels
    stored = repo.get_response(engine, d.id).sentences
    assert all(s.label_source == "model" for s in stored if s.id in proposal.labels and s.id in sids)
