"""Drive the Review page's browser component from AppTest, which runs no JavaScript: read the data the page
gives the component, and send the events the browser would (label changes, moves) as its trigger value.

This uses AppTest's widget-state plumbing (``_tree.get_widget_states`` / ``_run``): a trigger of an
``st.components.v2`` component is a widget whose id is the component's id with an ``__events`` suffix.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from app.components import response_view

_ids = itertools.count(1)


def element(at: Any) -> Any:
    [found] = [e for e in at.get("bidi_component")]
    return found


def data(at: Any) -> dict[str, Any]:
    """The component's data in the last run (the response, the question or conflict, the last stored event)."""
    return json.loads(element(at).proto.json)


def send(at: Any, name: str, value: Any) -> Any:
    """Run the page as after the browser fired event ``name`` with ``value``."""
    states = at._tree.get_widget_states()
    trigger = states.widgets.add()
    trigger.id = f"$$STREAMLIT_INTERNAL_KEY_{element(at).proto.id}__events"
    trigger.json_trigger_value = json.dumps([{"event": name, "value": value}])
    return at._run(states)


def event(at: Any, kind: str, labels: dict[int, int | None] | None = None, **extra: Any) -> dict[str, Any]:
    """A label event as the browser builds it: numbered, with the label versions the page shows."""
    shown = data(at)["response"]
    versions = {str(s["id"]): s["version"] for s in shown["sentences"]}
    labels = labels or {}
    seen = versions if kind == "accept_rest" else {str(k): versions[str(k)] for k in labels}
    return {
        "id": next(_ids),
        "response_id": shown["id"],
        "kind": kind,
        "labels": {str(k): v for k, v in labels.items()},
        "versions": seen,
        **extra,
    }


def press(at: Any, *events: dict[str, Any]) -> Any:
    """Send ``events`` as one batch."""
    return send(at, "batch", {"seq": next(_ids), "events": list(events)})


def label(at: Any, position: int, level: int | None, **extra: Any) -> Any:
    """A label key on sentence ``position`` (0-based) of the open response."""
    sid = data(at)["response"]["sentences"][position]["id"]
    return press(at, event(at, "set", {sid: level}, **extra))


def move(at: Any, delta: int) -> Any:
    """S (+1) or P (-1)."""
    return send(at, "nav", {"seq": next(_ids), "delta": delta})


def nav(at: Any) -> Any:
    return at.session_state[response_view.review.NAV_KEY]
