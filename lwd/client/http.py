"""The robot's side of the gateway's HTTP API: one method per endpoint, errors as
`GatewayError` with the gateway's stable code and whether retrying can help."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import httpx

from lwd.data.store import Receipt
from lwd.gateway.wire import (
    EPISODE_CONTENT_TYPE,
    MSGPACK_CONTENT_TYPE,
    ActRequest,
    ActResponse,
    WireError,
    decode_act_response,
    encode_act_request,
)

_RETRYABLE_CODES = {"overloaded", "store_unavailable", "internal", "unreachable", "checksum_mismatch", "timeout"}


class GatewayError(RuntimeError):
    """A refusal or failure of a gateway call. `code` is the gateway's stable error code, or
    "unreachable" when no answer came (connection refused or reset, timeout, TLS failure)."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"gateway: {code} ({status}): {detail}" if status else f"gateway: {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later (the gateway or the link was down,
        busy, or failed); a 4xx refusal of the request itself will not."""
        return self.code in _RETRYABLE_CODES or self.status >= 500 or self.status == 429


class GatewayClient:
    """Calls the gateway with one robot's token. `verify`: True (the system's trust store),
    a CA bundle path or an `ssl.SSLContext` (a private CA or a self-signed certificate).
    The library gives each background loop its own client (httpx's pool is thread-safe,
    but a loop's retries should not wait behind another's requests)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
        http: httpx.Client | None = None,
    ):
        self.url, self.token = url.rstrip("/"), token
        self._owns = http is None
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout, verify=verify)
        self._headers = {"Authorization": f"Bearer {token}"}

    def with_token(self, token: str) -> GatewayClient:
        """A client for another robot sharing this one's connections."""
        return GatewayClient(self.url, token, http=self._http)

    def close(self) -> None:
        if self._owns:
            self._http.close()

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            response = self._http.request(
                method, path, headers={**self._headers, **kwargs.pop("headers", {})}, **kwargs
            )
        except httpx.TransportError as err:  # refused, reset, timed out, TLS: no answer to judge
            raise GatewayError(0, "unreachable", f"{method} {self.url}{path}: {type(err).__name__}: {err}") from err
        if response.status_code >= 400:
            raise _error(response)
        return response

    def health(self) -> dict:
        return self._call("GET", "/healthz").json()

    def upload(self, robot_id: str, seq: int, data: bytes) -> Receipt:
        """Upload an episode's file bytes; the gateway's receipt means it is committed."""
        response = self._call(
            "PUT", f"/v1/episodes/{robot_id}/{seq}", content=data, headers={"Content-Type": EPISODE_CONTENT_TYPE}
        )
        body = response.json()
        return Receipt(body["episode_id"], int(body["snapshot"]), bool(body["duplicate"]))

    def committed(self, robot_id: str) -> set[int]:
        return set(self._call("GET", f"/v1/robots/{robot_id}/committed").json()["seqs"])

    def rollout(self) -> dict | None:
        """Which versions robots run: {"deployed": {...}, "canary": {...} | None,
        "canary_robots": [...], "pinned": bool}, each version with its bundle's sha256;
        None while nothing is published."""
        try:
            return self._call("GET", "/v1/policy/rollout").json()
        except GatewayError as err:
            if err.code == "no_policy":
                return None
            raise

    def fleet_control(self) -> dict:
        """What the fleet asks of robots now: {"hold": bool}."""
        return self._call("GET", "/v1/fleet/control").json()

    def latest(self) -> dict | None:
        """The newest published version with its bundle's sha256, size and architecture;
        None while nothing is published."""
        try:
            return self._call("GET", "/v1/policy/latest").json()
        except GatewayError as err:
            if err.code == "no_policy":
                return None
            raise

    def download_weights(self, version: int, destination: str | os.PathLike, expect_sha256: str | None = None) -> str:
        """Stream a version's weight bundle to `destination`, verifying its sha256 against
        the gateway's header (and `expect_sha256`); returns the checksum."""
        path = Path(destination)
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", f"/v1/policy/{version}/weights", headers=self._headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                announced = response.headers.get("x-content-sha256")
                with open(path, "wb") as handle:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        handle.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
        except httpx.TransportError as err:
            raise GatewayError(0, "unreachable", f"weights of version {version}: {err}") from err
        got = digest.hexdigest()
        for name, want in (("X-Content-SHA256", announced), ("the announced latest", expect_sha256)):
            if want is not None and want != got:
                path.unlink(missing_ok=True)
                raise GatewayError(0, "checksum_mismatch", f"version {version}: sha256 {got} != {name} {want}")
        if announced is None:
            path.unlink(missing_ok=True)
            raise GatewayError(0, "checksum_mismatch", f"version {version}: the gateway sent no X-Content-SHA256")
        return got

    def act(self, request: ActRequest) -> ActResponse:
        response = self._call(
            "POST", "/v1/act", content=encode_act_request(request), headers={"Content-Type": MSGPACK_CONTENT_TYPE}
        )
        try:
            return decode_act_response(response.content)
        except WireError as err:
            raise GatewayError(response.status_code, "bad_response", f"unreadable act response: {err}") from err

    def metrics(self) -> dict:
        return self._call("GET", "/metrics").json()


def _error(response: httpx.Response) -> GatewayError:
    """The gateway's JSON error, or what a proxy in between said instead."""
    try:
        body = response.json()
        return GatewayError(response.status_code, str(body["error"]), str(body.get("detail", "")))
    except (ValueError, KeyError, TypeError):
        text = response.text[:200].replace("\n", " ")
        return GatewayError(response.status_code, f"http_{response.status_code}", text or response.reason_phrase)
