"""Emails over HTTP: NFC and invisible characters (issue 7, item 11)."""

from __future__ import annotations

import unicodedata
from typing import Any

from fastapi.testclient import TestClient

NFC = unicodedata.normalize("NFC", "café@example.com")
NFD = unicodedata.normalize("NFD", "café@example.com")
PW = "a perfectly fine passphrase"


def new_user(email: str, username: str) -> dict[str, Any]:
    return {"email": email, "username": username, "password": PW}


def test_look_alike_emails_make_one_account(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    made = client.post("/api/users", json=new_user(NFD, "cafe1"), headers=admin_headers)
    assert made.status_code == 201, made.text
    assert made.json()["email"] == NFC
    again = client.post("/api/users", json=new_user(NFC, "cafe2"), headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"]["details"]["field"] == "email"
    hidden = client.post(
        "/api/users", json=new_user("caf\u00e9\u200b@example.com", "cafe3"), headers=admin_headers
    )
    assert hidden.status_code == 422
    assert hidden.json()["error"]["details"]["field"] == "email"
    user_id = made.json()["id"]
    patched = client.patch(
        f"/api/users/{user_id}", json={"email": "cafe\u2060@example.com"}, headers=admin_headers
    )
    assert patched.status_code == 422


def test_login_by_either_form_and_an_invisible_identifier_is_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    assert client.post("/api/users", json=new_user(NFC, "cafe"), headers=admin_headers).is_success
    resp = client.post("/api/auth/login", json={"identifier": NFD, "password": PW})
    assert resp.status_code == 200, resp.text
    bad = client.post(
        "/api/auth/login", json={"identifier": "caf\u00e9@exam\u200bple.com", "password": PW}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == {"field": "identifier"}
