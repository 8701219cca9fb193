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

NOT_FOUND = re.compile(r'\bStatus=404\b|\bRESPONSE 404:|\bCode="(ResourceNotFound|ResourceGroupNotFound)"'
                       r"|\bERROR CODE: (ResourceNotFound|ResourceGroupNotFound)\b")


def not_found(error: BaseException) -> bool:
    return NOT_FOUND.search(str(error)) is not None
