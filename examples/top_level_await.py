# Notebook style: top-level `await`, as in Jupyter, IPython and `python -m asyncio`.
#
# Each `# %%` block is a cell (VS Code and Jupytext open this file as a notebook); paste the
# cells into Jupyter, or into the `python -m asyncio` REPL, one after another. This is not a
# script for `python FILE` (plain Python has no top-level await): for scripts, put the same
# code in `async def main()` and call `asyncio.run(main())`, as the other examples do.
# The archive is $AQIDO_URL, or aqido's in-process demo archive when it is not set.

# %%
import os

from aqido import AsyncQidoRS, HierarchicalQuery, QueryLevel
from aqido.testing import demo_archive

url = os.environ.get("AQIDO_URL")
archive = None
if not url:  # no archive given: serve the demo archive from this kernel's event loop
    archive = demo_archive(50)
    await archive.start()
    url = archive.url

# No `async with` needed: the client opens its session on first use.
client = AsyncQidoRS(url)

# %%
studies = await client.search(HierarchicalQuery(PatientName="Doe^J*", include_fields=["all"]))
print(f"{len(studies)} studies; the first:")
studies[0]

# %%
series = await client.search_many(
    HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=s.StudyInstanceUID)
    for s in studies
)
{s.StudyInstanceUID: [x.Modality for x in found] for s, found in zip(studies, series, strict=True)}

# %%
instances = 0
async for study in client.crawl(HierarchicalQuery(PatientName="Doe^J*")):
    instances += sum(len(s.instances) for s in study.series)
print(f"{instances} instances in {len(studies)} studies")

# %%
await client.close()
if archive is not None:
    await archive.close()
