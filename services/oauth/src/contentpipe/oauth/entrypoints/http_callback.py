"""The hosted OAuth callback: the platform redirects the browser here; the page says what happened.

`GET <path>?code=…&state=…` completes the connection for whoever started it (the signed, single-use state names
them) through the same use case as CompleteConnection; `?error=…` (the person refused consent) and every failure
render a plain page that says what went wrong and what to do. Nothing secret is shown: no code, token or state.
"""

from __future__ import annotations

import html
import logging

from contentpipe.common.errors import ContentpipeError, FailedPrecondition, InvalidArgument, Unavailable
from contentpipe.common.ids import new_id
from contentpipe.oauth.domain.connections import Connection, Platform
from contentpipe.oauth.service_layer.connections import ConnectionService
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

_log = logging.getLogger(__name__)

# What people call the platforms, and the name the CLI takes to start again.
_DISPLAY = {
    Platform.INSTAGRAM: ("Instagram", "instagram"),
    Platform.TWITTER: ("X", "x"),
    Platform.LINKEDIN: ("LinkedIn", "linkedin"),
    Platform.TIKTOK: ("TikTok", "tiktok"),
    Platform.GOOGLE: ("YouTube", "youtube"),
    Platform.FACEBOOK: ("Facebook", "facebook"),
    Platform.OUTBOX: ("Outbox", "outbox"),
}
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the URL carried an authorization code
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}
_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:1.125rem;line-height:1.6;"
    "color:#1b1b1b;background:#fff;margin:0}main{max-width:38rem;margin:3rem auto;padding:1.5rem 2rem;"
    "border-left:.5rem solid var(--accent)}h1{font-size:1.75rem;margin:0 0 .75rem}code{font-size:1rem;"
    "background:#f0f0f0;padding:.1rem .3rem;border-radius:.2rem}.ok{--accent:#1a7f37}.error{--accent:#b42318}"
)


def _page(status: int, title: str, paragraphs: list[str], *, ok: bool) -> HTMLResponse:
    """One accessible page: language, title, a landmark, a heading, the outcome announced to screen readers."""
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    role = "status" if ok else "alert"
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · contentpipe</title><style>{_STYLE}</style></head><body>"
        f'<main class="{"ok" if ok else "error"}" role="{role}" aria-labelledby="outcome">'
        f'<h1 id="outcome">{html.escape(title)}</h1>{body}</main></body></html>'
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _again(platform: Platform | None) -> str:
    name = _DISPLAY[platform][1] if platform else "PLATFORM"
    return (
        f"To try again, start a new connection: <code>contentpipe connections connect {html.escape(name)} "
        "--remote</code>, then open the new link it prints."
    )


def _connected(connection: Connection) -> HTMLResponse:
    label, _ = _DISPLAY[connection.platform]
    profile = connection.profile
    who = profile.username or profile.display_name or profile.account_id
    shown = f"@{who}" if profile.username and connection.platform is not Platform.GOOGLE else who
    return _page(
        200,
        f"Connected to {label}",
        [
            f"contentpipe can now post as <strong>{html.escape(shown)}</strong> on {label} "
            f"(connection <code>{html.escape(connection.name)}</code>).",
            "You can close this tab. The terminal that started the connection shows it too.",
        ],
        ok=True,
    )


def _failed(exc: ContentpipeError, platform: Platform | None) -> HTMLResponse:
    label = _DISPLAY[platform][0] if platform else "the platform"
    if exc.reason == "STATE_ALREADY_USED":
        return _page(
            409,
            "This link was already used",
            [
                "Each authorization link works once. If you opened it before, the account is already connected: "
                "check with <code>contentpipe connections list</code>.",
                _again(platform),
            ],
            ok=False,
        )
    if exc.reason == "STATE_EXPIRED":
        return _page(
            400,
            "This link has expired",
            ["Authorization links are valid for a few minutes.", _again(platform)],
            ok=False,
        )
    if exc.reason == "STATE_INVALID":
        return _page(
            400,
            "This link is not valid",
            ["contentpipe did not issue this authorization, or the address was changed on the way.", _again(None)],
            ok=False,
        )
    status = (
        503 if isinstance(exc, Unavailable) else 400 if isinstance(exc, InvalidArgument | FailedPrecondition) else 502
    )
    return _page(
        status,
        f"Could not connect to {label}",
        [f"{html.escape(label)} answered: {html.escape(exc.message)}", _again(platform)],
        ok=False,
    )


def callback_app(connections: ConnectionService, path: str) -> Starlette:
    """The ASGI app of the callback port: `path` plus a plain `/healthz` for load balancers."""

    async def callback(request: Request) -> HTMLResponse:
        params = request.query_params
        state, code, error = params.get("state", ""), params.get("code", ""), params.get("error", "")
        pending = await connections.pending_for_state(state) if state else None
        platform = pending.platform if pending else None
        if error:
            label = _DISPLAY[platform][0] if platform else "The platform"
            reason = params.get("error_description", "") or error
            declined = error == "access_denied"
            _log.info("authorization refused at the platform", extra={"platform": platform, "error": error[:64]})
            return _page(
                400 if declined else 502,
                "Connection not made" if declined else f"{label} reported an error",
                [
                    f"{html.escape(label)} did not grant access"
                    + (": you chose not to allow it." if declined else f" ({html.escape(reason[:300])})."),
                    _again(platform),
                ],
                ok=False,
            )
        if not code or not state:
            return _page(
                400,
                "Nothing to complete",
                ["This address is where platforms send you back after you allow access; it needs the "
                 "<code>code</code> and <code>state</code> the platform adds.", _again(None)],
                ok=False,
            )  # fmt: skip
        try:
            connection = await connections.complete_redirect(state, code)
        except ContentpipeError as exc:
            _log.info("hosted callback refused", extra={"reason": exc.reason, "platform": platform})
            return _failed(exc, platform)
        except Exception:
            request_id = new_id()
            _log.exception("hosted callback failed", extra={"request_id": request_id})
            return _page(
                500,
                "Something went wrong",
                [f"The connection could not be completed (request id <code>{request_id}</code>).", _again(platform)],
                ok=False,
            )
        return _connected(connection)

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route(path, callback, methods=["GET"]), Route("/healthz", healthz, methods=["GET"])])
