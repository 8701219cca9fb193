"""The drift record reaches Application Insights' ingestion endpoint with an Entra ID token, as it must once the
resource disables local auth: sent here to a collector on 127.0.0.1 that records what arrives."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.credentials import AccessToken

from monitoring.drift import DriftDeliveryError, send_to_app_insights

KEY = "00000000-0000-0000-0000-00000000abcd"  # an instrumentation key: it names the resource, it authenticates nothing
RECORD = {"log_type": "drift", "ts": "2026-11-24T06:00:00+00:00", "model_name": "staging.sales.scoring_model",
          "model_version": "7", "status": "drift", "records": 812, "drifted": ["some_feature"], "max_psi": 0.41,
          "psi_threshold": 0.2}


class Credential:
    """An Entra ID credential (azure.core TokenCredential) handing out one known token, recording the scopes asked."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("entra-token-for-test", 4_102_444_800)


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1: azure-core sends a bearer token over TLS only, as it must."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "collector.pem", directory / "collector.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def collector(tmp_path, monkeypatch):
    received: list[dict] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                             "items": json.loads(body)})
            answer = json.dumps({"itemsReceived": len(received[-1]["items"]), "itemsAccepted": len(received[-1]["items"]),
                                 "errors": []}).encode()
            self.send_response(status["code"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)  # the client trusts this collector, and only through its CA file
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", received, status
    server.shutdown()


def test_the_drift_record_goes_as_a_trace_with_an_entra_token(collector, monkeypatch):
    monkeypatch.delenv("APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL", raising=False)
    url, received, _ = collector
    credential = Credential()
    calm_record = {**RECORD, "status": "no drift", "drifted": []}
    send_to_app_insights(f"InstrumentationKey={KEY};IngestionEndpoint={url}/", [RECORD, calm_record], credential)
    # the two records and nothing else (no usage telemetry of the exporter's own), each with the Entra token
    assert all(r["authorization"] == "Bearer entra-token-for-test" for r in received)
    assert credential.scopes and all(s == ("https://monitor.azure.com//.default",) for s in credential.scopes)
    assert all(r["path"].startswith("/v2") and r["path"].endswith("/track") for r in received)
    item, calm = [i for r in received for i in r["items"]]
    assert json.loads(calm["data"]["baseData"]["message"])["status"] == "no drift"  # INFO records are sent too
    assert calm["data"]["baseData"]["severityLevel"] == 1
    assert item["iKey"] == KEY and item["data"]["baseType"] == "MessageData"
    data = item["data"]["baseData"]
    assert json.loads(data["message"]) == RECORD  # AppTraces.Message: what infra/kql.alert_drift parses
    assert data["properties"]["log_type"] == "drift" and data["severityLevel"] == 2  # Warning: a drifted version


def test_a_record_the_service_refuses_fails_the_run(collector):
    url, received, status = collector
    status["code"] = 400  # e.g. a resource that rejects the identity: the record is lost, so the run must fail
    with pytest.raises(DriftDeliveryError, match="did not accept the drift record"):
        send_to_app_insights(f"InstrumentationKey={KEY};IngestionEndpoint={url}/", [RECORD], Credential())
    assert len(received) == 1
