"""TLS and mTLS with a test PKI made by openssl at test time (no key material is committed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from agent_helpers import TOKEN, tiny_onnx_bytes, write_artifact
from edge_agent.config import AgentConfig
from edge_agent.host.client import AgentClient, Credentials, DeviceCallError
from edge_agent.service.server import run_server

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(pki: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        cwd=pki,
    )


def _leaf(pki: Path, name: str, ca: str, *, server: bool) -> None:
    _openssl(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=pki,
    )
    ext = pki / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if server else "extendedKeyUsage=clientAuth\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        ext.name,
        "-out",
        f"{name}.pem",
        cwd=pki,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test PKI")
    pki = tmp_path_factory.mktemp("pki")
    _ca(pki, "ca")
    _ca(pki, "other-ca")
    _leaf(pki, "server", "ca", server=True)
    _leaf(pki, "client", "ca", server=False)
    _leaf(pki, "stranger", "other-ca", server=False)
    (pki / "token").write_text(TOKEN)
    return pki


def _client(port: int, pki: Path, cert: str | None, token: str | None = TOKEN) -> AgentClient:
    creds = Credentials(
        token=token,
        ca_cert=pki / "ca.pem",
        client_cert=pki / f"{cert}.pem" if cert else None,
        client_key=pki / f"{cert}.key" if cert else None,
    )
    return AgentClient(f"localhost:{port}", creds, timeout=5)


def test_tls_with_token(pki: Path, tmp_path: Path) -> None:
    config = AgentConfig(
        listen="127.0.0.1:0",
        store=tmp_path / "s",
        token_file=pki / "token",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
    )
    with run_server(config) as (_, port):
        with _client(port, pki, None) as client:
            assert client.push(write_artifact(tmp_path / "a", tiny_onnx_bytes())).bytes_sent > 0
        with _client(port, pki, None, token=None) as client, pytest.raises(DeviceCallError) as err:
            client.list_artifacts()
        assert err.value.code == "UNAUTHENTICATED"
        from edge_agent.host.client import AgentClient as Plain

        with Plain(f"127.0.0.1:{port}", Credentials(token=TOKEN), timeout=3) as plaintext, pytest.raises(DeviceCallError) as err:
            plaintext.list_artifacts()  # a plaintext client against the TLS port
        assert err.value.code == "UNAVAILABLE"


def test_mtls_requires_a_certificate_from_the_right_ca(pki: Path, tmp_path: Path) -> None:
    config = AgentConfig(
        listen="127.0.0.1:0",
        store=tmp_path / "s",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        client_ca=pki / "ca.pem",
    )
    with run_server(config) as (_, port):
        with _client(port, pki, "client", token=None) as client:
            assert client.list_artifacts() == []
        for cert in (None, "stranger"):
            with _client(port, pki, cert, token=None) as client, pytest.raises(DeviceCallError) as err:
                client.list_artifacts()
            assert err.value.code == "UNAVAILABLE", cert
    assert not list((tmp_path / "s" / "artifacts").iterdir())


def test_network_bind_allowed_with_tls_and_token(pki: Path, tmp_path: Path) -> None:
    AgentConfig(
        listen="0.0.0.0:0",
        store=tmp_path / "s",
        token_file=pki / "token",
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
    ).check()
    with pytest.raises(ValueError, match="without TLS"):
        AgentConfig(listen="0.0.0.0:0", store=tmp_path / "s", token_file=pki / "token").check()
    AgentConfig(listen="0.0.0.0:0", store=tmp_path / "s", insecure=True).check()
