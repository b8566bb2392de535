"""The admin web console under ``/console`` (docs/console.md).

Server-rendered HTML (Jinja2) with one vendored script (htmx) for partial updates,
behind a sign-in with server-side sessions. :mod:`.app` is the frame every page
module plugs its router into; the frame, not the pages, enforces the session, the
role, CSRF on every change and the Content-Security-Policy.
"""
