"""The depth limit on clients' JSON: counted over arrays and objects, not over brackets
inside strings, and the same on every Python."""

import json

import pytest

from common.json import CLIENT_JSON_MAX_DEPTH, json_loads_client, json_too_deep


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_up_to_the_limit_parses():
    assert json_loads_client(nested(CLIENT_JSON_MAX_DEPTH)) == json.loads(
        nested(CLIENT_JSON_MAX_DEPTH)
    )
    mixed = '{"a": ' * (CLIENT_JSON_MAX_DEPTH // 2) + "1" + "}" * (CLIENT_JSON_MAX_DEPTH // 2)
    assert not json_too_deep(mixed)


@pytest.mark.parametrize("depth", [CLIENT_JSON_MAX_DEPTH + 1, 3000, 20_000])
def test_deeper_is_refused_as_malformed(depth):
    assert json_too_deep(nested(depth))
    with pytest.raises(ValueError, match="nested deeper"):
        json_loads_client(nested(depth))


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"note": "[" * 500 + '\\"{' * 200, "list": [[1]]})
    assert not json_too_deep(text)
    assert json_loads_client(text)["list"] == [[1]]
    # Many flat brackets are wide, not deep.
    assert not json_too_deep(json.dumps([[] for _ in range(5000)]))


@pytest.mark.parametrize(
    "raw", ["{not json", b"\xff\xfe\x00", '{"a": 1', "", "[" * 10 + "]" * 9, '"\\']
)
def test_malformed_input_is_a_value_error(raw):
    with pytest.raises(ValueError):
        json_loads_client(raw)


def test_bytes_and_text_read_alike():
    assert json_loads_client(b'{"type": "ping"}') == json_loads_client('{"type": "ping"}')
