"""Static files a CDN can front: content-hashed names, compressed variants, and an ASGI
server for them that never takes a thread of Django's.

`manage.py collectstatic` (make run, the Dockerfile, the test session) copies every static
file into STATIC_ROOT under its original name and under a hashed one
(`js/app.3f2a9c1b7d4e.js`), with `.gz` and `.br` variants and a manifest that maps one to
the other; with DEBUG off, `{% static %}` writes the hashed names.

The server is ServeStatic's ASGI application (an ASGI-native fork of WhiteNoise, which
serves WSGI only: its Django middleware is sync, so under ASGI every request through it
would hold one of the executor threads, a long poll for up to 25 s). It answers from a
table of the files built at start-up, before Django (no middleware, no session, no
cookie), and picks the variant that the client's Accept-Encoding allows, with ETag,
Last-Modified, 304 and byte ranges. uvicorn offers no `pathsend`, so ServeStatic reads
each response's file in 8 KB steps on a one-thread executor of that response's own,
never on the executors that Django's sync code and the ORM share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.contrib.staticfiles.storage import ManifestStaticFilesStorage, staticfiles_storage
from django.core.exceptions import ImproperlyConfigured
from servestatic.asgi import ServeStaticASGI
from servestatic.compress import Compressor
from servestatic.storage import CompressedManifestStaticFilesStorage

if TYPE_CHECKING:
    from collections.abc import Callable

    from asgiref.typing import ASGI3Application

try:
    import brotli
except ImportError:  # servestatic[brotli] is a dependency; without it, gzip only.
    brotli = None

# One year: the longest max-age RFC 9111 advises and what CDNs honour; a hashed name never
# changes content, so a new release is new URLs, never a purge.
HASHED_MAX_AGE_S = 365 * 24 * 60 * 60


# Brotli's quality for the `.br` variants. The library's default, 11, made collectstatic
# take 22 s of CPU on this machine (nearly all of it the API docs' megabyte bundles), 9
# takes 2 s for 9 % more bytes (the dashboards' own scripts and styles: 103 KB, not 94),
# and `make run` and each test session run it.
BROTLI_QUALITY = 9
# Source maps are fetched by developer tools only: not worth the compressing time.
SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")


class QuickBrotliCompressor(Compressor):
    """ServeStatic's compressor with BROTLI_QUALITY."""

    @staticmethod
    def compress_brotli(data: bytes) -> bytes:
        if brotli is None:
            raise RuntimeError("brotli is not installed (pip install servestatic[brotli])")
        return brotli.compress(data, quality=BROTLI_QUALITY)


class HashedStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Django's manifest storage (hashed copies, a manifest) plus ServeStatic's gzip and
    brotli variants of every compressible file.

    The browser client is ES modules importing each other by relative path
    (`import { Store } from "./store.js";`). A hashed page script must import the hashed
    modules, or a release would mix a new page with a cached old module: Django rewrites
    those import paths in the hashed copies only with this switch on.
    """

    support_js_module_import_aggregation = True

    def create_compressor(self, **kwargs) -> Compressor:
        kwargs["extensions"] = kwargs.get("extensions") or SKIP_COMPRESS_EXTENSIONS
        return QuickBrotliCompressor(**kwargs)


class HashedFilesASGI(ServeStaticASGI):
    """ServeStatic with the issue's one-year lifetime on hashed files (the library's own is
    ten years, nginx's `expires max`)."""

    FOREVER = HASHED_MAX_AGE_S


def manifest_immutable_test(hashed_names: set[str]) -> Callable[[str, str], bool]:
    """A test for ServeStatic: is this URL one of the manifest's hashed names? Exact, not a
    pattern: an unhashed file whose name happens to hold 12 hex digits stays short-lived."""

    def immutable(path: str, url: str) -> bool:
        return url in hashed_names

    return immutable


def static_url_path() -> str:
    """The path part of STATIC_URL (`/static/`), which is what the requests for static
    files carry whether STATIC_URL names this host or a CDN in front of it."""
    path = urlsplit(settings.STATIC_URL).path
    return path if path.startswith("/") else f"/{path}"


def static_files_app(application: ASGI3Application) -> ASGI3Application:
    """`application` behind the static files server: in development (DEBUG) Django's own
    handler, unhashed from the source folders so an edit shows on reload; otherwise the
    hashed files of STATIC_ROOT. Raises ImproperlyConfigured when collectstatic has not
    run there, rather than answering every page with a 500."""
    if settings.DEBUG:
        return ASGIStaticFilesHandler(application)
    if not isinstance(staticfiles_storage, ManifestStaticFilesStorage):
        raise ImproperlyConfigured(
            "STORAGES['staticfiles'] must be a manifest storage (hashed names): "
            f"{type(staticfiles_storage).__name__} is not."
        )
    manifest = staticfiles_storage.hashed_files
    if not manifest:
        raise ImproperlyConfigured(
            f"No static files manifest in STATIC_ROOT ({settings.STATIC_ROOT}): run "
            "`python manage.py collectstatic --noinput` before starting the web server."
        )
    prefix = static_url_path()
    return HashedFilesASGI(
        application,
        root=settings.STATIC_ROOT,
        prefix=prefix,
        max_age=settings.STATIC_UNHASHED_MAX_AGE_S,
        immutable_file_test=manifest_immutable_test(
            {prefix + hashed for hashed in manifest.values()}
        ),
    )
