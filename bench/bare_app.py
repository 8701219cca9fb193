"""The framework's speed limit: a bare FastAPI + uvicorn endpoint that reads the body and returns a
constant JSON answer, served exactly as ours is: one worker and the service's own uvicorn flags
(scoring/serve.py's UVICORN_FLAGS: httptools with scoring/wire.py's joined writes, uvloop, lifespan on, no access
log, no server header).

    python -m bench.bare_app --port 8010
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI, Request
from fastapi.responses import Response

ANSWER = b'{"predictions":[{"probability":0.5,"label":0}]}'

app = FastAPI(title="bare endpoint")


@app.post("/predict")
async def predict(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


@app.get("/ready")
async def ready() -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from serving.scoring.serve import UVICORN_FLAGS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run("bench.bare_app:app", host=args.host, port=args.port, workers=1, **UVICORN_FLAGS)


if __name__ == "__main__":
    main()
