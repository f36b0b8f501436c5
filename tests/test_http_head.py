"""The HTTP API in process: the route table, ``check_head`` (answers from the head alone), health.

No sockets: an :class:`HttpApi` over a real core, fed :class:`HttpRequest` objects.
Requests are signed with the Python SDK's signing code (``pusher.http.Request``),
so the oracle is not our own signing module.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import orjson
import pusher
import pytest
from pusher.http import Request

from soketi_impl.config import load_config
from soketi_impl.http import health_handler, health_response
from soketi_impl.http.api import ROUTES, HttpApi
from soketi_impl.http.errors import ApiError
from soketi_impl.http.routes import Call, Route, RouteTable
from soketi_impl.http.types import HttpRequest, HttpResponse
from soketi_impl.pusher.core import PusherServer

APP_ID, KEY, SECRET = "123", "app-key", "app-secret"


def make_api(**env: str) -> HttpApi:
    cfg = load_config(
        None,
        environ={"SOKETI_DEFAULT_APP_ID": APP_ID, "SOKETI_DEFAULT_APP_KEY": KEY, "SOKETI_DEFAULT_APP_SECRET": SECRET, **env},
    )
    return HttpApi(PusherServer(cfg), cfg)


def signed(method: str, path: str, params: dict[str, Any] | None = None, *, key: str = KEY) -> HttpRequest:
    client = pusher.Pusher(app_id=APP_ID, key=key, secret=SECRET)
    req = Request(client._pusher_client, method, path, params or {})
    headers = {"content-length": str(len(req.body))} if req.body else {}
    return HttpRequest(method, path, req.query_string, headers, req.body)


def answer(api: HttpApi, request: HttpRequest) -> tuple[int, Any]:
    response = api.handle(request)
    assert isinstance(response, HttpResponse)  # the local adapter never suspends
    body = orjson.loads(response.body) if response.content_type == "application/json" and response.body else response.body
    return response.status, body


def head_only(request: HttpRequest) -> HttpRequest:
    return HttpRequest(request.method, request.path, request.query, dict(request.headers), b"")


# ---------------------------------------------------------------- the route table


async def test_a_new_endpoint_is_one_route() -> None:
    async def hello(call: Call) -> Any:
        return {"hello": call.args["name"]}

    api = make_api()
    api.routes = RouteTable([*ROUTES, Route("GET", "/apps/{app_id}/hello/{name}", hello)])
    assert answer(api, signed("GET", f"/apps/{APP_ID}/hello/ada")) == (200, {"hello": "ada"})
    assert answer(api, signed("GET", f"/apps/{APP_ID}/channels")) == (200, {"channels": {}})


def test_routes_cover_the_protocol_table() -> None:
    rows = {(r.method, r.pattern) for r in ROUTES}
    assert rows == {
        ("POST", "/apps/{app_id}/events"),
        ("POST", "/apps/{app_id}/batch_events"),
        ("GET", "/apps/{app_id}/channels"),
        ("GET", "/apps/{app_id}/channels/{channel}"),
        ("GET", "/apps/{app_id}/channels/{channel}/users"),
        ("POST", "/apps/{app_id}/users/{user_id}/terminate_connections"),
        ("POST", "/users/{user_id}/terminate_connections"),
    }
    for route in ROUTES:
        assert inspect.iscoroutinefunction(route.handler)


def test_match_404_405_and_empty_segments() -> None:
    m = ROUTES.match("GET", "/apps/1/channels/news/users".split("/"))
    assert m.route.pattern.endswith("/users") and m.args == {"app_id": "1", "channel": "news"}
    with pytest.raises(ApiError) as exc:
        ROUTES.match("GET", "/apps/1/events".split("/"))
    assert exc.value.status == 405 and ("Allow", "POST, OPTIONS") in exc.value.headers
    for path in ("/apps/1/nowhere", "/apps//events", "/apps/1/channels//users", "/x"):
        with pytest.raises(ApiError) as exc:
            ROUTES.match("GET", path.split("/"))
        assert exc.value.status in (404, 405) and (path != "/apps//events" or exc.value.status == 404)


# ---------------------------------------------------------------- check_head


async def test_check_head_lets_a_good_head_through_and_handle_answers() -> None:
    api = make_api()
    req = signed("POST", f"/apps/{APP_ID}/events", {"name": "e", "channels": ["c"], "data": "d"})
    assert api.check_head(head_only(req)) is None
    assert answer(api, req) == (200, {})
    # the head the API remembered is not used for another request
    other = signed("GET", f"/apps/{APP_ID}/channels")
    assert api.check_head(head_only(req)) is None
    assert answer(api, other) == (200, {"channels": {}})
    assert api.pusher.apps[APP_ID].stats.http_calls == 2


@pytest.mark.parametrize(
    ("mutate", "status", "words"),
    [
        (lambda r: setattr(r, "path", "/apps/999/events"), 404, "Unknown app"),
        (lambda r: setattr(r, "path", f"/apps/{APP_ID}/nope"), 404, "Not found"),
        (lambda r: setattr(r, "method", "GET"), 405, "POST"),
        (lambda r: setattr(r, "query", ""), 401, "auth_key"),
        (lambda r: setattr(r, "query", _drop(r.query, "auth_signature")), 401, "auth_signature"),
        (lambda r: setattr(r, "query", _drop(r.query, "auth_timestamp")), 401, "auth_timestamp"),
        (lambda r: setattr(r, "query", _drop(r.query, "body_md5")), 401, "body_md5"),
        (lambda r: setattr(r, "query", _set(r.query, "auth_timestamp", str(int(time.time()) + 700))), 401, "600 s"),
        (lambda r: setattr(r, "query", _set(r.query, "auth_timestamp", "%C2%B2")), 401, "auth_timestamp"),
        (lambda r: setattr(r, "query", _set(r.query, "auth_key", "other")), 401, "auth_key"),
    ],
    ids=["unknown-app", "unknown-route", "wrong-method", "no-auth", "no-signature", "no-timestamp",
         "body-without-md5", "future-timestamp", "unicode-digit", "wrong-key"],
)
async def test_check_head_refusals(mutate: Any, status: int, words: str) -> None:
    api = make_api()
    req = head_only(signed("POST", f"/apps/{APP_ID}/events", {"name": "e", "channels": ["c"], "data": "d"}))
    mutate(req)
    response = api.check_head(req)
    assert response is not None and response.status == status
    assert words in orjson.loads(response.body)["error"]
    assert ("Access-Control-Allow-Origin", "*") in response.headers
    # handle, with the body, gives the same answer
    assert answer(api, req)[0] == status


def _drop(query: str, key: str) -> str:
    return "&".join(p for p in query.split("&") if not p.startswith(key + "="))


def _set(query: str, key: str, value: str) -> str:
    return "&".join(f"{key}={value}" if p.startswith(key + "=") else p for p in query.split("&"))


async def test_check_head_leaves_health_options_and_sdk_terminate_to_handle() -> None:
    api = make_api()
    for req in (HttpRequest("GET", "/ready", "", {}, b""), HttpRequest("OPTIONS", "/apps/1/events", "", {}, b"")):
        assert api.check_head(req) is None
    # the Python SDK's terminate path: the app is the one whose key signed
    req = signed("POST", "/users/u1/terminate_connections")
    assert api.check_head(head_only(req)) is None
    assert answer(api, req) == (200, {})
    req = signed("POST", "/users/u1/terminate_connections", key="nobody")
    response = api.check_head(head_only(req))
    assert response is not None and response.status == 404


# ---------------------------------------------------------------- health


def test_health_response() -> None:
    for path in ("/", "/ready", "/accept-traffic"):
        response = health_response(path, True)
        assert response is not None and (response.status, response.body) == (200, b"OK")
    assert health_response("/", False).status == 200  # type: ignore[union-attr]
    for path in ("/ready", "/accept-traffic"):
        assert health_response(path, False).status == 503  # type: ignore[union-attr]
    assert health_response("/apps/1/events", True) is None
    assert health_response("/ready?x=1", True) is None  # the path, without its query
    assert health_handler(HttpRequest("GET", "/nope", "", {}, b"")).status == 404


async def test_api_health_follows_the_core_and_the_method() -> None:
    api = make_api(SOKETI_PATH_PREFIX="/pfx")
    assert answer(api, HttpRequest("GET", "/pfx/ready", "", {}, b"")) == (200, b"OK")
    assert answer(api, HttpRequest("HEAD", "/ready", "", {}, b"")) == (200, b"")
    status, body = answer(api, HttpRequest("POST", "/ready", "", {}, b""))
    assert status == 405 and "GET" in body["error"]
    api.pusher.accepting = False
    assert answer(api, HttpRequest("GET", "/ready", "", {}, b""))[0] == 503
    assert answer(api, HttpRequest("GET", "/", "", {}, b""))[0] == 200
