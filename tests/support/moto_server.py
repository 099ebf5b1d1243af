"""moto_server as the tests run it (tests/support/moto.rs).

    <tools>/moto/bin/python tests/support/moto_server.py -H 127.0.0.1 -p PORT -c CERT -k KEY

takes moto_server's own arguments and runs moto's own server (moto.server.main) with
two changes, both so that moto's STS answers AssumeRoleWithWebIdentity as AWS STS does:

- Routing. moto_server serves every service on one port and picks the service of a
  request from its SigV4 signature, or, for an unsigned request, from the Action in a
  form body. AssumeRoleWithWebIdentity is unsigned (the web identity token is the
  credential), and object_store sends its parameters in the query string, as the AWS
  API allows; moto would route it to S3. Here the query string's Action counts too.
- Authorization. With moto's IAM checks on (INITIAL_NO_AUTH_ACTION_COUNT, or
  POST /moto-api/reset-auth), moto asks every request for a signature, also the
  unsigned STS actions, which AWS does not. Those two are let through here.

Nothing else of moto is touched: it still issues the temporary credentials, and its S3
still checks each request's signature, session token and the role's policy.
"""

from urllib.parse import parse_qs

import moto.server
from moto.core.authorization import ActionAuthenticatorMixin
from moto.moto_server.werkzeug_app import UNSIGNED_ACTIONS, DomainDispatcherApplication


def unsigned_action(query_string, authorization):
    """The unsigned STS action a request asks for in its query string, or None."""
    if authorization:
        return None
    action = parse_qs(query_string or "").get("Action", [None])[0]
    return action if action in UNSIGNED_ACTIONS else None


class Dispatcher(DomainDispatcherApplication):
    def infer_service_region_host(self, environ, path):
        action = unsigned_action(
            environ.get("QUERY_STRING"), environ.get("HTTP_AUTHORIZATION")
        )
        if action:
            service, region = UNSIGNED_ACTIONS[action]
            return f"{service}.{region}.amazonaws.com"
        return super().infer_service_region_host(environ, path)


_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action


def authorize_unless_unsigned(self, resource="*"):
    if "Authorization" not in self.headers and self._get_action() in UNSIGNED_ACTIONS:
        return None
    return _authorize(self, resource)


moto.server.DomainDispatcherApplication = Dispatcher
ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = authorize_unless_unsigned

if __name__ == "__main__":
    moto.server.main()
