"""aqido inside an aiohttp web service: one shared (borrowed) session for every request.

    python examples/aiohttp_service.py [URL] [--serve]

The service answers ``GET /studies?patient_id=ID`` with a JSON list of
that patient's studies and their series, fetched from the archive at URL (or
$AQIDO_URL; without it, aqido's in-process demo archive). The app owns one
``aiohttp.ClientSession`` for its whole life and lends it to one ``AsyncQidoRS``
(``session=``): aqido never closes a borrowed session, so the app closes it on
shutdown. Without ``--serve`` the script starts the service, calls it once and
stops; with ``--serve`` it keeps running until Ctrl-C.

The same pattern works in FastAPI/Starlette: create the client in the lifespan
handler, keep it on ``app.state``, close the session when the lifespan ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from aqido import AsyncQidoRS, HierarchicalQuery, QidoError, QueryLevel
from aqido.testing import archive_url

QIDO = web.AppKey("qido", AsyncQidoRS)


def make_app(qido_url: str) -> web.Application:
    """The web app: its QIDO-RS client shares the app's one ClientSession."""
    app = web.Application()

    async def qido_client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:  # owned by the app
            app[QIDO] = AsyncQidoRS(qido_url, session=session, max_concurrency=16)
            yield
            await app[QIDO].close()  # does not close the borrowed session

    app.cleanup_ctx.append(qido_client)
    app.router.add_get("/studies", patient_studies)
    return app


async def patient_studies(request: web.Request) -> web.Response:
    """The studies of one patient, each with its series, as JSON."""
    client = request.app[QIDO]
    try:
        patient_id = request.query.get("patient_id", "")
        if not patient_id:
            return web.json_response({"error": "patient_id is required"}, status=400)
        query = HierarchicalQuery(PatientID=patient_id, include_fields=["StudyDescription"])
        studies = await client.search(query)
        all_series = await client.search_many(
            HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=s.StudyInstanceUID)
            for s in studies
        )
    except QidoError as error:  # the archive failed: say so, do not crash the handler
        return web.json_response({"error": str(error)}, status=502)
    body = [
        {
            "study": study.StudyInstanceUID,
            "date": study.StudyDate.isoformat() if study.StudyDate else None,
            "description": study.StudyDescription,
            "series": [{"uid": s.SeriesInstanceUID, "modality": s.Modality} for s in series],
        }
        for study, series in zip(studies, all_series, strict=True)
    ]
    return web.json_response(body)


async def main(url: str | None, serve: bool) -> None:
    async with archive_url(url) as qido_url:
        runner = web.AppRunner(make_app(qido_url))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0 if not serve else 8080)
        await site.start()
        port = runner.addresses[0][1]
        try:
            if serve:
                print(f"serving on http://127.0.0.1:{port}/studies?patient_id=<PatientID>")
                await asyncio.Event().wait()
            async with aiohttp.ClientSession() as http:  # one call, as a user of the service
                async with AsyncQidoRS(qido_url, session=http) as qido:
                    [first] = await qido.search(HierarchicalQuery(limit=1))
                patient = first.PatientID
                service = f"http://127.0.0.1:{port}/studies"
                async with http.get(service, params={"patient_id": patient}) as reply:
                    studies = await reply.json()
            print(f"GET /studies?patient_id={patient} -> {reply.status}, {len(studies)} studies")
            print(json.dumps(studies[0], indent=2))
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--serve"]
    asyncio.run(main(args[0] if args else os.environ.get("AQIDO_URL"), "--serve" in sys.argv))
