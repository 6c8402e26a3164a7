"""Pages name the hashed static files collectstatic wrote, the hashed scripts import hashed
modules only, and the static files layer of config/asgi.py answers them before Django."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import ImproperlyConfigured
from django.templatetags.static import static

from config.static_files import HASHED_MAX_AGE_S, HashedFilesASGI, static_files_app
from tests.factories import CompanyFactory, IndustryFactory

# tests/offsite.py's parser of the URLs a page fetches (script src, link href, ...).
from tests.offsite import _AssetCollector

# What Django's manifest storage puts before the extension: 12 hex digits of the MD5 of
# the stored content.
HASHED = re.compile(r"\.(?P<hash>[0-9a-f]{12})(\.[^./]+)?$")
# An ES module import or re-export by relative path, as the browser client writes them.
RELATIVE_IMPORT = re.compile(r"""(?:import|export)\b[^;]*?\bfrom\s*["'](\.{1,2}/[^"']+)["']""")


def manifest() -> dict[str, str]:
    """Original name -> hashed name, from the manifest of this session's STATIC_ROOT."""
    return json.loads((Path(settings.STATIC_ROOT) / "staticfiles.json").read_text())["paths"]


def static_names(html: str) -> list[str]:
    """The names under STATIC_URL of everything the page fetches."""
    collector = _AssetCollector()
    collector.feed(html)
    prefix = settings.STATIC_URL  # `/static/`: Django puts the script prefix before it
    return [url.removeprefix(prefix) for url in collector.urls if url.startswith(prefix)]


@pytest.mark.django_db
def test_every_page_names_hashed_files_that_exist(client, staff_user):
    industry = IndustryFactory(slug="steel")
    company = CompanyFactory(industry=industry)
    hashed = set(manifest().values())
    client.force_login(staff_user)
    pages = ("/", "/companies/", f"/companies/{company.id}/", "/industries/steel/")
    for path in (*pages, "/admin/monitor/", "/api/docs/", "/admin/"):
        response = client.get(path)
        assert response.status_code == 200, path
        names = static_names(response.content.decode())
        assert names, f"{path} fetches no static file"
        for name in names:
            assert name in hashed, f"{path} names {name}, not a hashed name"
            assert (Path(settings.STATIC_ROOT) / name).is_file(), name


def test_a_hashed_name_is_the_hash_of_what_it_holds():
    """So a module whose imports changed gets a new name too: its imports were rewritten
    before it was hashed (a page can never load a new script with an old cached module)."""
    for original, name in manifest().items():
        match = HASHED.search(name)
        assert match, f"{original} -> {name} has no hash"
        content = (Path(settings.STATIC_ROOT) / name).read_bytes()
        assert hashlib.md5(content).hexdigest()[:12] == match["hash"], name


def test_hashed_modules_import_hashed_modules_only():
    paths = manifest()
    hashed = set(paths.values())
    imports = 0
    for original, name in paths.items():
        if not name.endswith(".js") or original.startswith(("admin/", "drf_spectacular")):
            continue
        source = (Path(settings.STATIC_ROOT) / name).read_text()
        for relative in RELATIVE_IMPORT.findall(source):
            imports += 1
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), relative))
            assert target in hashed, f"{name} imports {relative}, not a hashed module"
    # The client's modules import each other some 80 times: the pattern did find them.
    assert imports > 50


def test_with_debug_pages_name_the_source_files_and_django_serves_them(settings):
    settings.DEBUG = True
    assert static("js/app.js") == "/static/js/app.js"
    assert isinstance(static_files_app(lambda *args: None), ASGIStaticFilesHandler)


def test_without_a_manifest_the_server_refuses_to_start(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    with pytest.raises(ImproperlyConfigured, match="collectstatic"):
        static_files_app(lambda *args: None)


def test_a_cdn_static_url_names_the_cdn_and_the_server_keeps_serving_static(settings):
    settings.STATIC_URL = "https://cdn.example.test/static/"
    url = static("js/app.js")
    assert url == "https://cdn.example.test/static/" + manifest()["js/app.js"]
    server = static_files_app(lambda *args: None)
    assert isinstance(server, HashedFilesASGI)
    assert "/static/" + manifest()["js/app.js"] in server.files


class Inner:
    """The application behind the static files layer (Django, in config/asgi.py)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def asgi_get(app, path: str) -> tuple[int, dict[str, str], bytes]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
    }
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_static_files_are_answered_before_django_reads_the_request():
    """No Django, so no thread of Django's: the file table is built at start-up."""
    inner = Inner()
    server = static_files_app(inner)
    name = manifest()["js/app.js"]
    status, headers, body = await asgi_get(server, f"/static/{name}")
    assert status == 200
    assert headers["cache-control"] == f"max-age={HASHED_MAX_AGE_S}, public, immutable"
    assert body == (Path(settings.STATIC_ROOT) / name).read_bytes()
    assert inner.paths == []
    await asgi_get(server, "/static/js/nope.js")
    await asgi_get(server, "/companies/")
    assert inner.paths == ["/static/js/nope.js", "/companies/"]
