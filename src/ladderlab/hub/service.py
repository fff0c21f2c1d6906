"""The ladderlab service on a hub (docs/hub-design.md, 2.3): a JupyterHub-managed service, started by the hub
(``python -m ladderlab.hub.service``), serving ``/services/ladderlab/``.

Every request is authenticated by the hub: a browser by the service's OAuth cookie, a learner's kernel by
``Authorization: token $JUPYTERHUB_API_TOKEN``. The learner is always who the hub says the caller is: no
request names a learner, and one that tries (``?learner=`` / ``?user=``) is refused (400). The API answers
an unauthenticated request with 401 JSON, never a redirect to a login page.

Built so far: ``GET api/whoami``. Environments, checks, hand-in and the cohort view are the next steps.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import ioloop, web

TRAINER_SCOPE = "custom:ladderlab:trainer"
SERVICE = "ladderlab"


class ApiHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """JSON in, JSON out; the caller is the hub's user behind the token or cookie."""

    def get_login_url(self) -> str:
        raise web.HTTPError(401, "log in to the hub (or send the server's JUPYTERHUB_API_TOKEN)")

    def prepare(self) -> None:
        named = [k for k in ("learner", "user", "student") if k in self.request.arguments]
        if named:
            raise web.HTTPError(400, f"a request never names a learner ({', '.join(named)}=): you are the "
                                     f"learner you logged in as")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": status_code, "message": message}))

    @property
    def learner(self) -> str:
        user = self.current_user
        assert user is not None  # @web.authenticated ran first
        return str(user["name"])

    @property
    def is_trainer(self) -> bool:
        user = self.current_user or {}
        return TRAINER_SCOPE in set(user.get("scopes") or [])


class WhoAmI(ApiHandler):
    @web.authenticated
    def get(self) -> None:
        self.finish({"learner": self.learner, "trainer": self.is_trainer})


def make_app() -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE}/")
    auth = HubOAuth(cache_max_age=30)  # a revoked token stops working within 30 s, not 300
    return web.Application([
        (prefix + "api/whoami", WhoAmI),
        (prefix + "oauth_callback", HubOAuthCallbackHandler),
    ], cookie_secret=os.urandom(32), hub_auth=auth, xsrf_cookies=False)


def main() -> None:
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app = make_app()
    for handler_class in (WhoAmI, HubOAuthCallbackHandler):
        handler_class.hub_auth = app.settings["hub_auth"]
    app.listen(url.port or 80, address=url.hostname or "127.0.0.1")
    loop = ioloop.IOLoop.current()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the hub stops its services with SIGTERM (pitfall 5: never ignore)
        signal.signal(sig, lambda *_: loop.add_callback_from_signal(loop.stop))
    loop.start()


if __name__ == "__main__":
    main()
