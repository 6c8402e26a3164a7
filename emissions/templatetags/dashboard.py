"""Template helpers of the dashboard pages: skeletons and freshness lines, the same markup
on every page so the client (static/js/) finds them by their data attributes."""

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def skeleton_rows(rows: int, columns: int) -> str:
    """Placeholder rows with the height of real rows, so loading does not shift layout."""
    bar = mark_safe('<span class="sk"></span>')  # a constant: nothing to escape
    cells = format_html_join("", "<td>{}</td>", [(bar,)] * columns)
    return format_html_join(
        "", '<tr class="skeleton" aria-hidden="true">{}</tr>', [(cells,)] * rows
    )


@register.simple_tag
def freshness(panel: str) -> str:
    """The panel's "updated N s ago" line, ticked by static/js/freshness.js."""
    return format_html('<p class="freshness" data-freshness="{}">updated <time>…</time></p>', panel)
