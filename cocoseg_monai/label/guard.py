"""What the CoCoSeg MONAI Label server lets in: names, sizes, origins and routes checked before use.

A MONAI Label server is code that anyone who can reach its port can drive. This module holds
the checks the app applies to everything that arrives in a request, in plain Python (no MONAI
Label, no web framework), so that they can be tested on their own:

- :func:`plain_name`: a study id, label tag, model or strategy name is one plain name
  (``[A-Za-z0-9._-]``, not starting with a dot, no ``..``), never a path;
- :func:`check_volume`: an image file's decoded size, read from its header before any voxel is
  loaded, stays under a limit (a small ``.nii.gz`` can inflate to gigabytes);
- :func:`public_text`: server paths in a message become names before it leaves the server;
- :class:`RequestGuard`: an ASGI layer in front of the whole server that refuses requests from
  foreign web pages (``Origin``) and foreign host names (DNS rebinding), bodies over a size
  limit, names that are not plain in the path or the query, and routes the app does not serve.

Every refusal is an HTTP error whose ``detail`` says what was refused and why, as MONAI Label's
own errors are (``{"detail": "..."}``).

See docs/RELIABILITY.md for the threat model.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cocoseg_monai.conventions import NIFTI_SUFFIXES  # the image files the app reads

__all__ = [
    "NAME_QUERY_KEYS",
    "Refused",
    "RequestGuard",
    "RouteRule",
    "TRAIN_SETTINGS",
    "check_train_request",
    "check_volume",
    "plain_name",
    "public_text",
    "volume_suffix",
]

_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: query parameters that name a study, label, tag, model, strategy or session: plain names only
NAME_QUERY_KEYS = ("image", "id", "label", "tag", "model", "strategy", "session_id")


class Refused(Exception):
    """A request the server will not serve: ``status`` (an HTTP 4xx) and a ``detail`` saying why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def plain_name(value: Any, what: str) -> str:
    """``value`` if it is one plain name: ``[A-Za-z0-9._-]``, 1 to 128 characters, not
    starting with a dot and without ``..``; :class:`Refused` (400) naming ``what`` otherwise.

    A plain name cannot reach outside the folder it is joined to, whatever the folder.
    """
    text = value if isinstance(value, str) else ""
    if not _PLAIN.fullmatch(text) or text.startswith(".") or ".." in text:
        raise Refused(
            400, f"{what} {str(value)[:80]!r} is not a plain name: use letters, digits, '.', '_' and '-' "
            "(no path, no leading dot, no '..')",
        )  # fmt: skip
    return text


def volume_suffix(name: str, role: str, allowed: Sequence[str] = NIFTI_SUFFIXES) -> str:
    """The suffix of the file name ``name`` among ``allowed`` (case-insensitive); :class:`Refused`
    (400) naming ``role`` and the suffix it has otherwise."""
    lower = name.lower()
    suffix = next((s for s in sorted(allowed, key=len, reverse=True) if lower.endswith(s)), None)
    if suffix is None:
        found = "".join(Path(name).suffixes)[-20:] or "none"
        raise Refused(400, f"{role}: a {' or '.join(allowed)} file is taken, not one with suffix {found!r}")
    return name[len(name) - len(suffix) :]


def check_volume(path: str | os.PathLike, role: str, max_voxels: int) -> tuple[int, ...]:
    """The shape of the 3D image ``path``, read from its header only; :class:`Refused` if the file
    cannot be read (400), is not one 3D volume (400), or holds more than ``max_voxels`` (413).

    Only the header is decompressed, so a small ``.nii.gz`` whose header promises gigabytes is
    refused in milliseconds. NIfTI and NRRD are read (SimpleITK's ``ReadImageInformation``).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise Refused(400, f"{role} is not a readable image file (NIfTI or NRRD header)") from None
    shape = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or components != 1 or min(shape) < 1:
        raise Refused(400, f"{role}: expected one 3D volume, got size {list(shape)} with {components} component(s)")
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise Refused(
            413, f"{role}: {' x '.join(map(str, shape))} = {voxels:,} voxels, over this server's limit of "
            f"{max_voxels:,} (--conf max_volume_voxels)",
        )  # fmt: skip
    return shape


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"`,;:()\[\]]+)+/([^\s/'\"`,;:()\[\]]*)")


def public_text(text: str, folders: Mapping[str, str | os.PathLike] | None = None) -> str:
    """``text`` with server paths taken out: paths inside one of ``folders`` become
    ``<name>/relative/path`` (``folders`` maps a public name to a folder), any other absolute
    path becomes its last component."""
    for name, folder in (folders or {}).items():
        for form in {str(folder), str(Path(folder).resolve())}:
            text = text.replace(form.rstrip("/") + "/", f"{name}/" if name else "")
    return _ABSOLUTE_PATH.sub(r"\1", text)


#: what a ``/train`` request may set: name -> (type, smallest, largest, default); ``max_epochs``'s
#: largest is the server's ``--conf max_train_epochs``
TRAIN_SETTINGS: dict[str, tuple[type, float, float, Any]] = {
    "max_epochs": (int, 1, 200, 10),
    "learning_rate": (float, 1e-8, 1.0, 1e-4),
    "batch_size": (int, 1, 64, 8),
    "val_split": (float, 0.01, 0.9, 0.2),
    "patch_size": (int, 16, 512, 96),
    "random_seed": (int, 0, 2**31 - 1, 42),
}
#: request keys that steer MONAI Label's own machinery (``bundle_path`` joins the training
#: process's PYTHONPATH, ``gpus`` its CUDA_VISIBLE_DEVICES): never taken from a request
SERVER_ONLY_KEYS = ("bundle_path", "gpus", "model", "local_rank")
#: keys clients add to every request that carry no setting (3D Slicer's ``client_id``)
CLIENT_KEYS = ("client_id",)


def check_train_request(params: Mapping[str, Any], max_epochs: int | None = None) -> dict[str, Any]:
    """The training settings of a ``/train`` request, each checked against :data:`TRAIN_SETTINGS`
    (defaults filled in); :class:`Refused` (422) naming every key that is unknown, of the wrong
    type or out of range."""
    if not isinstance(params, Mapping):
        raise Refused(422, f"training settings must be a JSON object, got {type(params).__name__}")
    limits = dict(TRAIN_SETTINGS)
    if max_epochs is not None:
        kind, low, _, default = limits["max_epochs"]
        limits["max_epochs"] = (kind, low, max_epochs, min(default, max_epochs))
    problems, settings = [], {}
    for key, value in params.items():
        if key in SERVER_ONLY_KEYS:
            problems.append(f"{key!r} is set by the server, not by a request")
        elif key == "device":
            settings["device"] = value
        elif key in CLIENT_KEYS:
            continue
        elif key not in limits:
            problems.append(f"{key!r} is not a training setting (known: {', '.join(limits)}, device)")
    for key, (kind, low, high, default) in limits.items():
        value = params.get(key, default)
        number = _number(value, kind)
        if number is None:
            problems.append(f"{key!r} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        elif not low <= number <= high:
            problems.append(f"{key!r} is {number}; it must lie in [{low}, {high}]")
        else:
            settings[key] = number
    if problems:
        raise Refused(422, "training settings refused: " + "; ".join(problems))
    return settings


def _number(value: Any, kind: type) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class RouteRule:
    """Requests whose path is ``prefix`` or lies below it (only ``prefix`` itself if ``exact``),
    and, where given, whose method is one of ``methods`` and whose query has every ``query`` item,
    are refused with ``status`` and ``detail``."""

    prefix: str
    detail: str
    methods: tuple[str, ...] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    status: int = 403
    exact: bool = False

    def matches(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        root, path = self.prefix.rstrip("/"), path.rstrip("/")
        if path != root and (self.exact or not path.startswith(root + "/")):
            return False
        if self.methods and method not in self.methods:
            return False
        return all(query.get(k, "").lower() == v for k, v in self.query.items())


def _host_name(host: str) -> str:
    """The host name of a ``Host`` header value (port and IPv6 brackets taken off), lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI layer that refuses, before the server sees them, the requests the app does not serve.

    Args:
        app: the ASGI application to guard.
        allowed_origins: web origins (``scheme://host[:port]``) whose pages may call the server;
            the server's own origin always may. A request that carries any other ``Origin``
            header (a page on another site, or ``null``) gets 403, preflight included.
        allowed_hosts: host names the server answers to besides IP addresses and ``localhost``;
            any other ``Host`` (a DNS-rebinding page's) gets 403.
        max_body_bytes: the largest request body; larger gets 413 before it is read, and a body
            without ``Content-Length`` gets 411.
        body_limits: smaller limits for the paths below some prefixes (settings, image and
            label info that are JSON, not volumes).
        rules: routes refused, first match wins (see :class:`RouteRule`).
        name_keys: query parameters that must be plain names (400 otherwise); every segment of
            the path must be one too.
    """

    def __init__(
        self,
        app: Callable,
        *,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Iterable[str] = (),
        max_body_bytes: int,
        body_limits: Mapping[str, int] | None = None,
        rules: Sequence[RouteRule] = (),
        name_keys: Sequence[str] = NAME_QUERY_KEYS,
    ) -> None:
        self.app = app
        self.allowed_origins = {o.strip().rstrip("/").lower() for o in allowed_origins if o.strip()}
        self.allowed_hosts = {"localhost", *(h.strip().lower() for h in allowed_hosts if h.strip())}
        self.max_body_bytes = int(max_body_bytes)
        self.body_limits = {prefix.rstrip("/"): int(n) for prefix, n in (body_limits or {}).items()}
        self.rules = tuple(rules)
        self.name_keys = tuple(name_keys)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        try:
            self.check(scope)
        except Refused as refused:
            return await _send_json(send, refused.status, {"detail": refused.detail})
        return await self.app(scope, receive, send)

    def check(self, scope: Mapping[str, Any]) -> None:
        """:class:`Refused` if the request of this ASGI ``scope`` is not served."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", "/"))
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        self._check_host_and_origin(headers, str(scope.get("scheme", "http")))
        self._check_size(headers, path)
        for segment in path.strip("/").split("/"):
            if segment:
                plain_name(segment, "path segment")
        for key in self.name_keys:
            if query.get(key):
                plain_name(query[key], f"query parameter {key!r}:")
        for rule in self.rules:
            if rule.matches(method, path, query):
                raise Refused(rule.status, rule.detail)

    def _check_host_and_origin(self, headers: Mapping[str, str], scheme: str) -> None:
        host = headers.get("host", "")
        name = _host_name(host)
        if name and not _is_ip(name) and name not in self.allowed_hosts:
            raise Refused(
                403, f"requests for host {name!r} are refused (this server answers to IP addresses and "
                "localhost; add a name with --conf allowed_hosts NAME)",
            )  # fmt: skip
        origin = headers.get("origin")
        if origin is None:  # not sent by a browser page: 3D Slicer, curl, scripts
            return
        normalised = origin.strip().rstrip("/").lower()
        if normalised != f"{scheme}://{host}".lower() and normalised not in self.allowed_origins:
            raise Refused(
                403, f"cross-origin request from {origin[:100]!r} refused: allow a web origin with "
                "--conf cors_origins (MONAI Label's MONAI_LABEL_CORS_ORIGINS)",
            )  # fmt: skip

    def _check_size(self, headers: Mapping[str, str], path: str) -> None:
        length = headers.get("content-length")
        if length is None:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise Refused(411, "a request body needs a Content-Length header (chunked uploads are not taken)")
            return
        if not length.isdigit():
            raise Refused(400, f"Content-Length {length[:40]!r} is not a number")
        below = (n for prefix, n in self.body_limits.items() if path.rstrip("/") == prefix or path.startswith(prefix + "/"))
        limit = next(below, self.max_body_bytes)
        if int(length) > limit:
            raise Refused(
                413, f"request body of {int(length):,} bytes is over this server's limit of {limit:,} for "
                f"{path[:80]}{' (--conf max_upload_mb)' if limit == self.max_body_bytes else ''}",
            )  # fmt: skip


async def _send_json(send: Callable, status: int, payload: Mapping[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})
