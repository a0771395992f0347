"""A cookie-keeping HTTP client for tests of the pages (the stand-in shell's login included)."""
import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        no_redirect = type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                           {"redirect_request": lambda *a, **k: None})
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), no_redirect)

    def request(self, path, data=None, headers=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req) as reply:
                return reply.status, reply.headers, reply.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode(errors="replace")

    def csrf(self) -> str:
        _, _, page = self.request("/login")
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)

    def login(self, name, password):
        return self.request("/login", {"username": name, "password": password,
                                       "csrf_token": self.csrf()})

    def calls(self, prefix: str, **params) -> list[dict]:
        """Every call the JSON API gives this user for `params`, following its cursor."""
        calls, cursor = [], None
        while True:
            query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            status, _, body = self.request(prefix + "api/v1/calls?" + urllib.parse.urlencode(query))
            assert status == 200, body
            reply = json.loads(body)
            calls += reply["calls"]
            cursor = reply["next_cursor"]
            if not cursor:
                return calls
