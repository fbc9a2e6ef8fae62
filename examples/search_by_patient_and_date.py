"""Search studies by patient name and study date, and print them.

    python examples/search_by_patient_and_date.py [URL] [PATIENT_NAME] [FROM] [TO]

URL (or $AQIDO_URL) is your archive's QIDO-RS root, e.g. http://127.0.0.1:8042/dicom-web;
without it, the script starts aqido's in-process demo archive and searches that.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys

from aqido import AsyncQidoRS, HierarchicalQuery
from aqido.testing import archive_url


async def main(url: str | None, name: str, date_from: dt.date, date_to: dt.date) -> None:
    query = HierarchicalQuery(
        PatientName=name,  # DICOM wildcards: * and ?
        min_study_date=date_from,
        max_study_date=date_to,
        include_fields=["StudyDescription"],
    )
    async with archive_url(url) as base, AsyncQidoRS(base) as client:
        studies = [study async for study in client.iter_search(query)]  # every page
    print(f"{len(studies)} studies of {name!r} between {date_from} and {date_to}")
    for study in sorted(studies, key=lambda s: (s.StudyDate or dt.date.min, str(s.PatientName))):
        print(
            f"{study.StudyDate}  {study.PatientName!s:28}  {study.PatientID:12}  "
            f"{'/'.join(study.ModalitiesInStudy):8}  {study.StudyDescription or ''}"
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(
            args[0] if args else os.environ.get("AQIDO_URL"),
            args[1] if len(args) > 1 else "D*",
            dt.date.fromisoformat(args[2]) if len(args) > 2 else dt.date(2010, 1, 1),
            dt.date.fromisoformat(args[3]) if len(args) > 3 else dt.date(2019, 12, 31),
        )
    )
