"""What an ARM lookup's failure means. A read-only GET (an invoke such as getWorkspace) that fails because the
resource, or its resource group, does not exist yet is an answer ("not deployed yet"); anything else (throttling, a
5xx, no permission) is an error. Decided by the status line and the error code the engine's message carries
(azcore's ResponseError: "RESPONSE 404: 404 Not Found" and "ERROR CODE: ResourceNotFound"), never by a substring
anywhere in the text, which also holds ids and request ids: a false "not found" would make the program drop what
the stack declared (audit W-A).
"""

from __future__ import annotations

import re

NOT_FOUND = re.compile(r"^RESPONSE 404\b|^ERROR CODE: (ResourceNotFound|ResourceGroupNotFound)\b", re.MULTILINE)


def not_found(error: BaseException) -> bool:
    return NOT_FOUND.search(str(error)) is not None
