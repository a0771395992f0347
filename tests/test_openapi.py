"""The OpenAPI document the module serves (`api/v1/openapi.json`) held to the app: every api/v1
route of Flask's url_map documented with its methods and every documented path served, and real
answers of the endpoints valid against the documented schemas (a small JSON Schema check:
jsonschema is not among the module's packages)."""
import json
import re
from datetime import datetime

import pytest

from mirror.analytics import REPORTS
from mirror.database import open_module_db
from mirror.settings import load
from mirror.tokens import create_token
from tests.mirror import mirrored_demo
from tests.stack import serving
from tests.test_api_tokens import PERIOD, PREFIX, PROXY, call_api
from web import create_app

ROOT = f"{PREFIX}/api/v1"


@pytest.fixture(scope="module")
def app_and_server(tmp_path_factory):
    db = mirrored_demo(tmp_path_factory.mktemp("openapi-pbx"), 300, seed=43)
    config = tmp_path_factory.mktemp("web") / "extcdr.toml"
    config.write_text(f'[web]\nproxy_token = "{PROXY}"\n')
    app = create_app(load(config, {"module.db": db}))
    with serving(app, threads=4) as http:
        yield app, f"http://127.0.0.1:{http.effective_port}{PREFIX}", db


@pytest.fixture(scope="module")
def document(app_and_server):
    _, base, _ = app_and_server
    status, headers, text = call_api(base, "/api/v1/openapi.json", user="anna")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    return json.loads(text)


def test_every_route_is_documented_and_every_documented_path_served(app_and_server, document):
    app, _, _ = app_and_server
    assert document["openapi"].startswith("3.1")
    assert document["servers"] == [{"url": ROOT}]
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(ROOT + "/"):
            path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule[len(ROOT):])
            served.setdefault(path, set()).update(
                m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(item) for path, item in document["paths"].items()}
    assert documented == served
    for path, item in document["paths"].items():
        names = set(re.findall(r"{([a-z_]+)}", path))
        for operation in item.values():
            in_path = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert in_path == names, path
            for answer in operation["responses"].values():
                for content in answer.get("content", {}).values():
                    resolve(document, content["schema"])     # every $ref exists


def test_both_ways_in_are_documented(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["token"] == {**schemes["token"], "type": "http", "scheme": "bearer"}
    assert schemes["session"]["in"] == "cookie"
    assert {"401", "403", "404", "400"} <= set(document["paths"]["/calls"]["get"]["responses"])


def answer_schema(document, path, method, status):
    return document["paths"][path][method]["responses"][str(status)]["content"][
        "application/json"]["schema"]


def test_real_answers_match_the_documented_schemas(app_and_server, document):
    _, base, db = app_and_server
    writable = open_module_db(db)
    token = create_token(writable, "Schema", "admin", [], "anna", 1_730_000_000_000)[1]
    writable.close()

    def check(path, documented, method="get", status=200, body=None, **params):
        code, _, text = call_api(base, "/api/v1" + path, token=token, params=params or None,
                                 method=method.upper(), body=body)
        assert code == status, text
        answer = json.loads(text)
        errors = list(validate(document, answer_schema(document, documented, method, status),
                               answer, "$"))
        assert not errors, (path, errors[:5])
        return answer

    listed = check("/calls", "/calls", **PERIOD, limit=100)
    assert listed["calls"] and listed["next_cursor"]
    linkedid = listed["calls"][0]["linkedid"]
    check(f"/calls/{linkedid}/comments", "/calls/{linkedid}/comments", method="post",
          status=201, body={"text": "checked"})
    check(f"/calls/{linkedid}", "/calls/{linkedid}")
    check(f"/calls/{linkedid}/comments", "/calls/{linkedid}/comments")
    check("/calls/in-progress", "/calls/in-progress")
    check("/tags", "/tags")
    for report in REPORTS:
        check(f"/stats/{report}", "/stats/{name}", **PERIOD)
    work = check("/worklist/unreturned", "/worklist/unreturned", **PERIOD, limit=500)
    assert any(c["last_attempt"] for c in work["calls"])
    missed = work["calls"][0]["linkedid"]
    path = f"/worklist/unreturned/{missed}/handled"
    documented = "/worklist/unreturned/{linkedid}/handled"
    check(path, documented, method="post", status=201, body={"note": "n"})
    check(path, documented, method="post", status=200, body={})
    details = check(f"/calls/{missed}", "/calls/{linkedid}")
    assert details["handled"]["note"] == "n"
    check(path, documented, method="delete")
    check("/calls", "/calls", status=400, limit="0")
    check("/calls/nosuch.1", "/calls/{linkedid}", status=404)
    code, _, text = call_api(base, "/api/v1/calls", token="extcdr_" + "B" * 43)
    assert code == 401 and not list(validate(
        document, answer_schema(document, "/calls", "get", 401), json.loads(text), "$"))


def test_the_checker_catches_what_the_schemas_refuse(document):
    call = document["components"]["schemas"]["Call"]
    assert list(validate(document, call, {"linkedid": 1}, "$"))
    assert list(validate(document, {"type": "string", "format": "date-time"}, "soon", "$"))
    assert list(validate(document, {"type": "string", "enum": ["a"]}, "b", "$"))
    assert not list(validate(document, {"type": ["string", "null"]}, None, "$"))


# --- a small JSON Schema (2020-12) check: what the document uses -----------------------------

_TYPES = {"string": str, "object": dict, "array": list, "boolean": bool, "null": type(None)}


def resolve(document, schema):
    while "$ref" in schema:
        node = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _is(value, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[kind])


def validate(document, schema, value, where):
    """What is wrong with `value` under `schema`, as messages (none: valid)."""
    schema = resolve(document, schema)
    for part in schema.get("allOf", ()):
        yield from validate(document, part, value, where)
    if "oneOf" in schema:
        fits = [part for part in schema["oneOf"]
                if not list(validate(document, part, value, where))]
        if len(fits) != 1:
            yield f"{where}: fits {len(fits)} of oneOf"
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, kind) for kind in kinds):
            yield f"{where}: {value!r} is not {kinds}"
            return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{where}: {value!r} not in {schema['enum']}"
    if schema.get("format") == "date-time" and isinstance(value, str):
        try:
            if datetime.fromisoformat(value).tzinfo is None:
                yield f"{where}: {value!r} has no offset"
        except ValueError:
            yield f"{where}: {value!r} is not a date-time"
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                yield f"{where}: no {name!r}"
        for name, part in schema.get("properties", {}).items():
            if name in value:
                yield from validate(document, part, value[name], f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from validate(document, schema["items"], item, f"{where}[{i}]")
    if isinstance(value, int) and "minimum" in schema and value < schema["minimum"]:
        yield f"{where}: {value} < {schema['minimum']}"
