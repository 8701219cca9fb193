"""The FastAPI scoring app: three protocols around one scoring path (scoring/core.py).

    POST /predict                       our protocol: {"records": [...]} -> the model's outputs per record (by task:
                                        binary probability + label, multiclass label + probabilities, regression
                                        prediction; scoring/core.py Outputs)
    POST /invocations                   MLflow's scoring protocol (`mlflow models serve`, Databricks Model Serving)
    GET  /ping, /version                as `mlflow models serve` has them
    POST /v2/models/{name}[/versions/{version}]/infer   Open Inference Protocol (KServe V2)
    GET  /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{version}][/ready]
    GET  /health                        the process is alive
    GET  /ready                         the model is loaded and a warm-up prediction passed (with its task and classes)
    GET  /metrics                       Prometheus metrics (text exposition format; scraped on AKS only: infra/prometheus.py)
    GET  /docs                          OpenAPI UI: every route, with examples

Run it with `python -m scoring.serve` (reads HOST, PORT, WEB_CONCURRENCY, MODEL_DIR).
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from . import docs, ids, metrics, mlflow_protocol, refusal, requestlog, v2, v2_binary
from .core import InputError, NotReady, ScoringPath, describe_error, too_many_records
from .fastpath import FastV2
from .front import BodyLimits, Handler, Refusal, Reply, Scope, ScoringFront, ScoringRoute, header, scoring_route
from .model import FEW_RECORDS, Manifest, check_outputs, load_scorer, records_to_columns
from .schemas import columns_adapter, predict_response, records_adapter, request_adapter, request_schemas
from .settings import Settings

log = logging.getLogger("scoring")
JSON = "application/json"
WARM_UP_RECORDS = 4 * FEW_RECORDS  # the warm-up's second prediction: a request past the few-records graph
TEXT = "text/plain; charset=utf-8"
NO_BINARY: frozenset[str] = frozenset()  # a JSON request: no output asked for in binary


def load_model(path: ScoringPath, model_dir: Any) -> None:
    """Load the scorer and prove it with a warm-up prediction; on failure keep serving /health."""
    manifest = path.manifest
    try:
        scorer = load_scorer(model_dir, manifest)
        example = manifest.input_example
        # The example as is, and cycled to more records than FEW_RECORDS: a model with a graph for a few records has
        # both graphs run (and proved) before the first request, not on it.
        for records in (example, [example[i % len(example)] for i in range(WARM_UP_RECORDS)] if example else []):
            check_outputs(scorer.predict(records_to_columns(records, manifest.input_names)), manifest, len(records))
    except Exception as error:  # keep serving /health so the failure can be seen and probed
        path.problem = f"warm-up failed: {type(error).__name__}: {error}"
        log.exception("model warm-up failed")
        return
    path.scorer, path.problem = scorer, None
    metrics.MODEL_INFO.labels(manifest.model_name, manifest.model_version, manifest.runtime).set(1)


def create_app(settings: Settings | None = None) -> ScoringFront:
    """The ASGI app uvicorn serves: ScoringFront answers the scoring routes and hands every other request to
    FastAPI. It is the outermost layer on purpose: FastAPI's own stack (telemetry check, body-limit and
    error middleware) cost a single-record request more than its validation and request log together."""
    settings = settings or Settings.from_env()
    manifest = Manifest.read(settings.model_dir)
    envelope = request_adapter(manifest, settings.max_records)
    path = ScoringPath(settings, manifest, records_adapter(manifest, settings.max_records),
                       columns_adapter(manifest, settings.max_records))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        load_model(path, settings.model_dir)
        yield

    app = FastAPI(title=f"{manifest.model_name} scoring API", version=manifest.model_version,
                  description=docs.description(manifest), lifespan=lifespan)
    app.state.model = path
    log_failure = functools.partial(requestlog.error_line, model_name=manifest.model_name,
                                    model_version=manifest.model_version)
    app.state.log_failure = log_failure
    # Starlette types every handler as taking any Exception, though it calls this one with its class only.
    app.add_exception_handler(RequestValidationError, validation_error_handler)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error_handler)
    routes = [*predict_routes(app, path, envelope, log_failure),
              *mlflow_routes(app, path, (records_adapter(manifest, settings.max_records, extra="ignore"),
                                         records_adapter(manifest, settings.max_records, "ignore", mlflow_lax=True)),
                             log_failure, settings.max_records),
              *v2_routes(app, path, log_failure)]
    add_service_routes(app, path)
    # FastAPI's documented way to extend the document; mypy refuses any assignment to a method.
    app.openapi = functools.partial(openapi_with_request_schemas, app, request_schemas(envelope))  # type: ignore[method-assign]
    return ScoringFront(app, routes=routes, log_failure=log_failure, log=path.log_stream,
                        limits=BodyLimits(settings.max_body_bytes, settings.body_timeout_s, settings.max_in_flight))


def declare(app: FastAPI, template: str, handler: Handler, limit_refusal: Refusal, **documentation: Any) -> ScoringRoute:
    """A scoring route: answered by ScoringFront; declared on FastAPI too, for OpenAPI (and, should a
    request ever reach the router, answered by the same handler)."""
    async def endpoint(request: Request) -> Response:
        reply = handler(request.scope, await request.body())
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type,
                        headers={name.decode(): value.decode() for name, value in reply.headers})

    endpoint.__name__ = handler.__name__
    app.post(template, **documentation)(endpoint)
    return scoring_route(template, handler, limit_refusal)


def not_ready(scope: Scope, log_failure: Any, error: NotReady, body: dict) -> Reply:
    requestlog.write_line(log_failure(request_id=scope["request_id"], route=scope["path"], status=503,
                                      error=f"not ready: {error}"))
    return Reply(503, orjson.dumps(body))


def predict_routes(app: FastAPI, path: ScoringPath, envelope: Any, log_failure: Any) -> list[ScoringRoute]:
    manifest = path.manifest
    model_ref = orjson.dumps({"name": manifest.model_name, "version": manifest.model_version})

    def predict(scope: Scope, body: bytes) -> Reply:
        # The raw body is parsed and validated in one pass by msgspec (scoring/fastpath.py); a body it refuses, by
        # pydantic-core, which names every record and field at fault (or accepts what msgspec is stricter about).
        started, request_id = time.perf_counter(), scope["request_id"]
        if (refused := refused_content_type(scope, (JSON,), none_is_json=True)) is not None:
            return Reply(415, refusal.body(refused, request_id, error="unsupported media type"))
        try:
            records = path.fast.decode(body)
            if records is None:
                records = envelope.validate_json(body)["records"]
            scored = path.score_records(records, request_id, "predict", started)
        except ValidationError as error:
            return invalid_request(request_id, InputError.from_pydantic(error))
        except NotReady as error:
            return not_ready(scope, log_failure, error, {"error": "not ready", "problem": str(error)})
        # orjson.dumps({"request_id", "model", "predictions"}), the predictions as the request log encoded them
        predictions = scored.outputs_json or orjson.dumps(scored.outputs)
        return Reply(200, b'{"request_id":%s,"model":%s,"predictions":%s}' % (orjson.dumps(request_id), model_ref,
                                                                               predictions))

    def limit_refusal(scope: Scope, problem: str, kind: str) -> bytes:
        return invalid_request(scope["request_id"], InputError.one(problem, kind=kind)).body

    return [declare(app, "/predict", predict, limit_refusal, response_model=predict_response(manifest),
                    openapi_extra=docs.predict_body(), responses=docs.predict_responses(manifest))]


def refused_content_type(scope: Scope, accepted: tuple[str, ...], none_is_json: bool) -> InputError | None:
    """The same Content-Type rule on every protocol (scoring/refusal.py); None when the request's is taken."""
    problem = refusal.content_type_problem(header(scope, b"content-type"), accepted, none_is_json)
    return None if problem is None else InputError([problem])


def input_values(path: ScoringPath) -> dict[str, dict]:
    """Each input's value schema, as /predict's Record documents it: the other protocols' documents reuse it."""
    return docs.value_schemas(request_schemas(request_adapter(path.manifest, 1))["Record"], path.names)


def id_values(path: ScoringPath) -> dict[str, dict]:
    """Each contract id's value schema, as /predict's Record documents it (scoring/ids.py)."""
    return docs.value_schemas(request_schemas(request_adapter(path.manifest, 1))["Record"], path.ids)


def mlflow_routes(app: FastAPI, path: ScoringPath, records: tuple[Any, Any], log_failure: Any,
                  max_records: int) -> list[ScoringRoute]:
    numeric = frozenset(f.name for f in path.manifest.inputs if not f.is_string)
    integers = frozenset(f.name for f in path.manifest.inputs if f.type in ("long", "integer"))
    task = path.manifest.task
    mlflow_version = docs.mlflow_version(path.manifest)

    def invocations(scope: Scope, body: bytes) -> Reply:
        started, request_id = time.perf_counter(), scope["request_id"]
        if (refused := refused_content_type(scope, mlflow_protocol.CONTENT_TYPES, none_is_json=False)) is not None:
            return Reply(415, mlflow_protocol.error_body(refused, request_id))
        try:
            content_type = header(scope, b"content-type") or ""
            typed = path.fast_mlflow.decode(body) if mlflow_protocol.media_type(content_type) == JSON else None
            if typed is not None:  # the common JSON forms, valid: decoded and validated in one pass
                scored = path.score(typed[0], request_id, "mlflow", started, answer=True, found_ids=typed[1])
                return Reply(200, mlflow_protocol.encode(scored, task))
            candidates = mlflow_protocol.decode(body, content_type, numeric, integers, max_records)
            scored = path.score_records(path.validate(candidates, *records), request_id, "mlflow", started,
                                        answer=True)
        except InputError as error:
            return Reply(input_status(error, 400), mlflow_protocol.error_body(error, request_id))
        except NotReady as error:
            return not_ready(scope, log_failure, error,
                             {"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"not ready: {error}"})
        return Reply(200, mlflow_protocol.encode(scored, task))

    # Text, not JSON (MLflow labels "\n" as JSON; its clients read only /ping's status and /version's text).
    @app.get("/ping", response_class=Response, responses=docs.ping_responses())
    async def ping() -> Response:
        return Response("\n", status_code=200 if path.scorer is not None else 404, media_type=TEXT)

    @app.get("/version", response_class=Response,
             responses=docs.text_response(mlflow_version, "the MLflow version that logged the model"))
    async def version() -> Response:
        return Response(mlflow_version, media_type=TEXT)

    def limit_refusal(scope: Scope, problem: str, kind: str) -> bytes:
        return mlflow_protocol.error_body(InputError.one(problem, kind=kind), scope["request_id"])

    return [declare(app, "/invocations", invocations, limit_refusal,
                    openapi_extra=docs.invocations_body(path.manifest, input_values(path), max_records, id_values(path)),
                    responses=docs.invocations_responses(path.manifest))]


def v2_routes(app: FastAPI, path: ScoringPath, log_failure: Any) -> list[ScoringRoute]:
    manifest = path.manifest
    meta, expected, known = v2.metadata(manifest), v2.input_types(manifest), v2.outputs(manifest)
    fast, every_output = FastV2(manifest, expected, path.settings.max_records), list(known)
    answers = v2.Answer(manifest)  # the JSON answer's constant parts, encoded once
    binary_header = v2.BINARY_HEADER.encode()

    def unknown(name: str, version: str | None, request_id: str) -> Reply | None:
        if name != manifest.model_name or version not in (None, manifest.model_version):
            found = f"model '{name}'" + (f" version '{version}'" if version is not None else "")
            error = InputError.one(f"unknown {found}: this server serves '{manifest.model_name}' version "
                                   f"'{manifest.model_version}'", field="name" if name != manifest.model_name
                                   else "version", kind="not_found")
            return Reply(404, v2.error_body(error, request_id))
        return None

    def infer(scope: Scope, body: bytes) -> Reply:
        started, request_id = time.perf_counter(), scope["request_id"]
        params = scope.get("path_params", {})
        if (missing := unknown(params.get("name", ""), params.get("version"), request_id)) is not None:
            return missing
        json_length, binary = header(scope, binary_header), NO_BINARY
        # A binary-extension request carries its own content type: the JSON rule applies only without its header.
        if json_length is None and (refused := refused_content_type(scope, (JSON,), none_is_json=True)) is not None:
            return Reply(415, v2.error_body(refused, request_id))
        try:
            typed = fast.decode(body) if json_length is None else None
            if typed is not None:  # the common JSON form, valid: decoded and validated in one pass
                scored = path.score(typed[0], request_id, "v2", started, found_ids=typed[2])
                inference_id = typed[1]
                return Reply(200, answers.json(scored, inference_id, every_output))
            if v2_binary.applies(body, json_length):  # tritonclient's default: binary tensors in, binary outputs out
                candidates, inference_id, requested, binary, found = v2_binary.decode(body, json_length, expected, known,
                                                                                      path.ids)
            else:
                candidates, inference_id, requested, found = v2.decode(body, expected, known, path.ids)
            if (count := len(next(iter(candidates.values()), []))) > path.settings.max_records:
                raise too_many_records(path.settings.max_records, count)  # before a record is built
            valid = path.valid_columns(candidates)  # None: validate() names the record and field at fault
            columns = valid if valid is not None else path.columns_of(path.validate(v2.records(candidates)))
            scored = path.score(columns, request_id, "v2", started, found_ids={
                name: ids.present(values) for name, values in found.items()})
        except InputError as error:
            return Reply(input_status(error, 400), v2.error_body(error, request_id))
        except NotReady as error:
            return not_ready(scope, log_failure, error, {"error": f"not ready: {error}"})
        if binary:
            answer, length = v2_binary.encode(scored, manifest, inference_id, requested, known, binary)
            return Reply(200, answer, v2_binary.CONTENT_TYPE, ((v2.BINARY_HEADER.encode(), b"%d" % length),))
        return Reply(200, answers.json(scored, inference_id, requested))

    def limit_refusal(scope: Scope, problem: str, kind: str) -> bytes:
        return v2.error_body(InputError.one(problem, kind=kind), scope["request_id"])

    values, responses = input_values(path), docs.v2_infer_responses(manifest, known)
    routes = [declare(app, "/v2/models/{name}/infer", infer, limit_refusal, responses=responses,
                      openapi_extra=docs.v2_infer_body(manifest, values, known, id_values(path))),
              declare(app, "/v2/models/{name}/versions/{version}/infer", infer, limit_refusal, responses=responses,
                      openapi_extra=docs.v2_versioned_infer_body(manifest, values, known, id_values(path)))]

    def as_response(reply: Reply | None) -> Response | None:
        return None if reply is None else Response(reply.body, status_code=reply.status, media_type=reply.content_type)

    # The path parameters are read from the request, not the signature: FastAPI would add a 422 that never happens.
    def missing(request: Request) -> Response | None:
        params = request.path_params
        return as_response(unknown(params["name"], params.get("version"), request.scope["request_id"]))

    async def model_metadata(request: Request) -> Response:
        return missing(request) or JSONResponse(meta)

    async def model_ready(request: Request) -> Response:
        if (unknown_model := missing(request)) is not None:
            return unknown_model
        ready = path.scorer is not None
        return JSONResponse({"name": manifest.model_name, "ready": ready}, status_code=200 if ready else 503)

    for template, handler, responses in [("", model_metadata, docs.v2_metadata_responses(meta)),
                                         ("/ready", model_ready, docs.v2_ready_responses(manifest.model_name))]:
        app.get("/v2/models/{name}" + template, responses=responses, response_class=JSONResponse,
                openapi_extra={"parameters": docs.V2_PATH})(handler)
        app.get("/v2/models/{name}/versions/{version}" + template, responses=responses, response_class=JSONResponse,
                openapi_extra={"parameters": [*docs.V2_PATH, docs.V2_VERSION]})(handler)

    @app.get("/v2", responses=docs.v2_server_responses(v2.server_metadata()))
    async def server_metadata() -> Response:
        return JSONResponse(v2.server_metadata())

    @app.get("/v2/health/live", responses=docs.flag_responses("live", "the process is alive", not_yet=False))
    async def live() -> Response:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready", responses=docs.flag_responses("ready", "the model is ready", not_yet=True))
    async def v2_ready() -> Response:
        ready = path.scorer is not None
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    return routes


def add_service_routes(app: FastAPI, path: ScoringPath) -> None:
    manifest = path.manifest
    model_ref = {"name": manifest.model_name, "version": manifest.model_version}
    ready_example = {"status": "ready", "model": model_ref, "runtime": manifest.runtime, "task": manifest.task,
                     "classes": list(manifest.classes) if manifest.classes is not None else None,
                     "outputs": docs.output_names(manifest),
                     # what the request log keeps of the personal columns: the release's smoke test checks it is the
                     # stack's (an image built before the setting logs them whole, whatever the stack says)
                     "request_log_personal": path.settings.request_log_personal}

    @app.get("/health", response_class=JSONResponse, responses=docs.health_responses())
    async def health() -> dict:
        return {"status": "alive"}

    @app.get("/ready", response_class=JSONResponse, responses=docs.ready_responses(ready_example))
    async def ready() -> Response:
        if path.scorer is None:
            return JSONResponse({"status": "not ready", "problem": path.problem}, status_code=503)
        return JSONResponse(ready_example)

    @app.get("/metrics", response_class=Response, responses=docs.metrics_response())
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)


def openapi_with_request_schemas(app: FastAPI, schemas: dict[str, dict]) -> dict:
    """FastAPI's document plus the request schemas generated from the signature (the body is
    validated by a TypeAdapter, so FastAPI does not see the model by itself)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        app.openapi_schema = document
    return app.openapi_schema


def input_status(error: InputError, status: int) -> int:
    """413 for more records than MAX_RECORDS (pydantic's too_long on the record list itself, which names the
    limit), on every protocol; else the protocol's own status for bad input."""
    return 413 if any(p.type == "too_long" and p.record is None for p in error.problems) else status


def invalid_request(request_id: str, error: InputError) -> Reply:
    return Reply(input_status(error, 422), refusal.body(error, request_id, error="invalid request"))


async def validation_error_handler(request: Request, error: RequestValidationError) -> Response:
    reply = invalid_request(request.scope.get("request_id", ""), InputError([describe_error(e) for e in error.errors()]))
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def log_failure(request: Request, status: int, error: str) -> None:
    """One JSON error line per 5xx, next to the prediction lines: what the error-rate alert counts."""
    line = request.app.state.log_failure(request_id=request.scope.get("request_id"), route=request.url.path,
                                         status=status, error=error)
    requestlog.write_line(line)


async def unexpected_error_handler(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    log_failure(request, 500, f"{type(error).__name__}: {error}")
    return JSONResponse({"error": "internal error", "request_id": request.scope.get("request_id")},
                        status_code=500)
