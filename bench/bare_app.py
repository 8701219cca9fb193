"""The framework's speed limit: a bare FastAPI + uvicorn endpoint that reads the body and returns a
constant JSON answer, served exactly as ours is (one worker, uvloop + httptools, no access log).

    python -m uvicorn bench.bare_app:app --host 127.0.0.1 --port 8010 --no-access-log
"""

from __future__ import annotations

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
