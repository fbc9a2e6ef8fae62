"""``FakeArchive``: an in-process QIDO-RS server to test QIDO clients against.

An aiohttp.web server on 127.0.0.1 (random port) that answers the six QIDO-RS
search paths from content you give it (pydicom Datasets, DICOM JSON dicts or a
:class:`~aqido.testing.synthetic.SyntheticArchive`), and that can be told to
behave like the servers in the wild: 204 or 200 ``[]`` for no match, result
caps with or without a ``Warning: 299`` header, ignored offsets, latency,
faults (deterministic by seed), basic or bearer auth, no percent-decoding::

    async with FakeArchive(SyntheticArchive(seed=1, studies=20)) as archive:
        ...  # query archive.url, e.g. f"{archive.url}/studies?PatientName=Doe*"
    assert archive.peak_concurrency <= 4

From synchronous code (a thread runs the server on its own event loop)::

    with FakeArchive(content).run_in_thread() as archive:
        requests.get(archive.url + "/studies")

Matching (PS3.4 C.2.2.2 as a careful server does it) is :mod:`aqido.matching`,
the matcher the client also uses to filter results locally:

- UI: single UID or a comma-separated list (any of them).
- DA, TM, DT: a single value matches the same text; a range ``a-b``, ``-b``,
  ``a-`` is inclusive (a TM bound with less precision covers its whole span:
  ``-1300`` includes ``130059``); a bare ``-`` or a malformed value is a 400
  (``strict_values=False``: matches nothing).
- strings and PN: exact (case-sensitive unless ``case_sensitive=False``) or
  wildcards ``*`` and ``?`` (``*`` alone is universal matching).  A PN matches
  against the whole value (``Yamada^Tarou=山田^太郎``) and against each
  component group (unless ``pn_groups=False``).
- numbers (IS, DS, US...): numeric equality.
- any value of a multi-valued attribute may match; for every non-UI key a
  comma separates alternatives (OR), as Orthanc does.
- an empty value is universal matching (return the attribute), as is
  ``includefield`` (names, tags, comma lists, repeated, or ``all``).
- sequence paths ``Seq.Attr=v`` match any item.
- an attribute from a lower level than the query (``Modality`` on
  ``/studies``) is never present, so it matches nothing, and is never returned.
- :attr:`FakeArchive.match_options` (a :class:`~aqido.matching.MatchOptions`)
  replaces the matching flags, e.g. to emulate a server without wildcards.

Results come in a stable order (insertion order: study by study, series by
series), so ``limit``/``offset`` paging is consistent.

This module is the server (options, content, faults and statistics, lifecycle,
HTTP); private modules hold the rest: :mod:`aqido.testing._emulation` (query
parsing and the server quirks), :mod:`aqido.testing._store` (the datasets and
the match walk) and :mod:`aqido.testing._faults` (faults and served-request records).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aqido.testing._emulation import (
    FLAG_DEFAULTS,
    FLAG_TO_PROFILE,
    BadRequest,
    InvalidValue,
    ServerEmulation,
)
from aqido.testing._faults import Fault as Fault
from aqido.testing._faults import FaultKind as FaultKind
from aqido.testing._faults import FaultRule, fault_response
from aqido.testing._faults import Faults as Faults
from aqido.testing._faults import ServedRequest as ServedRequest
from aqido.testing._store import DICOM_JSON, Store

if TYPE_CHECKING:  # pragma: no cover
    if sys.version_info >= (3, 11):
        from typing import Self
    else:
        from typing_extensions import Self

    from aqido.profile import ServerProfile
    from aqido.testing.synthetic import SyntheticArchive


class FakeArchive(ServerEmulation):
    """An in-process QIDO-RS server on 127.0.0.1 with a random port.

    ``content``: a ``SyntheticArchive``, DICOM JSON dicts and/or pydicom
    Datasets (an iterable of them; more with :meth:`add`).  The study and
    series attributes come from the first instance stored for them.

    ``profile``: a :class:`~aqido.profile.ServerProfile` to emulate, the
    documented way to give the archive a server's quirks (one object instead of
    many flags): ``FakeArchive(content, profile=ServerProfile.tiny_pacs())``.
    ``aqido probe`` of the archive then measures that profile (a property test
    checks it).  Every profile field is emulated: percent-decoding, ``*`` and
    ``?`` wildcards, case (PN and other strings), exact/prefix/substring
    matching, UID and value lists, repeated keys (or/first/last/error), closed
    and open date ranges, time ranges, fuzzymatching, unsupported keys
    (error/ignore/empty), includefield and ``includefield=all``, relational
    paths, limit/offset, result caps, the status of no match, of malformed input
    and of an unknown parent, and ``Accept: application/json``.  Without a
    profile the archive is the standard except where the flags below say
    otherwise (and a repeated key: the last one wins; an unknown parent: an
    empty result).  The flags a profile covers cannot be combined with it
    (``ValueError``); the other options can.

    Options (all keyword-only):

    - ``prefix="/dicom-web"``: the service root; ``archive.url`` ends with it.
    - ``empty_status=204``: 204 (current standard) or 200 (``[]``, Orthanc
      and old servers) when nothing matches.
    - ``max_results=None``: a server cap on rows per response.  When it cuts a
      page short the response carries ``Warning: 299 <agent> "There are N
      additional results that can be requested"`` unless
      ``truncation_warning=False`` (silent, Orthanc style); ``cap_plus_one``
      returns cap+1 rows as Orthanc does; ``cap_before_offset`` caps the
      matches before skipping ``offset`` (Orthanc: paging cannot pass the cap).
    - ``max_limit=None``: a ``limit`` above it is a 400 (Azure: 200).
    - ``ignore_offset=False``, ``ignore_limit=False``: imitate servers that do.
      ``limit=0`` returns no match, as the standard has it (Orthanc and
      :meth:`orthanc_like`: every match; dcm4chee: 400).
    - ``latency=0.0``: seconds to sleep before answering each request.
    - ``faults=None``: a :class:`Faults` (random, by seed); add targeted ones
      with :meth:`fail`.
    - ``basic_auth=("user", "pw")`` and/or ``bearer_token="..."``: require
      credentials (401 with ``WWW-Authenticate`` otherwise).
    - ``case_sensitive=True``: string matching (``False``: as Orthanc does it).
    - ``unknown_attributes="error"``: 400 for a keyword that is not in PS3.6;
      ``"ignore"`` skips it (Orthanc; widens the result).
    - ``strict_values=True``: 400 for a malformed date, time or number (or a
      bare ``-``); ``False`` lets it match nothing (Orthanc: 200 ``[]``).
    - ``pn_groups=True``: a PN value matches if the whole value
      (``Yamada^Tarou=山田^太郎``) or any one component group matches;
      ``False`` matches the whole value only (Orthanc).
    - ``parent_attributes="standard"``: relational queries add the parent
      levels' defaults (``/studies/{s}/instances`` the series'), hierarchical
      ones do not.  ``"orthanc"``: as Orthanc 1.10 does it: every query adds
      each parent level's defaults (without ModalitiesInStudy and the counts)
      unless that level's UID is a query parameter (``/series?StudyInstanceUID=``
      returns no study attributes, ``/studies/{s}/series`` does).
    - ``instance_availability=True``: return InstanceAvailability (``ONLINE``).
    - ``include_all_attributes=True``: ``includefield=all`` returns every stored
      attribute of the returned levels; ``False``: only the defaults (Orthanc).
    - ``return_sequences=True``: ``False`` never returns SQ attributes (Orthanc).
    - ``decode_percent=True``: percent-decode query values (``+`` is a
      space).  ``False`` imitates Orthanc 1.10: ``%5E`` stays literal.
    - ``fuzzy_warning=False``: add the PS3.18 "fuzzymatching not supported"
      299 Warning when ``fuzzymatching=true``.
    - ``relational=True``: ``False`` answers 404 on ``/series`` and ``/instances``.
    - ``unknown_parent_status=None``: status for a path naming an unknown
      study or series (``None``: an ordinary empty result).
    - ``max_url_length=8192``: longer request targets get 414.
    - ``keepalive_timeout=75.0``: idle keep-alive connections are closed
      after this (Orthanc: 1 s).

    Statistics: :attr:`requests` (every :class:`ServedRequest`),
    :attr:`peak_concurrency`, :meth:`reset_stats`.  A request counts as in
    flight from its arrival until its answer is ready; give the archive some
    ``latency`` when a test asserts on concurrency, so requests overlap for sure.

    :meth:`fail`, :meth:`clear_faults` and :meth:`reset_stats` are safe from
    any thread at any time; :meth:`add` only while no request is being served.
    """

    def __init__(
        self,
        content: SyntheticArchive | Iterable[Any] | None = None,
        *,
        prefix: str = "/dicom-web",
        empty_status: Literal[200, 204] = 204,
        max_results: int | None = None,
        truncation_warning: bool = True,
        cap_plus_one: bool = False,
        cap_before_offset: bool = False,
        max_limit: int | None = None,
        ignore_offset: bool = False,
        ignore_limit: bool = False,
        latency: float = 0.0,
        faults: Faults | None = None,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        case_sensitive: bool = True,
        unknown_attributes: Literal["error", "ignore"] = "error",
        strict_values: bool = True,
        pn_groups: bool = True,
        parent_attributes: Literal["standard", "orthanc"] = "standard",
        instance_availability: bool = True,
        include_all_attributes: bool = True,
        return_sequences: bool = True,
        decode_percent: bool = True,
        fuzzy_warning: bool = False,
        relational: bool = True,
        unknown_parent_status: int | None = None,
        max_url_length: int | None = 8192,
        keepalive_timeout: float = 75.0,
        profile: ServerProfile | None = None,
    ) -> None:
        if profile is not None:
            given = {
                "empty_status": empty_status,
                "max_results": max_results,
                "truncation_warning": truncation_warning,
                "cap_plus_one": cap_plus_one,
                "cap_before_offset": cap_before_offset,
                "ignore_offset": ignore_offset,
                "ignore_limit": ignore_limit,
                "case_sensitive": case_sensitive,
                "unknown_attributes": unknown_attributes,
                "strict_values": strict_values,
                "include_all_attributes": include_all_attributes,
                "decode_percent": decode_percent,
                "fuzzy_warning": fuzzy_warning,
                "relational": relational,
                "unknown_parent_status": unknown_parent_status,
            }
            clash = sorted(k for k, v in given.items() if v != FLAG_DEFAULTS[k])
            if clash:
                raise ValueError(
                    f"give the server's behaviour as profile= or as flags, not both: {clash}"
                )
        if empty_status not in (200, 204):
            raise ValueError("empty_status must be 200 or 204")
        if unknown_attributes not in ("error", "ignore"):
            raise ValueError("unknown_attributes must be 'error' or 'ignore'")
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.empty_status = empty_status
        self.max_results = max_results
        self.truncation_warning = truncation_warning
        self.cap_plus_one = cap_plus_one
        self.cap_before_offset = cap_before_offset
        self.max_limit = max_limit
        self.ignore_offset = ignore_offset
        self.ignore_limit = ignore_limit
        self.latency = latency
        self.faults = faults
        self.basic_auth = basic_auth
        self.bearer_token = bearer_token
        self.case_sensitive = case_sensitive
        self.unknown_attributes = unknown_attributes
        self.strict_values = strict_values
        self.pn_groups = pn_groups
        if parent_attributes not in ("standard", "orthanc"):
            raise ValueError("parent_attributes must be 'standard' or 'orthanc'")
        self.parent_attributes = parent_attributes
        self.instance_availability = instance_availability
        self.include_all_attributes = include_all_attributes
        self.return_sequences = return_sequences
        self.decode_percent = decode_percent
        self.fuzzy_warning = fuzzy_warning
        self.relational = relational
        self.unknown_parent_status = unknown_parent_status
        self.max_url_length = max_url_length
        self.keepalive_timeout = keepalive_timeout
        self._init_quirks()  # the quirks only a profile sets (the flags cannot express them)
        #: The profile the archive emulates (``None`` when built from flags).
        self.profile = profile
        if profile is not None:
            self._apply_profile(profile)

        #: Every request served since start (or :meth:`reset_stats`), in completion order.
        self.requests: list[ServedRequest] = []
        #: The largest number of requests in flight at the same time.
        self.peak_concurrency = 0
        self._in_flight = 0
        self._handlers: set[asyncio.Task[Any]] = set()  # requests being answered
        self._attempts: dict[str, int] = {}
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

        self._store = Store()

        self._runner: web.ServerRunner | None = None
        self._port: int | None = None
        if content is not None:
            self.add(content)

    @classmethod
    def orthanc_like(
        cls, content: SyntheticArchive | Iterable[Any] | None = None, **options: Any
    ) -> FakeArchive:
        """A FakeArchive that behaves like Orthanc 1.10 with its DICOMweb 1.7 plugin.

        Built from :meth:`ServerProfile.orthanc() <aqido.profile.ServerProfile.orthanc>`
        (200 ``[]`` for no match, no percent-decoding, case-insensitive
        matching, unknown attributes ignored, malformed values match nothing,
        ``includefield=all`` adds nothing, the last of repeated keys wins,
        silent cap+1 truncation applied before the offset when ``max_results``
        is set) plus what a profile does not describe: PN matched as a whole
        (not group by group), Orthanc's choice of parent attributes, no
        InstanceAvailability, no sequences, ``limit=0`` read as no limit, a
        single date or time compared as text (``StudyTime=12`` is not 12:34), idle
        connections closed after 1 s.
        ``options`` override any of these (the profile's flags by their flag
        names: ``max_results=10``, ``truncation_warning=True``...).  Checked query
        for query against a live Orthanc by ``tests/integration/test_fake_vs_orthanc.py``.
        """
        from aqido.profile import ServerProfile

        flags = dict(options)
        profile = ServerProfile.orthanc(max_results=flags.pop("max_results", None))
        changes = {}
        for flag, (fields, to_profile) in FLAG_TO_PROFILE.items():
            if flag in flags:
                value = to_profile(flags.pop(flag))
                changes.update(dict.fromkeys(fields, value))
        if changes:
            profile = attrs.evolve(profile, **changes)
        preset: dict[str, Any] = {
            "pn_groups": False,
            "parent_attributes": "orthanc",
            "instance_availability": False,
            "return_sequences": False,
            "keepalive_timeout": 1.0,
        }
        preset.update(flags)
        archive = cls(content, profile=profile, **preset)
        archive._zero_limit_is_no_limit = True
        archive._temporal_spans = False
        return archive

    # --- content ---

    def add(self, content: SyntheticArchive | Iterable[Any] | Mapping[str, Any] | Any) -> None:
        """Store more content: a SyntheticArchive, a DICOM JSON dict, a pydicom Dataset,
        or an iterable of these.  An instance already stored (same SOPInstanceUID) is skipped."""
        self._store.add(content)

    @property
    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) stored."""
        return self._store.counts

    # --- faults and statistics ---

    def fail(
        self,
        match: str | Callable[[str], bool],
        fault: Fault | FaultKind = "500",
        *,
        times: int | None = None,
    ) -> None:
        """Fail requests whose relative URL (path and raw query) contains ``match``.

        ``match`` may also be a predicate on that URL.  ``times=None`` fails
        them forever; otherwise only the next ``times`` matching requests.
        Targeted faults are checked before the random :class:`Faults`.
        """
        pred = match if callable(match) else (lambda url, s=match: s in url)
        f = fault if isinstance(fault, Fault) else Fault(kind=fault)
        with self._lock:
            self._rules.append(FaultRule(pred, f, times))

    def clear_faults(self) -> None:
        """Remove the targeted faults added with :meth:`fail` (``faults`` stays)."""
        with self._lock:
            self._rules.clear()

    def reset_stats(self) -> None:
        """Forget served requests, the peak concurrency and the per-URL attempt counts."""
        with self._lock:
            self.requests = []
            self.peak_concurrency = self._in_flight
            self._attempts.clear()

    def _pick_fault(self, url: str) -> Fault | None:
        with self._lock:
            attempt = self._attempts.get(url, 0)
            self._attempts[url] = attempt + 1
            for rule in self._rules:
                if rule.match(url) and (rule.remaining is None or rule.remaining > 0):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule.fault
        if self.faults is not None:
            return self.faults.draw(url, attempt)
        return None

    # --- lifecycle ---

    @property
    def port(self) -> int:
        """The TCP port (only while running)."""
        if self._port is None:
            raise RuntimeError("the FakeArchive is not running")
        return self._port

    @property
    def url(self) -> str:
        """The service root, ``http://127.0.0.1:PORT/dicom-web`` (only while running)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    async def start(self) -> None:
        """Start listening on 127.0.0.1 (a free port)."""
        if self._runner is not None:
            raise RuntimeError("the FakeArchive is already running")
        server = web.Server(self._handle, max_line_size=65536, max_field_size=65536)
        runner = web.ServerRunner(
            server,
            access_log=None,
            keepalive_timeout=self.keepalive_timeout,
            shutdown_timeout=0.1,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def close(self) -> None:
        """Stop the server, close its connections and end the requests still being answered.

        Idempotent.  A request whose client has gone (still in its ``latency``,
        say) is cancelled, and recorded in :attr:`requests` with status ``None``.
        """
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()
        handlers = [task for task in self._handlers if task is not asyncio.current_task()]
        for task in handlers:  # aiohttp leaves those of lost connections running
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[FakeArchive]:
        """Run the server on its own event loop in a background thread (for sync clients).

        ``with archive.run_in_thread() as archive: requests.get(archive.url + "/studies")``
        """
        loop = asyncio.new_event_loop()
        started = threading.Event()
        errors: list[Exception] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.close())
            loop.run_until_complete(loop.shutdown_asyncgens())

        thread = threading.Thread(target=run, name="FakeArchive", daemon=True)
        thread.start()
        started.wait(30)
        try:
            if errors:
                raise errors[0]
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()

    # --- HTTP ---

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        with self._lock:
            self._in_flight += 1
            self.peak_concurrency = max(self.peak_concurrency, self._in_flight)
        status: int | None = None
        fault_name: str | None = None
        raw_qs = request.raw_path.partition("?")[2]
        try:
            # Always yield once, so requests that arrived together overlap (peak_concurrency).
            await asyncio.sleep(self.latency if self.latency > 0 else 0)
            fault = self._pick_fault(request.raw_path)
            if fault is not None:
                fault_name = fault.kind
                response = await fault_response(request, fault)
            else:
                response = self._respond(request, raw_qs)
            status = response.status if response is not None else None
            if response is None:
                return web.Response(status=499)  # never sent: the connection is gone
            return response
        finally:
            if task is not None:
                self._handlers.discard(task)
            with self._lock:
                self._in_flight -= 1
                self.requests.append(
                    ServedRequest(
                        method=request.method,
                        path=request.raw_path.partition("?")[0],
                        query_string=raw_qs,
                        headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                        status=status,
                        fault=fault_name,
                    )
                )

    def _check_auth(self, request: web.BaseRequest) -> web.Response | None:
        if self.basic_auth is None and self.bearer_token is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if self.basic_auth is not None and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            if (user, password) == self.basic_auth:
                return None
        if (
            self.bearer_token is not None
            and scheme.lower() == "bearer"
            and credentials == self.bearer_token
        ):
            return None
        challenge = 'Basic realm="FakeArchive"' if self.basic_auth else 'Bearer realm="FakeArchive"'
        return web.Response(
            status=401,
            text="Unauthorized",
            headers={"WWW-Authenticate": challenge},
        )

    def _respond(self, request: web.BaseRequest, raw_qs: str) -> web.Response:
        denied = self._check_auth(request)
        if denied is not None:
            return denied
        if self.max_url_length is not None and len(request.raw_path) > self.max_url_length:
            return web.Response(status=414, text="URI Too Long")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="Method Not Allowed", headers={"Allow": "GET"})
        if not self.json_accept:
            accept = request.headers.get("Accept", "")
            if "application/json" in accept and not any(
                t in accept for t in (DICOM_JSON, "*/*", "application/*")
            ):
                return web.Response(status=406, text="Not Acceptable")
        path = request.raw_path.partition("?")[0]
        if not path.startswith(self.prefix + "/"):
            return web.Response(status=404, text="Not Found")
        parts = path[len(self.prefix) + 1 :].split("/")
        try:
            route = self._route(parts)
        except LookupError:
            return web.Response(status=404, text="Not Found")
        from aqido.testing.synthetic import paused_gc

        try:
            with paused_gc():  # a search allocates many short-lived objects, no cycles
                return self._search(request, route, raw_qs)
        except InvalidValue as exc:
            status = self.bad_request_status
            return web.Response(status=status if status and status >= 400 else 400, text=str(exc))
        except BadRequest as exc:
            return web.Response(status=400, text=str(exc))
