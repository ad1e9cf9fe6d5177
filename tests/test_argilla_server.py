"""The Argilla SDK against a real argilla-server 2.8 (see tests/argilla_server/): a preference
dataset shaped like ours, records logged twice by id, answers from two annotators through the
REST endpoint the web UI uses, and everything read back through the SDK."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import argilla as rg
import pytest
from PIL import Image

from tests.argilla_server.fixture import ArgillaServer, create_annotator, submit_response

pytestmark = pytest.mark.slow  # `make test-fast` skips this module

LABELS = ["image_a", "image_b", "both_good", "both_bad", "toxic"]


def png_data_uri(color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_records(suffix: str) -> list[Any]:
    rows = [
        ("pair-0", "a red cube on a table", "objects", 0.5, "image_a"),
        ("pair-1", "a blue bird in the rain", "animals", 1.5, "image_b"),
        ("pair-2", "a green bird on a branch", "animals", 2.5, "both_good"),
    ]
    return [
        rg.Record(
            id=record_id,
            fields={
                "prompt": f"{prompt}{suffix}",
                "image_a": png_data_uri((200, 10 * i, 0)),
                "image_b": png_data_uri((0, 10 * i, 200)),
            },
            metadata={"category": category, "score_margin": margin},
            suggestions=[rg.Suggestion(question_name="preference", value=label, agent="ai")],
        )
        for i, (record_id, prompt, category, margin, label) in enumerate(rows)
    ]


def by_id(records: Any) -> dict[str, Any]:
    """Records by the id they were logged with; each id must come back once."""
    listed = list(records)
    found = {record.id: record for record in listed}
    assert len(found) == len(listed), [record.id for record in listed]
    return found


def where(*condition: Any) -> Any:
    return rg.Query(filter=rg.Filter(condition))


def test_sdk_round_trip_with_annotators(argilla_server: ArgillaServer) -> None:
    client = rg.Argilla(api_url=argilla_server.url, api_key=argilla_server.api_key)
    workspace_name = f"ws-{uuid.uuid4().hex[:8]}"
    dataset_name = f"pairs-{uuid.uuid4().hex[:8]}"
    workspace = rg.Workspace(name=workspace_name, client=client).create()

    settings = rg.Settings(
        fields=[
            rg.TextField(name="prompt", use_markdown=False),
            rg.ImageField(name="image_a"),
            rg.ImageField(name="image_b"),
        ],
        questions=[
            rg.LabelQuestion(name="preference", labels=LABELS),
            rg.TextQuestion(name="comment", required=False),
        ],
        metadata=[
            rg.TermsMetadataProperty(name="category"),
            rg.FloatMetadataProperty(name="score_margin"),
        ],
    )
    dataset = rg.Dataset(
        name=dataset_name, workspace=workspace, settings=settings, client=client
    ).create()

    dataset.records.log(make_records(""))
    # Logging the same ids again updates the records in place.
    dataset.records.log(make_records(" (v2)"))
    logged = by_id(dataset.records(with_responses=True, with_suggestions=True))
    assert sorted(logged) == ["pair-0", "pair-1", "pair-2"]
    assert logged["pair-1"].fields["prompt"] == "a blue bird in the rain (v2)"
    # Images go up as data URIs and come back decoded, as PIL images.
    image = logged["pair-1"].fields["image_a"]
    assert image.size == (8, 8)
    assert image.convert("RGB").getpixel((0, 0)) == (200, 10, 0)
    assert logged["pair-1"].metadata["score_margin"] == 1.5
    assert logged["pair-2"].suggestions["preference"].value == "both_good"
    assert logged["pair-2"].suggestions["preference"].agent == "ai"
    assert all(record._server_id is not None for record in logged.values())

    # Two annotators answer through REST, each with their own key.
    answers = {
        "annotator-1": {"pair-0": "image_a", "pair-1": "image_b", "pair-2": "toxic"},
        "annotator-2": {"pair-0": "image_b", "pair-1": "both_bad"},
    }
    user_ids = {}
    for username, picks in answers.items():
        api_key = create_annotator(argilla_server, username, workspaces=[workspace_name])
        user_ids[username] = rg.Argilla(api_url=argilla_server.url, api_key=api_key).me.id
        for record_id, label in picks.items():
            response = submit_response(
                argilla_server,
                api_key,
                logged[record_id]._server_id,
                {"preference": label, "comment": f"{username} on {record_id}"},
            )
            assert response["status"] == "submitted"
    assert user_ids["annotator-1"] != user_ids["annotator-2"]

    records = by_id(dataset.records(with_responses=True, with_suggestions=True))
    assert sorted(records) == ["pair-0", "pair-1", "pair-2"]
    for username, picks in answers.items():
        for record_id in ["pair-0", "pair-1", "pair-2"]:
            mine = [
                r
                for r in records[record_id].responses["preference"]
                if r.user_id == user_ids[username]
            ]
            if record_id not in picks:
                assert mine == []
                continue
            assert [r.value for r in mine] == [picks[record_id]]
            assert str(mine[0].status) in {"submitted", "ResponseStatus.submitted"}
            comments = [
                r.value
                for r in records[record_id].responses["comment"]
                if r.user_id == user_ids[username]
            ]
            assert comments == [f"{username} on {record_id}"]
    assert records["pair-2"].suggestions["preference"].value == "both_good"

    # Retrieval by name, through the search engine: filters on metadata and response status.
    again = client.datasets(name=dataset_name, workspace=workspace_name)
    assert again is not None and again.id == dataset.id
    animals = by_id(again.records(query=where("metadata.category", "==", "animals")))
    assert sorted(animals) == ["pair-1", "pair-2"]
    wide = by_id(again.records(query=where("metadata.score_margin", ">=", 1.0)))
    assert sorted(wide) == ["pair-1", "pair-2"]
    submitted = by_id(
        again.records(
            query=where("response.status", "==", "submitted"),
            with_responses=True,
        )
    )
    assert sorted(submitted) == ["pair-0", "pair-1", "pair-2"]
    birds = by_id(again.records(query=rg.Query(query="bird branch")))
    assert sorted(birds) == ["pair-2"]
    # Every record got a submitted response, so the dataset is complete.
    progress = again.progress()
    assert progress["total"] == 3
    assert progress["completed"] == 3
