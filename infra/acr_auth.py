"""Registry credentials for the docker push, with the ACR admin user off.

The deploying identity (CI's federated identity or a person's `az login`) holds AcrPush on the
registry. Its Entra access token is exchanged at ACR's /oauth2/exchange for an ACR refresh token,
which docker accepts as the password of the fixed user below. The Image gets it as a secret, so
it never reaches the state in plain text. This is the only cloud call outside a Pulumi provider:
tests replace `refresh_token` and nothing else.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from infra import azure_credential

TOKEN_USERNAME = "00000000-0000-0000-0000-000000000000"  # ACR's user name for refresh-token logins
ARM_SCOPE = "https://management.azure.com/.default"


class AcrAuthError(RuntimeError):
    pass


def refresh_token(login_server: str, timeout_s: float = 30.0) -> str:
    """Entra token (infra/azure_credential.py: renewable in CI) -> ACR refresh token for `login_server`."""
    access_token = azure_credential.arm_credential().get_token(ARM_SCOPE).token
    body = urllib.parse.urlencode({"grant_type": "access_token", "service": login_server,
                                   "access_token": access_token}).encode()
    request = urllib.request.Request(f"https://{login_server}/oauth2/exchange", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            token = json.loads(response.read())["refresh_token"]
    except (OSError, KeyError, ValueError) as error:
        raise AcrAuthError(f"exchanging the Entra token for an ACR token at {login_server} failed: {error}. "
                           "Does the deploying identity hold AcrPush on the registry?") from error
    return token
