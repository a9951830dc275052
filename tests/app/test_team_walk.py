"""A walk through the README's "Running for a team" in the app alone (AppTest, sign-in on): the first admin
signs in with the one-time password `fractal serve` printed and sets their own, adds the team on the Users page,
uploads the first file (which queues embedding and training), assigns overlap work; two annotators label the
same response apart; the reviewer reads agreement and adjudicates; the admin trains on the adjudicated labels
and exports them. The worker that `fractal serve` starts is the in-process worker here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from db import accounts, team
from db import repository as repo
from tests.app import review_driver as drive
from tests.app.conftest import app_test
from tests.app.data import tiny_records

ONE_TIME = "one-time-pass-123"
NEW_PASSWORD = "a-long-admin-password"
TEAM_PASSWORD = "team-password-456"


def _sign_in(name: str, password: str = TEAM_PASSWORD):
    at = app_test()
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    at.button(key="signin_submit").click().run()
    assert not at.exception, at.exception
    return at


def _open(at, page: str):
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.slow
def test_running_for_a_team_needs_no_command_line(store, monkeypatch) -> None:
    monkeypatch.setenv("FRACTAL_AUTH", "on")
    # What the first `fractal serve` does on an empty store: the admin with a one-time password.
    accounts.add_user(store.engine, "admin", "admin", ONE_TIME, must_change_password=True)

    admin = _sign_in("admin", ONE_TIME)
    admin.text_input(key="pw_new").input(NEW_PASSWORD)
    admin.text_input(key="pw_again").input(NEW_PASSWORD)
    admin.button(key="pw_submit").click().run()
    admin = _sign_in("admin", NEW_PASSWORD)

    # Users page: the team, without `fractal users add`.
    _open(admin, "views/users.py")
    for name, role in (("ann", "annotator"), ("bob", "annotator"), ("rita", "reviewer")):
        admin.text_input(key="users_new_name").input(name)
        admin.selectbox(key="users_new_role").set_value(role)
        admin.text_input(key="users_new_password").input(TEAM_PASSWORD)
        admin.button(key="users_add_submit").click().run()
        assert not admin.error, [e.value for e in admin.error]
    assert {u.name: u.role for u in accounts.list_users(store.engine)} == {
        "admin": "admin",
        "ann": "annotator",
        "bob": "annotator",
        "rita": "reviewer",
    }

    # Data page: the first upload; it queues embedding and the first training by itself.
    _open(admin, "views/data.py")
    upload = "".join(json.dumps(r) + "\n" for r in tiny_records(6)).encode()
    admin.file_uploader[0].upload("work.jsonl", upload, "application/jsonl")
    admin.run()
    admin.button(key="data_import").click().run()
    assert not admin.error, [e.value for e in admin.error]
    [dataset] = repo.list_datasets(store.engine)
    assert sorted(j.kind for j in repo.list_jobs(store.engine)) == ["embed", "train"]

    # 1. Team page: two annotators for every response (overlap 100%), guidelines.
    _open(admin, "views/team.py")
    admin.number_input(key="team_k").set_value(2)
    admin.number_input(key="team_p").set_value(100)
    admin.multiselect(key="team_people").set_value(["ann", "bob"])
    admin.button(key="team_assign").click().run()
    assert not admin.exception and not admin.error
    assert len(team.queue(store.engine, dataset.id, "ann")) == 6

    # The worker runs what the upload queued: Review shows scores before anyone labels.
    store.run_jobs()
    assert repo.active_model_version(store.engine, dataset.id) is not None

    # 2. Review: ann and bob label the first sentence of the same response differently.
    ann = _sign_in("ann")
    rid = drive.nav(ann).response_id
    drive.label(ann, 0, 0)
    bob = _sign_in("bob")
    assert drive.nav(bob).response_id == rid
    drive.label(bob, 0, 1)
    if drive.data(bob)["question"] is not None:  # a contradicting label is asked about first: Y
        drive.label(bob, 0, 1, force=True)
    first = repo.get_response(store.engine, rid).sentences[0]
    assert team.annotations_by_annotator(store.engine, rid) == {"ann": {first.id: 0}, "bob": {first.id: 1}}

    # 3. Agreement (reviewer).
    rita = _sign_in("rita")
    _open(rita, "views/agreement.py")
    [pairs] = [d for d in rita.dataframe if "annotator A" in d.value.columns]
    assert list(pairs.value["same label"]) == ["0%"]

    # 4. Adjudicate (reviewer): the tie is hers to decide, then it is gold.
    _open(rita, "views/adjudicate.py")
    picker = rita.segmented_control(key=f"adj-{rid}-{first.id}")
    assert picker.value is None
    response = repo.get_response(store.engine, rid)
    picker.set_value(str(int(response.response_label))).run()  # agrees with the response label: no question
    rita.button(key="adj_save").click().run()
    assert not rita.error, [e.value for e in rita.error]
    assert repo.get_response(store.engine, rid).sentences[0].annotator == "rita"

    # 5. Train (admin) with the adjudicated gold label, then Export.
    admin = _sign_in("admin", NEW_PASSWORD)
    _open(admin, "views/train.py")
    admin.selectbox(key="train_preset").set_value("quick").run()
    admin.button(key="train_start").click().run()
    store.run_jobs()
    _open(admin, "views/train.py")
    finished = (
        [s.value for s in admin.success] + [w.value for w in admin.warning] + [i.value for i in admin.info]
    )
    assert any("Done: model version 2" in t for t in finished)
    v2 = repo.find_model_version(store.engine, dataset.id, 2)
    assert v2 is not None and v2.metrics["gold_sentences"] >= 1
    _open(admin, "views/export.py")
    admin.selectbox(key="export_fmt").set_value("native").run()
    admin.button(key="export_prepare").click().run()
    assert not admin.exception
    path = admin.session_state["export_ready"]["path"]
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    exported = next(r for r in rows if r["id"] == response.external_id)
    fractal = exported["meta"]["fractal"]
    assert fractal["adjudicated"]["reviewer"] == "rita"
    assert {a for a in fractal["annotations"]} == {"ann", "bob"}
