"""Request middlewares: internal errors counted and answered 500, request bodies bounded, bearer-token auth."""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from streamer.config import HttpAuthConfig, HttpServerConfig
from streamer.http.guard import ErrorReporter, HttpStats

PUBLIC_PATHS = frozenset({"/healthz"})  # answered without a token: liveness probes carry no credentials
# the viewer page and its files (routes, by canonical path): no data in them, and browsers load pages without an
# Authorization header; the page takes the token from its URL's #token= and sends it on its API and WHEP calls
PUBLIC_PAGE_ROUTES = frozenset({"/", "/static"})
# CORS preflights of the WebRTC signalling paths: browsers never send credentials with them
PUBLIC_PREFLIGHT_PREFIXES = ("/whep/", "/whip/")
# routes that bound their own request bodies (method, canonical path): job uploads, server.jobs.max_upload_bytes
OWN_BODY_LIMIT_ROUTES = frozenset({(hdrs.METH_POST, "/api/v1/jobs")})
# WHIP checks each publishing path's own token (server.http.auth's by default); its session URLs are secrets
OWN_AUTH_PREFIXES = ("/whip/",)


def catch_internal_errors(errors: ErrorReporter) -> Middleware:
    """An exception escaping a handler is a bug of ours: 500, counted, logged once with its cause."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:
            resource = request.match_info.route.resource  # the route, not the client-chosen path
            errors.report(f"{request.method} {resource.canonical if resource else '(no route)'}", error)
            return web.json_response({"error": "internal error"}, status=500)

    return middleware


def limit_body(max_bytes: int, stats: HttpStats) -> Middleware:
    """A declared body over ``max_bytes`` is refused with 413 before any handler runs (and never read), except on
    the routes of OWN_BODY_LIMIT_ROUTES, which stream their bodies under their own cap."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        resource = request.match_info.route.resource
        own_limit = resource is not None and (request.method, resource.canonical) in OWN_BODY_LIMIT_ROUTES
        if length is not None and length > max_bytes and not own_limit:
            stats.bad_requests += 1
            response = web.json_response({"error": f"request body over {max_bytes} bytes"}, status=413)
            response.force_close()
            return response
        return await handler(request)

    return middleware


def require_bearer_token(config: HttpAuthConfig, stats: HttpStats) -> Middleware:
    """401 with a ``WWW-Authenticate: Bearer`` challenge unless the request carries the token (RFC 6750).
    Tokens are compared as SHA-256 digests with ``hmac.compare_digest``: constant time, length included."""
    expected = hashlib.sha256(config.bearer_token().encode()).digest()
    challenge = f'Bearer realm="{config.realm}"'

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith(OWN_AUTH_PREFIXES) or _public_page(request) or (
            request.method == hdrs.METH_OPTIONS and request.path.startswith(PUBLIC_PREFLIGHT_PREFIXES)
        ):
            return await handler(request)
        scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
        given = hashlib.sha256(credentials.strip().encode("utf-8", "surrogateescape")).digest()
        if scheme.lower() == "bearer" and credentials and hmac.compare_digest(given, expected):
            return await handler(request)
        stats.auth_failures += 1
        if scheme.lower() == "bearer":
            header = f'{challenge}, error="invalid_token"'
        else:
            header = challenge
        return web.json_response({"error": "unauthorized"}, status=401, headers={hdrs.WWW_AUTHENTICATE: header})

    return middleware


def _public_page(request: web.Request) -> bool:
    """A GET or HEAD that routing gave to the page or its static files (not a path prefix: no ``..`` tricks)."""
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        return False
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical in PUBLIC_PAGE_ROUTES


def build_middlewares(config: HttpServerConfig, stats: HttpStats, errors: ErrorReporter) -> list[Middleware]:
    """Outermost first: errors, then the body limit, then auth (so an unknown path without a token is 401)."""
    middlewares = [catch_internal_errors(errors), limit_body(config.max_body_bytes, stats)]
    if config.auth is not None:
        middlewares.append(require_bearer_token(config.auth, stats))
    return middlewares
