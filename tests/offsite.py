"""Which scripts, styles, images and frames a page would fetch from another host.

A page that loads anything from elsewhere breaks on a machine without the internet
(and leaks its readers to a third party). Searching the page for "cdn" is not the
test: a random CSRF token or a generated company name can contain those letters.
"""

from html.parser import HTMLParser
from urllib.parse import urlsplit

FETCHING_ATTRIBUTES = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "source": ("src", "srcset"),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
}


class _AssetCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = FETCHING_ATTRIBUTES.get(tag, ())
        for name, value in attrs:
            if name in wanted and value:
                self.urls.extend(part.split()[0] for part in value.split(",") if part.strip())


def offsite_assets(html: str) -> list[str]:
    """Every fetched URL of the page that names a host (`https://x/...`, `//x/...`)."""
    collector = _AssetCollector()
    collector.feed(html)
    return [url for url in collector.urls if urlsplit(url.strip()).netloc or "://" in url]
