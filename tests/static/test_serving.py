"""What a CDN in front of /static/ gets from the real web server (uvicorn, as the Procfile
starts it, DEBUG off): hashed files cacheable for a year, the compressed variant the
client accepts, short lifetimes for unhashed names, 404 for missing files and for paths
that climb out of STATIC_ROOT, HEAD, and 304 on revalidation."""

from __future__ import annotations

import gzip
import socket
from pathlib import Path

import brotli
import httpx
import pytest
from django.conf import settings

from tests.live.conftest import stack_env, stack_start
from tests.static.test_hashed_names import manifest, static_names

YEAR = "max-age=31536000, public, immutable"
# A line of the file the traversal attempts aim at: in a body, it would have leaked.
SECRET_MARKER = b"STATIC_UNHASHED_MAX_AGE_S"


@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory):
    """The web server on this session's test database, for the module (pages read the
    database, static files do not)."""
    # DEBUG off as in production: `make test` exports make run's DEBUG=1, under which
    # Django's development handler would serve the unhashed sources instead.
    stack = stack_start(
        ("web",), env=stack_env(DEBUG="0"), logs=tmp_path_factory.mktemp("static-web")
    )
    try:
        yield stack
    finally:
        stack.stop_all()


def stored(name: str) -> bytes:
    return (Path(settings.STATIC_ROOT) / name).read_bytes()


def get(web, path: str, **headers: str) -> httpx.Response:
    return httpx.get(web.http_url + path, headers=headers, timeout=10)


def raw_get(web, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (httpx would resolve `..`)."""
    with socket.create_connection((web.host, web.port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: {web.host}\r\nConnection: close\r\n\r\n".encode()
        )
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_page_names_hashed_files_served_for_a_year(web):
    page = get(web, "/")
    assert page.status_code == 200
    names = static_names(page.text)
    assert any(name.startswith("js/pages/overview.") for name in names)
    for name in names:
        response = get(web, f"/static/{name}", **{"Accept-Encoding": "identity"})
        assert response.status_code == 200, name
        assert response.headers["Cache-Control"] == YEAR
        assert "Content-Encoding" not in response.headers
        assert response.content == stored(name)


def test_the_compressed_variant_the_client_accepts(web):
    name = manifest()["js/app.js"]
    original = stored(name)
    for accept, encoding, decode in (
        ("gzip", "gzip", gzip.decompress),
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br;q=0, gzip", "gzip", gzip.decompress),
    ):
        with httpx.stream(
            "GET", f"{web.http_url}/static/{name}", headers={"Accept-Encoding": accept}
        ) as response:
            body = b"".join(response.iter_raw())
        assert response.headers["Content-Encoding"] == encoding, accept
        assert response.headers["Vary"] == "Accept-Encoding"
        assert response.headers["Cache-Control"] == YEAR
        assert int(response.headers["Content-Length"]) == len(body) < len(original) / 2
        assert decode(body) == original
    plain = get(web, f"/static/{name}", **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Accept-Encoding"


def test_unhashed_names_are_cached_a_minute(web):
    response = get(web, "/static/js/app.js")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == (
        f"max-age={settings.STATIC_UNHASHED_MAX_AGE_S}, public"
    )
    assert response.content == stored("js/app.js")


def test_missing_files_are_404_and_not_cached_for_long(web):
    for path in ("/static/js/nope.js", "/static/js/app.000000000000.js", "/static/"):
        response = get(web, path)
        assert response.status_code == 404, path
        assert "immutable" not in response.headers.get("Cache-Control", ""), path


@pytest.mark.parametrize(
    "target",
    [
        "/static/../config/settings/__init__.py",
        "/static/../../../config/settings/__init__.py",
        "/static/js/../../../../config/settings/__init__.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/config/settings/__init__.py",
        "/static/..%2f..%2f..%2fconfig%2fsettings%2f__init__.py",
        "/static/%2E%2E%2F%2E%2E%2F%2E%2E%2Fconfig%2Fsettings%2F__init__.py",
        "/static/..%5c..%5c..%5cconfig%5csettings%5c__init__.py",
        "/static/%252e%252e/%252e%252e/%252e%252e/config/settings/__init__.py",
        "/static//work/main/config/settings/__init__.py",
        "/static/js/app.js%00.py",
    ],
)
def test_paths_out_of_the_static_root_are_refused(web, target):
    # The same request for a file that is there does get it.
    assert raw_get(web, "/static/js/app.js") == (200, stored("js/app.js"))
    status, body = raw_get(web, target)
    assert status in (400, 404), (target, status)
    assert SECRET_MARKER not in body


def test_head_answers_the_headers_of_get_without_a_body(web):
    name = manifest()["css/site.css"]
    full = get(web, f"/static/{name}", **{"Accept-Encoding": "gzip"})
    head = httpx.head(f"{web.http_url}/static/{name}", headers={"Accept-Encoding": "gzip"})
    assert head.status_code == 200
    assert head.content == b""
    for header in ("Content-Length", "Content-Encoding", "Cache-Control", "ETag", "Vary"):
        assert head.headers[header] == full.headers[header], header


def test_revalidation_answers_304_without_a_body(web):
    name = manifest()["js/app.js"]
    first = get(web, f"/static/{name}")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        again = get(web, f"/static/{name}", **headers)
        assert again.status_code == 304, headers
        assert again.content == b""
        assert again.headers["ETag"] == etag
        assert again.headers["Cache-Control"] == YEAR
    assert get(web, f"/static/{name}", **{"If-None-Match": '"other"'}).status_code == 200


def test_behind_a_cdn_pages_name_it_and_the_server_serves_what_it_fetches(
    django_db_setup, tmp_path
):
    """STATIC_URL names the CDN; the CDN fetches /static/... from this server."""
    cdn = "https://cdn.example.test/static/"
    stack = stack_start(("web",), env=stack_env(STATIC_URL=cdn, DEBUG="0"), logs=tmp_path)
    try:
        page = httpx.get(f"{stack.http_url}/", timeout=10)
        scripts = [url for url in page.text.split('"') if url.startswith(cdn + "js/pages/")]
        assert scripts == [cdn + manifest()["js/pages/overview.js"]]
        response = httpx.get(
            scripts[0].replace("https://cdn.example.test", stack.http_url), timeout=10
        )
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == YEAR
        # Module scripts from another origin load only with CORS.
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        stack.stop_all()
