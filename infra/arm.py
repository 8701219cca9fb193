"""What an ARM lookup's failure means. A read-only GET (an invoke such as getWorkspace) that fails because the
resource, or its resource group, does not exist yet is an answer ("not deployed yet"); anything else (throttling, a
5xx, no permission) is an error. Decided by the status and the error code the engine's message carries, in either
form the provider has used: its own one line (`request failed <id>: Status=404 Code="ResourceNotFound" Message=...`,
pulumi-azure-native since Dec 2024) or azcore's (`RESPONSE 404: 404 Not Found` ... `ERROR CODE: ResourceNotFound`);
never by a bare substring, as the text also holds ids and request ids: a false "not found" would make the program
drop what the stack declared (audit W-A).
"""

from __future__ import annotations

import re

STATUS = re.compile(r"\bStatus=(\d{3})\b|\bRESPONSE (\d{3}):")
CODE = re.compile(r'\bCode="(\w+)"|\bERROR CODE: (\w+)')
NOT_DEPLOYED = ("ResourceNotFound", "ResourceGroupNotFound")  # not SubscriptionNotFound: a wrong subscription


def not_found(error: BaseException) -> bool:
    """The answer's own status (the first one in the text: a 502 may quote an inner 404) is 404, and its code, when
    it has one, says the resource or its group does not exist."""
    text = str(error)
    status, code = STATUS.search(text), CODE.search(text)
    first_status = next(g for g in status.groups() if g) if status else None
    first_code = next(g for g in code.groups() if g) if code else None
    return first_status == "404" and (first_code is None or first_code in NOT_DEPLOYED)
