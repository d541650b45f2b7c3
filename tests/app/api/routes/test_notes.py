"""The notes CRUD against a real, migrated PostgreSQL database."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.helpers.testclient import TestClient


def _create(client: TestClient, **fields: object) -> dict[str, object]:
    response = client.post("/notes", json={"title": "a note", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_create_returns_201_and_the_stored_note(client: TestClient) -> None:
    response = client.post("/notes", json={"title": "  groceries  ", "body": "milk, eggs"})

    assert response.status_code == 201, response.text
    note = response.json()
    assert set(note) == {"id", "title", "body", "pinned", "created_at", "updated_at"}
    assert isinstance(note["id"], int)
    assert note["title"] == "groceries"  # surrounding whitespace is not part of a title
    assert note["body"] == "milk, eggs"
    assert note["pinned"] is False
    created = datetime.fromisoformat(note["created_at"])
    assert created.tzinfo is not None
    assert note["updated_at"] == note["created_at"]


def test_get_one_returns_the_note_and_404_when_missing(client: TestClient) -> None:
    note = _create(client, body="text")

    response = client.get(f"/notes/{note['id']}")
    assert response.status_code == 200
    assert response.json() == note

    missing = client.get("/notes/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "note not found"}


def test_list_orders_pinned_first_and_pages_with_limit_offset(client: TestClient) -> None:
    first = _create(client, title="first")
    second = _create(client, title="second", pinned=True)
    third = _create(client, title="third")

    response = client.get("/notes")
    assert response.status_code == 200
    assert [n["id"] for n in response.json()] == [second["id"], first["id"], third["id"]]

    page = client.get("/notes", params={"limit": 1, "offset": 1})
    assert page.status_code == 200
    assert [n["id"] for n in page.json()] == [first["id"]]

    beyond = client.get("/notes", params={"offset": 10})
    assert beyond.status_code == 200
    assert beyond.json() == []


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}]
)
def test_list_rejects_bad_paging_with_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get("/notes", params=params).status_code == 422


def test_patch_changes_only_given_fields_and_bumps_updated_at(client: TestClient) -> None:
    note = _create(client, title="draft", body="keep me")

    response = client.patch(f"/notes/{note['id']}", json={"title": "final", "pinned": True})

    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["title"] == "final"
    assert updated["pinned"] is True
    assert updated["body"] == "keep me"
    assert updated["created_at"] == note["created_at"]
    assert datetime.fromisoformat(updated["updated_at"]) > datetime.fromisoformat(
        str(note["updated_at"])
    )
    assert client.get(f"/notes/{note['id']}").json() == updated


def test_patch_with_empty_body_changes_nothing(client: TestClient) -> None:
    note = _create(client)
    response = client.patch(f"/notes/{note['id']}", json={})
    assert response.status_code == 200
    assert response.json() == note


def test_patch_and_delete_of_a_missing_note_are_404(client: TestClient) -> None:
    assert client.patch("/notes/424242", json={"title": "x"}).status_code == 404
    assert client.delete("/notes/424242").status_code == 404


def test_delete_returns_204_then_the_note_is_gone(client: TestClient) -> None:
    note = _create(client)

    response = client.delete(f"/notes/{note['id']}")
    assert response.status_code == 204
    assert response.content == b""

    assert client.get(f"/notes/{note['id']}").status_code == 404
    assert client.delete(f"/notes/{note['id']}").status_code == 404


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 201}, "title"),
        ({}, "title"),
        ({"title": None}, "title"),
        ({"title": "ok", "body": 5}, "body"),
        ({"title": "ok", "pinned": "perhaps"}, "pinned"),
        ({"title": "ok", "colour": "red"}, "colour"),
    ],
)
def test_create_rejects_invalid_payloads_with_422(
    client: TestClient, payload: dict[str, object], field: str
) -> None:
    response = client.post("/notes", json=payload)

    assert response.status_code == 422
    assert any(error["loc"][-1] == field for error in response.json()["detail"])
    assert client.get("/notes").json() == []


def test_title_of_exactly_200_characters_is_accepted(client: TestClient) -> None:
    note = _create(client, title="x" * 200)
    assert note["title"] == "x" * 200


@pytest.mark.parametrize("payload", [{"title": None}, {"title": ""}, {"pinned": None}])
def test_patch_rejects_nulls_and_invalid_values_with_422(
    client: TestClient, payload: dict[str, object]
) -> None:
    note = _create(client)
    assert client.patch(f"/notes/{note['id']}", json=payload).status_code == 422
    assert client.get(f"/notes/{note['id']}").json() == note


@pytest.mark.parametrize("note_id", ["0", "-1", "abc", str(2**63)])
def test_ids_outside_bigint_are_422_not_a_database_error(client: TestClient, note_id: str) -> None:
    assert client.get(f"/notes/{note_id}").status_code == 422
