"""The admin's icon: browsers ask for ``/favicon.ico`` on every page, and a 404 each time is noise."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

# A prompt (">_") on the admin header's colour; inline, so no static file has to be packaged.
ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="6" fill="#264b5d"/>'
    b'<path d="M7 10l7 6-7 6" fill="none" stroke="#f5dd5d" stroke-width="3" stroke-linecap="round" '
    b'stroke-linejoin="round"/>'
    b'<path d="M16 23h9" stroke="#fff" stroke-width="3" stroke-linecap="round"/></svg>'
)


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request: HttpRequest) -> HttpResponse:
    """The SVG icon, also under the ``.ico`` name browsers try without being told (they accept SVG)."""
    return HttpResponse(ICON, content_type="image/svg+xml")
