"""Platform refusals that only an operator can fix (an app audit, a verified domain, a Page permission, a scope).

Each one fails the post with our own reason code and a message that names the fix, instead of the platform's bare
error code: retrying cannot help, and the person reading `contentpipe posts get` has to know what to do.
"""

from __future__ import annotations

from contentpipe.oauth.domain.posts import Platform
from contentpipe.oauth.service_layer.posting_ports import RejectedFailure

TIKTOK_APP_NOT_AUDITED = "TIKTOK_APP_NOT_AUDITED"
TIKTOK_URL_NOT_VERIFIED = "TIKTOK_URL_NOT_VERIFIED"
FACEBOOK_PAGE_PERMISSION_MISSING = "FACEBOOK_PAGE_PERMISSION_MISSING"
YOUTUBE_SCOPE_MISSING = "YOUTUBE_SCOPE_MISSING"

TIKTOK_AUDIT_FIX = (
    "TikTok lets an app that has not passed its audit post only with privacy level SELF_ONLY: have the app "
    "audited in the TikTok developer portal, or post with privacy_level SELF_ONLY"
)
TIKTOK_URL_FIX = (
    "TikTok pulls media only from a domain or URL prefix verified for the app: verify it in the TikTok developer "
    "portal and list it in OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES (videos are uploaded as files otherwise)"
)
FACEBOOK_PERMISSION_FIX = (
    "the Page did not grant the app permission to publish: reconnect Facebook granting pages_manage_posts (and "
    "business_management for Pages owned through Business Manager), with a user who may publish on that Page; a "
    "Page that needs Page Publishing Authorization must complete it first"
)
YOUTUBE_SCOPE_FIX = (
    "the Google connection lacks a YouTube scope this needs: reconnect it granting youtube.upload and youtube.readonly"
)

# (platform, reason as `calls.error_details` spells it) -> (our reason, the fix)
_FIXES: dict[tuple[Platform, str], tuple[str, str]] = {
    (Platform.TIKTOK, "UNAUDITED_CLIENT_CAN_ONLY_POST_TO_PRIVATE_ACCOUNTS"): (TIKTOK_APP_NOT_AUDITED, TIKTOK_AUDIT_FIX),
    (Platform.TIKTOK, "URL_OWNERSHIP_UNVERIFIED"): (TIKTOK_URL_NOT_VERIFIED, TIKTOK_URL_FIX),
    # Graph: (#200) / (#10) permission errors, 1404078 Page Publishing Authorization required.
    (Platform.FACEBOOK, "200"): (FACEBOOK_PAGE_PERMISSION_MISSING, FACEBOOK_PERMISSION_FIX),
    (Platform.FACEBOOK, "10"): (FACEBOOK_PAGE_PERMISSION_MISSING, FACEBOOK_PERMISSION_FIX),
    (Platform.FACEBOOK, "1404078"): (FACEBOOK_PAGE_PERMISSION_MISSING, FACEBOOK_PERMISSION_FIX),
    (Platform.GOOGLE, "INSUFFICIENTPERMISSIONS"): (YOUTUBE_SCOPE_MISSING, YOUTUBE_SCOPE_FIX),
    (Platform.GOOGLE, "ACCESS_TOKEN_SCOPE_INSUFFICIENT"): (YOUTUBE_SCOPE_MISSING, YOUTUBE_SCOPE_FIX),
}


def operator_refusal(platform: Platform, reason: str, message: str) -> RejectedFailure | None:
    """The refusal with our reason and the fix when the platform's `reason` is one only an operator can fix."""
    fix = _FIXES.get((platform, reason))
    if fix is None:
        return None
    ours, how = fix
    return RejectedFailure(ours, f"{how} ({platform.value} said: {message or reason.lower()})")
