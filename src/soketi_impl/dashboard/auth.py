"""Who may see the dashboard: the token, compared in constant time.

A request is let in when it carries

- ``Authorization: Bearer <token>`` (scripts, ``curl``), or
- the session cookie set by the login form: an HMAC of a fixed text under the
  token, so the browser never stores the token itself, any token change logs
  every browser out, and nothing is kept on the server.

Both are compared with :func:`hmac.compare_digest`. The cookie is ``HttpOnly``
(page scripts cannot read it), ``SameSite=Strict`` (another site cannot make the
browser send it, so it cannot post a test event on the operator's behalf) and
scoped to ``/dashboard``.

Wrong tokens are throttled: after ``max_failures`` failed attempts (login form,
bearer token or cookie) within ``window_s`` seconds every request that carries
credentials answers 429 until the window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, Mapping

__all__ = ["COOKIE", "TokenAuth"]

#: The session cookie's name.
COOKIE = "soketi_dashboard"
_SESSION_TEXT = b"soketi-impl dashboard session v1"


class TokenAuth:
    """Checks requests against ``token`` (a non-empty string)."""

    def __init__(
        self,
        token: str,
        *,
        max_failures: int = 20,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("the dashboard token must not be empty")
        self._token = token.encode("utf-8")
        self.session = hmac.new(self._token, _SESSION_TEXT, hashlib.sha256).hexdigest()
        self._failures: deque[float] = deque(maxlen=max_failures)
        self._window = window_s
        self._clock = clock

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the token (constant time in its content)."""
        return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self._token)

    def check(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str:
        """``"ok"``, ``"missing"`` (no credentials), ``"wrong"`` or ``"throttled"``.

        A wrong bearer token or cookie counts as a failed attempt, like a wrong login.
        """
        auth = headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            good = self.token_matches(value.strip())
        else:
            cookie = cookies.get(COOKIE)
            if not cookie:
                return "missing"
            good = hmac.compare_digest(cookie.encode("utf-8", "surrogatepass"), self.session.encode())
        return self._verdict(good)

    def login(self, candidate: str) -> str:
        """Check a token typed into the login form: ``"ok"``, ``"wrong"`` or ``"throttled"``."""
        return self._verdict(self.token_matches(candidate))

    def throttled(self) -> bool:
        """Whether ``max_failures`` attempts failed within the last ``window_s`` seconds."""
        failures = self._failures
        if len(failures) < (failures.maxlen or 0):
            return False
        return self._clock() - failures[0] < self._window

    def _verdict(self, good: bool) -> str:
        # While throttled even the right token waits: otherwise the answer would tell
        # a guesser when they got it right.
        if self.throttled():
            return "throttled"
        if good:
            return "ok"
        self._failures.append(self._clock())
        return "wrong"
